"""The presets' settings live in models.py once: the functions and ``chainrule train`` build and
train the same networks with the same defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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


def test_mlp_has_the_dropout_of_the_tuned_preset():
    layers = [type(layer).__name__ for layer in models.mlp().layers]
    assert layers == ["Flatten", "Dense", "ReLU", "Dropout", "Dense", "ReLU", "Dropout", "Dense"]
    assert models.mlp().layers[3].rate == models.DEFAULT_DROPOUT["mlp"] == 0.2


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
