"""The gradient checker is tested too: planted wrong backwards fail and are named, kinks are
flagged rather than failed, models and losses are checked on float64 copies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import chainrule as cr
from chainrule import layers, losses
from helpers import to_numpy, to_torch

# ---------------------------------------------------------------------- planted wrong backwards


class SigmoidMissingFactor(layers.Sigmoid):
    """dL/dz = g · y instead of g · y · (1 − y)."""

    def _backward(self, grad_y, need_input_grad):
        return grad_y * self.cache


class DenseDoubledWGrad(layers.Dense):
    """dL/dW off by a factor 2."""

    def _backward(self, grad_y, need_input_grad):
        grad_x = super()._backward(grad_y, need_input_grad)
        self.W.grad = 2.0 * self.W.grad
        return grad_x


class DenseTransposedWGrad(layers.Dense):
    """dL/dW = (xᵀ g)ᵀ = gᵀ x: the right shape only for a square W, the wrong values."""

    def _backward(self, grad_y, need_input_grad):
        grad_x = super()._backward(grad_y, need_input_grad)
        self.W.grad = self.W.grad.T.copy()
        return grad_x


class DenseMeanBiasGrad(layers.Dense):
    """dL/db = mean over the batch instead of the sum."""

    def _backward(self, grad_y, need_input_grad):
        grad_x = super()._backward(grad_y, need_input_grad)
        self.b.grad = grad_y.reshape(-1, self.units).mean(axis=0)
        return grad_x


class DenseWrongLargestWGrad(layers.Dense):
    """dL/dW wrong in one entry only: the one of largest magnitude."""

    def _backward(self, grad_y, need_input_grad):
        grad_x = super()._backward(grad_y, need_input_grad)
        self.W.grad.flat[np.argmax(np.abs(self.W.grad))] *= 1.5
        return grad_x


class SoftmaxDiagonalOnly(layers.Softmax):
    """Keeps only the diagonal of the Jacobian: s ⊙ g, without the − s ⟨g, s⟩ term."""

    def _backward(self, grad_y, need_input_grad):
        return self.cache * grad_y


class EmbeddingLosesRepeats(layers.Embedding):
    """``grad_W[ids] += g``: a buffered update that keeps one of several repeated ids."""

    def _backward(self, grad_y, need_input_grad):
        grad_W = np.zeros_like(self.W.value)
        grad_W[self.cache.reshape(-1)] += grad_y.reshape(-1, self.output_dim)
        self.W.grad = grad_W
        return None


class LeakyReLUWrongSlope(layers.LeakyReLU):
    """Backward uses slope 0.01 whatever alpha the forward used."""

    def _backward(self, grad_y, need_input_grad):
        return np.where(self.cache, grad_y, 0.01 * grad_y)


class MeanSquaredErrorHalfGrad(losses.MeanSquaredError):
    """Value mean((p − t)²), gradient (p − t) / n: the factor 2 forgotten (value and gradient
    disagree by a factor, the bug that survives when they are tested apart)."""

    def _compute(self, pred, target):
        value, backward = super()._compute(pred, target)
        return value, lambda: 0.5 * backward()


def features(n=4, d=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def built(layer, d, seed=0, dtype=np.float64):
    layer.build((d,), rng=np.random.default_rng(seed), dtype=dtype)
    return layer


def table_rows(report) -> dict[str, str]:
    """The table lines of ``str(report)`` keyed by their first column (the array name)."""
    lines = str(report).splitlines()
    return {line.split()[0]: line for line in lines[2:] if not line.split()[0].endswith(":")}


# ---------------------------------------------------------------------- planted bugs are caught
PLANTED = [
    # (id, layer factory, input, arrays that must fail, arrays that must pass)
    ("sigmoid_g_times_y", SigmoidMissingFactor, features(), {"input"}, set()),
    ("dense_W_grad_doubled", lambda: built(DenseDoubledWGrad(2), 3), features(),
     {"W"}, {"input", "b"}),
    ("dense_W_grad_transposed", lambda: built(DenseTransposedWGrad(3), 3), features(),
     {"W"}, {"input", "b"}),
    ("dense_b_grad_mean", lambda: built(DenseMeanBiasGrad(2), 3), features(),
     {"b"}, {"input", "W"}),
    ("softmax_diagonal_only", SoftmaxDiagonalOnly, features(), {"input"}, set()),
    ("leaky_relu_wrong_slope", lambda: LeakyReLUWrongSlope(0.2), features(), {"input"}, set()),
    ("embedding_loses_repeats", lambda: built(EmbeddingLosesRepeats(4, 2), 5),
     np.array([[1, 1, 2, 3, 1], [0, 2, 2, 1, 3]]), {"W"}, set()),
]


@pytest.mark.parametrize(("layer_factory", "x", "failing", "passing"),
                         [row[1:] for row in PLANTED], ids=[row[0] for row in PLANTED])
def test_planted_wrong_backward_fails_and_is_named(layer_factory, x, failing, passing):
    report = cr.gradcheck(layer_factory(), x)
    assert not report.ok and not bool(report)
    assert {e.name for e in report.entries} == failing | passing
    for name in failing:
        assert not report[name].ok and report[name].max_rel_error > 1e-2, str(report)
    for name in passing:
        assert report[name].ok and report[name].max_rel_error < 1e-6, str(report)
    worst = max(report.entries, key=lambda e: e.max_rel_error)
    assert worst.name in failing
    assert report.max_rel_error == worst.max_rel_error
    text = str(report)
    assert "FAILED" in text.splitlines()[0]
    rows = table_rows(report)
    assert set(rows) == failing | passing
    for name in failing:
        assert rows[name].endswith("FAIL")
    for name in passing:
        assert rows[name].endswith("ok")


def test_sigmoid_planted_report_gives_both_values_at_the_worst_index():
    x = features()
    g = np.random.default_rng(1).standard_normal(x.shape)
    report = cr.gradcheck(SigmoidMissingFactor(), x, grad_y=g)
    entry = report["input"]
    x_t = to_torch(x, requires_grad=True)
    y_t = torch.sigmoid(x_t)
    y_t.backward(to_torch(g))
    i = entry.worst_index
    assert entry.analytic == pytest.approx(g[i] * to_numpy(y_t)[i], rel=1e-12)
    assert entry.numeric == pytest.approx(to_numpy(x_t.grad)[i], rel=1e-8)
    assert f"{entry.analytic:.10g}" in table_rows(report)["input"]
    assert f"{entry.numeric:.10g}" in table_rows(report)["input"]
    assert cr.gradcheck(layers.Sigmoid(), x, grad_y=g).ok


def test_dense_doubled_W_grad_report_values():
    layer = built(DenseDoubledWGrad(2), 3)
    x = features()
    g = np.random.default_rng(1).standard_normal((4, 2))
    report = cr.gradcheck(layer, x, grad_y=g)
    entry = report["W"]
    W_t = to_torch(layer.W.value, requires_grad=True)
    (to_torch(x) @ W_t).backward(to_torch(g))
    true = to_numpy(W_t.grad)[entry.worst_index]
    assert entry.numeric == pytest.approx(true, rel=1e-8)
    assert entry.analytic == pytest.approx(2 * true, rel=1e-12)
    # |2a − a| / |2a| = 1/2 at every entry.
    assert entry.max_rel_error == pytest.approx(0.5, rel=1e-6)
    assert report["input"].ok and report["b"].ok


def test_sampled_array_always_checks_its_largest_gradient():
    layer = built(DenseWrongLargestWGrad(20), 20)
    x = features(n=3, d=20)
    g = np.random.default_rng(1).standard_normal((3, 20))
    report = cr.gradcheck(layer, x, grad_y=g, max_entries=10)
    entry = report["W"]
    assert entry.checked <= 10
    assert not entry.ok
    largest = np.unravel_index(np.argmax(np.abs(x.T @ g)), (20, 20))
    assert entry.worst_index == tuple(int(i) for i in largest)


def test_planted_wrong_loss_gradient_fails():
    rng = np.random.default_rng(0)
    pred, target = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    report = cr.gradcheck(MeanSquaredErrorHalfGrad(), pred, target)
    assert not report.ok
    entry = report["pred"]
    assert entry.analytic == pytest.approx(entry.numeric / 2, rel=1e-8)
    assert "FAILED" in str(report) and "MeanSquaredErrorHalfGrad" in str(report)
    assert cr.gradcheck(losses.MeanSquaredError(), pred, target).ok


# ---------------------------------------------------------------------- kinks
@pytest.mark.parametrize("layer", [layers.ReLU(), layers.LeakyReLU(0.2)], ids=["relu", "leaky"])
def test_inputs_at_and_near_the_kink_pass(layer):
    awkward = [0.0, 1e-5, -1e-5, 1e-9, -0.0, 2e-6, -3e-7]
    x = np.random.default_rng(3).standard_normal((8, 12))
    x.reshape(-1)[13 * np.arange(len(awkward))] = awkward
    report = cr.gradcheck(layer, x)
    entry = report["input"]
    # The two exact zeros are kinks; entries within a step of 0 may be counted as kinks too,
    # each checked against a one-sided derivative rather than skipped.
    assert 2 <= entry.kinks <= len(awkward), str(report)
    assert entry.checked == 96 and entry.failed == 0
    assert report.ok and entry.max_rel_error < 1e-6, str(report)


def test_input_exactly_at_the_kink_alone():
    report = cr.gradcheck(layers.ReLU(), np.array([[0.0, 1.0]]))
    assert report["input"].kinks == 1 and report.ok, str(report)


def test_array_of_only_kinks_is_not_ok():
    report = cr.gradcheck(layers.ReLU(), np.zeros((2, 3)))
    entry = report["input"]
    assert entry.kinks == entry.checked == 6 and entry.failed == 0
    assert not entry.ok and not report.ok
    assert "6 of 6 checked entries (100%) are at kinks, more than 10%" in str(report)


def test_clip_of_a_probability_loss_is_a_kink():
    pred = np.array([[1e-7, 0.6, 0.4 - 1e-7], [0.2, 0.3, 0.5]])
    target = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    report = cr.gradcheck(losses.CategoricalCrossEntropy(), pred, target)
    assert report["pred"].kinks == 1 and report.ok, str(report)


# ---------------------------------------------------------------------- models
def small_mlp(dropout=0.0):
    model_layers = [layers.Dense(5, activation="tanh", input_shape=(4,))]
    if dropout:
        model_layers.append(layers.Dropout(dropout))
    model_layers.append(layers.Dense(3))
    model = cr.Sequential(model_layers, seed=0)
    model.compile(optimizer="sgd", loss=losses.SparseCategoricalCrossEntropy(from_logits=True))
    return model


@pytest.mark.parametrize("dropout", [0.0, 0.25], ids=["mlp", "mlp_dropout"])
def test_model_check_runs_on_a_float64_copy(dropout):
    model = small_mlp(dropout)
    assert model.dtype == np.float32
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=6)
    before = model.get_weights()
    x_before = x.copy()
    rng_states = [layer.rng.bit_generator.state for layer in model.layers
                  if isinstance(layer, layers.Dropout)]

    report = cr.gradcheck(model, x, y)

    assert report.ok and report.max_rel_error < 1e-6, str(report)
    assert [e.name for e in report.entries] == [
        "input", "dense_1.W", "dense_1.b", "dense_2.W", "dense_2.b"
    ]
    assert all(e.kinks == 0 and e.checked == np.prod(e.shape) for e in report.entries)
    after = model.get_weights()
    for w0, w1 in zip(before, after, strict=True):
        assert w1.dtype == np.float32
        np.testing.assert_array_equal(w0, w1)
    np.testing.assert_array_equal(x, x_before)
    assert model.dtype == np.float32 and all(layer.cache is None for layer in model.layers)
    assert rng_states == [layer.rng.bit_generator.state for layer in model.layers
                          if isinstance(layer, layers.Dropout)]


def test_model_with_a_planted_wrong_layer_names_it():
    model = cr.Sequential([layers.Dense(4, input_shape=(3,)), layers.ReLU(),
                           DenseDoubledWGrad(2)], seed=1)
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(0)
    report = cr.gradcheck(model, rng.standard_normal((5, 3)), rng.standard_normal((5, 2)))
    failing = {e.name for e in report.entries if not e.ok}
    assert failing == {"densedoubledwgrad_1.W"}, str(report)


def test_model_must_be_compiled():
    model = cr.Sequential([layers.Dense(2, input_shape=(3,))])
    with pytest.raises(ValueError, match="needs a compiled model"):
        cr.gradcheck(model, np.ones((2, 3)), np.ones((2, 2)))


# ---------------------------------------------------------------------- layers and losses
def test_layer_check_leaves_the_float32_original_untouched():
    layer = built(layers.Dense(3), 4, dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    before = [p.value.copy() for p in layer.parameters()]
    report = cr.gradcheck(layer, x)
    assert report.ok and report.max_rel_error < 1e-6, str(report)
    for p, value in zip(layer.parameters(), before, strict=True):
        assert p.value.dtype == np.float32 and p.grad is None
        np.testing.assert_array_equal(p.value, value)
    assert layer.cache is None


def test_unbuilt_layer_is_built_on_the_copy_only():
    layer = layers.Dense(2)
    report = cr.gradcheck(layer, features())
    assert report.ok and not layer.built
    assert [e.shape for e in report.entries] == [(4, 3), (3, 2), (2,)]


def test_loss_check_on_float32_input_runs_in_float64():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, 3)).astype(np.float32)
    y = np.array([0, 2, 1, 2])
    z_before = z.copy()
    report = cr.gradcheck(losses.SparseCategoricalCrossEntropy(from_logits=True), z, y)
    assert report.ok and report.max_rel_error < 1e-6, str(report)
    assert report.subject == "SparseCategoricalCrossEntropy"
    np.testing.assert_array_equal(z, z_before)


def test_report_api():
    report = cr.gradcheck(layers.Dense(2), features())
    assert isinstance(report, cr.GradcheckReport)
    assert bool(report) is True
    text = str(report)
    assert text.splitlines()[0].startswith("gradcheck Dense 'dense': OK")
    assert "FAILED" not in text
    assert set(table_rows(report)) == {"input", "W", "b"}
    with pytest.raises(KeyError, match=r"no array named 'bias'; have \['input', 'W', 'b'\]"):
        report["bias"]


@pytest.mark.parametrize("obj", [object(), lambda x: x, np.ones(3), "dense"],
                         ids=["object", "function", "array", "string"])
def test_unsupported_object_is_a_type_error(obj):
    with pytest.raises(TypeError, match=r"gradcheck expects a Layer, a Loss or a Sequential, "
                                        rf"got {type(obj).__name__}"):
        cr.gradcheck(obj, np.ones((2, 3)))


def test_wrong_argument_counts():
    with pytest.raises(TypeError, match=r"gradcheck\(layer, x\) takes one input batch"):
        cr.gradcheck(layers.ReLU(), np.ones((1, 2)), np.ones((1, 2)))
    with pytest.raises(TypeError, match=r"gradcheck\(loss, pred, target\)"):
        cr.gradcheck(losses.MeanSquaredError(), np.ones((1, 2)))
    with pytest.raises(TypeError, match=r"gradcheck\(model, x, y\)"):
        cr.gradcheck(small_mlp(), np.ones((1, 4)))
