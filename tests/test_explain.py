"""explain_backward: the lecture's slide reproduced entry by entry, every factor's shape named
as in the formulas, the arrays equal to torch autograd's, and the model left untouched."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import chainrule as cr
from chainrule import layers, losses, models
from chainrule.explain import backward_formula, lecture_example
from helpers import assert_close, to_torch


def factor(step, name):
    for f in step.factors:
        if f.name == name:
            return f.value
    raise KeyError(f"{name!r} not in {[f.name for f in step.factors]}")


def test_softmax_regression_on_the_lecture_points_gives_a_minus_y():
    x, y = lecture_example()
    model = models.softmax_regression(num_classes=3, input_shape=(2,))
    report = cr.explain_backward(model, x, y)
    loss = report.steps[0]
    a, Y = factor(loss, "a = softmax(z₁)"), factor(loss, "Y")
    # W = 0: every class scores the same, a = ⅓ everywhere; a − y has −⅔ on the true class.
    np.testing.assert_allclose(a, np.full((3, 3), 1 / 3), rtol=1e-15)
    np.testing.assert_array_equal(Y, np.eye(3))
    per_sample = factor(loss, "N · dL/dz₁")
    np.testing.assert_allclose(per_sample, np.full((3, 3), 1 / 3) - np.eye(3), atol=1e-15)
    np.testing.assert_allclose(factor(loss, "dL/dz₁"), per_sample / 3, atol=1e-15)
    assert report.loss == pytest.approx(np.log(3.0), rel=1e-15)

    dense = report["Dense 'dense_1'"]
    np.testing.assert_allclose(factor(dense, "dL/dW₁"), x.T @ (per_sample / 3), atol=1e-15)
    text = str(report)
    assert "dL/dz = (s − onehot(y)) / N" in text and "Probabilities" not in text
    assert "N · dL/dz₁ = a − Y (3×3)   (the per-sample result)" in text
    assert "dL/dW₁ = xᵀ (2×3) · dL/dz₁ (3×3) → (2×3)" in text
    assert "[[-0.6667  0.3333  0.3333]" in text  # the numbers, for a small example
    assert not re.search(r"-0\.(?!\d)", text)  # no "-0." for a rounded −1e-17


def test_an_mnist_mlp_names_every_factor_with_its_shape():
    rng = np.random.default_rng(0)
    model = models.mlp(hidden=(256, 256), dropout=0.0, augment=0, seed=0)
    report = cr.explain_backward(model, rng.random((8, 28, 28)), rng.integers(0, 10, 8))
    text = str(report)
    for line in ("dL/dW₃ = a₂ᵀ (256×8) · dL/dz₃ (8×10) → (256×10)",
                 "dL/dW₂ = a₁ᵀ (256×8) · dL/dz₂ (8×256) → (256×256)",
                 "dL/dz₂ = dL/da₂ (8×256) ⊙ [z₂ > 0] (8×256) → (8×256)",
                 "dL/dW₁ = xᵀ (784×8) · dL/dz₁ (8×256) → (784×256)",
                 "dL/dx = dL/dx (8×784) reshaped → (8×28×28)"):
        assert line in text, text
    assert "[[" not in text  # 8 samples: shapes and norms only
    assert [s.title for s in report.steps] == [
        "loss: SparseCategoricalCrossEntropy", "Dense 'dense_3'", "ReLU 'relu_2'",
        "Dense 'dense_2'", "ReLU 'relu_1'", "Dense 'dense_1'", "Flatten 'flatten_1'"]


def test_every_array_equals_torch_autograd():
    rng = np.random.default_rng(1)
    model = cr.Sequential([layers.Dense(4, activation="tanh", input_shape=(3,)),
                           layers.Dense(3, activation="sigmoid"), layers.Dense(2)], seed=0)
    model.compile("sgd", losses.SparseCategoricalCrossEntropy(from_logits=True))
    x, y = rng.standard_normal((4, 3)), np.array([0, 1, 1, 0])
    report = cr.explain_backward(model, x, y)

    W1, b1, W2, b2, W3, b3 = (to_torch(w.astype(np.float64), requires_grad=True)
                              for w in model.get_weights())
    x_t = to_torch(x, requires_grad=True)
    z1 = x_t @ W1 + b1
    a1 = torch.tanh(z1)
    z2 = a1 @ W2 + b2
    a2 = torch.sigmoid(z2)
    z3 = a2 @ W3 + b3
    for t in (z1, a1, z2, a2, z3):
        t.retain_grad()
    torch.nn.functional.cross_entropy(z3, torch.from_numpy(y)).backward()
    pairs = {("Dense 'dense_3'", "dL/dW₃"): W3.grad, ("Dense 'dense_3'", "dL/db₃"): b3.grad,
             ("Dense 'dense_3'", "dL/da₂"): a2.grad, ("Sigmoid 'sigmoid_1'", "dL/dz₂"): z2.grad,
             ("Dense 'dense_2'", "dL/dW₂"): W2.grad, ("Tanh 'tanh_1'", "dL/dz₁"): z1.grad,
             ("Dense 'dense_1'", "dL/dW₁"): W1.grad, ("Dense 'dense_1'", "dL/dx"): x_t.grad,
             ("loss: SparseCategoricalCrossEntropy", "dL/dz₃"): z3.grad}
    for (title, name), expected in pairs.items():
        assert_close(factor(report[title], name), expected, 1e-12, f"{title} {name}")
    assert "(1 − a₁²)" in str(report) and "a₂ (1 − a₂)" in str(report)


def test_the_model_is_not_touched():
    model = models.cnn(seed=0)
    rng = np.random.default_rng(2)
    before = [w.copy() for w in model.get_weights()]
    states = [layer.rng.bit_generator.state for layer in model.layers
              if getattr(layer, "rng", None) is not None]
    report = cr.explain_backward(model, rng.random((4, 28, 28)).astype(np.float32),
                                 rng.integers(0, 10, 4))
    for w0, w1 in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(w0, w1)
    assert states == [layer.rng.bit_generator.state for layer in model.layers
                      if getattr(layer, "rng", None) is not None]
    assert all(layer.cache is None for layer in model.layers)
    bn = report["BatchNorm 'batchnorm_1'"]
    assert {f.name for f in bn.factors} >= {"x̂", "dL/dgamma (batchnorm_1)"}
    assert "Derivation" not in bn.formula and "dL/dx = (γ / (M σ))" in bn.formula


def test_the_batchnorm_step_shows_the_normalised_input():
    """The x̂ factor is (x − μ)/σ: each channel's values have mean 0 and variance 1 over the
    batch (not x − μ, what the layer keeps)."""
    rng = np.random.default_rng(3)
    report = cr.explain_backward(models.cnn(seed=0), rng.random((4, 28, 28)).astype(np.float32),
                                 rng.integers(0, 10, 4))
    x_hat = next(f.value for f in report["BatchNorm 'batchnorm_1'"].factors if f.name == "x̂")
    assert x_hat.shape == (4, 32, 24, 24)
    np.testing.assert_allclose(x_hat.mean(axis=(0, 2, 3)), 0, atol=1e-9)
    np.testing.assert_allclose(x_hat.var(axis=(0, 2, 3)), 1, rtol=1e-3)


def test_html_for_notebooks():
    x, y = lecture_example()
    html = cr.explain_backward(models.softmax_regression(3, input_shape=(2,)), x, y)._repr_html_()
    assert html.startswith("<div class='chainrule-backward'>") and html.count("<table>") == 3
    assert "dL/dW₁" in html and "&#x27;" in html  # names escaped


def test_formulas_come_from_the_docstrings():
    assert backward_formula(layers.Tanh()) == "y = tanh(z).  Backward: dL/dz = g · (1 − y²). " \
                                              "Cache: the output y."
    assert "s ⊙ (g − ⟨g, s⟩)" in backward_formula(layers.Softmax())


def test_needs_a_compiled_model():
    with pytest.raises(ValueError, match="explain_backward needs a compiled model"):
        cr.explain_backward(cr.Sequential([layers.Dense(2, input_shape=(3,))]),
                            np.ones((1, 3)), np.ones((1, 2)))


def test_command_line_walks_the_lecture_example_and_mnist(tmp_path):
    import os
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "chainrule", "explain-backward", *args],
                              cwd=tmp_path, env=dict(os.environ), capture_output=True,
                              text=True, timeout=120)

    lecture = run()
    assert lecture.returncode == 0, lecture.stderr
    assert "N · dL/dz₁ = a − Y (3×3)" in lecture.stdout and "[-0.6667" in lecture.stdout
    mnist = run("--model", "mlp", "--data", "mnist", "--samples", "8")
    assert mnist.returncode == 0, mnist.stderr
    # The preset has a Dropout after each hidden activation: a₂′ is a₂ with its mask.
    assert "dL/dW₃ = a₂′ᵀ (256×8) · dL/dz₃ (8×10) → (256×10)" in mnist.stdout
    assert "Dropout 'dropout_2'" in mnist.stdout
    missing = run("--model", "nothing.npz")
    assert missing.returncode == 1
    assert missing.stderr == "chainrule explain-backward: error: model file not found: " \
                             "nothing.npz\n"


def test_lecture_example_extends_to_more_samples():
    x, y = lecture_example(7)
    assert x.shape == (7, 2) and y.tolist() == [0, 1, 2, 0, 1, 2, 0]
    np.testing.assert_array_equal(x[:3], lecture_example()[0])
