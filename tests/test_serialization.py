"""Save / load: identical predictions, config and optimizer state; plain .npz; atomic writes."""

import json
import os

import numpy as np
import pytest

import chainrule as cr
from chainrule import losses, optimizers, schedules
from chainrule.layers import Dense, Dropout, Flatten


def data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2, 3)).astype(np.float32)
    y = (x.reshape(n, -1).sum(axis=1) > 0).astype(np.int64) + (x[:, 0, 0] > 1)
    return x, y


def make_model(optimizer=None, dropout=True, dtype="float32"):
    layers = [Flatten(), Dense(12, activation="relu")]
    if dropout:
        layers.append(Dropout(0.25))
    layers += [Dense(8, activation="tanh"), Dense(3)]
    model = cr.Sequential(layers, dtype=dtype, name="net")
    model.compile(optimizer or optimizers.Adam(0.01),
                  losses.SparseCategoricalCrossEntropy(from_logits=True), metrics=["accuracy"])
    return model


def trained(optimizer=None, dropout=True, dtype="float32", epochs=2):
    x, y = data()
    model = make_model(optimizer, dropout, dtype)
    model.fit(x, y, epochs=epochs, batch_size=8, seed=0, verbose=0)
    return model, x, y


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_identical_predictions_and_config(tmp_path, dtype):
    model, x, _ = trained(dtype=dtype)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = cr.load_model(path)
    assert loaded.get_config() == model.get_config()
    assert loaded.dtype == np.dtype(dtype)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    assert loaded.summary(print_fn=None) == model.summary(print_fn=None)
    assert np.array_equal(loaded.predict(x), model.predict(x))
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert type(loaded.loss) is type(model.loss)
    assert loaded.loss.get_config() == model.loss.get_config()
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.optimizer.iterations == model.optimizer.iterations
    assert [m.name for m in loaded.metrics] == ["accuracy"]


OPTIMIZERS = {
    "sgd_nesterov": lambda: optimizers.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda: optimizers.Adam(0.01),
    "adamw_schedule": lambda: optimizers.AdamW(
        schedules.ExponentialDecay(0.01, gamma=0.7), weight_decay=0.05),
    "rmsprop": lambda: optimizers.RMSprop(0.01, momentum=0.5, centered=True),
}


