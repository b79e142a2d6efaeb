"""How the C allocator treats the memory a training step frees (glibc's malloc only).

Every training step allocates and frees the same large arrays again: a Conv2D's column matrix
(26 MB for the cnn preset's second convolution at batch 128), activations, caches and
gradients of a few MB each. With its default settings glibc's malloc serves a block above its
mmap threshold (128 kB at first, raised as such blocks are freed) with a fresh mapping, and
gives the free top of its heap back to the operating system once it exceeds the trim threshold
(twice the mmap threshold). Either way the next step writes to new pages, and the kernel
zeroes every 4 kB page on its first write (a page fault): thousands per cnn step with
BatchNorm's and pooling's NumPy passes (without numba; their compiled loops make fewer large
temporaries), time spent in the kernel rather than in the math.

``retain_freed_memory`` sets both thresholds once, so that blocks of up to ``MMAP_THRESHOLD``
come from the heap and freed memory stays there, up to ``TRIM_THRESHOLD`` of it, for the next
step to reuse. Peak memory does not grow (the heap is reused, not enlarged); the process keeps
what it freed instead of returning it. ``Sequential.compile`` calls it: a model compiled is a
model about to train. Settings the user made through glibc's own environment variables
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``) are left alone, and
other C libraries (macOS, musl) are not touched.
"""

from __future__ import annotations

import ctypes
import os

#: Blocks up to this size come from the heap (glibc's M_MMAP_THRESHOLD; 32 MiB is the most
#: glibc accepts on 64-bit machines). Larger ones (a whole data set) are still mapped and
#: returned to the system when freed.
MMAP_THRESHOLD = 32 * 2**20

#: Free memory at the top of the heap is kept up to this size (glibc's M_TRIM_THRESHOLD).
TRIM_THRESHOLD = 256 * 2**20

#: mallopt's parameter numbers, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: The environment variables through which a user sets these thresholds for glibc.
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")

_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds to ``MMAP_THRESHOLD`` and ``TRIM_THRESHOLD``, once
    per process.

    Returns:
        True when the thresholds are set (now or by an earlier call); False where nothing was
        changed: not glibc, or the user set the allocator through its environment variables.
    """
    global _applied
    if _applied is None:
        _applied = _set_thresholds()
    return _applied


def _set_thresholds() -> bool:
    if any(name in os.environ for name in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return False  # not glibc
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
