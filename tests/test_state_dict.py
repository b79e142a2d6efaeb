"""One walk over a model's state: state_dict / load_state_dict, the optimizer's by parameter
name, the archive built from them, and files of the previous format still loading."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import numpy as np
import pytest

import chainrule as cr
from chainrule import layers, losses, optimizers, serialization


def model_with_every_kind_of_state(seed=0):
    model = cr.Sequential([
        layers.Dense(6, activation="relu", input_shape=(4,)),
        layers.BatchNorm(),
        layers.Dropout(0.25),
        layers.Residual([layers.LayerNorm(), layers.Dense(6), layers.Dropout(0.5)]),
        layers.Dense(3),
    ], seed=seed)
    model.compile(optimizers.Adam(0.01), losses.SparseCategoricalCrossEntropy(from_logits=True))
    return model


def data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def test_names_cover_every_parameter_buffer_and_random_state_in_order():
    model = model_with_every_kind_of_state()
    assert list(model.state_dict()) == [
        "dense_1.W", "dense_1.b", "batchnorm_1.gamma", "batchnorm_1.beta",
        "batchnorm_1.running_mean", "batchnorm_1.running_var", "dropout_1.rng",
        "residual_1.layernorm_1.gamma", "residual_1.layernorm_1.beta", "residual_1.dense_1.W",
        "residual_1.dense_1.b", "residual_1.rng", "dense_2.W", "dense_2.b"]
    assert [name for name, _ in model.named_parameters()] == [
        name for name in model.state_dict() if not name.endswith(("rng", "running_mean",
                                                                  "running_var"))]
    state = model.state_dict()
    assert state["dense_1.W"] is model.layers[0].W.value  # the model's own arrays
    assert state["dropout_1.rng"].dtype == np.uint64 and state["dropout_1.rng"].shape == (6,)


def test_load_state_dict_makes_a_twin_that_predicts_and_trains_identically():
    x, y = data()
    model, twin = model_with_every_kind_of_state(0), model_with_every_kind_of_state(1)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    twin.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(twin.predict(x), model.predict(x))
    # The random states came along: the next training forward draws the same masks.
    np.testing.assert_array_equal(twin.forward(x, training=True), model.forward(x, training=True))
    twin.optimizer.load_state_dict(model.optimizer.state_dict())
    for m in (model, twin):
        m.fit(x, y, epochs=2, initial_epoch=1, batch_size=8, verbose=0, seed=3)
    for a, b in zip(model.get_weights(), twin.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_strict_loading_names_what_is_missing_unexpected_or_misshapen():
    model = model_with_every_kind_of_state()
    before = [w.copy() for w in model.get_weights()]
    state = dict(model.state_dict())
    del state["dense_1.b"]
    state["dense_9.W"] = np.ones(2)
    with pytest.raises(ValueError, match=r"load_state_dict: missing 'dense_1\.b'; unexpected "
                                         r"'dense_9\.W' \(the model has 'dense_1\.W', "):
        model.load_state_dict(state)
    state = dict(model.state_dict(), **{"dense_2.W": np.zeros((3, 6))})
    with pytest.raises(ValueError, match=r"load_state_dict: dense_2\.W expected shape \(6, 3\), "
                                         r"got \(3, 6\)"):
        model.load_state_dict(state)
    state = dict(model.state_dict(), **{"batchnorm_1.running_var": np.full(6, np.nan)})
    with pytest.raises(ValueError, match=r"batchnorm_1\.running_var holds 6 NaN/inf values"):
        model.load_state_dict(state)
    state = dict(model.state_dict(), **{"dense_1.W": np.ones((4, 6), np.complex64)})
    with pytest.raises(TypeError, match=r"dense_1\.W has dtype complex64"):
        model.load_state_dict(state)
    state = dict(model.state_dict(), **{"dropout_1.rng": np.zeros(6)})
    with pytest.raises(ValueError, match=r"dropout_1\.rng must be a random state, a \(6,\) "
                                         r"uint64 array"):
        model.load_state_dict(state)
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)  # nothing changed: every check comes first
    model.load_state_dict({"dense_2.b": np.full(3, 0.5)}, strict=False)
    np.testing.assert_array_equal(model.layers[-1].b.value, np.full(3, 0.5, np.float32))


def test_the_optimizer_state_is_keyed_by_parameter_name():
    x, y = data()
    model = model_with_every_kind_of_state()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    state = model.optimizer.state_dict()
    assert state["iterations"] == 4 and state["epoch"] == 0
    assert list(state["state"]) == [name for name, _ in model.named_parameters()]
    assert set(state["state"]["dense_1.W"]) == {"step", "m", "v"}
    assert state["state"]["dense_1.W"]["step"] == 4
    fresh = optimizers.Adam(0.01)
    fresh.bind(model.named_parameters())
    with pytest.raises(ValueError, match=r"Adam\.load_state_dict: dense_1\.W/m expected shape "
                                         r"\(4, 6\), got \(2,\)"):
        fresh.load_state_dict({**state, "state": {"dense_1.W": {**state["state"]["dense_1.W"],
                                                                 "m": np.zeros(2)}}})
    with pytest.raises(ValueError, match=r"dense_7\.W: no such parameter"):
        fresh.load_state_dict({**state, "state": {"dense_7.W": {}}})
    with pytest.raises(ValueError, match=r"dense_1\.W: expected the entries \['m', 'step', 'v'\]"):
        fresh.load_state_dict({**state, "state": {"dense_1.W": {"m": 1}}})
    unbound = optimizers.SGD(0.1, momentum=0.9)
    p = cr.Parameter(np.zeros(2), "w")
    p.grad = np.ones(2)
    unbound.step([p])
    with pytest.raises(RuntimeError, match=r"has state but no name; bind the optimizer"):
        unbound.state_dict()


def test_the_archive_holds_the_state_dict_by_name(tmp_path):
    x, y = data()
    model = model_with_every_kind_of_state()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as archive:
        names = set(archive.files)
        config = json.loads(str(archive[serialization.CONFIG_KEY]))
        np.testing.assert_array_equal(archive["dropout_1.rng"], model.state_dict()["dropout_1.rng"])
    assert config["format_version"] == 2 and "rng_states" not in config
    optimizer = {f"optimizer/{name}/{key}" for name, entries in
                 model.optimizer.state_dict()["state"].items() for key in entries}
    assert names == set(model.state_dict()) | optimizer | {serialization.CONFIG_KEY}


def as_format_1(path, model):
    """Rewrite a format 2 archive as the previous release wrote it: param/<layer>/<name>,
    state/<layer>/<name>, optimizer/<index>/<key>, random states in the JSON."""
    with np.load(path, allow_pickle=False) as archive:
        content = {k: archive[k] for k in archive.files}
    config = json.loads(str(content.pop(serialization.CONFIG_KEY)))
    config["format_version"] = 1
    config["rng_states"] = {}
    index = {name: i for i, (name, _) in enumerate(model.named_parameters())}
    kinds = {f"{layer.name}.{key}": (layer, key, kind)
             for layer in model.layers for key, kind, _ in layer.state_entries()}
    old = {}
    for name, value in content.items():
        if name.startswith("optimizer/"):
            param, key = name[len("optimizer/"):].rsplit("/", 1)
            old[f"optimizer/{index[param]}/{key}"] = value
            continue
        layer, key, kind = kinds[name]
        if kind == "rng":
            config["rng_states"][layer.name] = layer.rng.bit_generator.state
        else:
            prefix = "param" if kind == "param" else "state"
            old[f"{prefix}/{layer.name}/{key.replace('.', '/')}"] = value
    np.savez(path, **{serialization.CONFIG_KEY: np.array(json.dumps(config))}, **old)


def test_files_of_the_previous_format_load_and_resume_identically(tmp_path):
    x, y = data()
    model = model_with_every_kind_of_state()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "m.npz")
    as_format_1(tmp_path / "m.npz", model)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as archive:
        assert "param/residual_1/dense_1/W" in archive.files and "optimizer/0/m" in archive.files
    loaded = cr.load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    for m in (model, loaded):
        m.fit(x, y, epochs=2, initial_epoch=1, batch_size=8, verbose=0, seed=5)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_every_module_imports_on_its_own():
    """No import cycle hides behind the package's import order: each module, imported first in
    a fresh interpreter, loads."""
    names = sorted(m.name for m in pkgutil.walk_packages(cr.__path__, "chainrule.")
                   if m.name != "chainrule.__main__")
    code = ("import importlib, subprocess, sys\n"
            "names = sys.argv[1:]\n"
            "procs = [subprocess.Popen([sys.executable, '-c', f'import {n}'],"
            " stderr=subprocess.PIPE) for n in names]\n"
            "bad = [(n, p.communicate()[1].decode()[-300:]) for n, p in zip(names, procs)"
            " if p.wait()]\n"
            "print(bad)\n"
            "sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code, *names], capture_output=True,
                            text=True, timeout=300)
    assert len(names) > 40
    assert result.returncode == 0, result.stdout + result.stderr
