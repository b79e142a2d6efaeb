"""Classification metrics on labels and on model outputs.

Label metrics take integer class labels 0..C-1 and match scikit-learn's definitions with
``labels=range(C)``; ``count_correct`` and ``Accuracy`` work on raw model outputs and are what
``Sequential.compile(metrics=["accuracy"])`` calls every batch.

Shapes: N = samples, C = classes.

For class c, from the counts TP (true c, predicted c), FP (predicted c, true other) and
FN (true c, predicted other):

    precision = TP / (TP + FP)
    recall    = TP / (TP + FN)
    F1        = 2·precision·recall / (precision + recall) = 2·TP / (2·TP + FP + FN)
    support   = TP + FN   (samples whose true class is c)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "Accuracy",
    "accuracy",
    "classification_report",
    "confusion_matrix",
    "count_correct",
    "f1_score",
    "get_metric",
    "log_loss",
    "precision",
    "precision_recall_f1",
    "recall",
    "top_k_accuracy",
]

_AVERAGES = (None, "macro", "micro", "weighted")


# --------------------------------------------------------------------------- validation


def _as_labels(y, name: str) -> np.ndarray:
    """Return ``y`` as a non-empty 1-D int64 array of non-negative whole numbers."""
    y = np.asarray(y)
    if y.ndim != 1:
        hint = "; pass class labels, e.g. scores.argmax(axis=1)" if y.ndim == 2 else ""
        raise ValueError(
            f"{name} must be 1-D class labels of shape (N,), got shape {y.shape}{hint}"
        )
    if y.size == 0:
        raise ValueError(f"{name} is empty; metrics need at least one sample")
    if y.dtype.kind == "f":
        whole = np.isfinite(y) & (y == np.round(y))
        if not whole.all():
            bad = y[~whole][0].item()
            raise ValueError(
                f"{name} must hold integer class labels, found {bad!r} (dtype {y.dtype})"
            )
    elif y.dtype.kind not in "biu":
        raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    y = y.astype(np.int64, copy=False)
    lowest = int(y.min())
    if lowest < 0:
        raise ValueError(f"{name} contains negative label {lowest}; labels must be 0..C-1")
    return y


def _check_lengths(y_true: np.ndarray, other: np.ndarray, other_name: str) -> None:
    if y_true.shape[0] != other.shape[0]:
        raise ValueError(f"y_true has {y_true.shape[0]} entries, {other_name} has {other.shape[0]}")


def _label_pair(y_true, y_pred, num_classes: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate a pair of label arrays and resolve the number of classes C."""
    y_true = _as_labels(y_true, "y_true")
    y_pred = _as_labels(y_pred, "y_pred")
    _check_lengths(y_true, y_pred, "y_pred")
    largest = max(int(y_true.max()), int(y_pred.max()))
    if num_classes is None:
        return y_true, y_pred, largest + 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        top = int(y.max())
        if top >= num_classes:
            raise ValueError(
                f"{name} contains label {top} but num_classes={num_classes} "
                f"(labels 0..{num_classes - 1}); raise num_classes or fix the labels"
            )
    return y_true, y_pred, int(num_classes)


