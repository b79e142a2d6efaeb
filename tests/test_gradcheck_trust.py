"""The gradient checker cannot be fooled: a table of planted wrong backwards that must fail and
planted correct ones at awkward points (tiny probabilities, logits of ±1e4, inputs exactly at a
kink, long reductions) that must pass; the checker clones through the object's own class."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import chainrule as cr
from chainrule import layers, losses
from helpers import assert_close, assert_close_to_scale, to_numpy, to_torch

# ---------------------------------------------------------------------- planted wrong backwards
#: The review's case: the two entries that carry gradient sit at probabilities 1e-3 and 2e-3.
P_REVIEW = np.array([[1e-3, 0.5, 0.499], [0.3, 2e-3, 0.698]])
T_REVIEW = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


class CCEInverseSquare(losses.CategoricalCrossEntropy):
    """dL/dp = −t/p² instead of −t/p."""

    def _compute(self, pred, target):
        value, _ = super()._compute(pred, target)
        p = np.maximum(pred, self.eps)
        return value, lambda: -(target / p**2) * self._scale(pred.shape[0])


class MSEMissingMean(losses.MeanSquaredError):
    """dL/dpred = 2 (pred − target): the 1/n of the mean forgotten."""

    def _compute(self, pred, target):
        value, _ = super()._compute(pred, target)
        return value, lambda: 2.0 * (pred - target)


class SCCEMissingMean(losses.SparseCategoricalCrossEntropy):
    """dL/dz = softmax(z) − Y: the 1/N of the mean forgotten."""

    def _compute(self, pred, labels):
        value, backward = super()._compute(pred, labels)
        return value, lambda: backward() * pred.shape[0]


class DenseOneSignFlipped(layers.Dense):
    """dL/dW with the sign of one entry flipped, (2, 3) of a (12, 15) W — not its largest."""

    def _backward(self, grad_y, need_input_grad):
        grad_x = super()._backward(grad_y, need_input_grad)
        self.W.grad[2, 3] *= -1.0
        return grad_x


class DenseTransposedSquare(layers.Dense):
    """dL/dW = gᵀ x: the right shape only because W is square."""

    def _backward(self, grad_y, need_input_grad):
        grad_x = super()._backward(grad_y, need_input_grad)
        self.W.grad = self.W.grad.T.copy()
        return grad_x


class SigmoidTimesY(layers.Sigmoid):
    """dL/dz = g · y instead of g · y (1 − y)."""

    def _backward(self, grad_y, need_input_grad):
        return grad_y * self.cache


class DenseOffBy1e4(layers.Dense):
    """dL/dW too large by one part in 10⁴."""

    def _backward(self, grad_y, need_input_grad):
        grad_x = super()._backward(grad_y, need_input_grad)
        self.W.grad = self.W.grad * (1.0 + 1e-4)
        return grad_x


class TanhOffBy1e4(layers.Tanh):
    """dL/dz too small by one part in 10⁴."""

    def _backward(self, grad_y, need_input_grad):
        return super()._backward(grad_y, need_input_grad) * (1.0 - 1e-4)


class ReLUMaskAtLeastZero(layers.ReLU):
    """The mask z ≥ 0 instead of z > 0: different only where an input is exactly 0."""

    def _forward(self, x, training):
        y = super()._forward(x, training)
        if training:
            self.cache = x >= 0
        return y


def dense(cls, units, d, seed=0):
    layer = cls(units)
    layer.build((d,), rng=np.random.default_rng(seed), dtype=np.float64)
    return layer


def normal(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


WRONG = [
    # (id, subject factory, arguments, arrays that must fail)
    ("cce_inverse_square_at_1e-3", CCEInverseSquare, (P_REVIEW, T_REVIEW), {"pred"}),
    ("mse_missing_1_over_n", MSEMissingMean, (normal(4, 3), normal(4, 3, seed=1)), {"pred"}),
    ("scce_missing_1_over_N", lambda: SCCEMissingMean(from_logits=True),
     (normal(5, 4), np.array([0, 3, 1, 1, 2])), {"pred"}),
    ("dense_sign_of_one_entry_of_180", lambda: dense(DenseOneSignFlipped, 15, 12),
     (normal(6, 12),), {"W"}),
    ("dense_dW_transposed_square_W", lambda: dense(DenseTransposedSquare, 4, 4),
     (normal(5, 4),), {"W"}),
    ("sigmoid_y_for_y_1_minus_y", SigmoidTimesY, (normal(4, 5),), {"input"}),
    ("dense_dW_off_by_1e-4", lambda: dense(DenseOffBy1e4, 3, 4), (normal(5, 4),), {"W"}),
    ("tanh_off_by_1e-4", TanhOffBy1e4, (normal(4, 5),), {"input"}),
]


@pytest.mark.parametrize(("factory", "args", "failing"), [row[1:] for row in WRONG],
                         ids=[row[0] for row in WRONG])
def test_every_planted_wrong_backward_fails(factory, args, failing):
    report = cr.gradcheck(factory(), *args)
    assert not report.ok, str(report)
    assert {e.name for e in report.entries if not e.ok} == failing, str(report)
    for name in failing:
        entry = report[name]
        assert entry.failed >= 1 and entry.max_rel_error > entry.tol, str(report)
        assert entry.kinks == 0, str(report)
        assert f"{name}: {entry.failed} of {entry.checked} entries differ" in str(report)


def test_the_review_case_names_both_values():
    report = cr.gradcheck(CCEInverseSquare(), P_REVIEW, T_REVIEW)
    entry = report["pred"]
    assert entry.failed == 2 and entry.kinks == 0
    assert entry.worst_index in {(0, 0), (1, 1)}
    p = P_REVIEW[entry.worst_index]
    assert entry.analytic == pytest.approx(-1 / p**2 / 2, rel=1e-12)
    assert entry.numeric == pytest.approx(-1 / p / 2, rel=1e-8)


def test_one_wrong_entry_of_many_is_found_and_located():
    report = cr.gradcheck(dense(DenseOneSignFlipped, 15, 12), normal(6, 12))
    entry = report["W"]
    assert entry.checked == 180 and entry.failed == 1
    assert entry.worst_index == (2, 3)
    assert entry.analytic == pytest.approx(-entry.numeric, rel=1e-8)


def test_an_error_of_one_part_in_1e4_is_far_above_what_the_check_resolves():
    report = cr.gradcheck(dense(DenseOffBy1e4, 3, 4), normal(5, 4))
    entry = report["W"]
    assert entry.failed == entry.checked == 12
    assert entry.max_rel_error == pytest.approx(1e-4, rel=1e-3)
    assert entry.fd_error < 1e-8, str(report)


# ---------------------------------------------------------------------- planted correct ones
def logits_pm_1e4():
    return np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0], [0.0, 1.0, -1e4], [1e4, 1e4, -1e4]])


RIGHT = [
    # (id, subject factory, arguments)
    ("cce_probabilities_1e-6", losses.CategoricalCrossEntropy,
     (np.array([[1e-6, 0.5, 0.5 - 1e-6], [0.3, 2e-3, 0.698]]), T_REVIEW)),
    ("cce_the_review_case", losses.CategoricalCrossEntropy, (P_REVIEW, T_REVIEW)),
    ("scce_probabilities_1e-6", losses.SparseCategoricalCrossEntropy,
     (np.array([[1e-6, 0.6, 0.4 - 1e-6], [0.25, 0.75 - 3e-6, 3e-6]]), np.array([0, 2]))),
    ("bce_probabilities_1e-6_and_1-1e-6", losses.BinaryCrossEntropy,
     (np.array([[1e-6, 1 - 1e-6], [0.3, 2e-5]]), np.array([[1.0, 0.0], [1.0, 1.0]]))),
    ("scce_logits_pm_1e4", lambda: losses.SparseCategoricalCrossEntropy(from_logits=True),
     (logits_pm_1e4(), np.array([1, 1, 0, 2]))),
    ("cce_logits_pm_1e4", lambda: losses.CategoricalCrossEntropy(from_logits=True),
     (logits_pm_1e4(), np.eye(3)[[1, 1, 0, 2]])),
    ("bce_logits_pm_1e4", lambda: losses.BinaryCrossEntropy(from_logits=True),
     (np.array([[1e4, -1e4], [0.5, -3.0]]), np.array([[1.0, 1.0], [0.0, 1.0]]))),
    ("softmax_logits_pm_1e4", layers.Softmax, (logits_pm_1e4(),)),
    ("sigmoid_pm_1e4", layers.Sigmoid, (np.array([[1e4, -1e4, 0.0, 2.0]]),)),
]


@pytest.mark.parametrize(("factory", "args"), [row[1:] for row in RIGHT],
                         ids=[row[0] for row in RIGHT])
def test_correct_backwards_at_awkward_points_pass(factory, args):
    report = cr.gradcheck(factory(), *args)
    assert report.ok, str(report)
    assert all(e.failed == 0 for e in report.entries)


def test_relu_inputs_exactly_zero_are_kinks_that_pass():
    x = normal(6, 10)
    x[0, 0] = x[2, 5] = x[4, 9] = 0.0
    report = cr.gradcheck(layers.ReLU(), x)
    entry = report["input"]
    assert entry.kinks == 3 and entry.failed == 0 and report.ok, str(report)


def test_relu_mask_at_least_zero_is_a_legitimate_convention_at_exact_zeros():
    # ≥ sends the gradient through at z = 0 (the right-hand derivative), > stops it (the
    # left-hand one): both are subgradients, so both pass, each with its zeros as kinks. Away
    # from exact zeros the two masks are the same function.
    x = normal(6, 10)
    x[1, 1] = x[3, 3] = 0.0
    for layer in (layers.ReLU(), ReLUMaskAtLeastZero()):
        report = cr.gradcheck(layer, x)
        assert report.ok and report["input"].kinks == 2, str(report)


class ReLUDoubleAtZero(layers.ReLU):
    """dL/dz = 2g where z = 0: matches neither the left (0) nor the right (g) derivative."""

    def _forward(self, x, training):
        y = super()._forward(x, training)
        if training:
            self.cache = np.where(x > 0, 1.0, np.where(x == 0, 2.0, 0.0))
        return y


def test_a_value_at_a_kink_that_matches_neither_side_fails():
    x = normal(6, 10)
    x[2, 2] = 0.0
    report = cr.gradcheck(ReLUDoubleAtZero(), x)
    entry = report["input"]
    assert not report.ok and entry.failed == 1 and entry.kinks == 1, str(report)
    assert entry.worst_index == (2, 2)
    assert "at a kink: the analytic value matches neither the left" in str(report)


def test_too_many_kinks_fail_with_a_message():
    x = normal(4, 5)
    x[0] = 0.0  # 5 of 20 entries at the kink: 25%
    report = cr.gradcheck(layers.ReLU(), x)
    entry = report["input"]
    assert entry.failed == 0 and entry.kinks == 5 and not entry.ok
    assert "5 of 20 checked entries (25%) are at kinks, more than 10%" in str(report)


def test_a_kink_of_a_clipped_log_is_checked_one_sided():
    # p = eps exactly: the loss is flat to the left (clipped) and −log p to the right.
    pred = np.array([[1e-7, 0.6, 0.4 - 1e-7], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8],
                     [0.5, 0.25, 0.25]])
    target = np.eye(3)[[0, 2, 1, 0]]
    report = cr.gradcheck(losses.CategoricalCrossEntropy(), pred, target)
    assert report["pred"].kinks == 1 and report.ok, str(report)


# ---------------------------------------------------------------------- rounding is not a bug
def test_rounding_in_long_dot_products_is_not_a_failure():
    # 20,000-long dot products of values of size 100: f = Σ g ⊙ (xW + b) rounds at ~1e-10 of
    # itself, far more than f's own last bit. The analytic gradient equals torch's; a check
    # with the step and tolerance that ignore the rounding reported 5e-6 (input) and 9e-6 (b).
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 100.0, (4, 20_000))
    layer = dense(layers.Dense, 10, 20_000, seed=1)
    layer.W.value[...] = rng.standard_normal(layer.W.value.shape)
    g = np.random.default_rng(7).standard_normal((4, 10))
    report = cr.gradcheck(layer, x, grad_y=g)
    assert report.ok, str(report)

    x_t, W_t, b_t = (to_torch(a, requires_grad=True) for a in (x, layer.W.value, layer.b.value))
    (x_t @ W_t + b_t).backward(to_torch(g))
    layer.forward(x, training=True)
    grad_x = layer.backward(g)
    assert_close_to_scale(grad_x, x_t.grad, 1e-12, "dL/dx")
    assert_close_to_scale(layer.W.grad, W_t.grad, 1e-12, "dL/dW")
    assert_close_to_scale(layer.b.grad, b_t.grad, 1e-12, "dL/db")


def test_a_long_check_says_how_long_it_will_take(capsys, monkeypatch):
    gradcheck_module = __import__("sys").modules["chainrule.gradcheck"]
    monkeypatch.setattr(gradcheck_module, "ANNOUNCE_SECONDS", 0.0)
    cr.gradcheck(layers.Dense(2), normal(3, 4))
    err = capsys.readouterr().err
    assert "gradcheck Dense 'dense': 22 entries, about 6 evaluations of" in err
    assert "pass a smaller max_entries" in err
    cr.gradcheck(layers.Dense(2), normal(3, 4), verbose=False)
    assert capsys.readouterr().err == ""


def test_max_entries_samples_and_none_checks_all():
    layer = dense(layers.Dense, 30, 20)
    x = normal(5, 20)
    assert cr.gradcheck(layer, x)["W"].checked == 200
    assert cr.gradcheck(layer, x, max_entries=50)["W"].checked == 50
    assert cr.gradcheck(layer, x, max_entries=None)["W"].checked == 600


@pytest.mark.parametrize(("option", "value"), [("tol", float("nan")), ("tol", -1.0),
                                               ("tol", 0.0), ("h", float("inf")),
                                               ("floor", -1e-4), ("max_entries", 0)])
def test_bad_options_are_refused(option, value):
    with pytest.raises(ValueError, match=f"gradcheck: {option} must be a positive"):
        cr.gradcheck(layers.ReLU(), normal(2, 3), **{option: value})


# ---------------------------------------------------------------------- no name registry
class Tanh(layers.Tanh):
    """A notebook's own Tanh with a broken backward, under chainrule's name."""

    def _backward(self, grad_y, need_input_grad):
        return grad_y


def test_gradcheck_checks_the_class_it_is_given_not_a_namesake():
    x = normal(3, 4)
    assert cr.gradcheck(layers.Tanh(), x).ok
    assert not cr.gradcheck(Tanh(), x).ok
    model = cr.Sequential([layers.Dense(3, input_shape=(4,)), Tanh(), layers.Dense(2)], seed=0)
    model.compile("sgd", losses.MeanSquaredError())
    report = cr.gradcheck(model, x, normal(3, 2))
    assert {e.name for e in report.entries if not e.ok} == {"input", "dense_1.W", "dense_1.b"}


def test_the_registry_refuses_a_second_class_under_a_taken_name():
    with pytest.raises(ValueError, match=r"layer class 'Tanh' is already registered for "
                                         r"chainrule\.layers\.activations\.Tanh; cannot register "
                                         r"test_gradcheck_trust\.Tanh"):
        layers.register(Tanh)


def test_load_model_never_builds_a_user_class_by_accident(tmp_path):
    model = cr.Sequential([layers.Dense(3, input_shape=(4,)), Tanh(), layers.Dense(2)], seed=0)
    model.save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"layer class 'Tanh' was saved from module "
                                         r"'test_gradcheck_trust', not from chainrule; pass "
                                         r"custom_objects=\{'Tanh': Tanh\}"):
        cr.load_model(tmp_path / "m.npz")
    loaded = cr.load_model(tmp_path / "m.npz", custom_objects={"Tanh": Tanh})
    assert type(loaded.layers[1]) is Tanh
    x = normal(3, 4).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_builtin_models_still_load_by_name(tmp_path):
    model = cr.Sequential([layers.Dense(3, activation="tanh", input_shape=(4,))], seed=0)
    model.save(tmp_path / "m.npz")
    assert type(cr.load_model(tmp_path / "m.npz").layers[1]) is layers.Tanh


def test_torch_agrees_with_the_checker_on_the_review_case():
    p_t = to_torch(P_REVIEW, requires_grad=True)
    (-(to_torch(T_REVIEW) * torch.log(p_t)).sum() / 2).backward()
    report = cr.gradcheck(losses.CategoricalCrossEntropy(), P_REVIEW, T_REVIEW)
    assert report.ok
    loss = losses.CategoricalCrossEntropy()
    loss(P_REVIEW, T_REVIEW)
    assert_close(loss.backward(), to_numpy(p_t.grad), 1e-12, "dL/dp")
