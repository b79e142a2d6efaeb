"""Losses: ``loss(pred, target) -> float``, then ``loss.backward() -> dL/dpred``.

Each loss validates its arguments (shapes, label range, dtypes) before the math and keeps
``pred``'s floating dtype for the gradient.

With ``from_logits=True`` the cross-entropies fuse the softmax (sigmoid) into the loss: the
value comes from a log-sum-exp form that is finite for logits of ±1e4, and the gradient with
respect to the logits collapses to the lecture's result

    dL/dz = (softmax(z) − y) / N.

With probabilities they clip by ``eps`` before the log; a Softmax layer in front then gives the
same a − y through its own backward (tests prove the two paths agree).
"""

from __future__ import annotations

import numpy as np

from . import functional as F
from .backend import FLOAT_DTYPES
from .registry import Registry
from .validate import boolean, construct, number

REDUCTIONS = ("mean", "sum")


class Loss:
    """Base class: validation, reduction and the call/backward protocol.

    Args:
        reduction: "mean" (default) averages over the batch (for element-wise losses, over every
            element, as PyTorch does); "sum" adds.
    """

    from_logits = False

    def __init__(self, reduction: str = "mean"):
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"{type(self).__name__}: reduction must be one of {REDUCTIONS}, got {reduction!r}"
            )
        self.reduction = reduction
        self._backward_fn = None
        self.last_count: int | None = None

    def __call__(self, pred, target) -> float:
        """Return the loss of ``pred`` against ``target`` and remember what backward needs."""
        pred = np.asarray(pred)
        if pred.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"{type(self).__name__} expected float32 or float64 predictions, got {pred.dtype}"
            )
        if pred.ndim == 0 or pred.shape[0] == 0:
            raise ValueError(
                f"{type(self).__name__} expected a non-empty batch of predictions, "
                f"got shape {pred.shape}"
            )
        target = self.check_target(pred, target)
        # How many terms the mean averaged: the batch size, unless _compute says otherwise
        # (a sequence loss with ignore_index: the positions kept). fit and evaluate weight
        # each batch's mean by it, so that their mean over batches is the mean over terms.
        self.last_count = pred.shape[0]
        value, self._backward_fn = self._compute(pred, target)
        return float(value)

    def backward(self) -> np.ndarray:
        """dL/dpred for the last call, with ``pred``'s shape and dtype.

        Raises:
            RuntimeError: if the loss has not been called yet.
        """
        if self._backward_fn is None:
            raise RuntimeError(f"{type(self).__name__}: call loss(pred, target) before backward()")
        return self._backward_fn()

    def _scale(self, count: int) -> float:
        """The factor that turns a sum into the chosen reduction."""
        return 1.0 / count if self.reduction == "mean" else 1.0

    def check_target(self, pred: np.ndarray, target) -> np.ndarray:
        target = np.asarray(target)
        if target.shape != pred.shape:
            raise ValueError(
                f"{type(self).__name__} expected target of shape {pred.shape} (the prediction's), "
                f"got {target.shape}"
            )
        if not (np.issubdtype(target.dtype, np.floating) or np.issubdtype(target.dtype, np.integer)
                or target.dtype == np.bool_):
            raise TypeError(f"{type(self).__name__}: target must be numeric, got {target.dtype}")
        target = target.astype(pred.dtype, copy=False)
        if not np.isfinite(target).all():
            raise ValueError(f"{type(self).__name__}: target contains NaN or inf")
        return target

    def _compute(self, pred, target):
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"reduction": self.reduction}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class MeanSquaredError(Loss):
    """L = mean((pred − target)²), or with ``half=True`` the lecture's mean(½ (pred − target)²).

    Backward: dL/dpred = 2 (pred − target) / n   (½-version: (pred − target) / n),
    n = number of elements for reduction="mean", 1 for "sum".
    """

    def __init__(self, half: bool = False, reduction: str = "mean"):
        super().__init__(reduction)
        self.half = boolean(half, "half", "MeanSquaredError")

    def _compute(self, pred, target):
        diff = pred - target
        factor = 0.5 if self.half else 1.0
        scale = self._scale(diff.size)
        value = factor * scale * float(np.sum(diff * diff))

        def backward():
            return diff * (2.0 * factor * scale)

        return value, backward

    def get_config(self):
        return {**super().get_config(), "half": self.half}


