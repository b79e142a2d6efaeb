"""PyTorch both ways: to_torch gives chainrule's predict (1e-5 in float32), from_torch(to_torch)
is exact, one training step gives torch's gradients and weights, torch-native modules convert,
and a module chainrule cannot read is one error naming it."""

from __future__ import annotations

import copy
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import chainrule as cr
from chainrule import layers as L
from chainrule import losses, models, optimizers
from chainrule.interop import from_torch, to_torch
from helpers import assert_close_to_scale
from interop_helpers import PRESETS, ROWS, row_model, trained_preset

TORCH_ROWS = [name for name, row in ROWS.items() if row.torch]
RTOL = {"float32": 1e-5, "float64": 1e-10}


def torch_out(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(np.array(x))).numpy()


def assert_identical(back, model, x):
    assert [layer.name for layer in back.layers] == [layer.name for layer in model.layers]
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(".rng")}
    theirs = {k: v for k, v in back.state_dict().items() if not k.endswith(".rng")}
    assert list(theirs) == list(state)
    for key, value in state.items():
        assert theirs[key].dtype == value.dtype and np.array_equal(theirs[key], value), key
    assert np.array_equal(back.predict(x), model.predict(x))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("row", TORCH_ROWS)
def test_layer_row_both_ways(row, dtype):
    model, x = row_model(row, dtype)
    module = to_torch(model)
    assert not module.training
    assert_close_to_scale(torch_out(module, x), model.predict(x), RTOL[dtype], row)
    back = from_torch(module, input_shape=model.input_shape, dtype=dtype)
    assert back.dtype == model.dtype
    assert_identical(back, model, x)


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_both_ways(preset):
    model, x = trained_preset(preset)
    module = to_torch(model)
    assert_close_to_scale(torch_out(module, x), model.predict(x), RTOL["float32"], preset)
    assert_identical(from_torch(module, input_shape=model.input_shape), model, x)
    state = module.state_dict()
    assert np.array_equal(state[f"{model.layers[-1].name}.weight"].numpy(),
                          model.layers[-1].W.value.T)


def grads_as_chainrule(module, input_shape):
    """torch's gradients in chainrule's layout: a copy of the module holding them as weights,
    read back by from_torch."""
    holder = copy.deepcopy(module)
    with torch.no_grad():
        for p, original in zip(holder.parameters(), module.parameters(), strict=True):
            p.copy_(original.grad)
    return from_torch(holder, input_shape=input_shape)


TRAINED = {
    "mlp": lambda: models.mlp(hidden=(16, 12), dropout=0, augment=0, seed=0),
    "cnn": lambda: models.cnn(dropout=0, augment=0, seed=0),
    "convs": lambda: cr.Sequential([
        L.Conv2D(3, 4, strides=2, padding="same", use_bias=False, input_shape=(1, 12, 11)),
        L.BatchNorm(),
        L.GELU(), L.AvgPool2D(2, padding="same"), L.Conv2D(4, 2, padding="same"),
        L.MaxPool2D(3, strides=2, padding="same"), L.Flatten(), L.Dense(8), L.LayerNorm(),
        L.Tanh(), L.Dense(5)], seed=0),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(TRAINED))
