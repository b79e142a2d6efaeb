"""Array backend: the dtype policy, and splitting memory-bound NumPy work over the cores."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

DEFAULT_DTYPE = np.dtype(np.float32)
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def get_xp(*arrays):
    """Return the array module for ``arrays`` (NumPy today; the hook where CuPy would plug in)."""
    return np


def to_numpy(array) -> np.ndarray:
    """Return ``array`` as a NumPy array (no copy when it already is one)."""
    return np.asarray(array)


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


_WORKERS = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else (os.cpu_count() or 1)))
_POOL: ThreadPoolExecutor | None = None

#: Below this many elements a split costs more in thread hand-offs than it saves.
PARALLEL_MIN_SIZE = 1 << 20


def split_work(fn, n: int, size: int) -> None:
    """Run ``fn(start, stop)`` over [0, n) in one chunk per core, on a thread pool.

    NumPy runs a large copy or element-wise pass on one core but releases the GIL while it does,
    so memory-bound work such as the im2col copies of a convolution can use every core (BLAS
    already does for the matrix products). ``size`` is the number of elements the whole job
    touches; small jobs, or a single core, run inline. Each chunk must write disjoint memory.
    """
    global _POOL
    chunks = min(_WORKERS, n)
    if chunks < 2 or size < PARALLEL_MIN_SIZE:
        fn(0, n)
        return
    if _POOL is None:
        _POOL = ThreadPoolExecutor(_WORKERS, thread_name_prefix="chainrule")
    bounds = [n * k // chunks for k in range(chunks + 1)]
    futures = [_POOL.submit(fn, a, b) for a, b in zip(bounds[1:-1], bounds[2:], strict=True)]
    fn(bounds[0], bounds[1])
    for future in futures:
        future.result()