@pytest.mark.parametrize("dropout", [False, True], ids=["plain", "dropout"])
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_resumed_training_is_bit_identical(tmp_path, opt, dropout):
    """Train 2 epochs, save; 2 more epochs from the file equal 2 more epochs in memory."""
    model, x, y = trained(OPTIMIZERS[opt](), dropout=dropout)
    path = tmp_path / "ckpt.npz"
    model.save(path)
    loaded = cr.load_model(path)
    for key, value in model.optimizer.state[model.parameters()[0]].items():
        assert np.array_equal(loaded.optimizer.state[loaded.parameters()[0]][key], value), key
    h1 = model.fit(x, y, epochs=4, initial_epoch=2, batch_size=8, seed=0, verbose=0)
    h2 = loaded.fit(x, y, epochs=4, initial_epoch=2, batch_size=8, seed=0, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        assert np.array_equal(a, b)
    assert h1.history == h2.history


def test_without_optimizer_state_resuming_differs(tmp_path):
    """The check above is not vacuous: dropping the Adam moments changes the continuation."""
    model, x, y = trained(optimizers.Adam(0.01), dropout=False)
    model.save(tmp_path / "m.npz", include_optimizer=False)
    loaded = cr.load_model(tmp_path / "m.npz")
    assert loaded.optimizer.state == {}
    model.fit(x, y, epochs=3, initial_epoch=2, batch_size=8, seed=0, verbose=0)
    loaded.fit(x, y, epochs=3, initial_epoch=2, batch_size=8, seed=0, verbose=0)
    assert not np.array_equal(model.get_weights()[0], loaded.get_weights()[0])


ADAMS = {
    "adam": lambda: optimizers.Adam(0.01),
    "adamw": lambda: optimizers.AdamW(0.01, weight_decay=0.05),
}


@pytest.mark.parametrize("opt", list(ADAMS))
def test_loaded_without_optimizer_state_first_step_equals_a_fresh_optimizer(tmp_path, opt):
    """iterations come back (per-step schedules need them) but the moments start at 0, so the
    bias correction must restart too: the first step equals a fresh optimizer's on the same
    weights and gradients (Adam's is then ≈ lr per weight)."""
    model, x, y = trained(ADAMS[opt](), dropout=False)
    path = tmp_path / "m.npz"
    model.save(path, include_optimizer=False)
    loaded = cr.load_model(path)
    assert loaded.optimizer.iterations == model.optimizer.iterations == 12
    fresh = cr.load_model(path, compile=False)
    fresh.compile(ADAMS[opt](), losses.SparseCategoricalCrossEntropy(from_logits=True))
    before = loaded.get_weights()
    loaded.train_step(x[:8], y[:8])
    fresh.train_step(x[:8], y[:8])
    for a, b in zip(loaded.get_weights(), fresh.get_weights(), strict=True):
        assert np.array_equal(a, b)
    assert all(loaded.optimizer.state[p]["step"] == 1 for p in loaded.parameters())
    if opt == "adam":
        largest = max(float(np.abs(a - b).max()) for a, b in zip(
            before, loaded.get_weights(), strict=True))
        assert 0.009 < largest <= 0.01 * (1 + 1e-5)


def test_adam_step_is_saved_and_loaded_as_an_exact_integer(tmp_path):
    """The state arrays take the model dtype, the step stays an int (float32 would round
    2²⁴ + 1 to 2²⁴)."""
    model, _, _ = trained(optimizers.Adam(0.01), dropout=False)
    first, last = model.parameters()[0], model.parameters()[-1]
    model.optimizer.state[first]["step"] = 2**24 + 1
    path = tmp_path / "m.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as archive:
        saved = archive["optimizer/dense_1.W/step"]
        assert saved.dtype == np.int64 and saved.shape == () and int(saved) == 2**24 + 1
        assert archive["optimizer/dense_1.W/m"].dtype == np.float32
    loaded = cr.load_model(path)
    state = loaded.optimizer.state
    assert type(state[loaded.parameters()[0]]["step"]) is int
    assert state[loaded.parameters()[0]]["step"] == 2**24 + 1
    assert state[loaded.parameters()[-1]]["step"] == model.optimizer.state[last]["step"] == 12


def test_file_without_per_parameter_steps_resumes_with_the_saved_iterations(tmp_path):
    """Files written before the step moved into each parameter's state hold only the moments,
    which were bias-corrected with the optimizer's iterations: they resume exactly as before."""
    model, x, y = trained(optimizers.Adam(0.01), dropout=False)
    model.save(tmp_path / "new.npz")
    with np.load(tmp_path / "new.npz", allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files if not k.endswith("/step")}
    assert any(k.startswith("optimizer/") for k in arrays)
    np.savez(tmp_path / "old.npz", **arrays)
    loaded = cr.load_model(tmp_path / "old.npz")
    assert [loaded.optimizer.state[p]["step"] for p in loaded.parameters()] == [12] * 6
    model.fit(x, y, epochs=3, initial_epoch=2, batch_size=8, seed=0, verbose=0)
    loaded.fit(x, y, epochs=3, initial_epoch=2, batch_size=8, seed=0, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        assert np.array_equal(a, b)


def test_uncompiled_load(tmp_path):
    model, x, _ = trained()
    model.save(tmp_path / "m.npz")
    loaded = cr.load_model(tmp_path / "m.npz", compile=False)
    assert loaded.loss is None and loaded.optimizer is None
    assert np.array_equal(loaded.predict(x), model.predict(x))


def test_file_is_a_plain_npz(tmp_path):
    model, _, _ = trained()
    path = tmp_path / "m.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as archive:
        files = set(archive.files)
        config = json.loads(str(archive["__chainrule__"]))
        W = archive["dense_1.W"]
    assert {"__chainrule__", "dense_1.W", "dense_1.b", "dense_3.W"} <= files
    assert any(name.startswith("optimizer/dense_1.W/") for name in files)
    assert config["format"] == "chainrule-model"
    assert config["model"]["name"] == "net"
    assert np.array_equal(W, model.layers[1].W.value)


def test_save_unbuilt_model_refuses(tmp_path):
    with pytest.raises(ValueError, match=r"the model is not built yet"):
        cr.Sequential([Dense(2)]).save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


def test_atomic_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    model, _, _ = trained()
    path = tmp_path / "model.npz"
    model.save(path)
    original = path.read_bytes()

    def failing_savez(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("No space left on device")

    model.fit(*data(), epochs=1, verbose=0)  # the next save would differ
    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="No space left on device"):
        model.save(path)
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["model.npz"]
    monkeypatch.undo()
    assert cr.load_model(path).get_config() == model.get_config()


def test_interrupted_write_to_new_path_leaves_nothing(tmp_path, monkeypatch):
    model, _, _ = trained()

    def interrupted(file, *args, **kwargs):
        file.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.save(tmp_path / "new.npz")
    assert os.listdir(tmp_path) == []


def test_saved_file_has_ordinary_permissions(tmp_path):
    """Not tempfile.mkstemp's owner-only 0o600: the same mode as any file the user writes."""
    model, _, _ = trained()
    model.save(tmp_path / "m.npz")
    (tmp_path / "plain.txt").write_text("x")
    mode = os.stat(tmp_path / "m.npz").st_mode & 0o777
    assert mode == os.stat(tmp_path / "plain.txt").st_mode & 0o777


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"load_model: no such file: .*nope\.npz"):
        cr.load_model(tmp_path / "nope.npz")


def test_load_text_file(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("these are not weights\n")
    with pytest.raises(ValueError, match=r"notes\.npz is not a chainrule model file \(not a "
                                         r"readable \.npz archive"):
        cr.load_model(path)


def test_load_npz_without_config(tmp_path):
    path = tmp_path / "arrays.npz"
    np.savez(path, W=np.ones(3), b=np.zeros(2))
    with pytest.raises(ValueError, match=r"arrays\.npz is an \.npz archive but not a chainrule "
                                         r"model \(no '__chainrule__' entry\); it holds \['W', "
                                         r"'b'\]"):
        cr.load_model(path)


def test_load_foreign_config_and_wrong_shapes(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, __chainrule__=np.array(json.dumps({"format": "something-else"})))
    with pytest.raises(ValueError, match=r"not a chainrule model \(format 'something-else'\)"):
        cr.load_model(path)

    model, _, _ = trained()
    good = tmp_path / "good.npz"
    model.save(good)
    with np.load(good, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["dense_1.W"] = np.zeros((5, 5), np.float32)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=r"dense_1.W has shape \(5, 5\), the architecture "
                                         r"needs \(6, 12\)"):
        cr.load_model(tmp_path / "bad.npz")
