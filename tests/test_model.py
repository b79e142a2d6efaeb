"""Sequential: structure, compile/fit/evaluate/predict, callbacks, torch-equal gradients, errors."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as tF

import chainrule as cr
from chainrule import losses, optimizers
from chainrule.layers import Dense, Dropout, Flatten, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh

SCE = losses.SparseCategoricalCrossEntropy


def blobs(n=60, d=4, c=3, seed=0, spread=0.6):
    """Gaussian clusters around random centres: x (n, d) float32, y (n,) int64 in [0, c)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((c, d)) * 2.0
    y = rng.integers(0, c, n)
    x = centres[y] + spread * rng.standard_normal((n, d))
    return x.astype(np.float32), y


def classifier(d=4, c=3, hidden=8, seed=0, dropout=None, optimizer=None, dtype="float32"):
    layers = [Dense(hidden, activation="relu", input_shape=(d,))]
    if dropout:
        layers.append(Dropout(dropout))
    layers.append(Dense(c))
    model = cr.Sequential(layers, seed=seed, dtype=dtype)
    model.compile(optimizer or optimizers.Adam(0.01), SCE(from_logits=True), metrics=["accuracy"])
    return model


# ---------------------------------------------------------------------------- structure


def test_dense_activation_expands_into_its_own_layer_with_unique_names():
    model = cr.Sequential([
        Dense(5, activation="relu", input_shape=(3,)),
        Dense(4, activation="relu"),
        Dense(3, activation="tanh"),
        Dense(2),
    ])
    assert [type(layer) for layer in model.layers] == [Dense, ReLU, Dense, ReLU, Dense, Tanh, Dense]
    assert [layer.name for layer in model.layers] == [
        "dense_1", "relu_1", "dense_2", "relu_2", "dense_3", "tanh_1", "dense_4"
    ]
    assert all(layer.activation is None for layer in model.layers if isinstance(layer, Dense))


def test_explicit_duplicate_name_is_refused():
    model = cr.Sequential([Dense(2, name="head")])
    with pytest.raises(ValueError, match="a layer named 'head' is already in the model"):
        model.add(Dense(2, name="head"))


def test_parameters_in_stable_layer_order():
    model = classifier(hidden=6)
    d1, d2 = model.layers[0], model.layers[2]
    expected = [d1.W, d1.b, d2.W, d2.b]
    assert all(a is b for a, b in zip(model.parameters(), expected, strict=True))
    x, y = blobs()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert all(a is b for a, b in zip(model.parameters(), expected, strict=True))
    assert [p.shape for p in model.parameters()] == [(4, 6), (6,), (6, 3), (3,)]


def test_summary_lists_layers_shapes_and_total():
    model = cr.Sequential([
        Dense(256, activation="relu", input_shape=(784,)),
        Dense(128, activation="relu"),
        Dense(10),
    ])
    text = model.summary(print_fn=None)
    # 784·256 + 256 + 256·128 + 128 + 128·10 + 10
    assert model.count_params() == 235_146
    assert "Total params: 235,146" in text
    for name, shape, count in [
        ("dense_1 (Dense)", "(None, 256)", "200,960"),
        ("relu_1 (ReLU)", "(None, 256)", "0"),
        ("dense_2 (Dense)", "(None, 128)", "32,896"),
        ("relu_2 (ReLU)", "(None, 128)", "0"),
        ("dense_3 (Dense)", "(None, 10)", "1,290"),
    ]:
        line = next(row for row in text.splitlines() if row.startswith(name))
        assert line.split()[-3:-1] == shape.split() and line.split()[-1] == count, line


def test_summary_of_784_256_256_10_mlp_with_flatten(capsys):
    model = cr.Sequential([
        Flatten(input_shape=(28, 28)),
        Dense(256, activation="relu"),
        Dense(256, activation="relu"),
        Dense(10),
    ])
    model.summary()
    out = capsys.readouterr().out
    assert "flatten_1 (Flatten)" in out and "(None, 784)" in out
    # 784·256 + 256 + 256·256 + 256 + 256·10 + 10
    assert "Total params: 269,322" in out


