"""Every loss against finite differences and against PyTorch, driven by one table; the fused and
the unfused softmax cross-entropy give the same a − y."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import chainrule as cr
from chainrule import layers, losses
from chainrule.losses import Loss
from helpers import DTYPES, assert_close, rtol_for, to_torch

SEEDS = (0, 1, 2)


def np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_one_hot(y, c, dtype):
    out = np.zeros((len(y), c), dtype)
    out[np.arange(len(y)), y] = 1
    return out


# ---------------------------------------------------------------------- data generators
# Each takes (rng, N, dtype) and returns (pred, target); the class count C is drawn from rng.
# Probabilities stay away from the clip at eps (where the loss has a kink) for the gradcheck.

def regression(rng, n, dtype):
    d = int(rng.integers(1, 5))
    return rng.standard_normal((n, d)).astype(dtype), rng.standard_normal((n, d)).astype(dtype)


def regression_rank3(rng, n, dtype):
    shape = (n, 2, int(rng.integers(1, 4)))
    return rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)


def binary_probs(rng, n, dtype):
    d = int(rng.integers(1, 4))
    p = rng.uniform(0.05, 0.95, (n, d))
    return p.astype(dtype), (rng.random((n, d)) < 0.5).astype(dtype)


def binary_probs_soft(rng, n, dtype):
    p, _ = binary_probs(rng, n, dtype)
    return p, rng.random(p.shape).astype(dtype)


def binary_logits(rng, n, dtype):
    d = int(rng.integers(1, 4))
    return (3 * rng.standard_normal((n, d))).astype(dtype), (rng.random((n, d)) < 0.5).astype(dtype)


def _classes(rng, n):
    c = int(rng.integers(2, 6))
    return c, 2 * rng.standard_normal((n, c)), rng.integers(0, c, size=n)


def onehot_probs(rng, n, dtype):
    c, z, y = _classes(rng, n)
    return np_softmax(z).astype(dtype), np_one_hot(y, c, dtype)


def onehot_logits(rng, n, dtype):
    c, z, y = _classes(rng, n)
    return z.astype(dtype), np_one_hot(y, c, dtype)


def soft_logits(rng, n, dtype):
    c, z, _ = _classes(rng, n)
    return z.astype(dtype), np_softmax(rng.standard_normal((n, c))).astype(dtype)


def unnormalised_logits(rng, n, dtype):
    """Non-negative targets whose rows do not sum to 1: dL/dz = softmax(z) Σ_c t_c − t."""
    c, z, _ = _classes(rng, n)
    return z.astype(dtype), rng.uniform(0.0, 1.0, (n, c)).astype(dtype)


def label_probs(rng, n, dtype):
    _, z, y = _classes(rng, n)
    return np_softmax(z).astype(dtype), y


def label_logits(rng, n, dtype):
    _, z, y = _classes(rng, n)
    return z.astype(dtype), y


# ---------------------------------------------------------------------- torch references
# Each takes (pred, target, our loss) as tensors and returns torch's scalar loss. For the
# probability paths torch gets the same clipped formula as ours.

def reduce(per_sample: torch.Tensor, loss: Loss) -> torch.Tensor:
    return per_sample.mean() if loss.reduction == "mean" else per_sample.sum()


def torch_mse(p, t, loss):
    scale = 0.5 if loss.half else 1.0
    return scale * TF.mse_loss(p, t, reduction=loss.reduction)


def torch_bce_probs(p, t, loss):
    pc = torch.clamp(p, loss.eps, 1 - loss.eps)
    return reduce(-(t * torch.log(pc) + (1 - t) * torch.log(1 - pc)), loss)


def torch_bce_logits(z, t, loss):
    return TF.binary_cross_entropy_with_logits(z, t, reduction=loss.reduction)


def torch_cce_probs(p, t, loss):
    return reduce(-(t * torch.log(torch.clamp(p, min=loss.eps))).sum(1), loss)


def torch_cross_entropy(z, target, loss):
    # Integer targets for the sparse loss, probability targets for the categorical one.
    return TF.cross_entropy(z, target, reduction=loss.reduction)


def torch_scce_probs(p, y, loss):
    p_true = p.gather(1, y[:, None]).squeeze(1)
    return reduce(-torch.log(torch.clamp(p_true, min=loss.eps)), loss)


@dataclass(frozen=True)
class LossCase:
    id: str
    factory: Callable[[], Loss]
    make_data: Callable[[np.random.Generator, int, type], tuple[np.ndarray, np.ndarray]]
    torch_ref: Callable[[torch.Tensor, torch.Tensor, Loss], torch.Tensor]
    # Gradient entries that are differences of terms as large as the array's largest entry and
    # may cancel to near 0 (s_c Σt − t_c with Σt ≠ 1): each term carries its own rounding, so such
    # an entry has no relative accuracy and is compared with atol = rtol · max|torch's gradient|.
    cancels: bool = False


MSE = losses.MeanSquaredError
BCE = losses.BinaryCrossEntropy
CCE = losses.CategoricalCrossEntropy
SCCE = losses.SparseCategoricalCrossEntropy

LOSS_CASES = [
    LossCase("mse", MSE, regression, torch_mse),
    LossCase("mse_sum", lambda: MSE(reduction="sum"), regression, torch_mse),
    LossCase("mse_half", lambda: MSE(half=True), regression, torch_mse),
    LossCase("mse_half_sum", lambda: MSE(half=True, reduction="sum"), regression, torch_mse),
    LossCase("mse_rank3", MSE, regression_rank3, torch_mse),
    LossCase("bce_probs", BCE, binary_probs, torch_bce_probs),
    LossCase("bce_probs_soft_targets", BCE, binary_probs_soft, torch_bce_probs),
    LossCase("bce_probs_sum", lambda: BCE(reduction="sum"), binary_probs, torch_bce_probs),
    LossCase("bce_logits", lambda: BCE(from_logits=True), binary_logits, torch_bce_logits),
    LossCase("bce_logits_sum", lambda: BCE(from_logits=True, reduction="sum"), binary_logits,
             torch_bce_logits),
    LossCase("cce_probs", CCE, onehot_probs, torch_cce_probs),
    LossCase("cce_probs_sum", lambda: CCE(reduction="sum"), onehot_probs, torch_cce_probs),
    LossCase("cce_logits", lambda: CCE(from_logits=True), onehot_logits, torch_cross_entropy),
    LossCase("cce_logits_soft_targets", lambda: CCE(from_logits=True), soft_logits,
             torch_cross_entropy),
    LossCase("cce_logits_unnormalised_targets", lambda: CCE(from_logits=True),
             unnormalised_logits, torch_cross_entropy, cancels=True),
    LossCase("scce_probs", SCCE, label_probs, torch_scce_probs),
    LossCase("scce_logits", lambda: SCCE(from_logits=True), label_logits, torch_cross_entropy),
    LossCase("scce_logits_sum", lambda: SCCE(from_logits=True, reduction="sum"), label_logits,
             torch_cross_entropy),
]
CASE_IDS = [case.id for case in LOSS_CASES]


def make(case: LossCase, dtype, seed: int):
    rng = np.random.default_rng(seed)
    n = 1 if seed == 0 else int(rng.integers(2, 7))
    pred, target = case.make_data(rng, n, dtype)
    return case.factory(), pred, target


def torch_value_and_grad(case, loss, pred, target):
    pred_t = to_torch(pred, requires_grad=True)
    value_t = case.torch_ref(pred_t, to_torch(target), loss)
    value_t.backward()
    return value_t.item(), pred_t.grad


# ---------------------------------------------------------------------- the table
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LOSS_CASES, ids=CASE_IDS)
def test_loss_matches_torch(case, dtype, seed):
    loss, pred, target = make(case, dtype, seed)
    rtol = rtol_for(dtype)
    value = loss(pred, target)
    grad = loss.backward()
    value_t, grad_t = torch_value_and_grad(case, loss, pred, target)
    assert isinstance(value, float)
    assert_close(value, value_t, rtol, f"{case.id} {np.dtype(dtype)} value")
    assert grad.dtype == dtype and grad.shape == pred.shape
    atol = rtol * float(grad_t.abs().max()) if case.cancels else 0.0
    assert_close(grad, grad_t, rtol, f"{case.id} {np.dtype(dtype)} dL/dpred", atol=atol)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", LOSS_CASES, ids=CASE_IDS)
def test_loss_gradcheck_float64(case, seed):
    loss, pred, target = make(case, np.float64, seed)
    report = cr.gradcheck(loss, pred, target, seed=seed)
    entry = report["pred"]
    assert entry.checked == pred.size and entry.kinks == 0, str(report)
    assert report.ok and report.max_rel_error < 1e-6, str(report)


@pytest.mark.parametrize("case", LOSS_CASES, ids=CASE_IDS)
def test_loss_leaves_its_arguments_alone(case):
    loss, pred, target = make(case, np.float32, 1)
    pred_copy, target_copy = pred.copy(), target.copy()
    loss(pred, target)
    grad = loss.backward()
    np.testing.assert_array_equal(pred, pred_copy)
    np.testing.assert_array_equal(target, target_copy)
    assert not np.shares_memory(grad, pred)
    np.testing.assert_array_equal(loss.backward(), grad)


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
    value_t = torch_cross_entropy(z_t, to_torch(target), loss)
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
    value_t, grad_t = torch_value_and_grad(LOSS_CASES[CASE_IDS.index("bce_logits")], loss, z, t)
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
    case = LOSS_CASES[CASE_IDS.index(case_id)]
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
    value_t, grad_t = torch_value_and_grad(case, loss, pred, target)
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