def _scores_for(y_true, scores, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate integer labels (N,) against a finite score matrix (N, C)."""
    y_true = _as_labels(y_true, "y_true")
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"{name} must have shape (N, C), got shape {scores.shape}")
    if scores.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {scores.dtype}")
    if y_true.shape[0] != scores.shape[0]:
        raise ValueError(f"y_true has {y_true.shape[0]} entries, {name} has {scores.shape[0]} rows")
    width = scores.shape[1]
    top = int(y_true.max())
    if top >= width:
        raise ValueError(
            f"y_true contains label {top} but {name} has {width} columns "
            f"(classes 0..{width - 1}); expected {name} of shape ({scores.shape[0]}, >{top})"
        )
    if scores.dtype.kind == "f" and not np.isfinite(scores).all():
        raise ValueError(f"{name} contains NaN or inf")
    return y_true, scores


def _check_zero_division(zero_division) -> float:
    value = float(zero_division)
    if not (math.isnan(value) or 0.0 <= value <= 1.0):
        raise ValueError(f"zero_division must be in [0, 1] or nan, got {zero_division!r}")
    return value


# --------------------------------------------------------------------------- label metrics


def accuracy(y_true, y_pred) -> float:
    """Fraction of samples whose predicted label equals the true label.

    Args:
        y_true: true class labels, shape (N,).
        y_pred: predicted class labels, shape (N,).

    Returns:
        accuracy = (1/N) Σᵢ [y_predᵢ = y_trueᵢ], a float in [0, 1].

    Raises:
        ValueError: if the labels are empty, not 1-D, not integers, negative, or of
            different lengths.
    """
    y_true, y_pred, _ = _label_pair(y_true, y_pred, None)
    return float(np.count_nonzero(y_true == y_pred)) / y_true.shape[0]


def top_k_accuracy(y_true, scores, k: int = 5) -> float:
    """Fraction of samples whose true class is among the k highest scores.

    Ties are broken like scikit-learn's ``top_k_accuracy_score``: among equal scores the
    class with the larger index ranks first. The rank of the true class t in row i is

        rankᵢ = #{j : sᵢⱼ > sᵢₜ} + #{j > t : sᵢⱼ = sᵢₜ}

    and the sample is a hit when rankᵢ < k; this needs no sort, O(N·C).

    Args:
        y_true: true class labels, shape (N,).
        scores: scores, logits or probabilities, shape (N, C); higher means more likely.
        k: how many top-ranked classes count as a hit; k >= C gives 1.0.

    Returns:
        The top-k accuracy, a float in [0, 1].

    Raises:
        ValueError: for invalid labels, ``scores`` not of shape (N, C) with C > max label,
            non-finite scores, or k < 1.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    y_true, scores = _scores_for(y_true, scores, "scores")
    n, c = scores.shape
    if k >= c:
        return 1.0
    true_score = scores[np.arange(n), y_true][:, None]
    higher = np.count_nonzero(scores > true_score, axis=1)
    tied_after = np.count_nonzero((scores == true_score) & (np.arange(c) > y_true[:, None]), axis=1)
    return float(np.count_nonzero(higher + tied_after < k)) / n


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """Count matrix M with M[i, j] = number of samples of true class i predicted as j.

    Args:
        y_true: true class labels, shape (N,).
        y_pred: predicted class labels, shape (N,).
        num_classes: C; defaults to max(label) + 1 over both arrays.

    Returns:
        int64 array of shape (C, C): rows are true classes, columns predicted classes.

    Raises:
        ValueError: for invalid labels or a label >= num_classes.
    """
    y_true, y_pred, c = _label_pair(y_true, y_pred, num_classes)
    # Each (true, pred) pair gets its own bin true·C + pred of a flattened C×C matrix.
    counts = np.bincount(y_true * c + y_pred, minlength=c * c)
    return counts.reshape(c, c).astype(np.int64, copy=False)


def _divide(numerator: np.ndarray, denominator: np.ndarray, zero_division: float) -> np.ndarray:
    """numerator / denominator elementwise, with ``zero_division`` where denominator is 0."""
    out = np.full(numerator.shape, zero_division, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _nanaverage(values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean of ``values`` (optionally weighted) ignoring NaNs, like scikit-learn."""
    keep = ~np.isnan(values)
    if not keep.any():
        return math.nan
    values = values[keep]
    if weights is not None:
        weights = weights[keep]
        if weights.sum() > 0:
            return float(np.average(values, weights=weights))
    return float(values.mean())


def precision_recall_f1(
    y_true,
    y_pred,
    average: str | None = None,
    num_classes: int | None = None,
    zero_division: float = 0.0,
):
    """Precision, recall, F1 and support per class, or averaged over classes.

    Per class c: precision = TP / (TP + FP), recall = TP / (TP + FN),
    F1 = 2·TP / (2·TP + FP + FN), support = TP + FN. A ratio whose denominator is 0
    (class never predicted, never present, or both) is set to ``zero_division``.

    Averages over the C classes 0..C-1 (scikit-learn with ``labels=range(C)``):
        "macro": unweighted mean of the per-class values (NaNs ignored);
        "weighted": mean weighted by support;
        "micro": ratios of the summed TP, FP, FN; for single-label data every score
            equals the accuracy.

    Args:
        y_true: true class labels, shape (N,).
        y_pred: predicted class labels, shape (N,).
        average: None, "macro", "micro" or "weighted".
        num_classes: C; defaults to max(label) + 1 over both arrays.
        zero_division: value for undefined ratios, in [0, 1] or nan (nan values are left
            out of the averages).

    Returns:
        (precision, recall, f1, support). With ``average=None``: float64 arrays of shape
        (C,) and an int64 support array of shape (C,). Otherwise: three floats and the
        total support N as an int.

    Raises:
        ValueError: for invalid labels, an unknown ``average`` or a bad ``zero_division``.
    """
    if average not in _AVERAGES:
        raise ValueError(f"average must be one of {_AVERAGES}, got {average!r}")
    zero_division = _check_zero_division(zero_division)
    y_true, y_pred, c = _label_pair(y_true, y_pred, num_classes)

    tp = np.bincount(y_true[y_true == y_pred], minlength=c)
    pred_count = np.bincount(y_pred, minlength=c)  # TP + FP
    support = np.bincount(y_true, minlength=c)  # TP + FN
    true_count = support
    if average == "micro":
        # One pooled "class": summed TP over summed TP + FP (= N) and TP + FN (= N).
        tp, pred_count, true_count = (
            tp.sum(keepdims=True),
            pred_count.sum(keepdims=True),
            true_count.sum(keepdims=True),
        )

    prec = _divide(tp, pred_count, zero_division)
    rec = _divide(tp, true_count, zero_division)
    f1 = _divide(2 * tp, pred_count + true_count, zero_division)

    if average is None:
        return prec, rec, f1, support.astype(np.int64, copy=False)
    weights = support if average == "weighted" else None
    total = int(y_true.shape[0])
    return _nanaverage(prec, weights), _nanaverage(rec, weights), _nanaverage(f1, weights), total


def _one_of_the_scores(which: int, name: str, formula: str):
    """precision, recall or f1_score: entry ``which`` of ``precision_recall_f1``."""

    def score(y_true, y_pred, average: str | None = "macro", num_classes: int | None = None,
              zero_division: float = 0.0):
        return precision_recall_f1(y_true, y_pred, average, num_classes, zero_division)[which]

    score.__name__ = score.__qualname__ = name
    score.__doc__ = (f"{formula}; see ``precision_recall_f1`` for arguments and errors.\n\n"
                     "    Returns:\n        A float, or a float64 array of shape (C,) when "
                     "``average=None``.\n    ")
    return score


precision = _one_of_the_scores(0, "precision", "Precision TP / (TP + FP)")
recall = _one_of_the_scores(1, "recall", "Recall TP / (TP + FN)")
f1_score = _one_of_the_scores(2, "f1_score", "F1 = 2·TP / (2·TP + FP + FN)")


def log_loss(y_true, probs, eps: float = 1e-15) -> float:
    """Mean negative log-probability of the true class (cross-entropy).

        log_loss = -(1/N) Σᵢ log clip(pᵢ,yᵢ, eps, 1 - eps)

    Probabilities are clipped to [eps, 1 - eps] like scikit-learn, so a zero probability
    costs -log(eps) instead of infinity. (scikit-learn >= 1.5 clips at the machine epsilon
    of the dtype; pass ``eps=np.finfo(probs.dtype).eps`` to reproduce it exactly.)

    Args:
        y_true: true class labels, shape (N,).
        probs: predicted probabilities, shape (N, C), each row summing to 1.
        eps: clipping bound, 0 < eps < 0.5.

    Returns:
        The mean log loss in nats, a float >= 0.

    Raises:
        ValueError: for invalid labels, ``probs`` not of shape (N, C) with C > max label,
            values outside [0, 1] or rows not summing to 1 (e.g. logits passed instead of
            softmax probabilities).
    """
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps!r}")
    probs = np.asarray(probs)
    if probs.ndim == 1:
        raise ValueError(
            f"probs must have shape (N, C), got shape {probs.shape}; for a binary "
            "positive-class probability p pass np.stack([1 - p, p], axis=1)"
        )
    y_true, probs = _scores_for(y_true, probs, "probs")
    if probs.dtype.kind != "f":
        probs = probs.astype(np.float64)
    lo, hi = probs.min(), probs.max()
    if lo < 0 or hi > 1:
        raise ValueError(
            f"probs must lie in [0, 1], got values in [{lo:g}, {hi:g}]; "
            "apply softmax to logits first"
        )
    row_sums = probs.sum(axis=1, dtype=np.float64)
    tol = math.sqrt(float(np.finfo(probs.dtype).eps))
    off = np.abs(row_sums - 1.0) > tol
    if off.any():
        row = int(np.argmax(off))
        raise ValueError(
            f"probs rows must sum to 1, row {row} sums to {row_sums[row]:g}; "
            "apply softmax to logits first"
        )
    # Only the true-class column survives the one-hot sum, so clip just those N values.
    p = probs[np.arange(probs.shape[0]), y_true].astype(np.float64)
    return float(-np.mean(np.log(np.clip(p, eps, 1.0 - eps))))


def classification_report(y_true, y_pred, target_names=None, digits: int = 4) -> str:
    """Text table of per-class precision, recall, F1 and support, like scikit-learn's.

    One row per class 0..C-1, then "accuracy", "macro avg" and "weighted avg" rows.
    Undefined ratios are reported as 0.

    Args:
        y_true: true class labels, shape (N,).
        y_pred: predicted class labels, shape (N,).
        target_names: C display names for classes 0..C-1; C defaults to max(label) + 1.
        digits: decimal places of the ratios.

    Returns:
        The table as a multi-line string.

    Raises:
        ValueError: for invalid labels, or a label >= len(target_names).
    """
    if target_names is not None:
        target_names = [str(name) for name in target_names]
        num_classes = len(target_names)
        if num_classes == 0:
            raise ValueError("target_names is empty; give one name per class")
    else:
        num_classes = None
    prec, rec, f1, support = precision_recall_f1(y_true, y_pred, None, num_classes)
    c = prec.shape[0]
    if target_names is None:
        target_names = [str(i) for i in range(c)]
    n = int(support.sum())

    headers = ("precision", "recall", "f1-score", "support")
    width = max(max(len(name) for name in target_names), len("weighted avg"), digits)
    row = f"{{:>{width}s}} " + f" {{:>9.{digits}f}}" * 3 + " {:>9}"
    lines = [f"{'':>{width}s} " + "".join(f" {h:>9}" for h in headers), ""]
    lines += [
        row.format(*cells) for cells in zip(target_names, prec, rec, f1, support, strict=True)
    ]
    lines.append("")
    acc = accuracy(y_true, y_pred)
    lines.append(f"{'accuracy':>{width}s} " + " " * 20 + f" {acc:>9.{digits}f} {n:>9}")
    lines.append(row.format("macro avg", prec.mean(), rec.mean(), f1.mean(), n))
    weights = support / n
    lines.append(row.format("weighted avg", prec @ weights, rec @ weights, f1 @ weights, n))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- model outputs


def count_correct(output, target, threshold: float = 0.5) -> int:
    """Number of correct predictions in a batch of model outputs.

    Multi-class output (N, C), C > 1 (scores, logits or probabilities): the prediction is
    argmax over the last axis; ``target`` is integer labels (N,) or (N, 1), or one-hot /
    soft targets (N, C) whose argmax is the true class.

    Binary output (N,) or (N, 1): the prediction is ``output > threshold`` (use
    threshold=0 for logits); ``target`` is 0/1 (bool, int or float) of shape (N,) or
    (N, 1) and counts as positive when > 0.5.

    Only shapes and dtypes are checked, so the per-batch cost stays a few microseconds.

    Args:
        output: model output, shape (N, C), (N,) or (N, 1).
        target: labels or one-hot targets as above.
        threshold: decision threshold for binary outputs.

    Returns:
        The number of correct predictions, an int in [0, N].

    Raises:
        ValueError: if ``output`` or ``target`` has a shape that does not fit.
    """
    output = np.asarray(output)
    target = np.asarray(target)
    if output.ndim == 2 and output.shape[1] > 1:
        n = output.shape[0]
        pred = output.argmax(axis=1)
        if target.shape == output.shape:
            return int(np.count_nonzero(pred == target.argmax(axis=1)))
        if target.shape in ((n,), (n, 1)) and target.dtype.kind in "biu":
            return int(np.count_nonzero(pred == target.reshape(n)))
        if target.shape in ((n,), (n, 1)):
            raise ValueError(
                f"count_correct expected integer class labels, received target of dtype "
                f"{target.dtype}; cast with target.astype(np.int64)"
            )
        raise ValueError(
            f"count_correct expected target of shape ({n},) integer labels or "
            f"{output.shape} one-hot, received target of shape {target.shape} "
            f"for output of shape {output.shape}"
        )
    if output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1):
        n = output.shape[0]
        if target.shape in ((n,), (n, 1)):
            pred = output.reshape(n) > threshold
            return int(np.count_nonzero(pred == (target.reshape(n) > 0.5)))
        raise ValueError(
            f"count_correct expected binary target of shape ({n},) or ({n}, 1), received "
            f"target of shape {target.shape} for output of shape {output.shape}"
        )
    raise ValueError(
        "count_correct expected output of shape (N, C) scores or (N,)/(N, 1) binary "
        f"scores, received output of shape {output.shape}"
    )


class Accuracy:
    """Accuracy metric for ``Sequential.compile(metrics=["accuracy"])``.

    The model sums ``count`` over the batches and divides by the number of samples, so
    the epoch accuracy is exact whatever the batch sizes.
    """

    name = "accuracy"

    def count(self, output, target, threshold: float = 0.5) -> int:
        """Number of correct predictions in a batch; see ``count_correct``."""
        return count_correct(output, target, threshold)

    def __repr__(self) -> str:
        return "Accuracy()"


_METRICS = {"accuracy": Accuracy, "acc": Accuracy}


def get_metric(name) -> Accuracy:
    """Resolve a compile-time metric name to a metric object.

    Args:
        name: "accuracy" or "acc" (case-insensitive), or an ``Accuracy`` instance,
            returned as is.

    Returns:
        A metric object with ``.name`` and ``.count(output, target, threshold)``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if isinstance(name, Accuracy):
        return name
    known = ", ".join(repr(key) for key in sorted(_METRICS))
    if not isinstance(name, str) or name.lower() not in _METRICS:
        raise ValueError(f"Unknown metric {name!r}; known metrics: {known}")
    return _METRICS[name.lower()]()
