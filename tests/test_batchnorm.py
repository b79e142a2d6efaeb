"""BatchNorm facts beyond the table (tests/cases.py, where training rows on (N, C) and
(N, C, H, W) meet gradcheck and torch, running statistics included, and eval rows torch's eval
mode): gradcheck catching a missing path, running statistics over steps and by hand, config,
buffers, save/load of its non-trainable state, errors, and batches of one in fit."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import chainrule as cr
from cases import batchnorm_state, shifted_normal
from chainrule import layers, losses, optimizers
from chainrule.layers import BatchNorm
from chainrule.layers.base import make_layer
from helpers import DTYPES, assert_close, assert_close_to_scale, rtol_for, to_torch


def make(shape, dtype, seed: int = 0, momentum: float = 0.1, eps: float = 1e-5):
    """A BatchNorm built for ``shape`` with random γ, β, running statistics, and an input."""
    rng = np.random.default_rng(100 + seed)
    layer = BatchNorm(momentum=momentum, eps=eps)
    layer.build(shape[1:], dtype=dtype)
    batchnorm_state(layer, rng)
    x = shifted_normal(*shape[1:])(rng, shape[0]).astype(dtype)
    return layer, x


# ---------------------------------------------------------------------- gradients
def test_gradcheck_runs_on_a_clone_and_leaves_the_running_statistics_alone():
    layer, x = make((4, 3, 2, 2), np.float32)
    before = {name: value.copy() for name, value in layer.buffers().items()}
    assert cr.gradcheck(layer, x, seed=0).ok
    for name, value in layer.buffers().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


class BatchNormWithoutVariancePath(BatchNorm):
    """dL/dx = γ (g − mean g) / σ: the path through σ left out (the classic slip)."""

    def _backward(self, grad_y, need_input_grad):
        super()._backward(grad_y, need_input_grad)
        _, inv_std = self.cache
        axes = (0, *range(2, grad_y.ndim))
        shape = (1, -1) + (1,) * (grad_y.ndim - 2)
        centred = grad_y - grad_y.mean(axis=axes, keepdims=True)
        return self.gamma.value.reshape(shape) * inv_std.reshape(shape) * centred


class BatchNormWithoutMeanPath(BatchNorm):
    """dL/dx = γ g / σ: as if μ and σ were constants."""

    def _backward(self, grad_y, need_input_grad):
        super()._backward(grad_y, need_input_grad)
        _, inv_std = self.cache
        shape = (1, -1) + (1,) * (grad_y.ndim - 2)
        return self.gamma.value.reshape(shape) * inv_std.reshape(shape) * grad_y


@pytest.mark.parametrize("planted", [BatchNormWithoutVariancePath, BatchNormWithoutMeanPath])
def test_gradcheck_catches_a_missing_path(planted):
    _, x = make((3, 2, 3, 3), np.float64)
    report = cr.gradcheck(planted(), x, seed=1)
    assert not report.ok and report["input"].max_rel_error > 1e-2, str(report)
    assert report["gamma"].ok and report["beta"].ok


# ---------------------------------------------------------------------- running statistics
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0, 0.0])
@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 5, 4)], ids=["6x4", "3x2x5x4"])
def test_running_statistics_and_inference_match_torch_over_steps(shape, momentum, dtype):
    """Several training steps on different batches, then inference: running statistics (with
    the unbiased variance) and the eval output equal torch's after every step."""
    rtol = rtol_for(dtype)
    layer = BatchNorm(momentum=momentum)
    layer.build(shape[1:], dtype=dtype)
    c = shape[1]
    mean_t = torch.zeros(c, dtype=torch.float32 if dtype is np.float32 else torch.float64)
    var_t = torch.ones_like(mean_t)
    rng = np.random.default_rng(4)
    for step in range(4):
        x = (3.0 * rng.standard_normal(shape) + step).astype(dtype)
        layer.forward(x, training=True)
        TF.batch_norm(to_torch(x), mean_t, var_t, training=True, momentum=momentum,
                      eps=layer.eps)
        assert_close(layer.running_mean, mean_t, rtol, f"step {step} running_mean", atol=rtol)
        assert_close(layer.running_var, var_t, rtol, f"step {step} running_var")
    assert layer.running_mean.dtype == dtype and layer.running_var.dtype == dtype
    layer.gamma.value[...] = rng.standard_normal(c)
    layer.beta.value[...] = rng.standard_normal(c)
    x = rng.standard_normal(shape).astype(dtype)
    y = layer.forward(x, training=False)
    y_t = TF.batch_norm(to_torch(x), mean_t, var_t, to_torch(layer.gamma.value),
                        to_torch(layer.beta.value), training=False, eps=layer.eps)
    assert_close_to_scale(y, y_t, rtol, "eval forward y")


