"""The lecture's worked examples, run through the library: each number can be checked by hand."""

import numpy as np
import pytest

import chainrule as cr
from chainrule import losses, optimizers
from chainrule.layers import Dense


def test_scalar_chain_rule_y_equals_5x_minus_10():
    """y = 5x − 10 with target 10: L = ½(y − 10)², dL/dx = dL/dy · dy/dx = (y − 10) · 5.

    Only x is trainable; SGD walks it to the solution x = 4 (y = 10).
    """
    x = cr.Parameter(np.array([0.0]), name="x")
    loss = losses.MeanSquaredError(half=True)
    sgd = optimizers.SGD(lr=0.01)
    target = np.array([10.0])

    def step():
        y = 5.0 * x.value - 10.0
        value = loss(y, target)
        grad_y = loss.backward()  # dL/dy = y − 10
        x.grad = 5.0 * grad_y  # the chain rule: dy/dx = 5
        sgd.step([x])
        return value, grad_y

    # First step by hand: y = −10, L = ½ · 20² = 200, dL/dy = −20, dL/dx = −100,
    # x ← 0 − 0.01 · (−100) = 1.
    value, grad_y = step()
    assert value == 200.0 and grad_y.tolist() == [-20.0]
    assert x.grad.tolist() == [-100.0] and x.value.tolist() == [1.0]
    # Each step multiplies the error x − 4 by 1 − 0.01 · 25 = 0.75.
    step()
    assert x.value[0] == pytest.approx(4.0 - 3.0 * 0.75)
    for _ in range(60):
        step()
    assert abs(x.value[0] - 4.0) < 1e-3
    assert 5.0 * x.value[0] - 10.0 == pytest.approx(10.0, abs=5e-3)


def test_one_hand_computed_sgd_step_on_dense_mse():
    """z = xW + b on two samples, MSE, one SGD step with lr = 0.1, every number written out.

    x = [[1, 2], [3, −1]], W = [[0.5], [−1]], b = [0.25], target t = [[1], [0]]
    z = [[0.5 − 2 + 0.25], [1.5 + 1 + 0.25]] = [[−1.25], [2.75]]
    L = ((−1.25 − 1)² + (2.75 − 0)²) / 2 = (5.0625 + 7.5625) / 2 = 6.3125
    g = dL/dz = 2 (z − t) / 2 = [[−2.25], [2.75]]
    dL/dW = xᵀ g = [[1 · −2.25 + 3 · 2.75], [2 · −2.25 + (−1) · 2.75]] = [[6.0], [−7.25]]
    dL/db = −2.25 + 2.75 = 0.5
    W ← W − 0.1 dL/dW = [[−0.1], [−0.275]],   b ← 0.25 − 0.05 = 0.2
    """
    model = cr.Sequential([Dense(1, input_shape=(2,))], dtype="float64")
    model.set_weights([np.array([[0.5], [-1.0]]), np.array([0.25])])
    model.compile(optimizers.SGD(lr=0.1), losses.MeanSquaredError())
    x = np.array([[1.0, 2.0], [3.0, -1.0]])
    t = np.array([[1.0], [0.0]])
    history = model.fit(x, t, epochs=1, batch_size=2, shuffle=False, verbose=0)
    assert history.history["loss"] == [pytest.approx(6.3125, abs=1e-12)]
    dense = model.layers[0]
    np.testing.assert_allclose(dense.W.grad, [[6.0], [-7.25]], atol=1e-12)
    np.testing.assert_allclose(dense.b.grad, [0.5], atol=1e-12)
    W, b = model.get_weights()
    np.testing.assert_allclose(W, [[-0.1], [-0.275]], atol=1e-12)
    np.testing.assert_allclose(b, [0.2], atol=1e-12)


def three_class_points(n_per_class=100, seed=0):
    """The lecture's red/green/blue points: three 2-D Gaussian blobs, float32, labels 0..2."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 2.0], [-1.8, -1.0], [1.8, -1.0]])
    y = np.repeat(np.arange(3), n_per_class)
    x = centres[y] + 0.5 * rng.standard_normal((3 * n_per_class, 2))
    return x.astype(np.float32), y


def test_softmax_regression_fits_three_class_points():
    x, y = three_class_points()
    model = cr.Sequential([Dense(3, input_shape=(2,))], seed=0)
    model.compile(optimizers.SGD(lr=0.5),
                  losses.SparseCategoricalCrossEntropy(from_logits=True), metrics=["accuracy"])
    history = model.fit(x, y, epochs=20, batch_size=32, seed=0, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    result = model.evaluate(x, y)
    assert result["accuracy"] >= 0.95
    assert np.mean(model.predict(x).argmax(axis=1) == y) == result["accuracy"]


def test_mlp_learns_xor():
    x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], np.float32)
    y = np.array([0, 1, 1, 0])
    model = cr.Sequential([Dense(8, activation="tanh", input_shape=(2,)), Dense(2)], seed=0)
    model.compile(optimizers.Adam(0.05),
                  losses.SparseCategoricalCrossEntropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=300, batch_size=4, seed=0, verbose=0)
    assert model.evaluate(x, y)["accuracy"] == 1.0
    assert model.predict(x).argmax(axis=1).tolist() == [0, 1, 1, 0]


def test_a_single_dense_cannot_learn_xor():
    """The reason for the hidden layer: a linear classifier gets at most 3 of the 4 points."""
    x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], np.float32)
    y = np.array([0, 1, 1, 0])
    model = cr.Sequential([Dense(2, input_shape=(2,))], seed=0)
    model.compile(optimizers.Adam(0.05),
                  losses.SparseCategoricalCrossEntropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=300, batch_size=4, seed=0, verbose=0)
    assert model.evaluate(x, y)["accuracy"] <= 0.75
