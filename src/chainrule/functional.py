"""Stateless math shared by layers and losses: softmax, log_softmax, logsumexp, sigmoid, one_hot.

Every function keeps its input's floating dtype (no float64 intermediate for float32 input).
"""

from __future__ import annotations

import numpy as np


def logsumexp(z: np.ndarray, axis: int = -1, keepdims: bool = False) -> np.ndarray:
    """log Σ_j exp(z_j) along ``axis``, computed as m + log Σ_j exp(z_j − m) with m = max_j z_j.

    Shifting by the maximum makes the largest exponent exp(0) = 1, so nothing overflows for
    logits of ±1e4 and the sum is at least 1 (its log is finite).
    """
    m = np.max(z, axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(z - m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def shifted_exp(z: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pieces log_softmax and softmax share: with m = max_j z_j along ``axis``,

        d = z − m,   e = exp(d),   S = Σ_j e_j   (keepdims),   so that
        log softmax(z) = d − log S   and   softmax(z) = e / S.

    The largest exponent is exp(0) = 1: nothing overflows, and S ≥ 1. A fused loss takes the
    three at once, to compute its value and later its gradient from one exponential.
    """
    d = z - np.maximum.reduce(z, axis=axis, keepdims=True)
    e = np.exp(d)
    return d, e, np.add.reduce(e, axis=axis, keepdims=True)


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """log softmax(z) = z − logsumexp(z) along ``axis``; finite for any finite z."""
    d, _, total = shifted_exp(z, axis)
    return d - np.log(total)


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """softmax(z)_i = exp(z_i − m) / Σ_j exp(z_j − m), m = max_j z_j (same result, no overflow)."""
    _, e, total = shifted_exp(z, axis)
    e /= total
    return e


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) = 1 / (1 + e^(−z)), evaluated without overflow for |z| up to 1e4 and beyond.

    With e = exp(−|z|) ∈ (0, 1]: σ(z) = 1 / (1 + e) for z ≥ 0 and e / (1 + e) for z < 0.
    Both branches only ever exponentiate a non-positive number.
    """
    e = np.exp(-np.abs(z))
    denom = 1.0 + e
    return np.where(z >= 0, 1.0 / denom, e / denom).astype(z.dtype, copy=False)


def log_sigmoid(z: np.ndarray) -> np.ndarray:
    """log σ(z) = −(max(−z, 0) + log(1 + e^(−|z|))), finite for any finite z."""
    return -(np.maximum(-z, 0) + np.log1p(np.exp(-np.abs(z))))


def one_hot(labels, num_classes: int | None = None, dtype=np.float32) -> np.ndarray:
    """Encode integer class labels as one-hot rows.

    Args:
        labels: integer array of any shape S, values in [0, num_classes).
        num_classes: C; default max(labels) + 1.
        dtype: dtype of the result.

    Returns:
        Array of shape S + (C,) with a 1 at each label's index and 0 elsewhere.

    Raises:
        TypeError: labels are not integers.
        ValueError: a label is negative or >= num_classes.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(
            f"one_hot expected integer labels, got dtype {labels.dtype}; "
            "if the values are whole numbers, cast with labels.astype(np.int64)"
        )
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    elif num_classes < 1:
        raise ValueError(f"one_hot expected num_classes >= 1, got {num_classes}")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        where = np.unravel_index(int(np.flatnonzero(bad)[0]), labels.shape)
        index = tuple(int(i) for i in where)
        shown = index[0] if len(index) == 1 else index
        raise ValueError(
            f"one_hot expected labels in [0, {num_classes}), got {labels[index]} at index "
            f"{shown}; pass a larger num_classes or fix the labels"
        )
    out = np.zeros(labels.shape + (num_classes,), dtype=dtype)
    np.put_along_axis(out, labels[..., None].astype(np.intp), 1, axis=-1)
    return out
