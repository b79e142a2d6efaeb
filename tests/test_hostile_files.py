"""Hostile input, the file-format half: IDX files, model files and the weights and ids in them.

Every hostile file is built here, on the fly and small: a bomb is a few MB of repeated deflate
blocks of zeros (each block 1 MiB of zeros in ~1 KB, so ~4 MB inflate to 4 GiB) and is never
inflated by the test itself. Each case asserts the exception type and that the message names
the file and the field, entry or option. The memory cases load in a child process and assert
its peak RSS (``os.wait4``'s ``ru_maxrss``, KiB on Linux) stays under ``PEAK_RSS_MB``: a child
that imports chainrule and NumPy peaks at about 40 MB, the bombs inflate to 4 GiB or more.
The CLI cases assert one line on stderr, exit status 1 and no traceback.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import chainrule as cr
from chainrule import layers, losses, models, optimizers, serialization
from chainrule.data import IDXError, read_idx
from chainrule.data import idx as idx_mod
from chainrule.layers import base as layers_base
from chainrule.parameter import Parameter

#: The peak resident memory a child loading a hostile file may reach. The bombs declare or
#: inflate to 4 GiB or more; the largest honest allocation below is a 64 MiB IDX payload.
PEAK_RSS_MB = 300

MiB = 2**20


# ---------------------------------------------------------------------------- building files
def deflate_zeros(prefix: bytes, zero_mib: int) -> bytes:
    """A raw deflate stream of ``prefix`` then ``zero_mib`` MiB of zeros, built without
    compressing the zeros more than once: after a full flush the compressor forgets its history,
    so every 1 MiB block of zeros compresses to the same ~1 KB, which is repeated."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(MiB)) + c.flush(zlib.Z_FULL_FLUSH)
    return head + block * zero_mib + c.flush()


def gzip_bomb(path: Path, header: bytes, zero_mib: int) -> Path:
    """A gzip file holding ``header`` and ``zero_mib`` MiB of zeros. Its CRC is not computed
    (0): a reader that stops where it should never reaches it."""
    body = deflate_zeros(header, zero_mib)
    size = (len(header) + zero_mib * MiB) % 2**32
    path.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + body
                     + struct.pack("<II", 0, size))
    return path


def idx_header(code: int, shape) -> bytes:
    return bytes([0, 0, code, len(shape)]) + np.asarray(shape, ">u4").tobytes()


def write_zip(path: Path, members) -> Path:
    """A zip archive from ``(name, stored bytes, method, crc, declared size)`` members, written
    by hand so that a member's declared size and its deflate stream can disagree."""
    local, central = [], []
    offset = 0
    for name, data, method, crc, size in members:
        name_b = name.encode()
        header = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc,
                             len(data), size, len(name_b), 0) + name_b
        central.append(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, method,
                                   0, 0x21, crc, len(data), size, len(name_b), 0, 0, 0, 0, 0,
                                   offset) + name_b)
        local.append(header + data)
        offset += len(header) + len(data)
    directory = b"".join(central)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(central), len(central),
                      len(directory), offset, 0)
    path.write_bytes(b"".join(local) + directory + end)
    return path


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as the bytes of an .npy file."""
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def npy_header(shape, dtype="<f4") -> bytes:
    """Just the .npy header of an array of ``shape`` (the data would follow)."""
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buffer.getvalue()


def deflated(name: str, data: bytes):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return name, c.compress(data) + c.flush(), 8, zlib.crc32(data), len(data)


# ---------------------------------------------------------------------------- a model to attack
@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A small trained model with every kind of entry: weights, BatchNorm state, a Dropout
    random state and Adam's moments and step counters."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = cr.Sequential([layers.Dense(8, activation="relu", input_shape=(6,)),
                           layers.BatchNorm(), layers.Dropout(0.2), layers.Dense(2)],
                          seed=0, name="net")
    model.compile(optimizers.Adam(0.01), losses.SparseCategoricalCrossEntropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    path = tmp_path_factory.mktemp("saved") / "m.npz"
    model.save(path)
    return path


def entries(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def tampered(saved: Path, tmp_path: Path, edit=None, drop=(), put=None) -> Path:
    """A copy of ``saved`` with its config changed by ``edit(config)`` (which may return a
    replacement), entries dropped and others replaced or added (``put``: name → array)."""
    content = entries(saved)
    config = json.loads(str(content.pop(serialization.CONFIG_KEY)))
    if edit is not None:
        replaced = edit(config)
        config = config if replaced is None else replaced
    for key in drop:
        content.pop(key)
    content.update(put or {})
    path = tmp_path / "m.npz"
    np.savez(path, **{serialization.CONFIG_KEY: np.array(json.dumps(config))}, **content)
    return path


def refused(path, match: str, exc=ValueError, **kwargs) -> str:
    """Assert ``load_model(path)`` raises ``exc`` naming the file and matching ``match``."""
    with pytest.raises(exc) as info:
        cr.load_model(path, **kwargs)
    message = str(info.value)
    assert f"load_model: {path}" in message, message
    assert match in message, message
    return message


# Linux counts, in a process's peak RSS, the peak of the memory it replaced at exec: a child
# that pytest starts inherits pytest's peak (over 1 GB late in the full suite). A small
# launcher process starts the measured one instead, and reports its os.wait4 rusage.
LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def measured(argv, cwd=None) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``argv``; return its result (stdout, stderr, exit status) and peak RSS in MB."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "rusage"
        launched = subprocess.run([sys.executable, "-c", LAUNCHER, report, *map(str, argv)],
                                  cwd=cwd, capture_output=True, text=True, timeout=120)
        status, maxrss_kib = map(int, report.read_text().split())
    result = subprocess.CompletedProcess(argv, status, launched.stdout, launched.stderr)
    return result, maxrss_kib * 1024 / 1e6


def child_peak(code: str, *args) -> tuple[int, str, float]:
    """Run ``python -c code args``; return (exit status, stdout + stderr, peak RSS in MB)."""
    result, peak = measured([sys.executable, "-c", code, *args])
    return result.returncode, result.stdout + result.stderr, peak


LOAD_IN_CHILD = """
import sys
from chainrule import load_model
try:
    load_model(sys.argv[1])
