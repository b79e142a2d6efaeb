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


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """log softmax(z) = z − logsumexp(z) along ``axis``; finite for any finite z."""
    shifted = z - np.max(z, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """softmax(z)_i = exp(z_i − m) / Σ_j exp(z_j − m), m = max_j z_j (same result, no overflow)."""
    e = np.exp(z - np.max(z, axis=axis, keepdims=True))
    e /= np.sum(e, axis=axis, keepdims=True)
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


def one_hot(labels: np.ndarray, num_classes: int, dtype=np.float32) -> np.ndarray:
    """Return the (N, C) one-hot encoding of integer ``labels`` of shape (N,).

    Raises:
        TypeError: if ``labels`` are not integers.
        ValueError: if a label lies outside [0, num_classes).
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"one_hot expects integer labels, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"one_hot: labels must lie in [0, {num_classes}), got values in "
            f"[{labels.min()}, {labels.max()}]"
        )
    out = np.zeros((labels.shape[0], num_classes), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out