def test_unbiased_running_variance_by_hand():
    layer = BatchNorm(momentum=0.5)
    x = np.array([[1.0], [2.0], [6.0]])  # mean 3, biased variance 14/3, unbiased 7
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(layer.running_mean, [0.5 * 0 + 0.5 * 3])
    np.testing.assert_allclose(layer.running_var, [0.5 * 1 + 0.5 * 7])
    # Normalisation itself uses the biased variance.
    np.testing.assert_allclose(y[:, 0], (x[:, 0] - 3) / np.sqrt(14 / 3 + 1e-5))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4, 5)], ids=["4x3", "2x3x4x5"])
def test_inference_uses_the_running_statistics(shape, dtype):
    """y = γ (x − running mean) / √(running var + ε) + β, written out here; a batch of one is
    fine at inference (no batch statistics are needed). The table's eval rows check the same
    against torch, with nothing cached and nothing changed."""
    layer, x = make(shape, dtype)
    mean, var = layer.running_mean.copy(), layer.running_var.copy()
    y = layer.forward(x, training=False)
    bshape = (1, -1) + (1,) * (len(shape) - 2)
    expected = (layer.gamma.value.reshape(bshape) * (x - mean.reshape(bshape))
                / np.sqrt(var.reshape(bshape) + layer.eps) + layer.beta.value.reshape(bshape))
    np.testing.assert_allclose(y, expected, rtol=10 * rtol_for(dtype), atol=rtol_for(dtype))
    assert layer.forward(x[:1], training=False).shape == (1, *shape[1:])


# ---------------------------------------------------------------------- config, state, errors
def test_config_round_trip_and_buffers():
    layer = BatchNorm(momentum=0.3, eps=1e-3, name="bn")
    config = layer.get_config()
    assert config == {"name": "bn", "momentum": 0.3, "eps": 1e-3, "frozen": False}
    assert json.loads(json.dumps(config)) == config
    twin = make_layer({"class_name": "BatchNorm", "config": config})
    assert twin.get_config() == config and repr(twin) == repr(layer)
    assert layer.buffers() == {} and layers.Dense(2).buffers() == {}
    layer.build((3, 2, 2))
    assert [p.name for p in layer.parameters()] == ["gamma", "beta"]
    assert layer.count_params() == 6
    np.testing.assert_array_equal(layer.gamma.value, np.ones(3, np.float32))
    np.testing.assert_array_equal(layer.beta.value, np.zeros(3, np.float32))
    buffers = layer.buffers()
    assert list(buffers) == ["running_mean", "running_var"]
    assert buffers["running_mean"] is layer.running_mean
    np.testing.assert_array_equal(layer.running_var, np.ones(3, np.float32))
    assert layer.compute_output_shape((3, 2, 2)) == (3, 2, 2)


def test_set_buffers_overwrites_in_place_and_checks():
    layer = BatchNorm(name="bn")
    layer.build((3,), dtype=np.float32)
    before = layer.running_mean
    layer.set_buffers({"running_mean": np.arange(3.0)})
    assert layer.running_mean is before and layer.running_mean.dtype == np.float32
    np.testing.assert_array_equal(layer.running_mean, [0, 1, 2])
    with pytest.raises(ValueError, match=r"BatchNorm 'bn' has no buffer 'running_std'; it has "
                                         r"\['running_mean', 'running_var'\]"):
        layer.set_buffers({"running_std": np.ones(3)})
    with pytest.raises(ValueError, match=r"BatchNorm 'bn': buffer 'running_var' has shape "
                                         r"\(3,\), got \(4,\)"):
        layer.set_buffers({"running_var": np.ones(4)})


def bn_model(dtype="float32"):
    model = cr.Sequential([
        BatchNorm(input_shape=(2, 4, 4)),
        layers.ReLU(),
        layers.MaxPool2D(2),
        layers.Flatten(),
        layers.Dense(6),
        BatchNorm(momentum=0.3),
        layers.Tanh(),
        layers.Dense(3),
    ], dtype=dtype, seed=0, name="bn_net")
    model.compile(optimizers.Adam(0.01), losses.SparseCategoricalCrossEntropy(from_logits=True))
    return model