except ValueError as exc:
    print(exc)
    sys.exit(3)
print("loaded")
"""

READ_IDX_IN_CHILD = """
import sys
from chainrule.data import IDXError, read_idx
try:
    read_idx(sys.argv[1])
except IDXError as exc:
    print(exc)
    sys.exit(3)
print("read")
"""


def run_cli(*args, cwd) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m chainrule ARGS``; returns the result and its peak RSS in MB."""
    return measured([sys.executable, "-m", "chainrule", *args], cwd=cwd)


def assert_one_line_error(result, command: str) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"chainrule {command}: error: "), lines[0]
    return lines[0]


# ============================================================================ memory
def test_the_peak_rss_measurement_sees_a_large_allocation():
    """The bound is not vacuous: a child that fills 400 MB is measured above it."""
    status, text, peak = child_peak("import numpy as np; a = np.ones(400 * 10**6, np.uint8)")
    assert status == 0, text
    assert peak > PEAK_RSS_MB


def test_idx_gzip_bomb_declaring_more_than_the_limit_is_refused_after_its_header(tmp_path):
    """8 MB of gzip declaring and inflating to 8 GiB: refused from the header alone."""
    path = gzip_bomb(tmp_path / "train-images-idx3-ubyte.gz",
                     idx_header(0x08, (2**23, 32, 32)), 8192)
    assert path.stat().st_size < 10 * MiB
    status, text, peak = child_peak(READ_IDX_IN_CHILD, path)
    assert status == 3, text
    assert str(path) in text and "more than the limit" in text and "max_bytes=" in text
    assert peak < PEAK_RSS_MB, f"peak RSS {peak:.0f} MB"


def test_idx_gzip_bomb_behind_a_small_header_stops_after_the_declared_payload(tmp_path):
    """64 MiB declared (within the limit), 4 GiB inflated: the payload is read, then at most
    a chunk more, and the trailing data refused."""
    path = gzip_bomb(tmp_path / "bomb.gz", idx_header(0x08, (64, 1024, 1024)), 4096)
    status, text, peak = child_peak(READ_IDX_IN_CHILD, path)
    assert status == 3, text
    assert "longer than its header says" in text and "not all read" in text, text
    assert peak < PEAK_RSS_MB, f"peak RSS {peak:.0f} MB"