def test_unbuilt_summary_says_so():
    text = cr.Sequential([Dense(3)]).summary(print_fn=None)
    assert "not built" in text


def test_compile_refuses_softmax_with_logits_loss():
    model = cr.Sequential([Dense(3, input_shape=(2,)), Softmax()])
    with pytest.raises(ValueError, match=r"last layer is Softmax.*from_logits=True.*twice"):
        model.compile("sgd", SCE(from_logits=True))
    model.compile("sgd", SCE(from_logits=False))  # the unfused teaching path is allowed
    with pytest.raises(ValueError, match=r"compile needs a loss"):
        model.compile("sgd")


def test_compile_refuses_sigmoid_with_logits_binary_loss():
    model = cr.Sequential([Dense(1, input_shape=(2,)), Sigmoid()])
    with pytest.raises(ValueError, match=r"last layer is Sigmoid.*from_logits=True.*twice"):
        model.compile("sgd", losses.BinaryCrossEntropy(from_logits=True))
    model.compile("sgd", losses.BinaryCrossEntropy())


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict"])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_batch_size_must_be_a_positive_integer(method, bad):
    model = cr.Sequential([Dense(3, input_shape=(2,))], seed=0)
    model.compile("sgd", SCE(from_logits=True))
    x = np.zeros((4, 2), np.float32)
    y = np.zeros(4, np.int64)
    args = (x,) if method == "predict" else (x, y)
    with pytest.raises(ValueError, match=rf"{method}: batch_size must be a positive integer"):
        getattr(model, method)(*args, batch_size=bad)


# ------------------------------------------------------------------ fit / evaluate / predict


def test_fit_history_with_validation_split():
    x, y = blobs(n=80)
    model = classifier()
    history = model.fit(x, y, epochs=3, batch_size=16, validation_split=0.25, verbose=0)
    assert isinstance(history, cr.History) and model.history is history
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 3 for v in history.history.values())
    assert history.epoch == [0, 1, 2]
    # validation_split holds out the last 25 % (20 samples): 60 train samples, 4 steps.
    assert history.params["samples"] == 60 and history.params["steps"] == 4
    final = model.evaluate(x[-20:], y[-20:])
    assert history.history["val_loss"][-1] == pytest.approx(final["loss"], rel=1e-6)
    assert history.history["val_accuracy"][-1] == final["accuracy"]
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_fit_history_with_validation_data():
    x, y = blobs(n=60, seed=1)
    xv, yv = blobs(n=30, seed=2)
    model = classifier()
    history = model.fit(x, y, epochs=2, batch_size=8, validation_data=(xv, yv), verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.history["val_loss"][-1] == pytest.approx(model.evaluate(xv, yv)["loss"],
                                                            rel=1e-6)
    for key in ("accuracy", "val_accuracy"):
        assert all(0.0 <= a <= 1.0 for a in history.history[key])


def test_history_loss_is_the_sample_weighted_mean_of_batch_losses():
    """With shuffle off, the epoch loss is Σ batch_loss · batch_size / N (last batch smaller)."""
    x, y = blobs(n=10)
    model = classifier(optimizer=optimizers.SGD(1e-9))  # weights barely move
    losses_seen = []

    class BatchLoss(cr.Callback):
        def on_batch_end(self, step, logs=None):
            losses_seen.append(logs["loss"])

    history = model.fit(x, y, epochs=1, batch_size=4, shuffle=False, callbacks=[BatchLoss()],
                        verbose=0)
    loss_fn = SCE(from_logits=True)
    out = model.predict(x)
    batches = [(0, 4), (4, 8), (8, 10)]
    expected = sum(loss_fn(out[a:b], y[a:b]) * (b - a) for a, b in batches) / 10
    assert history.history["loss"] == pytest.approx([expected], rel=1e-5)
    assert losses_seen[-1] == history.history["loss"][0]


def test_evaluate_returns_loss_and_accuracy():
    x, y = blobs(n=50)
    model = classifier()
    model.fit(x, y, epochs=2, batch_size=10, verbose=0)
    result = model.evaluate(x, y, batch_size=7)
    assert set(result) == {"loss", "accuracy"}
    logits = model.predict(x)
    assert result["loss"] == pytest.approx(SCE(from_logits=True)(logits, y), rel=1e-5)
    assert result["accuracy"] == np.mean(logits.argmax(axis=1) == y)


def test_predict_shape_and_batching():
    x, y = blobs(n=50)
    model = classifier()
    model.fit(x, y, epochs=1, batch_size=10, verbose=0)
    full = model.forward(x)
    batched = model.predict(x, batch_size=7)  # 7 batches of 7 and a last one of 1
    assert batched.shape == (50, 3) and batched.dtype == np.float32
    # BLAS may block a 1-row product differently from a 50-row one: equal up to float32 rounding.
    np.testing.assert_allclose(batched, full, rtol=1e-6, atol=1e-6)
    assert model.predict(x[:1]).shape == (1, 3)


def test_inference_is_deterministic_with_dropout_off():
    x, y = blobs(n=20)
    model = classifier(dropout=0.5)
    model.fit(x, y, epochs=1, verbose=0)
    assert np.array_equal(model.predict(x), model.predict(x))


def test_verbose_0_prints_nothing(capsys):
    x, y = blobs()
    xv, yv = blobs(n=20, seed=3)
    model = classifier()
    model.fit(x, y, epochs=2, validation_data=(xv, yv), verbose=0)
    model.evaluate(x, y)
    model.predict(x)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_verbose_1_shows_a_tqdm_bar_per_epoch(capsys):
    x, y = blobs()
    model = classifier()
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=1)
    err = capsys.readouterr().err
    assert "Epoch 1/2" in err and "Epoch 2/2" in err
    assert "4/4" in err  # 60 samples in batches of 16
    assert len(history.history["loss"]) == 2


