"""Residual facts beyond the table (tests/cases.py): names of its layers and parameters, the
gradient as the sum of both paths, one shared Generator, gradcheck inside a model, save, load
and resume, user layers inside it, errors."""

import re

import numpy as np
import pytest

import chainrule as cr
from chainrule import layers
from chainrule.layers import Layer


def mlp_block():
    return layers.Residual([layers.LayerNorm(), layers.Dense(8, activation="gelu"),
                            layers.Dense(4)])


def test_residual_names_its_layers_and_parameters():
    block = mlp_block()
    assert [layer.name for layer in block.layers] == ["layernorm_1", "dense_1", "gelu_1",
                                                      "dense_2"]
    block.build((3, 4))
    assert [p.name for p in block.parameters()] == [
        "layernorm_1.gamma", "layernorm_1.beta", "dense_1.W", "dense_1.b", "dense_2.W",
        "dense_2.b"]
    assert block.count_params() == 4 + 4 + 4 * 8 + 8 + 8 * 4 + 4
    model = cr.Sequential([layers.Dense(4, input_shape=(3, 2)), mlp_block(), mlp_block()])
    names = [name for name, _ in model.named_parameters()]
    assert names[2:4] == ["residual_1.layernorm_1.gamma", "residual_1.layernorm_1.beta"]
    assert list(model.state_dict())[2:4] == names[2:4]
    assert len(set(names)) == len(names)


def test_residual_gradient_is_the_sum_of_both_paths():
    rng = np.random.default_rng(0)
    dense = layers.Dense(3)
    block = layers.Residual(dense)
    x = rng.standard_normal((2, 5, 3))
    y = block.forward(x, training=True)
    np.testing.assert_array_equal(y, x + (x @ dense.W.value + dense.b.value))
    g = rng.standard_normal(y.shape)
    np.testing.assert_allclose(block.backward(g), g + g @ dense.W.value.T, rtol=1e-15)


def test_residual_layers_that_draw_share_its_generator():
    block = layers.Residual([layers.Dropout(0.5), layers.Dense(4), layers.Dropout(0.5),
                             layers.Residual([layers.Dense(4), layers.Dropout(0.5)])], seed=3)
    block.build((4,))
    draws = [block.layers[0], block.layers[2], block.layers[3], block.layers[3].layers[1]]
    assert all(layer.rng is block.rng for layer in draws)
    x = np.ones((6, 4), np.float32)
    first, second = block.forward(x, training=True), block.forward(x, training=True)
    assert not np.array_equal(first, second)
    assert layers.Residual(layers.Dense(3)).rng is None
    again = layers.Residual.from_config(block.get_config())
    again.build((4,))
    for mine, theirs in zip(again.parameters(), block.parameters(), strict=True):
        mine.value[...] = theirs.value
    again.rng.bit_generator.state = np.random.default_rng(3).bit_generator.state
    block.rng = np.random.default_rng(3)
    np.testing.assert_array_equal(again.forward(x, training=True), block.forward(x, training=True))


def test_residual_gradcheck_with_dropout_inside_a_model():
    model = cr.Sequential([
        layers.Dense(4, input_shape=(3, 2)),
        layers.Residual([layers.LayerNorm(), layers.Dense(6), layers.GELU(),
                         layers.Dropout(0.3), layers.Dense(4)]),
        layers.Flatten(), layers.Dense(3)], dtype="float64", seed=0)
    model.compile("adam", cr.losses.SparseCategoricalCrossEntropy(from_logits=True))
    rng = np.random.default_rng(0)
    report = cr.gradcheck(model, rng.standard_normal((5, 3, 2)), rng.integers(0, 3, 5),
                          max_entries=30)
    assert report.ok and report.max_rel_error < 1e-6, str(report)
    assert "residual_1.dense_1.W" in [e.name for e in report.entries]


