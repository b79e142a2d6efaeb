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