def test_verbose_2_prints_one_line_per_epoch(capsys):
    x, y = blobs()
    model = classifier()
    model.fit(x, y, epochs=3, batch_size=16, verbose=2)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Epoch")]
    assert len(lines) == 3 and "loss:" in lines[0] and "accuracy:" in lines[0]


# ---------------------------------------------------------------------------- callbacks


class Inject(cr.Callback):
    """Puts a crafted value under ``key`` in the epoch logs and keeps the weights of each epoch.

    It must come before the callbacks that read ``key``.
    """

    def __init__(self, values, key="score"):
        self.values, self.key, self.weights = values, key, []

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]
        self.weights.append(self.model.get_weights())


SCORES = [1.0, 0.8, 0.5, 0.6, 0.55, 0.7, 0.1, 0.1]


@pytest.mark.parametrize("restore", [True, False])
def test_early_stopping_stops_after_patience_and_restores_best(restore):
    x, y = blobs()
    model = classifier()
    inject = Inject(SCORES)
    stop = cr.EarlyStopping(monitor="score", patience=3, restore_best_weights=restore)
    history = model.fit(x, y, epochs=len(SCORES), batch_size=16, callbacks=[inject, stop],
                        verbose=0)
    # Best 0.5 at epoch 2; epochs 3, 4, 5 do not improve → stop at the end of epoch 5.
    assert stop.best_epoch == 2 and stop.best == 0.5 and stop.stopped_epoch == 5
    assert history.epoch == [0, 1, 2, 3, 4, 5]
    expected = inject.weights[2] if restore else inject.weights[5]
    assert not all(np.array_equal(a, b) for a, b in zip(inject.weights[2], inject.weights[5],
                                                        strict=True))
    for got, want in zip(model.get_weights(), expected, strict=True):
        assert np.array_equal(got, want)


def test_early_stopping_mode_max_and_min_delta():
    x, y = blobs()
    model = classifier()
    # "acc" in the name → mode max; 0.805 is not an improvement over 0.8 with min_delta 0.01.
    inject = Inject([0.5, 0.8, 0.805, 0.79, 0.9], key="val_acc_crafted")
    stop = cr.EarlyStopping(monitor="val_acc_crafted", patience=2, min_delta=0.01)
    history = model.fit(x, y, epochs=5, callbacks=[inject, stop], verbose=0)
    assert stop.best_epoch == 1 and stop.stopped_epoch == 3 and len(history.epoch) == 4