class BinaryCrossEntropy(Loss):
    """L = −mean(t log p + (1 − t) log(1 − p)) for targets t ∈ [0, 1].

    Probabilities: p is clipped to [eps, 1 − eps];  dL/dp = (p − t) / (p (1 − p)) / n.
    Logits (``from_logits=True``), p = σ(z):
        L = mean(max(z, 0) − z t + log(1 + e^(−|z|)))      (finite for any z)
        dL/dz = (σ(z) − t) / n
    n = number of elements for reduction="mean".
    """

    def __init__(self, from_logits: bool = False, eps: float = 1e-7, reduction: str = "mean"):
        super().__init__(reduction)
        self.from_logits = boolean(from_logits, "from_logits", type(self).__name__)
        self.eps = number(eps, "eps", type(self).__name__, "(0, 0.5)")

    def check_target(self, pred, target):
        target = super().check_target(pred, target)
        if target.size and (target.min() < 0 or target.max() > 1):
            raise ValueError(
                f"BinaryCrossEntropy expected targets in [0, 1], got values in "
                f"[{target.min()}, {target.max()}]"
            )
        return target

    def _compute(self, pred, target):
        scale = self._scale(pred.size)
        if self.from_logits:
            # log(1 − σ(z)) = log σ(−z): both terms from the overflow-free log_sigmoid.
            z = pred
            value = -scale * float(
                np.sum(target * F.log_sigmoid(z) + (1.0 - target) * F.log_sigmoid(-z))
            )

            def backward():
                return (F.sigmoid(z) - target) * scale

            return value, backward

        p = np.clip(pred, self.eps, 1.0 - self.eps)
        value = -scale * float(np.sum(target * np.log(p) + (1.0 - target) * np.log(1.0 - p)))

        def backward():
            inside = (pred >= self.eps) & (pred <= 1.0 - self.eps)
            return (p - target) / (p * (1.0 - p)) * scale * inside

        return value, backward

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "eps": self.eps}


class CategoricalCrossEntropy(Loss):
    """L = −(1/N) Σₙ Σ_c t_nc log p_nc for one-hot (or soft) targets t (N, C).

    Probabilities: p clipped below at eps;  dL/dp = −t / p / N.
    Logits (``from_logits=True``): log p = log_softmax(z) and, because Σ_c t_nc = 1,
        dL/dz = (softmax(z) − t) / N
    """

    def __init__(self, from_logits: bool = False, eps: float = 1e-7, reduction: str = "mean"):
        super().__init__(reduction)
        self.from_logits = boolean(from_logits, "from_logits", type(self).__name__)
        self.eps = number(eps, "eps", type(self).__name__, "(0, 0.5)")

    def check_target(self, pred, target):
        if pred.ndim != 2:
            raise ValueError(
                f"CategoricalCrossEntropy expected predictions of shape (N, C), got {pred.shape}"
            )
        t = np.asarray(target)
        if t.shape != pred.shape:
            raise ValueError(
                f"CategoricalCrossEntropy expected one-hot targets of shape {pred.shape}, got "
                f"{t.shape}; for integer labels use SparseCategoricalCrossEntropy"
            )
        target = super().check_target(pred, target)
        if target.size and target.min() < 0:
            raise ValueError("CategoricalCrossEntropy: targets must be non-negative probabilities")
        return target

    def _compute(self, pred, target):
        scale = self._scale(pred.shape[0])
        if self.from_logits:
            log_p = F.log_softmax(pred)
            value = -scale * float(np.sum(target * log_p))

            def backward():
                # General soft targets: dL/dz = softmax(z) Σ_c t_c − t; one-hot rows sum to 1.
                grad = F.softmax(pred)
                grad *= np.sum(target, axis=-1, keepdims=True)
                grad -= target
                grad *= scale
                return grad

            return value, backward

        clipped = np.maximum(pred, self.eps)
        value = -scale * float(np.sum(target * np.log(clipped)))

        def backward():
            return -(target / clipped) * scale * (pred >= self.eps)

        return value, backward

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "eps": self.eps}


