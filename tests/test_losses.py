"""Loss facts beyond the table (tests/cases.py, where every loss meets gradcheck and torch):
logits of ±1e4, probabilities beyond the clip, the fused and the unfused softmax cross-entropy
giving the same a − y, the 2-D sparse loss bit for bit as before ignore_index, error messages."""

from __future__ import annotations

import re

import numpy as np
import pytest

import chainrule as cr
from cases import CASES, np_one_hot, np_softmax
from chainrule import layers, losses
from helpers import DTYPES, assert_close, rtol_for, to_torch
from torch_refs import torch_bce_logits, torch_cross_entropy

SEEDS = (0, 1, 2)
ROWS = {case.id: case for case in CASES}
MSE = losses.MeanSquaredError
BCE = losses.BinaryCrossEntropy
CCE = losses.CategoricalCrossEntropy
SCCE = losses.SparseCategoricalCrossEntropy


def torch_value_and_grad(torch_ref, loss, pred, target):
    """torch's loss value and dL/dpred, from a reference of the table (tests/cases.py)."""
    pred_t = to_torch(pred, requires_grad=True)
    value_t = torch_ref(loss, pred_t, to_torch(target))
    value_t.backward()
    return value_t.item(), pred_t.grad


# ---------------------------------------------------------------------- logits of ±1e4
# N = 4 (and N·D = 8 for BCE) is a power of two, so dividing by it is exact and "exactly" below
# means bit for bit.
EXTREME_Z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0], [0.0, 1.0, -1e4], [1e4, 1e4, -1e4]])
EXTREME_Y = np.array([1, 1, 0, 2])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sparse", [True, False], ids=["scce_logits", "cce_logits"])
def test_softmax_cross_entropy_from_logits_at_1e4(sparse, dtype):
    z = EXTREME_Z.astype(dtype)
    onehot = np_one_hot(EXTREME_Y, 3, dtype)
    loss = SCCE(from_logits=True) if sparse else CCE(from_logits=True)
    target = EXTREME_Y if sparse else onehot
    name = type(loss).__name__
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = loss(z, target)
        grad = loss.backward()
    assert np.isfinite(value) and np.isfinite(grad).all()
    assert grad.dtype == dtype
    expected = (np_softmax(z) - onehot) / 4
    np.testing.assert_array_equal(grad, expected)
    # Row by row, −log softmax(z)_y = logsumexp(z) − z_y = 2e4, 0, log(1 + e), 2e4 + log 2.
    exact = (2e4 + 0.0 + np.log1p(np.e) + 2e4 + np.log(2.0)) / 4
    assert_close(value, exact, rtol_for(dtype), f"{name} value")

    z_t = to_torch(z, requires_grad=True)
    value_t = torch_cross_entropy(loss, z_t, to_torch(target))
    value_t.backward()
    assert_close(value, value_t.item(), rtol_for(dtype), f"{name} value vs torch")
    assert_close(grad, z_t.grad, rtol_for(dtype), f"{name} dL/dz vs torch")

    report = cr.gradcheck(loss, EXTREME_Z, target)
    assert report["pred"].kinks == 0, str(report)
    assert report.ok and report.max_rel_error < 1e-6, str(report)


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_from_logits_at_1e4(dtype):
    z = np.array([[1e4, -1e4], [-1e4, 1e4], [50.0, -3.0], [0.0, 2.0]], dtype=dtype)
    t = np.array([[1, 1], [1, 0], [0, 1], [1, 0]], dtype=dtype)
    loss = BCE(from_logits=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = loss(z, t)
        grad = loss.backward()
    assert np.isfinite(value) and np.isfinite(grad).all() and grad.dtype == dtype
    e = np.exp(-np.abs(z))
    sigma = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    np.testing.assert_array_equal(grad, (sigma - t) / 8)
    value_t, grad_t = torch_value_and_grad(torch_bce_logits, loss, z, t)
    assert_close(value, value_t, rtol_for(dtype), "bce_logits value at ±1e4")
    assert_close(grad, grad_t, rtol_for(dtype), "bce_logits dL/dz at ±1e4")
    report = cr.gradcheck(loss, z, t)
    assert report["pred"].kinks == 0, str(report)
    assert report.ok and report.max_rel_error < 1e-6, str(report)


# ---------------------------------------------------------------------- clipped probabilities
CLIPPED_P = np.array([[1e-9, 0.6, 0.4], [0.3, 0.0, 0.7], [1.0, 0.0, 0.0], [0.25, 0.5, 0.25]])
CLIPPED_Y = np.array([0, 1, 0, 2])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case_id", ["bce_probs", "cce_probs", "scce_probs"])
def test_probabilities_beyond_the_clip_match_torch_clamp(case_id, dtype):
    """Below eps (and above 1 − eps for BCE) the clipped loss is flat: value log(eps), gradient 0,
    exactly as torch.clamp back-propagates."""
    case = ROWS[case_id]
    pred = CLIPPED_P.astype(dtype)
    if case_id == "scce_probs":
        target = CLIPPED_Y
    elif case_id == "cce_probs":
        target = np_one_hot(CLIPPED_Y, 3, dtype)
    else:
        target = (np.arange(12).reshape(4, 3) % 2).astype(dtype)
    loss = case.factory()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = loss(pred, target)
        grad = loss.backward()
    assert np.isfinite(value) and np.isfinite(grad).all() and grad.dtype == dtype
    value_t, grad_t = torch_value_and_grad(case.torch_ref, loss, pred, target)
    assert_close(value, value_t, rtol_for(dtype), f"{case_id} value with clipped entries")
    assert_close(grad, grad_t, rtol_for(dtype), f"{case_id} gradient with clipped entries")
    assert grad[0, 0] == 0.0 and grad[1, 1] == 0.0


# ---------------------------------------------------------------------- fused = unfused = a − y
def unfused_gradient(z, y):
    """Softmax layer, then cross-entropy on its probabilities, back-propagated through both."""
    softmax = layers.Softmax()
    a = softmax.forward(z, training=True)
    loss = CCE()
    value = loss(a, np_one_hot(y, z.shape[1], z.dtype))
    return value, softmax.backward(loss.backward())


@pytest.mark.parametrize("seed", SEEDS)
def test_fused_and_unfused_paths_give_a_minus_y(seed):
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(1, 7)), int(rng.integers(2, 6))
    z = 2 * rng.standard_normal((n, c))
    y = rng.integers(0, c, size=n)
    direct = (np_softmax(z) - np_one_hot(y, c, np.float64)) / n

    value_unfused, grad_unfused = unfused_gradient(z, y)
    sparse = SCCE(from_logits=True)
    value_sparse = sparse(z, y)
    categorical = CCE(from_logits=True)
    value_categorical = categorical(z, np_one_hot(y, c, np.float64))

    assert_close(grad_unfused, direct, 1e-6, "unfused dL/dz vs (softmax(z) − onehot(y)) / N")
    assert_close(sparse.backward(), direct, 1e-6, "SparseCCE(from_logits) dL/dz vs a − y")
    assert_close(categorical.backward(), direct, 1e-6, "CCE(from_logits) dL/dz vs a − y")
    assert_close(grad_unfused, sparse.backward(), 1e-6, "unfused vs fused dL/dz")
    assert value_unfused == pytest.approx(value_sparse, rel=1e-10)
    assert value_categorical == pytest.approx(value_sparse, rel=1e-10)