def test_early_stopping_on_real_val_loss_names_missing_key():
    x, y = blobs()
    model = classifier()
    with pytest.raises(ValueError, match=r"monitored quantity 'val_loss' is not in the epoch logs"):
        model.fit(x, y, epochs=1, callbacks=[cr.EarlyStopping()], verbose=0)


def test_model_checkpoint_writes_every_epoch_with_epoch_formatting(tmp_path):
    x, y = blobs()
    xv, yv = blobs(n=20, seed=4)
    model = classifier()
    ckpt = cr.ModelCheckpoint(tmp_path / "ckpt" / "e{epoch:02d}-{val_loss:.3f}.npz")
    history = model.fit(x, y, epochs=3, validation_data=(xv, yv), callbacks=[ckpt], verbose=0)
    names = sorted(os.listdir(tmp_path / "ckpt"))
    assert names == [f"e{e + 1:02d}-{v:.3f}.npz"
                     for e, v in enumerate(history.history["val_loss"])]
    last = cr.load_model(ckpt.last_saved)
    assert np.array_equal(last.predict(xv), model.predict(xv))


def test_model_checkpoint_save_best_only(tmp_path):
    x, y = blobs()
    model = classifier()
    inject = Inject([0.5, 0.7, 0.3, 0.4], key="score")
    ckpt = cr.ModelCheckpoint(tmp_path / "best_{epoch}.npz", monitor="score", save_best_only=True)
    fixed = cr.ModelCheckpoint(tmp_path / "best.npz", monitor="score", save_best_only=True)
    model.fit(x, y, epochs=4, callbacks=[inject, ckpt, fixed], verbose=0)
    assert sorted(os.listdir(tmp_path)) == ["best.npz", "best_1.npz", "best_3.npz"]
    best = cr.load_model(tmp_path / "best.npz")
    for got, want in zip(best.get_weights(), inject.weights[2], strict=True):
        assert np.array_equal(got, want)


# ---------------------------------------------------------------------------- gradients vs torch


def torch_twin(model):
    """torch.nn.Linear copies of every Dense (weight = Wᵀ) and the activations in between."""
    dtype = torch.float64 if model.dtype == np.float64 else torch.float32
    ops = []
    for layer in model.layers:
        if isinstance(layer, Dense):
            W, b = layer.W.value, layer.b.value
            linear = torch.nn.Linear(W.shape[0], W.shape[1], dtype=dtype)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(W.T.copy()))
                linear.bias.copy_(torch.from_numpy(b.copy()))
            ops.append(linear)
        else:
            ops.append({ReLU: torch.relu, Tanh: torch.tanh, Sigmoid: torch.sigmoid,
                        LeakyReLU: lambda t: tF.leaky_relu(t, 0.01)}[type(layer)])
    return ops


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-5), ("float64", 1e-10)])
def test_mlp_gradients_equal_torch_autograd(dtype, rtol):
    rng = np.random.default_rng(0)
    model = cr.Sequential([
        Dense(16, activation="relu", input_shape=(10,)),
        Dense(12, activation="tanh"),
        Dense(8, activation="sigmoid"),
        Dense(8, activation="leaky_relu"),
        Dense(5),
    ], dtype=dtype, seed=0)
    # Non-zero biases, so their gradients flow through every activation.
    for p in model.parameters():
        if p.name == "b":
            p.value[...] = rng.standard_normal(p.shape) * 0.1
    x = rng.standard_normal((32, 10)).astype(dtype)
    y = rng.integers(0, 5, 32)

    loss_fn = SCE(from_logits=True)
    value = loss_fn(model.forward(x, training=True), y)
    grad_x = model.backward(loss_fn.backward())

    ops = torch_twin(model)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    h = xt
    for op in ops:
        h = op(h)
    tloss = tF.cross_entropy(h, torch.from_numpy(y))
    tloss.backward()

    assert value == pytest.approx(tloss.item(), rel=rtol)
    pairs = [("input", grad_x, xt.grad.numpy())]
    linears = [op for op in ops if isinstance(op, torch.nn.Linear)]
    for layer, linear in zip([la for la in model.layers if isinstance(la, Dense)], linears,
                             strict=True):
        pairs.append((f"{layer.name}/W", layer.W.grad, linear.weight.grad.numpy().T))
        pairs.append((f"{layer.name}/b", layer.b.grad, linear.bias.grad.numpy()))
    for name, ours, theirs in pairs:
        assert ours.dtype == np.dtype(dtype), name
        scale = np.max(np.abs(theirs))
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * scale,
                                   err_msg=f"{name}\nours:\n{ours!r}\ntorch:\n{theirs!r}")