class SparseCategoricalCrossEntropy(Loss):
    """L = −(1/N) Σₙ log p[n, yₙ] for integer labels y (N,) in [0, C).

    Logits (``from_logits=True``): with s = softmax(z), log p[n, yₙ] = z[n, yₙ] − logsumexp(zₙ)
        dL/dz = (s − onehot(y)) / N
    computed as s with 1 subtracted at [n, yₙ]: no one-hot matrix and no Jacobian.
    Probabilities: dL/dp[n, yₙ] = −1 / (p[n, yₙ] N), zero elsewhere (p clipped below at eps).

    Sequences: predictions (N, T, C) (or any (N, …, C)) with labels (N, T) (resp. (N, …)) are
    M = N·T rows of C classes, one per position. With ``ignore_index`` set, positions whose label
    equals it (padding) are left out, as in ``torch.nn.functional.cross_entropy``: with K the
    number of positions kept,
        L = −(1/K) Σ_kept log p[m, yₘ]
        dL/dz = (s − onehot(y)) / K at kept positions,   0 at ignored ones
    (reduction="sum" drops the 1/K). Without ignore_index, K = M: the mean over every position.

    Args:
        from_logits: the predictions are logits (fused, recommended) rather than probabilities.
        eps: the clipping floor for probabilities.
        reduction: "mean" over the (kept) positions, or "sum".
        ignore_index: a label value that marks positions to leave out (torch uses −100; a pad id
            works too, even inside [0, C)). None (default): every label must lie in [0, C).

    Raises:
        ValueError: for labels of the wrong shape, out of range (other than ignore_index), or a
            batch in which every label equals ignore_index (no position to average over).
        TypeError: for non-integer labels.
    """

    def __init__(self, from_logits: bool = False, eps: float = 1e-7, reduction: str = "mean",
                 ignore_index: int | None = None):
        super().__init__(reduction)
        self.from_logits = boolean(from_logits, "from_logits", type(self).__name__)
        self.eps = number(eps, "eps", type(self).__name__, "(0, 0.5)")
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(
                ignore_index, int | np.integer)):
            raise TypeError(
                f"SparseCategoricalCrossEntropy: ignore_index must be an integer label value or "
                f"None, got {ignore_index!r}"
            )
        self.ignore_index = None if ignore_index is None else int(ignore_index)

    def check_target(self, pred, target):
        name = "SparseCategoricalCrossEntropy"
        if pred.ndim < 2:
            raise ValueError(f"{name} expected predictions of shape (N, C) or (N, T, C), got "
                             f"{pred.shape}")
        target = np.asarray(target)
        expected = pred.shape[:-1]
        shown = f"({pred.shape[0]},)" if len(expected) == 1 else str(expected)
        if not np.issubdtype(target.dtype, np.integer):
            raise TypeError(
                f"{name} expected integer class labels of shape {shown}, got dtype "
                f"{target.dtype}; cast with y.astype(np.int64), or use CategoricalCrossEntropy "
                "for one-hot targets"
            )
        if target.shape != expected:
            hint = (
                "; these look like one-hot targets: use CategoricalCrossEntropy"
                if target.shape == pred.shape
                else ""
            )
            raise ValueError(f"{name} expected labels of shape {shown}, got {target.shape}{hint}")
        n_classes = pred.shape[-1]
        bad = (target < 0) | (target >= n_classes)
        if self.ignore_index is not None:
            bad &= target != self.ignore_index
        if bad.any():
            flat = int(np.flatnonzero(bad)[0])
            where = np.unravel_index(flat, target.shape)
            index = int(where[0]) if target.ndim == 1 else tuple(int(i) for i in where)
            allowed = "" if self.ignore_index is None else (
                f" (or ignore_index={self.ignore_index})")
            raise ValueError(
                f"{name}: labels must lie in [0, {n_classes}){allowed} for {n_classes} output "
                f"classes; found {target.reshape(-1)[flat]} at index {index}"
            )
        if self.ignore_index is not None and target.size and bool(
                np.all(target == self.ignore_index)):
            raise ValueError(
                f"{name}: every label equals ignore_index={self.ignore_index}, so no position "
                "is left to average over; check the padding of this batch"
            )
        return target

    def _compute(self, pred, labels):
        # (N, …, C) as M rows of C classes (a view; for (N, C) input it is pred itself).
        shape = pred.shape
        pred = pred.reshape(-1, shape[-1])
        labels = labels.reshape(-1)
        ignored = None
        if self.ignore_index is not None:
            ignored = labels == self.ignore_index
            if not ignored.any():
                ignored = None
        if ignored is None:
            n = pred.shape[0]
            rows = np.arange(n)
        else:
            rows = np.flatnonzero(~ignored)
            labels = labels[rows]
            n = len(rows)
        self.last_count = n
        scale = self._scale(n)
        if self.from_logits:
            # log p[n, yₙ] = dₙ,yₙ − log Sₙ and s = e / S, from one exponential (shifted_exp).
            d, e, total = F.shifted_exp(pred)
            value = -scale * float(np.add.reduce(d[rows, labels] - np.log(total[rows, 0])))

            def backward():
                grad = np.divide(e, total)
                grad[rows, labels] -= 1.0
                if ignored is not None:
                    grad[ignored] = 0.0
                grad *= scale
                return grad.reshape(shape)

            return value, backward

        p_true = np.maximum(pred[rows, labels], self.eps)
        value = -scale * float(np.sum(np.log(p_true)))

        def backward():
            grad = np.zeros_like(pred)
            grad[rows, labels] = -scale / p_true * (pred[rows, labels] >= self.eps)
            return grad.reshape(shape)

        return value, backward

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "eps": self.eps,
                "ignore_index": self.ignore_index}


LOSSES = Registry("loss", expected="pass a Loss instance or one of", entries={
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "binary_crossentropy": BinaryCrossEntropy,
    "categorical_crossentropy": CategoricalCrossEntropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossEntropy,
})
LOSS_CLASSES = Registry("loss class", expected="known:", entries=[
    MeanSquaredError, BinaryCrossEntropy, CategoricalCrossEntropy, SparseCategoricalCrossEntropy,
])


def get(identifier) -> Loss:
    """Return a Loss for an instance (as is) or a name such as "sparse_categorical_crossentropy".

    Raises:
        ValueError: for an unknown name.
    """
    if isinstance(identifier, Loss):
        return identifier
    return LOSSES.get(identifier)()


def from_config(class_name: str, config: dict) -> Loss:
    """Rebuild a loss from its class name and ``get_config()``.

    Raises:
        ValueError: for an unknown class, or a config the constructor does not accept.
    """
    return construct(LOSS_CLASSES.get(class_name), config)
