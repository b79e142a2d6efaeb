"""The safetensors format: same arrays, config and optimizer state as the .npz; read by
``safetensors.numpy.load_file``; a corrupt or mismatching file is one ValueError."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save, save_file

import chainrule as cr
from chainrule.interop.safetensors import METADATA_KEY
from cli_helpers import assert_one_line_error, run_cli, tiny_idx_dataset
from interop_helpers import PRESETS, trained_preset


def header(data: bytes) -> dict:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n])


def with_header(data: bytes, new: dict) -> bytes:
    """``data`` with its JSON header replaced by ``new`` (the tensor bytes unchanged)."""
    n = int.from_bytes(data[:8], "little")
    text = json.dumps(new).encode()
    return len(text).to_bytes(8, "little") + text + data[8 + n:]


@pytest.mark.parametrize("preset", PRESETS)
def test_round_trip_of_every_preset(tmp_path, preset):
    model, x = trained_preset(preset)
    path = tmp_path / "m.safetensors"
    model.save(path)
    loaded = cr.load_model(path)
    assert loaded.get_config() == model.get_config()
    assert np.array_equal(loaded.predict(x), model.predict(x))
    state, theirs = model.state_dict(), loaded.state_dict()
    assert list(theirs) == list(state)
    for name, value in state.items():
        assert theirs[name].dtype == value.dtype and np.array_equal(theirs[name], value), name
    assert loaded.optimizer.state_dict()["iterations"] == model.optimizer.iterations
    for name, entries in model.optimizer.state_dict()["state"].items():
        for key, value in entries.items():
            assert np.array_equal(loaded.optimizer.state_dict()["state"][name][key], value)
    # The same arrays as the .npz, under the state_dict names, for any safetensors reader.
    tensors = load_file(path)
    assert sorted(k for k in tensors if not k.startswith("optimizer/")) == sorted(state)
    npz = np.load(_npz(model, tmp_path), allow_pickle=False)
    assert sorted(tensors) == sorted(k for k in npz.files if k != "__chainrule__")
    for key, value in tensors.items():
        assert np.array_equal(value, npz[key]), key


def _npz(model, tmp_path):
    path = tmp_path / "m.npz"
    model.save(path)
    return path


def test_format_is_told_by_content_not_name(tmp_path):
    model, x = trained_preset("softmax")
    model.save(tmp_path / "m.safetensors")
    model.save(tmp_path / "m.npz")
    (tmp_path / "weights.bin").write_bytes((tmp_path / "m.safetensors").read_bytes())
    (tmp_path / "zip.safetensors").write_bytes((tmp_path / "m.npz").read_bytes())
    for name in ("weights.bin", "zip.safetensors"):
        assert np.array_equal(cr.load_model(tmp_path / name).predict(x), model.predict(x))


def test_weights_only_file_and_float64(tmp_path):
    model, x = trained_preset("mlp")
    copy = model.copy(dtype="float64")
    copy.save(tmp_path / "m.safetensors")
    loaded = cr.load_model(tmp_path / "m.safetensors")
    assert loaded.dtype == np.float64 and loaded.optimizer is None
    assert np.array_equal(loaded.predict(x), copy.predict(x))
    assert load_file(tmp_path / "m.safetensors")["dense_1.W"].dtype == np.float64


CORRUPT = {
    "shorter than the length": (lambda d: d[:5], "fewer than the 8 of the header length"),
    "header past the end": (lambda d: (10**6).to_bytes(8, "little") + d[8:],
                            "declares a header of 1000000 bytes"),
    "header over the limit": (lambda d: (2**40).to_bytes(8, "little") + d[8:],
                              "more than a model's may take"),
    "not JSON": (lambda d: d[:8] + b"{" + b"x" * (int.from_bytes(d[:8], "little") - 1)
                 + d[8 + int.from_bytes(d[:8], "little"):], "the header is not JSON"),
    "a list": (lambda d: with_header(d, []), "is a JSON list, not an object"),
    "unknown dtype": (lambda d: with_header(d, {**header(d), "dense_1.W": {
        **header(d)["dense_1.W"], "dtype": "C64"}}), "has dtype 'C64'"),
    "bad shape": (lambda d: with_header(d, {**header(d), "dense_1.W": {
        **header(d)["dense_1.W"], "shape": [-1, 10]}}), "not a list of integers >= 0"),
    "size mismatch": (lambda d: with_header(d, {**header(d), "dense_1.W": {
        **header(d)["dense_1.W"], "shape": [784, 11]}}), "spans 31360 bytes"),
    "extra key": (lambda d: with_header(d, {**header(d), "dense_1.W": {
        **header(d)["dense_1.W"], "pickle": 1}}), "exactly dtype, shape and data_offsets"),
    "appended data": (lambda d: d + b"\0" * 4, "data appended"),
    "truncated data": (lambda d: d[:-4], "truncated"),
    "metadata not strings": (lambda d: with_header(d, {**header(d), "__metadata__": {"a": 1}}),
                             "__metadata__ must be an object of strings"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_header_is_one_error(tmp_path, case):
    model, _ = trained_preset("softmax")
    model.save(tmp_path / "good.safetensors")
    corrupt, message = CORRUPT[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(corrupt((tmp_path / "good.safetensors").read_bytes()))
    with pytest.raises(ValueError, match="corrupt safetensors header") as info:
        cr.load_model(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_overlap_and_gap_in_offsets_are_refused(tmp_path):
    a = np.zeros(4, np.float32)
    data = save({"a": a, "b": a})
    h = header(data)
    h["b"]["data_offsets"] = [8, 24]
    h["a"]["data_offsets"] = [0, 16]
    (tmp_path / "overlap.safetensors").write_bytes(with_header(data, h))
    with pytest.raises(ValueError, match="overlaps the one before it"):
        cr.load_model(tmp_path / "overlap.safetensors")


def test_mismatches_with_the_config(tmp_path):
    model, _ = trained_preset("mlp")
    model.save(tmp_path / "m.safetensors", include_optimizer=False)
    tensors = load_file(tmp_path / "m.safetensors")
    meta = {METADATA_KEY: header((tmp_path / "m.safetensors").read_bytes())["__metadata__"][
        METADATA_KEY]}
    cases = {
        "shape": ({**tensors, "dense_1.W": np.zeros((784, 11), np.float32)},
                  "dense_1.W has shape (784, 11), the architecture needs (784, 256)"),
        "missing": ({"dense_1.W": tensors["dense_1.W"]}, "lacks the weights 'dense_1.b'"),
        "unexpected": ({**tensors, "dense_9.W": np.zeros(3, np.float32)},
                       "unexpected entry 'dense_9.W'"),
        "nan": ({**tensors, "dense_1.b": np.full(256, np.nan, np.float32)}, "NaN"),
        "rng": ({**tensors, "dropout_1.rng": np.zeros(6, np.float32)},
                "must be a random state, a (6,) uint64 array"),
    }
    for name, (arrays, message) in cases.items():
        save_file(arrays, tmp_path / f"{name}.safetensors", metadata=meta)
        with pytest.raises(ValueError, match="load_model") as info:
            cr.load_model(tmp_path / f"{name}.safetensors")
        assert message in str(info.value), (name, str(info.value))
    save_file(tensors, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="a safetensors file but not a chainrule model"):
        cr.load_model(tmp_path / "plain.safetensors")


def test_cli_reads_safetensors_and_reports_a_corrupt_one_on_one_line(tmp_path):
    data = tiny_idx_dataset(tmp_path / "digits")
    model, _ = trained_preset("softmax")
    model.save(tmp_path / "m.safetensors")
    result = run_cli("evaluate", tmp_path / "m.safetensors", "--dataset", data, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    result = run_cli("evaluate", tmp_path / "bad.safetensors", "--dataset", data, cwd=tmp_path)
    line = assert_one_line_error(result, "evaluate")
    assert "corrupt safetensors header" in line
