"""Shared test helpers, in one place: comparisons with torch that explain themselves, conversions,
the dtype Spy, and the walk over a layer's inner layers and caches.

Test modules import from here (and from ``cases``), never from one another.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

#: rtol of the comparisons with torch, per dtype: float32 results agree to a few ulps of 1e-7,
#: float64 ones to a few ulps of 1e-16 (both with summation orders that differ from torch's).
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}

DTYPES = (np.float32, np.float64)

TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def rtol_for(dtype) -> float:
    return RTOL[np.dtype(dtype)]


# ---------------------------------------------------------------------- conversions
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


# ---------------------------------------------------------------------- comparisons
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


# ---------------------------------------------------------------------- the dtype Spy
class Spy(np.ndarray):
    """An ndarray view that logs every NumPy operation touching float64 into ``Spy.log``.

    NumPy 2 upcasts silently (a float32 array times an ``np.float64`` scalar or an int64 array is
    float64) and ``+=`` hides the result's dtype, so checking the arrays that come out of a layer
    is not enough: every ufunc call on a Spy (including ``@``, reductions and ``out=`` forms) is
    checked, and a float64 operand or result is recorded, wherever it happens.
    """

    log: list[str] = []

    @staticmethod
    def _plain(a):
        return a.view(np.ndarray) if isinstance(a, Spy) else a

    @staticmethod
    def _is_float64(a):
        return isinstance(a, np.ndarray | np.generic) and a.dtype == np.float64

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(self._plain(o) for o in out)
        name = f"{ufunc.__name__}.{method}" if method != "__call__" else ufunc.__name__
        operands = list(inputs) + list(out or ())
        if any(self._is_float64(a) for a in operands):
            Spy.log.append(f"{name} with a float64 operand")
        result = getattr(ufunc, method)(*(self._plain(a) for a in inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        results = result if isinstance(result, tuple) else (result,)
        if any(self._is_float64(r) for r in results):
            Spy.log.append(f"{name} returned float64")
        wrapped = tuple(r.view(Spy) if isinstance(r, np.ndarray) else r for r in results)
        return wrapped if isinstance(result, tuple) else wrapped[0]

    def __array_function__(self, func, types, args, kwargs):
        result = super().__array_function__(func, types, args, kwargs)
        if self._is_float64(result):
            Spy.log.append(f"np.{func.__name__} returned float64")
        return result

    def astype(self, dtype, *args, **kwargs):
        if np.dtype(dtype) == np.float64:
            Spy.log.append("astype(float64)")
        return super().astype(dtype, *args, **kwargs)


@contextlib.contextmanager
def spying():
    """A fresh ``Spy.log`` for the block (yielded), emptied again afterwards."""
    Spy.log = []
    try:
        yield Spy.log
    finally:
        Spy.log = []


def spy_on(layer) -> None:
    """View every parameter and buffer of ``layer`` (and of the layers inside it) as a Spy.

    A buffer's name is the attribute that holds it (BatchNorm's ``running_mean``), so the
    layer's own code sees the Spy, not a copy.
    """
    for p in layer.parameters():
        p.value = p.value.view(Spy)
    for sub in all_layers(layer):
        if hasattr(sub, "layers"):
            continue
        for name in sub.buffers():
            setattr(sub, name, getattr(sub, name).view(Spy))


# ---------------------------------------------------------------------- past the input checks
# Layer.forward, Layer.backward and Loss.__call__ start with np.asarray, which turns a Spy back
# into a plain ndarray; the Spy checks go one level down, to the math with its bookkeeping.
# backward_unchecked and loss_unchecked are the only places the table's harness reaches past
# the public layer and loss API.
def call_unchecked(layer, x, training: bool):
    """The layer's forward on already-valid ``x`` (which may be a Spy), cache kept as forward's."""
    return layer.apply(x, training)


def backward_unchecked(layer, grad_y, need_input_grad: bool = True):
    """The layer's backward on ``grad_y`` (which may be a Spy), without the shape/dtype checks."""
    return layer._backward(grad_y, need_input_grad)


def loss_unchecked(loss, pred, target):
    """(value, dL/dpred) of ``loss`` on ``pred`` (which may be a Spy), past ``Loss.__call__``'s
    np.asarray; the target goes through the loss's own checks."""
    value, backward = loss._compute(pred, loss.check_target(pred, target))
    return value, backward()


# ---------------------------------------------------------------------- walking a layer
def all_layers(layer) -> list:
    """``layer`` and, for a container (Residual), every layer inside it, depth first."""
    return [layer] + [inner for sub in getattr(layer, "layers", []) for inner in all_layers(sub)]


def float_arrays(cache) -> list[np.ndarray]:
    """The floating arrays in a cache (an array, a tuple of arrays, shapes and such tuples, or
    None)."""
    if isinstance(cache, tuple):
        return [a for item in cache for a in float_arrays(item)]
    return [cache] if isinstance(cache, np.ndarray) and cache.dtype.kind == "f" else []


def generators(layer) -> list[np.random.Generator]:
    """The random Generators of ``layer`` and the layers inside it (Dropout, RandomShift, …)."""
    found = []
    for sub in all_layers(layer):
        rng = getattr(sub, "rng", None)
        if isinstance(rng, np.random.Generator) and all(rng is not g for g in found):
            found.append(rng)
    return found