# ---------------------------------------------------------------------------- the lecture's mistake


def test_dense_backward_uses_forward_time_weights():
    """grad_x = g Wᵀ with the W of the forward pass, not the W after the update."""
    rng = np.random.default_rng(0)
    layer = Dense(3)
    x = rng.standard_normal((4, 5))
    layer.forward(x, training=True)
    W_before = layer.W.value.copy()
    g = rng.standard_normal((4, 3))
    grad_x = layer.backward(g)
    np.testing.assert_allclose(grad_x, g @ W_before.T, rtol=1e-12)
    np.testing.assert_allclose(layer.W.grad, x.T @ g, rtol=1e-12)
    kept = grad_x.copy()
    optimizers.SGD(lr=0.5).step(layer.parameters())
    assert not np.allclose(layer.W.value, W_before), "the step must change W"
    assert np.array_equal(grad_x, kept), "grad_x must not alias W or change with the update"


def test_train_step_propagates_with_pre_update_weights():
    """In a 2-layer model, layer 1's gradient is computed from layer 2's pre-update W."""
    rng = np.random.default_rng(1)
    model = cr.Sequential([Dense(6, activation="tanh", input_shape=(4,)), Dense(3)],
                          dtype="float64", seed=0)
    model.compile(optimizers.SGD(lr=1.0), SCE(from_logits=True))
    x, y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    W1, b1, W2, b2 = model.get_weights()
    model.train_step(x, y)

    # The chain rule by hand, with the weights as they were during the forward pass.
    a = np.tanh(x @ W1 + b1)
    z = a @ W2 + b2
    s = np.exp(z - z.max(axis=1, keepdims=True))
    s /= s.sum(axis=1, keepdims=True)
    g = (s - np.eye(3)[y]) / 8
    grad_a = g @ W2.T
    grad_pre = grad_a * (1 - a**2)
    d1, d2 = model.layers[0], model.layers[2]
    np.testing.assert_allclose(d2.W.grad, a.T @ g, rtol=1e-12)
    np.testing.assert_allclose(d1.W.grad, x.T @ grad_pre, rtol=1e-12)
    np.testing.assert_allclose(d1.b.grad, grad_pre.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(d1.W.value, W1 - x.T @ grad_pre, rtol=1e-12)
    np.testing.assert_allclose(d2.W.value, W2 - a.T @ g, rtol=1e-12)


def test_backward_never_mutates_parameters_or_grad_y():
    rng = np.random.default_rng(0)
    model = cr.Sequential([
        Flatten(input_shape=(2, 3)),
        Dense(8, activation="relu"),
        Dropout(0.3),
        Dense(6, activation="sigmoid"),
        Dense(5, activation="tanh"),
        Dense(4, activation="leaky_relu"),
        Dense(3),
        Softmax(),
    ], seed=0)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    before = model.get_weights()
    out = model.forward(x, training=True)
    grad_y = rng.standard_normal(out.shape).astype(np.float32)
    grad_y_copy = grad_y.copy()
    model.backward(grad_y)
    for p, value in zip(model.parameters(), before, strict=True):
        assert np.array_equal(p.value, value), p.name
        assert p.grad is not None and not np.shares_memory(p.grad, p.value)
    assert np.array_equal(grad_y, grad_y_copy)


# ---------------------------------------------------------------------------- determinism


def fresh_model():
    return cr.Sequential([
        Dense(16, activation="relu"),
        Dropout(0.3),
        Dense(16, activation="relu"),
        Dropout(0.2),
        Dense(3),
    ])


def train(seed):
    x, y = blobs(n=64)
    xv, yv = blobs(n=20, seed=5)
    model = fresh_model()
    model.compile(optimizers.Adam(0.01), SCE(from_logits=True), metrics=["accuracy"])
    history = model.fit(x, y, epochs=3, batch_size=8, seed=seed, validation_data=(xv, yv),
                        verbose=0)
    return model.get_weights(), history.history


def test_same_seed_gives_bit_identical_weights_and_history():
    w1, h1 = train(0)
    w2, h2 = train(0)
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2, strict=True))
    assert h1 == h2  # the floats themselves, not approximately
    w3, h3 = train(1)
    assert not all(np.array_equal(a, b) for a, b in zip(w1, w3, strict=True))
    assert h1["loss"] != h3["loss"]