def test_fused_finite_and_unfused_bounded_at_1e4():
    z, y = EXTREME_Z, EXTREME_Y
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value_unfused, grad_unfused = unfused_gradient(z, y)
        fused = SCCE(from_logits=True)
        value_fused = fused(z, y)
        grad_fused = fused.backward()
    assert np.isfinite(value_fused) and np.isfinite(grad_fused).all()
    np.testing.assert_array_equal(grad_fused, (np_softmax(z) - np_one_hot(y, 3, np.float64)) / 4)
    # The unfused path clips a = 0 at eps: its value saturates at −log(eps) per row and the
    # clipped rows get no gradient, but nothing is NaN or unbounded.
    assert np.isfinite(value_unfused) and not np.isnan(grad_unfused).any()
    assert np.abs(grad_unfused).max() <= 1.0
    assert value_unfused <= -np.log(1e-7) + 1e-9


# ---------------------------------------------------------------------- sparse: 2-D bits, sequences
def old_sparse_ce(pred, labels, from_logits, reduction, eps=1e-7):
    """The 2-D SparseCategoricalCrossEntropy before ignore_index, verbatim: the new code must
    give exactly these bits."""
    n = pred.shape[0]
    rows = np.arange(n)
    scale = 1.0 / n if reduction == "mean" else 1.0
    if from_logits:
        shifted = pred - np.max(pred, axis=-1, keepdims=True)
        e = np.exp(shifted)
        sum_e = np.sum(e, axis=-1)
        value = -scale * float(np.sum(shifted[rows, labels] - np.log(sum_e)))
        grad = e / sum_e[:, None]
        grad[rows, labels] -= 1.0
        grad *= scale
        return value, grad
    p_true = np.maximum(pred[rows, labels], eps)
    value = -scale * float(np.sum(np.log(p_true)))
    grad = np.zeros_like(pred)
    grad[rows, labels] = -scale / p_true * (pred[rows, labels] >= eps)
    return value, grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("ignore_index", [None, -100])