def residual_model(seed=0):
    return cr.Sequential([
        layers.Dense(6, input_shape=(5,)),
        layers.Residual([layers.Dense(6), layers.BatchNorm(), layers.ReLU(),
                         layers.Dropout(0.2)]),
        layers.Residual(layers.Residual([layers.LayerNorm(), layers.Dense(6)])),
        layers.Dense(3)], seed=seed)


def test_model_with_residual_saves_loads_and_resumes_exactly(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    model = residual_model()
    model.compile(cr.optimizers.AdamW(0.01), cr.losses.SparseCategoricalCrossEntropy(
        from_logits=True))
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "residual.npz"
    model.save(path)
    loaded = cr.load_model(path)
    assert loaded.get_config() == model.get_config()
    assert [name for name, _ in loaded.named_parameters()] == \
        [name for name, _ in model.named_parameters()]
    buffers = loaded.layers[1].buffers()
    assert sorted(buffers) == ["batchnorm_1.running_mean", "batchnorm_1.running_var"]
    np.testing.assert_array_equal(buffers["batchnorm_1.running_mean"],
                                  model.layers[1].layers[1].running_mean)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    # Same optimizer state and dropout stream: training goes on identically.
    resumed = loaded.fit(x, y, epochs=4, initial_epoch=2, batch_size=8, verbose=0)
    straight = model.fit(x, y, epochs=4, initial_epoch=2, batch_size=8, verbose=0)
    assert resumed.history["loss"] == straight.history["loss"]
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    copy = model.copy()
    np.testing.assert_array_equal(copy.forward(x, training=True), model.forward(x, training=True))


class Scale(Layer):
    """y = 2x: a user's layer class, defined outside chainrule."""

    def _forward(self, x, training):
        return 2.0 * x

    def _backward(self, grad_y, need_input_grad):
        return 2.0 * grad_y


def test_residual_with_a_user_layer_needs_custom_objects(tmp_path):
    model = cr.Sequential([layers.Dense(3, input_shape=(2,)),
                           layers.Residual([Scale(), layers.Dense(3)])], seed=0)
    path = tmp_path / "custom.npz"
    model.save(path)
    with pytest.raises(ValueError, match=r"layer class 'Scale' was saved from module .*pass "
                                         r"custom_objects=\{'Scale': Scale\}"):
        cr.load_model(path)
    loaded = cr.load_model(path, custom_objects={"Scale": Scale})
    x = np.ones((2, 2), np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_residual_errors():
    with pytest.raises(ValueError, match=re.escape(
            "Residual 'res': the block maps samples of shape (4, 6) to (4, 3); y = x + block(x) "
            "needs the same shape (end the block with a layer that maps back to 6 features)")):
        layers.Residual(layers.Dense(3), name="res").build((4, 6))
    with pytest.raises(TypeError, match="Residual expects a Layer or a list of Layers as its "
                                        "block, got str"):
        layers.Residual("dense")
    model = cr.Sequential([layers.Dense(2, input_shape=(2,))])
    with pytest.raises(TypeError, match=r"for a Sequential pass its layers, "
                                        r"Residual\(model.layers\)"):
        layers.Residual(model)
    with pytest.raises(ValueError, match="the block is empty"):
        layers.Residual([])
    with pytest.raises(ValueError, match="a layer named 'd' is already in the block"):
        layers.Residual([layers.Dense(2, name="d"), layers.Dense(2, name="d")])
    dense = layers.Dense(2)
    with pytest.raises(ValueError, match="layer .dense_1. is already in the block"):
        layers.Residual([dense, dense])
    # Built, it refuses another width before any inner layer runs (the first one here, a
    # Dropout, would take anything).
    built = layers.Residual([layers.Dropout(0.1), layers.Dense(4)], name="res")
    built.forward(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=re.escape(
            "Residual 'res' was built for samples of shape (3, 4) (its block maps them to "
            "themselves), got input of shape (2, 3, 5)")):
        built.forward(np.zeros((2, 3, 5), np.float32))