def test_dropout_masks_change_between_steps():
    x, y = blobs(n=16)
    model = cr.Sequential([Dense(8), Dropout(0.5)], seed=0)
    masks = []
    for _ in range(2):
        model.forward(x, training=True)
        masks.append(model.layers[1].cache.copy())
    assert not np.array_equal(*masks)


# ---------------------------------------------------------------------------- bad input


def built_mnist_like():
    model = cr.Sequential([Dense(16, activation="relu", input_shape=(784,)), Dense(10)])
    model.compile("sgd", SCE(from_logits=True))
    return model


def test_wrong_feature_count_suggests_flatten_for_images():
    model = built_mnist_like()
    images = np.zeros((3, 28, 28), np.float32)
    with pytest.raises(ValueError, match=r"expected 784 features on the last axis, got input of "
                                         r"shape \((N|3), 28, 28\); add layers.Flatten\(\) first"):
        model.predict(images)
    with pytest.raises(ValueError, match=r"expected 784 features on the last axis, got input of "
                                         r"shape \((N|3), 100\)$"):
        model.fit(np.zeros((3, 100)), np.zeros(3, int), verbose=0)


def test_labels_outside_range():
    x, y = blobs(n=12)
    model = classifier()
    y_bad = y.copy()
    y_bad[5] = 3
    with pytest.raises(ValueError, match=r"fit: .*labels must lie in \[0, 3\) for 3 output classes;"
                                         r" found 3 at index 5"):
        model.fit(x, y_bad, verbose=0)
    y_bad[5] = -1
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*found -1 at index 5"):
        model.evaluate(x, y_bad)


def test_float_labels_for_sparse_cross_entropy():
    x, y = blobs(n=12)
    with pytest.raises(TypeError, match=r"expected integer class labels of shape \(12,\), got "
                                        r"dtype float64; cast with y.astype\(np.int64\)"):
        classifier().fit(x, y.astype(np.float64), verbose=0)


def test_one_hot_labels_for_sparse_cross_entropy_point_to_categorical():
    x, y = blobs(n=12)
    with pytest.raises(ValueError, match=r"expected labels of shape \(12,\), got \(12, 3\); these "
                                         r"look like one-hot targets: use CategoricalCrossEntropy"):
        classifier().fit(x, np.eye(3, dtype=np.int64)[y], verbose=0)


def test_one_hot_of_wrong_width():
    x, y = blobs(n=12)
    model = cr.Sequential([Dense(3, input_shape=(4,))])
    model.compile("sgd", losses.CategoricalCrossEntropy(from_logits=True))
    with pytest.raises(ValueError, match=r"expected one-hot targets of shape \(12, 3\), got "
                                         r"\(12, 4\)"):
        model.fit(x, np.eye(4, dtype=np.float32)[y], verbose=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs(bad):
    x, y = blobs(n=12)
    x[3, 1] = bad
    model = classifier()
    with pytest.raises(ValueError, match=r"fit: the model received non-finite input: 1 of 48 "
                                         r"values are NaN or inf"):
        model.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match=r"predict: .*non-finite input"):
        model.predict(x)


def test_empty_batch():
    model = classifier()
    with pytest.raises(ValueError, match=r"predict: expected a non-empty batch of shape "
                                         r"\(N, \.\.\.\), got \(0, 4\)"):
        model.predict(np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match=r"fit: expected a non-empty batch"):
        model.fit(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), verbose=0)


