"""Array backend and dtype policy: one place that decides which floats a model uses."""

from __future__ import annotations

import numpy as np

DEFAULT_DTYPE = np.dtype(np.float32)
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_dtype(dtype) -> np.dtype:
    """Validate and normalise a floating dtype name or object.

    Raises:
        TypeError: if ``dtype`` is not float32 or float64.
    """
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from exc
    if resolved not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {resolved.name!r}")
    return resolved


def as_weights(value, dtype, what: str) -> np.ndarray:
    """``value`` cast to ``dtype`` for use as weights, refused where the cast would change it.

    Accepted: floating arrays with finite values that stay finite in ``dtype``, and integer or
    bool arrays whose every value ``dtype`` holds exactly (``np.can_cast(..., "same_kind")`` and
    a round trip). Refused: complex (the cast would drop the imaginary part), strings, objects,
    dates and records, which do not cast safely; NaN and inf, which make every prediction NaN.

    Args:
        value: array-like.
        dtype: float32 or float64, the model's dtype.
        what: the array's name for messages, e.g. ``"load_model: m.npz: dense_1.W"``.

    Returns:
        A new array of ``dtype`` (never ``value`` itself).

    Raises:
        TypeError: ``{what} has dtype <U5, expected float32 or float64``.
        ValueError: ``{what} holds 3 NaN/inf values``, or values too large for ``dtype``, or
            integers ``dtype`` cannot hold exactly.
    """
    dtype = as_float_dtype(dtype)
    value = np.asarray(value)
    if value.dtype.hasobject or not np.can_cast(value.dtype, dtype, "same_kind"):
        raise TypeError(
            f"{what} has dtype {value.dtype}, expected float32 or float64 (or integers and "
            f"bools that {dtype} holds exactly)"
        )
    if value.dtype.kind == "f":
        bad = value.size - int(np.count_nonzero(np.isfinite(value)))
        if bad:
            raise ValueError(f"{what} holds {bad} NaN/inf values")
    with np.errstate(over="ignore"):
        cast = value.astype(dtype, copy=True)
    if value.dtype.kind == "f":
        bad = cast.size - int(np.count_nonzero(np.isfinite(cast)))
        if bad:
            raise ValueError(f"{what} holds {bad} values too large for {dtype}")
        return cast
    with np.errstate(invalid="ignore"):
        exact = np.array_equal(cast.astype(value.dtype), value)
    if not exact:
        raise ValueError(f"{what} holds integers that {dtype} cannot represent exactly")
    return cast
