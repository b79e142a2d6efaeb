"""Argument parsing and message helpers shared by the image layers (Conv2D, pooling, BatchNorm)."""

from __future__ import annotations

import math

import numpy as np


def is_int(value) -> bool:
    """True for Python and NumPy integers, False for bools."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


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