def test_x_and_y_length_mismatch():
    x, y = blobs(n=12)
    with pytest.raises(ValueError, match=r"fit: x has 12 samples but y has 11; they must match"):
        classifier().fit(x, y[:11], verbose=0)
    with pytest.raises(ValueError, match=r"evaluate: x has 12 samples but y has 10"):
        classifier().evaluate(x, y[:10])


def test_fit_and_evaluate_before_compile():
    x, y = blobs(n=12)
    model = cr.Sequential([Dense(3)])
    with pytest.raises(RuntimeError, match=r"fit needs a compiled model: call model.compile"):
        model.fit(x, y, verbose=0)
    with pytest.raises(RuntimeError, match=r"evaluate needs a compiled model"):
        model.evaluate(x, y)


def test_non_numeric_input():
    with pytest.raises(TypeError, match=r"expected a numeric input array, got dtype <U1"):
        classifier().predict(np.array([["a", "b", "c", "d"]]))


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
@pytest.mark.parametrize("head", ["logits", "regression"])
def test_diverging_training_raises_floating_point_error(head):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 20)).astype(np.float32)  # unnormalised, like raw pixels
    if head == "logits":
        # Linear layers only: nothing saturates or dies, so the logits overflow to inf → NaN.
        model = cr.Sequential([Dense(32, input_shape=(20,)), Dense(3)], seed=0)
        model.compile(optimizers.SGD(lr=1e6), SCE(from_logits=True))
        y = rng.integers(0, 3, 64)
    else:
        model = cr.Sequential([Dense(1, input_shape=(20,))], seed=0)
        model.compile(optimizers.SGD(lr=1e6), losses.MeanSquaredError())
        y = rng.standard_normal((64, 1)).astype(np.float32)
    with pytest.raises(FloatingPointError,
                       match=r"the loss became (nan|inf) at epoch 1, step \d of 4\. Try a "
                             r"lower learning rate \(it was 1e\+06\)"):
        model.fit(x, y, epochs=5, batch_size=16, verbose=0)


def test_finite_divergence_raises_floating_point_error():
    """The loss of raw-pixel inputs under a huge rate grows without overflowing (log-softmax
    stays finite): caught once it stays 100× above the first step's loss."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 20)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    model = cr.Sequential([Dense(3, input_shape=(20,))], seed=0)
    model.compile(optimizers.SGD(lr=10.0), SCE(from_logits=True))
    with pytest.raises(FloatingPointError,
                       match=r"training diverged: the loss stayed above \S+ \(100 × .*\) for 4 "
                             r"consecutive steps and reached \S+ at epoch \d, step \d of 4\. Try "
                             r"a lower learning rate \(it was 10\)"):
        model.fit(x, y, epochs=5, batch_size=16, verbose=0)


def test_noisy_but_converging_training_is_not_mistaken_for_divergence():
    """Batches of 2 with a momentum-SGD rate high enough that the batch losses jump around."""
    x, y = blobs(n=120)
    history = classifier(optimizer=optimizers.SGD(lr=0.2, momentum=0.9)).fit(
        x, y, epochs=20, batch_size=2, verbose=0)
    assert len(history.history["loss"]) == 20


@pytest.mark.parametrize("epochs, initial_epoch", [(-3, 0), (0, 0), (2, 2), (1.5, 0),
                                                   (True, 0), ("3", 0)])
def test_fit_refuses_epochs_that_run_no_epoch(epochs, initial_epoch):
    x, y = blobs(n=12)
    with pytest.raises(ValueError, match=r"fit: epochs must be an integer of at least "
                                         rf"initial_epoch \+ 1 = {initial_epoch + 1}"):
        classifier().fit(x, y, epochs=epochs, initial_epoch=initial_epoch, verbose=0)


@pytest.mark.parametrize("initial_epoch", [-1, 0.5])
def test_fit_refuses_a_negative_or_fractional_initial_epoch(initial_epoch):
    x, y = blobs(n=12)
    with pytest.raises(ValueError, match=r"fit: initial_epoch must be a non-negative integer"):
        classifier().fit(x, y, epochs=3, initial_epoch=initial_epoch, verbose=0)
