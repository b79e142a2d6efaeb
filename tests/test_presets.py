"""The presets' settings live in models.py once: the functions and ``chainrule train`` build and
train the same networks with the same defaults."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import chainrule as cr
from chainrule import cli, models, optimizers, schedules


def without_names(config):
    """A model config with the layer names taken out (the builders number layers alike, but
    a comparison should not depend on it)."""
    config = json.loads(json.dumps(config))
    for spec in config["layers"]:
        spec["config"].pop("name", None)
    return config


@pytest.mark.parametrize("preset", models.PRESETS)
def test_the_function_and_train_build_the_same_network(preset):
    function = {"softmax": models.softmax_regression, "mlp": models.mlp, "cnn": models.cnn}
    direct = function[preset](seed=0)
    args = cli.build_parser().parse_args(["train", "--model", preset])
    config = cli._new_config(args, run_dir=Path("/nonexistent-run"))
    built = models.build(preset, seed=0, hidden=config["hidden"], dropout=config["dropout"],
                         augment=config["augment"])
    assert without_names(built.get_config()) == without_names(direct.get_config())
    assert config["epochs"] == models.DEFAULT_EPOCHS[preset]
    assert config["lr"] == models.DEFAULT_LR[preset]["adam"] == direct.optimizer.lr
    if preset != "softmax":
        assert config["dropout"] == models.DEFAULT_DROPOUT[preset]


def test_mlp_has_the_dropout_and_shifts_of_the_tuned_preset():
    layers = [type(layer).__name__ for layer in models.mlp().layers]
    assert layers == ["RandomShift", "Flatten", "Dense", "ReLU", "Dropout", "Dense", "ReLU",
                      "Dropout", "Dense"]
    assert models.mlp().layers[4].rate == models.DEFAULT_DROPOUT["mlp"] == 0.2
    assert models.mlp().layers[0].max_shift == models.DEFAULT_AUGMENT["mlp"] == 1


def test_mlp_shifts_images_only():
    assert [type(layer).__name__ for layer in models.mlp(augment=0).layers][:2] == [
        "Flatten", "Dense"]
    assert models.mlp(augment=3, input_shape=(1, 28, 28)).layers[0].max_shift == 3
    vectors = models.mlp(input_shape=(784,), hidden=(8,))
    assert [type(layer).__name__ for layer in vectors.layers][:2] == ["Flatten", "Dense"]
    with pytest.raises(ValueError, match=r"mlp: augment shifts images, of input_shape \(H, W\) "
                       r"or \(C, H, W\), got input_shape \(784,\); pass augment=0"):
        models.mlp(augment=1, input_shape=(784,))


@pytest.mark.parametrize(("argv", "augment"), [([], 1), (["--augment", "0"], 0),
                                               (["--augment", "2"], 2)])
def test_train_shifts_mlp_images_as_told(argv, augment):
    args = cli.build_parser().parse_args(["train", "--model", "mlp", *argv])
    config = cli._new_config(args, run_dir=Path("/nonexistent-run"))
    assert config["augment"] == augment
    model = models.build("mlp", seed=0, augment=config["augment"])
    shifts = [layer.max_shift for layer in model.layers if type(layer).__name__ == "RandomShift"]
    assert shifts == ([augment] if augment else [])


def test_softmax_config_has_no_augment():
    args = cli.build_parser().parse_args(["train", "--model", "softmax", "--augment", "2"])
    assert cli._new_config(args, run_dir=Path("/nonexistent-run"))["augment"] is None


@pytest.mark.parametrize(("name", "cls"), [("adam", optimizers.Adam), ("adamw", optimizers.AdamW),
                                           ("rmsprop", optimizers.RMSprop),
                                           ("sgd", optimizers.SGD)])
def test_make_optimizer(name, cls):
    opt = models.make_optimizer(name, 0.1, total_steps=100)
    assert type(opt) is cls
    assert isinstance(opt.lr, schedules.CosineDecay) and opt.lr.T_max == 100
    assert models.make_optimizer(name, 0.1, total_steps=100, schedule="constant").lr == 0.1
    if name == "sgd":
        assert opt.momentum == 0.9 and opt.nesterov
    assert models.default_lr("mlp", name) == (0.1 if name == "sgd" else 2e-3)
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        models.make_optimizer("lamb")


def test_the_shifted_mlp_saves_and_loads(tmp_path):
    model = models.mlp(seed=0)
    model.save(tmp_path / "mlp.npz")
    loaded = cr.load_model(tmp_path / "mlp.npz")
    assert loaded.get_config() == model.get_config()
    assert type(loaded.layers[0]).__name__ == "RandomShift" and loaded.layers[0].max_shift == 1
    x = np.random.default_rng(0).random((4, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