def test_one_training_step_equals_torch(name, dtype):
    model = TRAINED[name]().copy(dtype=dtype)
    model.compile(optimizers.SGD(0.1), losses.SparseCategoricalCrossEntropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.random((16, *model.input_shape)).astype(dtype)
    y = rng.integers(0, model.output_shape[0], 16)
    module = to_torch(model).train()
    out = model.forward(x, training=True)
    loss = model.loss(out, y)
    model.backward(model.loss.backward())
    theirs = module(torch.from_numpy(x))
    torch_loss = nn.functional.cross_entropy(theirs, torch.from_numpy(y))
    torch_loss.backward()
    rtol = RTOL[dtype] * (10 if dtype == "float32" else 1)
    assert_close_to_scale(out, theirs.detach().numpy(), rtol, f"{name}: training output")
    assert abs(loss - torch_loss.item()) <= rtol * abs(loss)
    grads = dict(grads_as_chainrule(module, model.input_shape).named_parameters())
    for key, p in model.named_parameters():
        assert_close_to_scale(p.grad, grads[key].value, rtol, f"{name}: dL/d{key}")
    # The step itself, and BatchNorm's running statistics after the training forward.
    model.optimizer.step(model.parameters())
    torch.optim.SGD(module.parameters(), lr=0.1).step()
    stepped = from_torch(module, input_shape=model.input_shape).state_dict()
    for key, value in model.state_dict().items():
        if not key.endswith(".rng"):
            assert_close_to_scale(value, stepped[key], rtol, f"{name}: {key} after one step")


def test_torch_native_modules():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding="same"), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 4, stride=2, padding=1, bias=False), nn.AvgPool2d(2, padding=1),
        nn.LeakyReLU(0.1), nn.Flatten(), nn.Linear(24, 10), nn.Dropout(0.5), nn.GELU("tanh"),
        nn.Linear(10, 3), nn.Softmax(dim=1))
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    net.eval()
    model = from_torch(net, input_shape=(1, 12, 12))
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv2D", "BatchNorm", "ReLU", "MaxPool2D", "Conv2D", "AvgPool2D", "LeakyReLU", "Flatten",
        "Dense", "Dropout", "GELU", "Dense", "Softmax"]
    assert model.layers[0].padding == "same" and model.layers[4].padding == (1, 1)
    x = np.random.default_rng(0).random((5, 1, 12, 12), dtype=np.float32)
    assert_close_to_scale(model.predict(x), torch_out(net, x), 1e-5, "native cnn")
    words = nn.Sequential(OrderedDict(embed=nn.Embedding(20, 4), flat=nn.Flatten(),
                                      norm=nn.LayerNorm(20), out=nn.Linear(20, 3)))
    model = from_torch(words, input_shape=(5,))
    assert [layer.name for layer in model.layers] == ["embed", "flat", "norm", "out"]
    ids = np.random.default_rng(1).integers(0, 20, (4, 5))
    assert_close_to_scale(model.predict(ids), torch_out(words, ids), 1e-5, "native embedding")
    mlp = nn.Sequential(nn.Linear(6, 4), nn.Sequential(nn.Tanh(), nn.Linear(4, 2)))
    assert from_torch(mlp).input_shape == (6,)


@pytest.mark.parametrize(("module", "message"), [
    (nn.Sequential(nn.Linear(4, 4), nn.Conv1d(1, 1, 3)),
     r"module '1' \(Conv1d\): no chainrule equivalent; chainrule converts Linear"),
    (nn.Sequential(nn.Linear(4, 4), nn.LSTM(4, 4)), r"module '1' \(LSTM\): no chainrule"),
    (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, momentum=None)), "momentum=None"),
    (nn.Sequential(nn.Linear(4, 4), nn.Softmax(dim=0)), "softmax over dim 0"),
    (nn.Sequential(nn.Linear(4, 4), nn.Dropout1d(0.5)), r"\(Dropout1d\): no chainrule"),
    (nn.Sequential(nn.Linear(4, 4).double(), nn.Linear(4, 2)),
     "must all be float32 or all float64"),
])
def test_unsupported_modules_are_named(module, message):
    with pytest.raises(ValueError, match=message) as info:
        from_torch(module)
    assert "\n" not in str(info.value)


def test_settings_and_shapes_chainrule_lacks():
    with pytest.raises(ValueError, match="groups"):
        from_torch(nn.Conv2d(4, 4, 3, groups=2), input_shape=(4, 8, 8))
    with pytest.raises(ValueError, match=r"cannot infer the input shape from Conv2d"):
        from_torch(nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(ValueError, match="takes 3 channels, the input here has 1"):
        from_torch(nn.Conv2d(3, 2, 3), input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="ceil_mode"):
        from_torch(nn.MaxPool2d(2, ceil_mode=True), input_shape=(1, 5, 5))
    with pytest.raises(TypeError, match="expects a torch.nn.Module"):
        from_torch([nn.ReLU()])
    model = cr.Sequential([L.Embedding(5, 4, input_shape=(3,)), L.LSTM(2)])
    with pytest.raises(ValueError, match=r"layer 'lstm_1' \(LSTM\) has no torch.nn.Sequential"):
        to_torch(model)


@pytest.mark.parametrize(("package", "call", "command"), [
    ("torch", lambda m, p: to_torch(m), 'pip install "chainrule[torch]"'),
    ("onnx", lambda m, p: cr.export_onnx(m, p / "m.onnx"), 'pip install "chainrule[onnx]"'),
    ("safetensors", lambda m, p: m.save(p / "m.safetensors"),
     'pip install "chainrule[safetensors]"'),
])
def test_a_missing_package_names_its_install_command(monkeypatch, tmp_path, package, call,
                                                     command):
    model, _ = trained_preset("softmax")
    for name in list(sys.modules):
        if name == package or name.startswith(f"{package}."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(ImportError, match=command.replace("[", r"\[").replace("]", r"\]")):
        call(model, tmp_path)