def bn_data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    x = (2.0 * rng.standard_normal((n, 2, 4, 4)) + 1.0).astype(np.float32)
    return x, rng.integers(0, 3, n)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_load_round_trip_restores_running_statistics(tmp_path, dtype):
    model = bn_model(dtype)
    x, y = bn_data()
    model.fit(x, y, epochs=2, batch_size=8, seed=0, verbose=0)
    norms = [layer for layer in model.layers if isinstance(layer, BatchNorm)]
    assert all(not np.allclose(layer.running_mean, 0) for layer in norms)
    path = tmp_path / "bn.npz"
    model.save(path)
    with np.load(path) as archive:
        assert {"batchnorm_1.running_mean", "batchnorm_1.running_var",
                "batchnorm_2.running_mean", "batchnorm_2.running_var",
                "batchnorm_1.gamma", "batchnorm_1.beta"} <= set(archive.files)
    loaded = cr.load_model(path)
    for ours, theirs in zip(model.layers, loaded.layers, strict=True):
        for name, value in ours.buffers().items():
            restored = theirs.buffers()[name]
            assert restored.dtype == np.dtype(dtype) and np.array_equal(restored, value), name
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.evaluate(x, y) == model.evaluate(x, y)
    # Training resumes exactly: parameters, optimizer state and running statistics all agree.
    model.fit(x, y, epochs=3, initial_epoch=2, batch_size=8, seed=0, verbose=0)
    loaded.fit(x, y, epochs=3, initial_epoch=2, batch_size=8, seed=0, verbose=0)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_load_refuses_a_file_without_the_running_statistics(tmp_path):
    model = bn_model()
    x, y = bn_data()
    model.fit(x, y, epochs=1, batch_size=8, seed=0, verbose=0)
    path = tmp_path / "bn.npz"
    model.save(path)
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files if k != "batchnorm_2.running_var"}
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=re.escape(
            "lacks the layer state 'batchnorm_2.running_var'")):
        cr.load_model(path)


def test_model_gradcheck_through_batchnorm():
    """gradcheck(model, …) rebuilds the model in float64 from its config: BatchNorm clones."""
    model = bn_model("float64")
    x, y = bn_data(6, seed=1)
    report = cr.gradcheck(model, x.astype(np.float64), y)
    assert report.ok and report.max_rel_error < 1e-6, str(report)


def test_wrong_rank():
    layer = BatchNorm(name="bn")
    with pytest.raises(ValueError, match=re.escape(
            "BatchNorm 'bn' expected input of shape (N, C) or (N, C, H, W), got input of shape "
            "(4, 5, 7); channels are on axis 1: reshape (N, C, L) to (N, C, L, 1), or flatten "
            "to (N, features) first")):
        layer.forward(np.zeros((4, 5, 7), np.float32))
    layer.build((5,))
    with pytest.raises(ValueError, match=re.escape(
            "expected input of shape (N, C) or (N, C, H, W), got input of shape (4,)")):
        layer.forward(np.zeros(4, np.float32))


def test_wrong_channel_count_for_a_built_layer():
    layer = BatchNorm(name="bn")
    layer.forward(np.ones((2, 16, 3, 3), np.float32), training=True)
    with pytest.raises(ValueError, match=re.escape(
            "BatchNorm 'bn' expected 16 channels on axis 1, got input of shape (32, 8, 5, 5)")):
        layer.forward(np.zeros((32, 8, 5, 5), np.float32))


def test_one_value_per_channel_is_refused_when_training():
    layer = BatchNorm(name="bn")
    with pytest.raises(ValueError, match=re.escape(
            "BatchNorm 'bn' needs more than one value per channel when training, got input of "
            "shape (1, 3) (the batch variance of one value is 0); use a batch of 2 or more")):
        layer.forward(np.ones((1, 3), np.float32), training=True)
    mean_before = layer.running_mean.copy()
    layer.forward(np.ones((1, 3), np.float32), training=False)
    np.testing.assert_array_equal(layer.running_mean, mean_before)
    with pytest.raises(ValueError, match="needs more than one value per channel"):
        layer.forward(np.ones((1, 3, 1, 1), np.float32), training=True)
    # torch refuses it too.
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        TF.batch_norm(torch.ones(1, 3), None, None, training=True)


