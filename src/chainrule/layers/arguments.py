"""Argument parsing, the padding rule and message helpers shared by the image layers."""

from __future__ import annotations

import math

from ..validate import is_int

__all__ = ["flat_image_hint", "int_pair", "is_int", "pad_amounts", "padding_arg",
           "received_shape"]


def int_pair(value, what: str, kind: str, minimum: int = 1) -> tuple[int, int]:
    """(a, b) from an int or a pair of ints, each at least ``minimum``.

    Raises:
        ValueError: naming the layer ``kind`` and the argument ``what``.
    """
    pair = (value, value) if is_int(value) else value
    try:
        ok = len(pair) == 2 and all(is_int(v) and v >= minimum for v in pair)
    except TypeError:
        ok = False
    if not ok:
        sign = "positive" if minimum == 1 else "non-negative"
        raise ValueError(
            f"{kind}: {what} must be a {sign} integer or a pair of them, got {value!r}"
        )
    return int(pair[0]), int(pair[1])


def padding_arg(padding, kind: str) -> str | tuple[int, int]:
    """'valid', 'same', or (ph, pw) from an int or a pair.

    Raises:
        ValueError: for another string or a negative amount.
    """
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise ValueError(
                f"{kind}: padding must be 'valid', 'same', an int or a pair (ph, pw), got "
                f"{padding!r}"
            )
        return padding
    return int_pair(padding, "padding", kind, minimum=0)


def pad_amounts(padding, size, kernel, strides, dilation=(1, 1)):
    """((top, bottom), (left, right)) rows/columns of padding around an image of size (H, W).

    The one padding convention of Conv2D, MaxPool2D and AvgPool2D:

    - "valid": none.
    - (ph, pw): ph rows on top and bottom, pw columns left and right.
    - "same", as Keras/TensorFlow: the output keeps H′ = ⌈H / s⌉ rows. A kernel of k taps d
      apart spans (k − 1)·d + 1 pixels, so the last of the H′ windows ends at
      (H′ − 1)·s + (k − 1)·d + 1 and the padding is, in total,
          max((⌈H / s⌉ − 1)·s + (k − 1)·d + 1 − H, 0)
      rows, half on top and the odd one at the bottom (columns likewise, the odd one on the
      right). With s = 1 that is d·(k − 1): H′ = H, as PyTorch's ``padding='same'``.
      The amounts depend on the image size when s > 1.

    Args:
        padding: "valid", "same" or a pair (ph, pw) (see ``padding_arg``).
        size: (H, W) of the unpadded image.
        kernel, strides, dilation: (kh, kw), (sh, sw), (dh, dw); pooling has dilation 1.
    """
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        pads = []
        for n, k, s, d in zip(size, kernel, strides, dilation, strict=True):
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    ph, pw = padding
    return (ph, ph), (pw, pw)


def received_shape(shape, batch) -> str:
    """The received batch shape for messages: (32, 3, 7, 9), or (N, 3, 7, 9) when not known."""
    dims = ["N" if batch is None else str(batch), *map(str, shape)]
    return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"


def flat_image_hint(shape) -> str:
    """A hint for a flat (N, H·W) input given to an image layer ('' for other shapes)."""
    if len(shape) != 1:
        return ""
    side = math.isqrt(shape[0])
    if side * side == shape[0]:
        return f"; reshape flat images with x.reshape(-1, 1, {side}, {side})"
    return "; reshape flat images to (N, C, H, W)"