def test_two_dimensional_loss_is_bit_identical(dtype, from_logits, reduction, ignore_index):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((7, 5)).astype(dtype)
    pred = z if from_logits else (np.exp(z) / np.exp(z).sum(-1, keepdims=True)).astype(dtype)
    labels = rng.integers(0, 5, 7)
    loss = SCCE(from_logits=from_logits, reduction=reduction, ignore_index=ignore_index)
    value, grad = loss(pred, labels), loss.backward()
    old_value, old_grad = old_sparse_ce(pred, labels, from_logits, reduction)
    assert value == old_value
    assert grad.dtype == old_grad.dtype
    np.testing.assert_array_equal(grad, old_grad)


def test_sequence_loss_errors_and_config():
    z = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=re.escape(
            "SparseCategoricalCrossEntropy: labels must lie in [0, 4) (or ignore_index=-100) "
            "for 4 output classes; found 7 at index (1, 2)")):
        SCCE(ignore_index=-100)(z, np.array([[0, 1, -100], [2, 3, 7]]))
    with pytest.raises(ValueError, match=r"found -100 at index \(0, 2\)"):
        SCCE()(z, np.array([[0, 1, -100], [2, 3, 1]]))
    with pytest.raises(ValueError, match="every label equals ignore_index=-100, so no position is "
                                         "left to average over"):
        SCCE(from_logits=True, ignore_index=-100)(z, np.full((2, 3), -100))
    with pytest.raises(ValueError, match=re.escape("expected labels of shape (2, 3), got (2,)")):
        SCCE()(z, np.array([0, 1]))
    with pytest.raises(TypeError, match="ignore_index must be an integer label value or None"):
        SCCE(ignore_index=0.5)
    loss = SCCE(from_logits=True, ignore_index=-100)
    assert loss.get_config()["ignore_index"] == -100
    again = cr.losses.from_config("SparseCategoricalCrossEntropy", loss.get_config())
    assert again.ignore_index == -100 and again.from_logits


# ---------------------------------------------------------------------- error messages
def test_sparse_labels_outside_range():
    z = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=re.escape(
            "SparseCategoricalCrossEntropy: labels must lie in [0, 4) for 4 output classes; "
            "found 4 at index 2")):
        SCCE(from_logits=True)(z, np.array([0, 3, 4]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\) .* found -1 at index 0"):
        SCCE()(z, np.array([-1, 0, 1]))


def test_sparse_float_labels():
    with pytest.raises(TypeError, match=re.escape(
            "SparseCategoricalCrossEntropy expected integer class labels of shape (2,), got "
            "dtype float64; cast with y.astype(np.int64)")):
        SCCE()(np.full((2, 3), 1 / 3), np.array([0.0, 1.0]))


def test_sparse_given_one_hot_targets():
    with pytest.raises(ValueError, match=r"expected labels of shape \(2,\), got \(2, 3\); these "
                                         r"look like one-hot targets: use CategoricalCrossEntropy"):
        SCCE()(np.full((2, 3), 1 / 3), np.eye(3, dtype=np.int64)[:2])


def test_one_hot_targets_of_wrong_width():
    with pytest.raises(ValueError, match=re.escape(
            "CategoricalCrossEntropy expected one-hot targets of shape (2, 3), got (2, 4); "
            "for integer labels use SparseCategoricalCrossEntropy")):
        CCE(from_logits=True)(np.zeros((2, 3)), np.eye(4)[:2])
    with pytest.raises(ValueError, match=r"one-hot targets of shape \(2, 3\), got \(2,\)"):
        CCE()(np.full((2, 3), 1 / 3), np.array([0, 1]))


def test_binary_targets_outside_unit_interval():
    with pytest.raises(ValueError, match=r"BinaryCrossEntropy expected targets in \[0, 1\], got "
                                         r"values in \[0.0, 2.0\]"):
        BCE()(np.full((2, 1), 0.5), np.array([[0.0], [2.0]]))


@pytest.mark.parametrize("loss", [MSE(), BCE(), CCE(), SCCE()], ids=lambda x: type(x).__name__)
def test_integer_predictions_and_empty_batch(loss):
    with pytest.raises(TypeError, match="expected float32 or float64 predictions, got int64"):
        loss(np.zeros((2, 3), np.int64), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"expected a non-empty batch of predictions, got shape "
                                         r"\(0, 3\)"):
        loss(np.zeros((0, 3)), np.zeros((0, 3)))


def test_backward_before_call():
    with pytest.raises(RuntimeError, match=r"MeanSquaredError: call loss\(pred, target\) before "
                                           r"backward\(\)"):
        MSE().backward()


def test_mse_target_shape_and_nan():
    with pytest.raises(ValueError, match=r"expected target of shape \(2, 3\) \(the prediction's\), "
                                         r"got \(3, 2\)"):
        MSE()(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="target contains NaN or inf"):
        MSE()(np.zeros((1, 2)), np.array([[0.0, np.nan]]))


def test_unknown_reduction_and_name():
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'sum'\), got 'avg'"):
        MSE(reduction="avg")
    with pytest.raises(ValueError, match=r"unknown loss 'crossentropy'; pass a Loss instance or"):
        losses.get("crossentropy")