@pytest.mark.parametrize("kwargs, message", [
    ({"momentum": 1.5}, r"BatchNorm: momentum must lie in \[0, 1\] \(PyTorch's convention: the "
                        r"weight of the new batch, 0.1 by default\), got 1.5"),
    ({"momentum": -0.1}, r"momentum must lie in \[0, 1\]"),
    ({"eps": 0.0}, r"BatchNorm: eps must be positive, got 0.0"),
])
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchNorm(**kwargs)


def test_base_class_input_checks_apply():
    layer = BatchNorm()
    with pytest.raises(TypeError, match="expected float32 or float64 input, got dtype int64"):
        layer.forward(np.ones((2, 3), np.int64))
    layer.build((3,), dtype=np.float32)
    with pytest.raises(TypeError, match="was built for float32 input, got float64"):
        layer.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match="received non-finite input"):
        layer.forward(np.array([[1.0, np.inf, 0.0], [0.0, 0.0, 0.0]], np.float32))


def test_get_and_set_weights_carry_the_running_statistics():
    """EarlyStopping(restore_best_weights) and gradcheck's copies go through get/set_weights."""
    model = cr.Sequential([layers.Dense(4, input_shape=(3,)), BatchNorm(), layers.Dense(2)],
                          seed=0)
    model.compile("sgd", losses.SparseCategoricalCrossEntropy(from_logits=True))
    bn = model.layers[1]
    weights = model.get_weights()
    assert len(weights) == len(model.parameters()) + 2
    rng = np.random.default_rng(0)
    model.fit(rng.standard_normal((32, 3)) * 3 + 1, rng.integers(0, 2, 32), epochs=2,
              batch_size=8, verbose=0)
    # dense_1 W, b; batchnorm_1 gamma, beta, then its buffers running_mean, running_var; dense_2
    assert not np.array_equal(bn.running_mean, weights[4])
    model.set_weights(weights)
    np.testing.assert_array_equal(bn.running_mean, weights[4])
    np.testing.assert_array_equal(bn.running_var, weights[5])
    with pytest.raises(ValueError, match=r"set_weights: batchnorm_1.running_mean expected shape "
                                         r"\(4,\), got \(5,\)"):
        model.set_weights(weights[:4] + [np.zeros(5)] + weights[5:])


# ---------------------------------------------------------------------- batches of one in fit
def bn_after_dense(seed=0):
    """Dense → BatchNorm on (N, C): one value per channel and sample."""
    model = cr.Sequential([layers.Dense(6, input_shape=(4,)), BatchNorm(name="bn"), layers.ReLU(),
                           layers.Dense(3)], seed=seed)
    model.compile(optimizers.Adam(0.01), losses.SparseCategoricalCrossEntropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def test_min_training_batch_depends_on_the_input_rank():
    assert BatchNorm().min_training_batch() == 2  # not built: the input is not known yet
    for shape, fewest in [((3,), 2), ((3, 1, 1), 2), ((3, 4, 4), 1), ((3, 1, 2), 1)]:
        layer = BatchNorm()
        layer.build(shape)
        assert layer.min_training_batch() == fewest, shape
    model = bn_after_dense()
    assert model._min_training_batch() == (2, model.layers[1])
    plain = cr.Sequential([layers.Dense(3, input_shape=(4,))])
    assert plain._min_training_batch() == (1, None)


def test_fit_leaves_out_a_last_batch_of_one_sample_and_says_so_once(capsys):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 4)).astype(np.float32)  # 10 = 3·3 + 1
    y = rng.integers(0, 3, 10)
    model = bn_after_dense()
    bn = model.layers[1]
    batches = []
    forward = bn._forward

    def counting_forward(x, training):
        if training:
            batches.append(len(x))
        return forward(x, training)

    bn._forward = counting_forward
    history = model.fit(x, y, epochs=3, batch_size=3, seed=0, verbose=2)
    assert batches == [3, 3, 3] * 3
    assert model.optimizer.iterations == 9 and len(history.history["loss"]) == 3
    note = ("fit: the last batch of each epoch (1 of 10 samples, shuffled, so not the same ones) "
            "is left out: BatchNorm 'bn' needs at least 2 samples per training batch")
    assert history.params["steps"] == 3 and history.params["left_out_per_epoch"] == 1
    assert history.params["note"] == note
    err = capsys.readouterr().err
    assert err.count(note) == 1, err
    assert model.steps_per_epoch(10, 3) == 3 and model.steps_per_epoch(11, 3) == 4

    # Silent with verbose=0, still recorded; a model without BatchNorm keeps the last sample.
    quiet = bn_after_dense().fit(x, y, epochs=1, batch_size=3, shuffle=False, verbose=0)
    assert "always the last ones" in quiet.params["note"]
    assert capsys.readouterr().err == ""
    plain = cr.Sequential([layers.Dense(3, input_shape=(4,))], seed=0)
    plain.compile("adam", losses.SparseCategoricalCrossEntropy(from_logits=True))
    kept = plain.fit(x, y, epochs=1, batch_size=3, verbose=0)
    assert kept.params["steps"] == 4 and kept.params["left_out_per_epoch"] == 0
    assert "note" not in kept.params