def test_train_with_an_idx_bomb_is_one_line_and_bounded(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    gzip_bomb(data / "train-images-idx3-ubyte.gz", idx_header(0x08, (2**23, 32, 32)), 8192)
    idx_mod.write_idx(data / "train-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    idx_mod.write_idx(data / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28), np.uint8))
    idx_mod.write_idx(data / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    result, peak = run_cli("train", "--model", "softmax", "--quiet", "--out", tmp_path / "run",
                           "--dataset", data, cwd=tmp_path)
    line = assert_one_line_error(result, "train")
    assert "train-images-idx3-ubyte.gz" in line and "max_bytes" in line
    assert peak < PEAK_RSS_MB, f"peak RSS {peak:.0f} MB"


def bomb_archive(saved: Path, tmp_path: Path, honest_size: bool) -> Path:
    """``saved`` rebuilt by hand with dense_1.W as a member that inflates to ~4.2 GB
    behind a correct .npy header (shape (6, 8) float32). With ``honest_size`` its declared
    size says so; otherwise it declares the 192 bytes the array takes (and the CRC of those)."""
    members = []
    for key, value in entries(saved).items():
        if key != "dense_1.W":
            members.append(deflated(f"{key}.npy", npy_bytes(value)))
    header = npy_header((6, 8))
    stream = deflate_zeros(header, 4000)
    if honest_size:
        size, crc = len(header) + 4000 * MiB, 0
    else:
        size, crc = len(header) + 192, zlib.crc32(header + bytes(192))
    members.append(("dense_1.W.npy", stream, 8, crc, size))
    return write_zip(tmp_path / "bomb.npz", members)


def test_zip_bomb_member_is_refused_by_its_declared_size(saved, tmp_path):
    path = bomb_archive(saved, tmp_path, honest_size=True)
    assert path.stat().st_size < 6 * MiB
    message = refused(path, "dense_1.W declares 4194304128 bytes uncompressed")
    assert "its header describes 320" in message
    status, text, peak = child_peak(LOAD_IN_CHILD, path)
    assert status == 3 and "dense_1.W declares" in text, text
    assert peak < PEAK_RSS_MB, f"peak RSS {peak:.0f} MB"


def test_zip_member_is_read_only_to_its_declared_size(saved, tmp_path):
    """A member whose deflate stream runs on for GBs past its declared 320 bytes: only those
    are inflated (and their CRC checked); the model loads with the 6×8 zeros they hold."""
    path = bomb_archive(saved, tmp_path, honest_size=False)
    status, text, peak = child_peak(LOAD_IN_CHILD, path)
    assert status == 0 and "loaded" in text, text
    assert peak < PEAK_RSS_MB, f"peak RSS {peak:.0f} MB"
    assert np.array_equal(cr.load_model(path).layers[0].W.value, np.zeros((6, 8), np.float32))


def test_config_entry_bomb_is_refused_by_its_declared_size(saved, tmp_path):
    members = [deflated(f"{k}.npy", npy_bytes(v)) for k, v in entries(saved).items()
               if k != serialization.CONFIG_KEY]
    header = npy_header((), "<U1000000000")
    members.append((f"{serialization.CONFIG_KEY}.npy", deflate_zeros(header, 4000), 8, 0,
                    len(header) + 4000 * MiB))
    path = write_zip(tmp_path / "m.npz", members)
    refused(path, "'__chainrule__' entry declares 4194304128 bytes")
    status, text, peak = child_peak(LOAD_IN_CHILD, path)
    assert status == 3 and peak < PEAK_RSS_MB, (text, peak)


def test_npy_header_claiming_a_trillion_entries_is_refused_before_reading(saved, tmp_path):
    members = [deflated(f"{k}.npy", npy_bytes(v)) for k, v in entries(saved).items()
               if k != "dense_1.W"]
    members.append(deflated("dense_1.W.npy", npy_header((10**12,))))
    path = write_zip(tmp_path / "m.npz", members)
    refused(path, "dense_1.W has shape (1000000000000,), the architecture needs (6, 8)")


def test_config_with_units_1e12_is_refused_with_the_number(saved, tmp_path):
    path = tampered(saved, tmp_path, lambda c: c["model"]["layers"][0]["config"].update(
        units=10**12))
    message = refused(path, "this model ('net') needs")
    assert "(1.3e13 parameters, float32)" in message and "TB of weights" in message
    assert "MAX_WEIGHT_BYTES" in message
    status, text, peak = child_peak(LOAD_IN_CHILD, path)
    assert status == 3 and peak < PEAK_RSS_MB, (text, peak)


def test_config_within_the_limit_is_checked_against_the_arrays_before_building(saved,
                                                                               tmp_path):
    """Units 2.5e6 need 7.8 GB of weights, under the limit: without the entries' headers
    checked first, building would fill 7.8 GB with random numbers before finding the 6×8 W."""
    path = tampered(saved, tmp_path, lambda c: c["model"]["layers"][0]["config"].update(
        units=2_500_000))
    status, text, peak = child_peak(LOAD_IN_CHILD, path)
    assert status == 3 and "dense_1.W has shape (6, 8), the architecture needs " \
        "(6, 2500000)" in text, text
    assert peak < PEAK_RSS_MB, f"peak RSS {peak:.0f} MB"


def test_input_shape_of_a_trillion_pixels_is_refused(saved, tmp_path):
    def huge_input(config):
        config["model"]["input_shape"] = [10**6, 10**6]
        config["model"]["layers"].insert(0, {"class_name": "Flatten",
                                             "config": {"name": "flatten_1"}})
    refused(tampered(saved, tmp_path, huge_input), "needs 32.0 TB of weights (8.0e12 parameters")


def test_layer_build_refuses_more_than_the_limit_before_allocating():
    with pytest.raises(ValueError, match=r"Dense 'dense' needs 4\.0 TB of weights \(1\.0e12 "
                                         r"parameters, float32\); the limit is 8\.6 GB"):
        layers.Dense(10**12, use_bias=False).build((1,))


def test_mlp_preset_with_a_hundred_million_units_is_refused():
    with pytest.raises(ValueError, match=r"this model \('mlp'\) needs 318\.0 GB of weights "
                                         r"\(8\.0e10 parameters, float32\); Dense 'dense_1' alone "
                                         r"needs 314\.0 GB"):
        models.mlp(hidden=[100_000_000])


def test_weight_limit_is_read_at_every_build(monkeypatch):
    monkeypatch.setattr(layers_base, "MAX_WEIGHT_BYTES", 1000)
    with pytest.raises(ValueError, match=r"needs 1\.1 kB of weights \(264 parameters, float32\)"
                                         r"; the limit is 1\.0 kB"):
        cr.Sequential([layers.Dense(8, input_shape=(32,))])
    cr.Sequential([layers.Dense(8, input_shape=(30,))], dtype="float32")  # 248 · 4 < 1000


def test_a_user_layer_without_param_shapes_is_counted_once_built(monkeypatch):
    class Scale(layers.Layer):
        def _build(self, input_shape, rng):
            self._params = [Parameter(np.ones(input_shape, self.dtype), "s")]

        def _forward(self, x, training):
            return x * self._params[0].value

    monkeypatch.setattr(layers_base, "MAX_WEIGHT_BYTES", 1500)
    assert Scale().param_shapes((300,)) is None
    model = cr.Sequential([Scale(), layers.Dense(1)])
    assert model.weight_shapes((300,))[0][2] is None  # 301 · 4 bytes known before building
    with pytest.raises(ValueError, match=r"needs 2\.4 kB of weights \(601 parameters"):
        model.build((300,))


LAYER_CASES = {
    "dense": (lambda: layers.Dense(5), (7,)),
    "dense-no-bias": (lambda: layers.Dense(5, use_bias=False), (3, 7)),
    "conv": (lambda: layers.Conv2D(4, 3), (2, 9, 9)),
    "conv-rank3": (lambda: layers.Conv2D(4, (3, 2), use_bias=False), (9, 9)),
    "embedding": (lambda: layers.Embedding(11, 3), (5,)),
    "batchnorm": (lambda: layers.BatchNorm(), (6,)),
    "batchnorm-images": (lambda: layers.BatchNorm(), (3, 4, 4)),
    "dropout": (lambda: layers.Dropout(0.5), (4,)),
    "random-shift": (lambda: layers.RandomShift(1), (5, 5)),
    "maxpool": (lambda: layers.MaxPool2D(2), (1, 4, 4)),
    "flatten": (lambda: layers.Flatten(), (2, 3)),
    "leaky-relu": (lambda: layers.LeakyReLU(0.1), (3,)),
}


@pytest.mark.parametrize("case", LAYER_CASES)
def test_param_shapes_are_what_build_creates(case):
    factory, shape = LAYER_CASES[case]
    layer = factory()
    params, buffers = layer.param_shapes(shape), layer.buffer_shapes(shape)
    layer.build(shape, rng=np.random.default_rng(0))
    assert params == {p.name: p.shape for p in layer.parameters()}
    assert buffers == {name: value.shape for name, value in layer.buffers().items()}


# ============================================================================ structure / schema
def pop(d: dict, key: str) -> None:
    d.pop(key)


SCHEMA_CASES = {
    "config-is-a-list": (lambda c: [1, 2], "the config must be a JSON object, got [1, 2]"),
    "no-model": (lambda c: pop(c, "model"), "the config lacks 'model'"),
    "unknown-top-key": (lambda c: c.update(extra=1), "the config has unknown keys ['extra']"),
    "format-version-string": (lambda c: c.update(format_version="1"),
                              'format_version must be a positive integer, got "1"'),
    "format-version-newer": (lambda c: c.update(format_version=7),
                             "uses format version 7, newer than this chainrule (2)"),
    "no-layers": (lambda c: pop(c["model"], "layers"), "model lacks 'layers'"),
    "layers-empty": (lambda c: c["model"].update(layers=[]),
                     "model.layers must be a non-empty JSON array, got []"),
    "model-name": (lambda c: c["model"].update(name=5), "model.name must be a string, got 5"),
    "model-dtype": (lambda c: c["model"].update(dtype="float16"),
                    'model.dtype must be "float32" or "float64", got "float16"'),
    "model-seed": (lambda c: c["model"].update(seed=-1),
                   "model.seed must be an integer >= 0, got -1"),
    "input-shape-null": (lambda c: c["model"].update(input_shape=None),
                         "describes a model that was never built"),
    "input-shape-float": (lambda c: c["model"].update(input_shape=[6.5]),
                          "model.input_shape[0] must be a positive integer, got 6.5"),
    "input-shape-string": (lambda c: c["model"].update(input_shape="abc"),
                           'model.input_shape must be a non-empty JSON array, got "abc"'),
    "layer-not-object": (lambda c: c["model"]["layers"].__setitem__(1, "relu"),
                         'model.layers[1] must be a JSON object, got "relu"'),
    "layer-class-name-type": (lambda c: c["model"]["layers"][0].update(class_name=7),
                              "model.layers[0].class_name must be a string, got 7"),
    "layer-class-unknown": (lambda c: c["model"]["layers"][0].update(class_name="Densee"),
                            "model.layers[0].class_name: unknown layer class 'Densee'"),
    "layer-config-list": (lambda c: c["model"]["layers"][0].update(config=[8]),
                          "model.layers[0].config must be a JSON object, got [8]"),
    "layer-config-input-shape": (
        lambda c: c["model"]["layers"][0]["config"].update(input_shape=[6]),
        "model.layers[0].config.input_shape is not part of a saved model"),
    "layer-config-unknown-key": (
        lambda c: c["model"]["layers"][0]["config"].update(unit=8),
        "model.layers[0].config: Dense: got an unexpected keyword argument 'unit'"),
    "dense-units-string": (lambda c: c["model"]["layers"][0]["config"].update(units="abc"),
                           "model.layers[0].config: Dense: units must be a positive integer, "
                           "got 'abc'"),
    "dense-use-bias-string": (lambda c: c["model"]["layers"][0]["config"].update(use_bias="no"),
                              "model.layers[0].config: Dense: use_bias must be True or False"),
    "dense-initializer": (
        lambda c: c["model"]["layers"][0]["config"].update(kernel_initializer=3),
        "model.layers[0].config: Dense: kernel_initializer: unknown initializer 3"),
    "batchnorm-momentum": (lambda c: c["model"]["layers"][2]["config"].update(momentum=2),
                           "model.layers[2].config: BatchNorm: momentum must lie in [0, 1]"),
    "batchnorm-eps-string": (lambda c: c["model"]["layers"][2]["config"].update(eps="1e-5"),
                             "model.layers[2].config: BatchNorm: eps must be positive, "
                             "got '1e-5'"),
    "dropout-rate-string": (lambda c: c["model"]["layers"][3]["config"].update(rate="half"),
                            "model.layers[3].config: Dropout: rate must lie in [0, 1), "
                            "got 'half'"),
    "dropout-seed": (lambda c: c["model"]["layers"][3]["config"].update(seed="x"),
                     "model.layers[3].config: Dropout: seed must be None or an integer >= 0"),
    "layer-name-type": (lambda c: c["model"]["layers"][1]["config"].update(name=[1]),
                        "model.layers[1].config: ReLU: name must be a string, got [1]"),
    "layer-names-clash": (lambda c: c["model"]["layers"][1]["config"].update(name="dense_1"),
                          "a layer named 'dense_1' is already in the model"),
    "compile-lacks-loss": (lambda c: pop(c["compile"], "loss"), "compile lacks 'loss'"),
    "compile-not-object": (lambda c: c.update(compile="adam"),
                           'compile must be a JSON object, got "adam"'),
    "loss-class": (lambda c: c["compile"]["loss"].update(class_name="Hinge"),
                   "compile.loss: unknown loss class 'Hinge'"),
    "loss-config-value": (lambda c: c["compile"]["loss"]["config"].update(from_logits="yes"),
                          "compile.loss: SparseCategoricalCrossEntropy: from_logits must be True "
                          "or False, got 'yes'"),
    "optimizer-lr-string": (lambda c: c["compile"]["optimizer"]["config"].update(lr="fast"),
                            "compile.optimizer: Adam: lr must be > 0, got 'fast'"),
    "optimizer-lr-schedule": (
        lambda c: c["compile"]["optimizer"]["config"].update(lr={"schedule": "StepDecay"}),
        "compile.optimizer: Adam: lr must be a number or"),
    "optimizer-unknown-key": (lambda c: c["compile"]["optimizer"]["config"].update(beta=0.9),
                              "compile.optimizer: Adam: got an unexpected keyword argument "
                              "'beta'"),
    "optimizer-iterations": (lambda c: c["compile"]["optimizer"].update(iterations=-1),
                             "compile.optimizer.iterations must be an integer >= 0, got -1"),
    "optimizer-epoch": (lambda c: c["compile"]["optimizer"].update(epoch="2"),
                        'compile.optimizer.epoch must be an integer >= 0, got "2"'),
    "metrics-type": (lambda c: c["compile"].update(metrics=[3]),
                     "compile.metrics[0] must be a string, got 3"),
    "metrics-unknown": (lambda c: c["compile"].update(metrics=["top5"]),
                        "compile.metrics[0]: Unknown metric 'top5'"),
    "include-optimizer": (lambda c: c["compile"].update(include_optimizer="yes"),
                          'compile.include_optimizer must be true or false, got "yes"'),
    "rng-states-in-format-2": (lambda c: c.update(rng_states={}),
                               "rng_states belongs to format 1 files"),
    # Format 1 kept the random states in the JSON, as bit-generator state dicts.
    "rng-states-list": (lambda c: c.update(format_version=1, rng_states=[1]),
                        "rng_states must be a JSON object, got [1]"),
    "rng-state-garbage": (
        lambda c: c.update(format_version=1,
                           rng_states={"dropout_1": {"bit_generator": "PCG64", "state": "x"}}),
        'rng_states["dropout_1"] is not a valid PCG64 state'),
    "rng-state-other-generator": (
        lambda c: c.update(format_version=1,
                           rng_states={"dropout_1": {"bit_generator": "MT19937", "state": {}}}),
        'rng_states["dropout_1"] is not a valid PCG64 state'),
    "rng-state-wrong-layer": (lambda c: c.update(format_version=1, rng_states={"dense_1": {}}),
                              'rng_states["dense_1"] names no layer that draws random numbers'),
    "metadata-list": (lambda c: c.update(metadata=[]), "metadata must be a JSON object, got []"),
}


@pytest.mark.parametrize("case", SCHEMA_CASES)
def test_config_field_of_the_wrong_type_is_one_clear_error(saved, tmp_path, case):
    edit, match = SCHEMA_CASES[case]
    refused(tampered(saved, tmp_path, edit), match)


# What a tampered config hands a constructor: each refused with the class and the argument.
CONSTRUCTOR_CASES = {
    "dense-units-float": (lambda: layers.Dense(2.0), "Dense: units must be a positive integer"),
    "dense-activation": (lambda: layers.Dense(2, activation=5),
                         "Dense: activation: unknown activation 5"),
    "conv-kernel-negative": (lambda: layers.Conv2D(4, -3),
                             "Conv2D: kernel_size must be a positive integer or a pair"),
    "conv-filters-string": (lambda: layers.Conv2D("8", 3),
                            "Conv2D: filters must be a positive integer, got '8'"),
    "conv-strides-string": (lambda: layers.Conv2D(8, 3, strides="2"),
                            "Conv2D: strides must be a positive integer or a pair"),
    "conv-padding": (lambda: layers.Conv2D(8, 3, padding="full"),
                     "Conv2D: padding must be 'valid', 'same', an int or a pair"),
    "conv-use-bias": (lambda: layers.Conv2D(8, 3, use_bias=1),
                      "Conv2D: use_bias must be True or False, got 1"),
    "maxpool-zero": (lambda: layers.MaxPool2D(0), "MaxPool2D: pool_size must be a positive"),
    "avgpool-string": (lambda: layers.AvgPool2D("2"), "AvgPool2D: pool_size must be a positive"),
    "avgpool-padding": (lambda: layers.AvgPool2D(2, padding=5),
                        "AvgPool2D: padding (5, 5) must be at most half of pool_size"),
    "embedding-string": (lambda: layers.Embedding("10", 4),
                         "Embedding: input_dim must be a positive integer, got '10'"),
    "embedding-zero": (lambda: layers.Embedding(10, 0),
                       "Embedding: output_dim must be a positive integer, got 0"),
    "batchnorm-momentum-string": (lambda: layers.BatchNorm(momentum="0.1"),
                                  "BatchNorm: momentum must lie in [0, 1]"),
    "batchnorm-eps-inf": (lambda: layers.BatchNorm(eps=float("inf")),
                          "BatchNorm: eps must be finite, got inf"),
    "dropout-nan": (lambda: layers.Dropout(float("nan")), "Dropout: rate must be finite, got nan"),
    "dropout-seed": (lambda: layers.Dropout(0.5, seed=-1),
                     "Dropout: seed must be None or an integer >= 0, got -1"),
    "leaky-relu-string": (lambda: layers.LeakyReLU("a"),
                          "LeakyReLU: alpha must be a finite number, got 'a'"),
    "random-shift-negative": (lambda: layers.RandomShift(-1),
                              "RandomShift: max_shift must be an integer >= 0, got -1"),
    "random-shift-seed": (lambda: layers.RandomShift(2, seed=1.5),
                          "RandomShift: seed must be None or an integer >= 0, got 1.5"),
    "input-shape-string": (lambda: layers.Dense(2, input_shape="abc"),
                           "Dense: input_shape must be a tuple of ints, got 'abc'"),
    "input-shape-float": (lambda: layers.Dense(2, input_shape=(28.0,)),
                          "Dense: input_shape must be a tuple of ints, got (28.0,)"),
    "sequential-seed": (lambda: cr.Sequential([layers.Dense(2)], seed="x"),
                        "Sequential: seed must be None or an integer >= 0, got 'x'"),
    "sgd-momentum": (lambda: optimizers.SGD(momentum="0.9"),
                     "SGD: momentum must be >= 0, got '0.9'"),
    "sgd-nesterov": (lambda: optimizers.SGD(momentum=0.9, nesterov="yes"),
                     "SGD: nesterov must be True or False, got 'yes'"),
    "adam-eps": (lambda: optimizers.Adam(eps=-1), "Adam: eps must be >= 0, got -1"),
    "rmsprop-centered": (lambda: optimizers.RMSprop(centered=1),
                         "RMSprop: centered must be True or False, got 1"),
    "schedule-lr": (lambda: cr.schedules.StepDecay("0.1", 3),
                    "StepDecay: initial_lr must be > 0, got '0.1'"),
    "schedule-step-size": (lambda: cr.schedules.StepDecay(0.1, "3"),
                           "StepDecay: step_size must be a positive integer, got '3'"),
    "schedule-gamma": (lambda: cr.schedules.ExponentialDecay(0.1, "x"),
                       "ExponentialDecay: gamma must be > 0, got 'x'"),
    "loss-eps": (lambda: losses.BinaryCrossEntropy(eps=0.7),
                 "BinaryCrossEntropy: eps must lie in (0, 0.5), got 0.7"),
    "loss-reduction": (lambda: losses.MeanSquaredError(reduction=["mean"]),
                       "MeanSquaredError: reduction must be one of"),
}


@pytest.mark.parametrize("case", CONSTRUCTOR_CASES)
def test_constructor_refuses_a_tampered_argument_by_name(case):
    make, match = CONSTRUCTOR_CASES[case]
    with pytest.raises((ValueError, TypeError)) as info:
        make()
    assert match in str(info.value), str(info.value)
    assert "not supported between instances" not in str(info.value)


def test_optional_fields_of_older_files_still_load(saved, tmp_path):
    def strip(config):
        for key in ("chainrule_version", "metadata"):
            config.pop(key)
        for key in ("iterations", "epoch"):
            config["compile"]["optimizer"].pop(key)
        config["compile"].pop("metrics")
    model = cr.load_model(tampered(saved, tmp_path, strip))
    assert model.optimizer.iterations == 0 and model.metadata == {}


def test_config_that_is_not_json_or_not_text(saved, tmp_path):
    path = tmp_path / "m.npz"
    content = entries(saved)
    content[serialization.CONFIG_KEY] = np.array("[" * 100_000)
    np.savez(path, **content)
    refused(path, "has a corrupt chainrule config: RecursionError")
    content[serialization.CONFIG_KEY] = np.array('{"format": ')
    np.savez(path, **content)
    refused(path, "has a corrupt chainrule config: JSONDecodeError")
    content[serialization.CONFIG_KEY] = np.zeros(3)
    np.savez(path, **content)
    refused(path, "the '__chainrule__' entry must be a text scalar, got an array of shape (3,)")


ENTRY_CASES = {
    "unknown-entry": ({"dense_1.extra": np.ones(3)},
                      "holds an unexpected entry 'dense_1.extra'"),
    "unknown-optimizer-key": ({"optimizer/dense_1.W/velocity": np.ones((6, 8), np.float32)},
                              "holds an unexpected entry 'optimizer/dense_1.W/velocity'"),
    "optimizer-unknown-parameter": ({"optimizer/dense_9.W/m": np.ones(2, np.float32)},
                                  "holds an unexpected entry 'optimizer/dense_9.W/m'"),
    "pickled-objects": ({"dense_1.W": np.full((6, 8), 1.0, dtype=object)},
                        "dense_1.W holds Python objects"),
    "wrong-shape": ({"dense_1.W": np.zeros((5, 5), np.float32)},
                    "dense_1.W has shape (5, 5), the architecture needs (6, 8)"),
    "state-wrong-shape": ({"batchnorm_1.running_var": np.ones(3, np.float32)},
                          "batchnorm_1.running_var has shape (3,), the architecture "
                          "needs (8,)"),
    "counter-float": ({"optimizer/dense_1.W/step": np.array(1.5)},
                      "optimizer/dense_1.W/step must be an integer scalar, got an array of "
                      "shape () and dtype float64"),
    "rng-not-a-state": ({"dropout_1.rng": np.array([1.0, 2.0])},
                        "dropout_1.rng must be a random state, a (6,) uint64 array, got shape "
                        "(2,) and dtype float64"),
    "rng-bad-flags": ({"dropout_1.rng": np.array([0, 1, 0, 1, 7, 0], np.uint64)},
                      "dropout_1.rng is not a valid PCG64 state"),
    "rng-of-a-layer-that-draws-nothing": ({"dense_1.rng": np.array([0, 1, 0, 1, 0, 0],
                                                                   np.uint64)},
                                          "holds an unexpected entry 'dense_1.rng'"),
    "counter-negative": ({"optimizer/dense_1.W/step": np.array(-3)},
                         "optimizer/dense_1.W/step must be >= 0, got -3"),
}


@pytest.mark.parametrize("case", ENTRY_CASES)
def test_entry_that_does_not_fit_the_architecture(saved, tmp_path, case):
    arrays, match = ENTRY_CASES[case]
    refused(tampered(saved, tmp_path, put=arrays), match)


def test_missing_entries_are_named(saved, tmp_path):
    refused(tampered(saved, tmp_path, drop=["dense_2.b"]),
            "lacks the weights 'dense_2.b'")
    refused(tampered(saved, tmp_path, drop=["optimizer/batchnorm_1.beta/v"]),
            "lacks the optimizer state 'optimizer/batchnorm_1.beta/v'")


def test_optimizer_entries_without_a_saved_optimizer_are_refused(saved, tmp_path):
    path = tampered(saved, tmp_path, lambda c: c["compile"].update(include_optimizer=False))
    refused(path, "holds an unexpected entry 'optimizer/dense_1.W/")
    refused(path, "(the config saves no optimizer state)")


def test_compile_false_reads_no_optimizer_entry(saved, tmp_path):
    """With compile=False the optimizer entries are named by the config but never read: a
    corrupt one does not matter."""
    path = tampered(saved, tmp_path,
                    put={"optimizer/dense_1.W/m": np.full((6, 8), np.nan, np.float32)})
    refused(path, "optimizer/dense_1.W/m holds 48 NaN/inf values")
    assert cr.load_model(path, compile=False).optimizer is None


def test_archive_level_tampering(saved, tmp_path):
    members = [deflated(f"{k}.npy", npy_bytes(v)) for k, v in entries(saved).items()]
    path = write_zip(tmp_path / "dup.npz", members + [members[3]])
    refused(path, f"holds two entries named '{members[3][0]}'")
    path = write_zip(tmp_path / "txt.npz", members + [deflated("README.txt", b"hello")])
    refused(path, "holds an entry 'README.txt' that is not an .npy array")
    name, data, method, crc, size = deflated("dense_1.W.npy",
                                             npy_bytes(np.ones((6, 8), np.float32)))
    lying = [m for m in members if m[0] != name] + [(name, data, method, crc, size + 64)]
    refused(write_zip(tmp_path / "size.npz", lying),
            "dense_1.W declares 384 bytes uncompressed, but its header describes 320")


def test_a_model_file_with_a_user_layer_is_checked_once_built(tmp_path):
    class Scale(layers.Layer):
        def _build(self, input_shape, rng):
            self._params = [Parameter(np.ones(input_shape, self.dtype), "s")]

        def _forward(self, x, training):
            return x * self._params[0].value

    model = cr.Sequential([layers.Dense(3, input_shape=(4,)), Scale()], seed=0)
    model.save(tmp_path / "u.npz")
    content = entries(tmp_path / "u.npz")
    loaded = cr.load_model(tmp_path / "u.npz", custom_objects={"Scale": Scale})
    assert np.array_equal(loaded.layers[1].parameters()[0].value, np.ones(3, np.float32))
    content["scale_1.extra"] = np.ones(2, np.float32)
    np.savez(tmp_path / "u.npz", **content)
    refused(tmp_path / "u.npz", "holds an unexpected entry 'scale_1.extra'",
            custom_objects={"Scale": Scale})
    content.pop("scale_1.extra")
    content["scale_1.s"] = np.ones(5, np.float32)
    np.savez(tmp_path / "u.npz", **content)
    refused(tmp_path / "u.npz", "scale_1.s has shape (5,), the architecture needs (3,)",
            custom_objects={"Scale": Scale})


# ============================================================================ weights
WEIGHT_CASES = {
    "nan": (np.where(np.eye(6, 8) > 0, np.nan, 1.0).astype(np.float32),
            "dense_1.W holds 6 NaN/inf values"),
    "inf": (np.full((6, 8), np.inf, np.float32), "dense_1.W holds 48 NaN/inf values"),
    "strings": (np.full((6, 8), "0.125", "<U5"),
                "dense_1.W has dtype <U5, expected float32 or float64"),
    "bytes": (np.full((6, 8), b"1", "S1"), "dense_1.W has dtype |S1"),
    "complex": (np.ones((6, 8), np.complex128),
                "dense_1.W has dtype complex128, expected float32 or float64"),
    "datetime": (np.zeros((6, 8), "M8[s]"), "dense_1.W has dtype datetime64[s]"),
    "too-large-for-float32": (np.full((6, 8), 1e300),
                              "dense_1.W holds 48 values too large for float32"),
    "inexact-integers": (np.full((6, 8), 2**24 + 1, np.int64),
                         "dense_1.W holds integers that float32 cannot represent exactly"),
}


@pytest.mark.parametrize("case", WEIGHT_CASES)
def test_weights_that_would_be_silent_nonsense_are_refused_at_load(saved, tmp_path, case):
    value, match = WEIGHT_CASES[case]
    refused(tampered(saved, tmp_path, put={"dense_1.W": value}), match)


def test_nan_in_a_buffer_or_optimizer_state_is_refused(saved, tmp_path):
    refused(tampered(saved, tmp_path, put={"batchnorm_1.running_var": np.full(8, np.nan)}),
            "batchnorm_1.running_var holds 8 NaN/inf values")
    refused(tampered(saved, tmp_path,
                     put={"optimizer/batchnorm_1.gamma/v": np.full(8, -np.inf, np.float32)}),
            "optimizer/batchnorm_1.gamma/v holds 8 NaN/inf values")


@pytest.mark.parametrize("value", [np.arange(48, dtype=np.int64).reshape(6, 8) - 24,
                                   np.eye(6, 8, dtype=bool),
                                   np.full((6, 8), 0.5, np.float16)],
                         ids=["int64", "bool", "float16"])
def test_weights_that_cast_exactly_are_accepted(saved, tmp_path, value):
    model = cr.load_model(tampered(saved, tmp_path, put={"dense_1.W": value}))
    W = model.layers[0].W.value
    assert W.dtype == np.float32 and np.array_equal(W, value.astype(np.float32))


def test_serve_refuses_a_model_with_nan_weights(saved, tmp_path):
    """It used to start and answer 200 with ``probabilities: null``."""
    from chainrule.web.app import create_app

    path = tampered(saved, tmp_path, put={"dense_2.W": np.full((8, 2), np.nan, np.float32)})
    with pytest.raises(ValueError, match=rf"load_model: {path}: dense_2.W holds 16 NaN/inf"):
        create_app(path, neighbours=False)


def test_set_weights_refuses_nan_and_unsafe_dtypes_without_changing_anything(saved):
    model = cr.load_model(saved)
    before = model.get_weights()
    bad = [w.copy() for w in before]
    bad[2][3] = np.nan
    with pytest.raises(ValueError, match=r"set_weights: batchnorm_1.gamma holds 1 NaN/inf"):
        model.set_weights(bad)
    for dtype, shown in ((np.complex64, "complex64"), ("<U3", "<U3")):
        bad = [w.copy() for w in before]
        bad[0] = np.ones((6, 8), dtype)
        with pytest.raises(TypeError, match=rf"set_weights: dense_1.W has dtype {shown}, "
                                            r"expected float32 or float64"):
            model.set_weights(bad)
    bad = [w.copy() for w in before]
    labels = [name for name in model.state_dict() if not name.endswith(".rng")]
    bad[labels.index("batchnorm_1.running_var")] = np.full(8, 2**40 + 1, np.int64)
    with pytest.raises(ValueError, match=r"batchnorm_1.running_var holds integers that float32 "
                                         r"cannot represent exactly"):
        model.set_weights(bad)
    for a, b in zip(model.get_weights(), before, strict=True):
        assert np.array_equal(a, b)
    ints = [np.ones(w.shape, np.int32) for w in before]
    model.set_weights(ints)
    assert all(w.dtype == np.float32 and (w == 1).all() for w in model.get_weights())


# ============================================================================ ids
@pytest.fixture()
def embedding_model():
    model = cr.Sequential([layers.Embedding(10, 4, input_shape=(5,)), layers.Flatten(),
                           layers.Dense(3)], seed=0)
    model.compile("adam", losses.SparseCategoricalCrossEntropy(from_logits=True))
    return model


@pytest.mark.parametrize("bad", [-1, 10, 2**40], ids=["minus-one", "vocabulary-size", "huge"])
@pytest.mark.parametrize("method", ["predict", "evaluate", "fit", "forward"])
def test_ids_outside_the_vocabulary_are_refused_on_the_model_path(embedding_model, method, bad):
    ids = np.zeros((4, 5), np.int64)
    ids[2, 3] = bad
    y = np.zeros(4, np.int64)
    call = {"predict": lambda: embedding_model.predict(ids),
            "evaluate": lambda: embedding_model.evaluate(ids, y),
            "fit": lambda: embedding_model.fit(ids, y, verbose=0),
            "forward": lambda: embedding_model(ids)}[method]
    before = embedding_model.get_weights()
    low, high = min(bad, 0), max(bad, 0)
    with pytest.raises(ValueError, match=rf"{method}: Embedding 'embedding_1' expected ids in "
                                         rf"\[0, 10\), got values in \[{low}, {high}\]"):
        call()
    for a, b in zip(embedding_model.get_weights(), before, strict=True):
        assert np.array_equal(a, b)


def test_ids_are_checked_on_a_standalone_layer_and_good_ids_pass(embedding_model):
    layer = layers.Embedding(10, 2)
    with pytest.raises(ValueError, match=r"Embedding 'embedding' expected ids in \[0, 10\), "
                                         r"got values in \[-1, 3\]"):
        layer(np.array([[3, -1]]))
    assert embedding_model.predict(np.full((2, 5), 9)).shape == (2, 3)


# ============================================================================ messages
def test_load_a_directory_says_so(saved, tmp_path):
    with pytest.raises(IsADirectoryError, match=rf"load_model: {tmp_path} is a directory, not a "
                                                r"model file$"):
        cr.load_model(tmp_path)
    (tmp_path / "model.npz").write_bytes(saved.read_bytes())
    with pytest.raises(IsADirectoryError, match=r"is a directory, not a model file \(pass the "
                                                r"model\.npz inside it\)"):
        cr.load_model(tmp_path)


def test_load_an_unreadable_file_says_permission_denied(saved, tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    path.write_bytes(saved.read_bytes())
    path.chmod(0)
    if os.geteuid() == 0:  # root reads any file: make the open fail as it would for a user
        def denied(file, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(file))
        monkeypatch.setattr(serialization, "open", denied, raising=False)
    with pytest.raises(PermissionError, match=rf"load_model: {path}: permission denied"):
        cr.load_model(path)
    path.chmod(0o644)


def test_truncated_and_corrupt_archives_say_so(saved, tmp_path):
    raw = saved.read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[:len(raw) // 2])
    refused(tmp_path / "cut.npz", "is a truncated or corrupt .npz (zip) archive")
    (tmp_path / "empty.npz").write_bytes(b"")
    refused(tmp_path / "empty.npz", "is not a chainrule model file (not a readable .npz")
    members = [deflated(f"{k}.npy", npy_bytes(v)) for k, v in entries(saved).items()]
    name, data, method, crc, size = next(m for m in members if m[0] == "dense_1.W.npy")
    flipped = data[:40] + bytes(b ^ 0x55 for b in data[40:80]) + data[80:]
    path = write_zip(tmp_path / "flip.npz", [m for m in members if m[0] != name]
                     + [(name, flipped, method, crc, size)])
    message = refused(path, "dense_1.W cannot be read")
    assert "the file is corrupt" in message
    path = write_zip(tmp_path / "crc.npz", [m for m in members if m[0] != name]
                     + [(name, data, method, crc ^ 1, size)])
    message = refused(path, "dense_1.W cannot be read")
    assert "CRC" in message and "the file is corrupt" in message


def test_idx_limit_names_the_file_and_the_option(tmp_path):
    path = idx_mod.write_idx(tmp_path / "labels.idx", np.arange(100, dtype=np.uint8))
    with pytest.raises(IDXError, match=rf"{path} declares shape \(100,\) uint8: 100 payload bytes "
                                       r"\(100 bytes\), more than the limit of 99 bytes .*"
                                       r"read_idx\(\.\.\., max_bytes=\)"):
        read_idx(path, max_bytes=99)
    assert read_idx(path, max_bytes=100).shape == (100,)
    for bad in (-1, "big", 1.5, True):
        with pytest.raises(ValueError, match="read_idx: max_bytes must be an integer >= 0"):
            read_idx(path, max_bytes=bad)


def test_idx_raw_file_is_sized_without_reading_it(tmp_path):
    """A raw file's size is known: a header declaring 3 GiB over 16 bytes is truncated,
    a large trailing tail is counted exactly, neither read."""
    path = tmp_path / "big.idx"
    path.write_bytes(idx_header(0x08, (3, 2**30)) + bytes(4))
    with pytest.raises(IDXError, match=r"is truncated: expected 3221225472 payload bytes .* "
                                       r"file has 4; download"):
        read_idx(path)
    with open(path, "wb") as f:
        f.write(idx_header(0x08, (2,)) + bytes(2))
        f.truncate(4 + 4 + 2 + 5 * 2**30)
    with pytest.raises(IDXError, match=r"file has 5368709122 \(5368709120 trailing bytes\)"):
        read_idx(path)


def cut(source: Path, path: Path) -> Path:
    path.write_bytes(source.read_bytes()[:3000])
    return path


HOSTILE_MODELS = {
    "nan-weights": (lambda s, t: tampered(s, t, put={"dense_1.W": np.full((6, 8), np.nan)}),
                    "dense_1.W holds 48 NaN/inf values"),
    "string-weights": (lambda s, t: tampered(s, t, put={"dense_1.W": np.full((6, 8), "1.0")}),
                       "has dtype <U3"),
    "config-list": (lambda s, t: tampered(s, t, lambda c: [1]), "the config must be a JSON"),
    "units-string": (lambda s, t: tampered(
        s, t, lambda c: c["model"]["layers"][0]["config"].update(units="abc")),
        "model.layers[0].config: Dense: units must be a positive integer"),
    "units-1e12": (lambda s, t: tampered(
        s, t, lambda c: c["model"]["layers"][0]["config"].update(units=10**12)),
        "needs 52.0 TB of weights"),
    "rng-garbage": (lambda s, t: tampered(s, t, put={"dropout_1.rng": np.array([1.0])}),
                    "dropout_1.rng must be a random state, a (6,) uint64 array"),
    "zip-bomb": (lambda s, t: bomb_archive(s, t, honest_size=True),
                 "dense_1.W declares 4194304128 bytes"),
    "truncated": (lambda s, t: cut(s, t / "cut.npz"), "truncated or corrupt .npz"),
    "directory": (lambda s, t: t, "is a directory"),
}


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("case", HOSTILE_MODELS)
def test_cli_with_a_hostile_model_is_one_line(saved, tmp_path, case, command):
    make, fragment = HOSTILE_MODELS[case]
    work = tmp_path / "work"
    work.mkdir()
    model = make(saved, work)
    args = [command, model, work / "digit.png"] if command == "predict" else [command, model]
    result, peak = run_cli(*args, cwd=tmp_path)
    line = assert_one_line_error(result, command)
    assert fragment in line, line
    assert peak < PEAK_RSS_MB, f"peak RSS {peak:.0f} MB"


def test_idx_gzip_corruption_inside_the_stream_is_still_named(tmp_path):
    data = gzip.compress(idx_header(0x08, (3000,)) + bytes(range(256)) * 12)
    path = tmp_path / "labels.gz"
    path.write_bytes(data[:20] + bytes(b ^ 0xFF for b in data[20:40]) + data[40:])
    with pytest.raises(IDXError, match="corrupt gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)

