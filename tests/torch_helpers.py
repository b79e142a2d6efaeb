"""Shared helpers for the PyTorch-oracle tests: conversions and a self-explaining comparison."""

from __future__ import annotations

import numpy as np
import torch

#: rtol of the comparisons with torch, per dtype: float32 results agree to a few ulps of 1e-7,
#: float64 ones to a few ulps of 1e-16 (both with summation orders that differ from torch's).
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}

DTYPES = (np.float32, np.float64)


def rtol_for(dtype) -> float:
    return RTOL[np.dtype(dtype)]


def to_torch(array, requires_grad: bool = False) -> torch.Tensor:
    """A torch tensor holding a copy of ``array`` (same dtype); float tensors may require grad."""
    tensor = torch.from_numpy(np.array(array, copy=True))
    if requires_grad:
        tensor.requires_grad_(True)
    return tensor


def to_numpy(value) -> np.ndarray:
    """A NumPy array from a torch tensor (detached) or anything array-like."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _show(array: np.ndarray) -> str:
    return np.array2string(array, precision=12, threshold=120, max_line_width=100)


def assert_close(ours, theirs, rtol: float, name: str, atol: float = 0.0) -> None:
    """Assert |ours − theirs| ≤ atol + rtol·|theirs| element-wise, ours and theirs the same shape.

    On failure the message names the array, gives the worst index with both values there and
    prints ours and torch's arrays in full (abbreviated when large).
    """
    ours = np.asarray(to_numpy(ours))
    theirs = np.asarray(to_numpy(theirs))
    if ours.shape != theirs.shape:
        raise AssertionError(f"{name}: ours has shape {ours.shape}, torch's {theirs.shape}")
    a = ours.astype(np.float64)
    b = theirs.astype(np.float64)
    same_nonfinite = (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))
    with np.errstate(invalid="ignore"):
        excess = np.abs(a - b) - (atol + rtol * np.abs(b))
    excess = np.where(same_nonfinite, -1.0, excess)
    excess = np.where(np.isnan(excess), np.inf, excess)
    if not (excess > 0).any():
        return
    worst = np.unravel_index(int(np.argmax(excess)), a.shape) if a.ndim else ()
    bad = int(np.count_nonzero(excess > 0))
    diff = abs(a[worst] - b[worst])
    rel = diff / abs(b[worst]) if b[worst] != 0 else np.inf
    raise AssertionError(
        f"{name}: {bad} of {a.size} entries differ beyond rtol={rtol:g}, atol={atol:g} "
        f"(ours {ours.dtype}, torch {theirs.dtype}, shape {a.shape})\n"
        f"worst index {tuple(int(i) for i in worst)}: ours={a[worst]!r} torch={b[worst]!r} "
        f"|diff|={diff:.3e} rel={rel:.3e}\n"
        f"ours:\n{_show(ours)}\n"
        f"torch:\n{_show(theirs)}"
    )


def assert_close_to_scale(ours, theirs, rtol: float, name: str) -> None:
    """assert_close with atol = rtol · max|torch|: relative to the array's scale.

    For arrays whose entries are sums of larger terms that can cancel to near 0 (overlapping
    pooling windows, BatchNorm's γ x̂ + β and dL/dx, long convolution sums): there float32
    rounding of the terms (≈ 1e-7 of their size, summed in another order than torch's) is a
    large fraction of the entry, so entry-wise relative error would measure the summation
    order, not the formula.
    """
    scale = float(np.max(np.abs(to_numpy(theirs)), initial=0.0))
    assert_close(ours, theirs, rtol, name, atol=rtol * scale)