@pytest.mark.parametrize("n, batch_size, message", [
    (10, 1, "fit: batch_size=1 is too small for BatchNorm 'bn', which needs at least 2 samples "
            "per training batch on input of shape (N, 6); use batch_size=2 or more"),
    (1, 8, "fit: x has 1 sample, but BatchNorm 'bn' needs at least 2 per training batch on "
           "input of shape (N, 6)"),
])
def test_fit_refuses_a_batch_too_small_before_any_step(n, batch_size, message):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    y = rng.integers(0, 3, n)
    model = bn_after_dense()
    before = model.get_weights()
    with pytest.raises(ValueError, match=re.escape(message)):
        model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)
    assert model.optimizer.iterations == 0
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_image_batchnorm_trains_on_batches_of_one():
    """(N, C, H, W) with H·W > 1: one sample gives each channel H·W values, enough to train."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 1, 4, 4)).astype(np.float32)
    y = rng.integers(0, 2, 5)
    model = cr.Sequential([layers.Conv2D(2, 3, input_shape=(1, 4, 4)), BatchNorm(),
                           layers.Flatten(), layers.Dense(2)], seed=0)
    model.compile("adam", losses.SparseCategoricalCrossEntropy(from_logits=True))
    history = model.fit(x, y, epochs=1, batch_size=1, verbose=0)
    assert history.params["steps"] == 5 and history.params["left_out_per_epoch"] == 0


# ---------------------------------------------------------------------- frozen
@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4, 4)], ids=["features", "images"])
def test_frozen_batchnorm_is_the_inference_map_in_training_too(shape):
    """frozen=True: training forward = inference forward (running statistics, never updated),
    backward dL/dx = γ/√(running_var + ε) · g; equal to torch's BatchNorm in eval mode."""
    rng = np.random.default_rng(0)
    layer = BatchNorm(frozen=True)
    layer.build(shape[1:], dtype=np.float64)
    layer.running_mean[...] = rng.standard_normal(3)
    layer.running_var[...] = rng.random(3) + 0.5
    layer.gamma.value[...] = rng.standard_normal(3)
    layer.beta.value[...] = rng.standard_normal(3)
    stats = (layer.running_mean.copy(), layer.running_var.copy())
    x = rng.standard_normal(shape)
    np.testing.assert_array_equal(layer.forward(x, training=True), layer.forward(x))
    np.testing.assert_array_equal(layer.running_mean, stats[0])
    np.testing.assert_array_equal(layer.running_var, stats[1])
    assert layer.min_training_batch() == 1

    torch_bn = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(3).double()
    with torch.no_grad():
        torch_bn.running_mean.copy_(torch.from_numpy(stats[0]))
        torch_bn.running_var.copy_(torch.from_numpy(stats[1]))
        torch_bn.weight.copy_(torch.from_numpy(layer.gamma.value))
        torch_bn.bias.copy_(torch.from_numpy(layer.beta.value))
    torch_bn.eval()
    x_t = to_torch(x, requires_grad=True)
    y_t = torch_bn(x_t)
    g = rng.standard_normal(shape)
    y_t.backward(to_torch(g))
    y = layer.forward(x, training=True)
    assert_close(y, y_t, 1e-12, "frozen y")
    assert_close(layer.backward(g), x_t.grad, 1e-12, "frozen dL/dx")
    assert_close(layer.gamma.grad, torch_bn.weight.grad, 1e-12, "frozen dL/dγ")
    assert_close(layer.beta.grad, torch_bn.bias.grad, 1e-12, "frozen dL/dβ")
    assert cr.gradcheck(layer, x).ok
