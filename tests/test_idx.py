"""IDX reader/writer: round trips, every corruption case, atomic writes, real MNIST labels."""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from chainrule.data import IDXError, read_idx, read_idx_images, read_idx_labels, write_idx

DATA_DIR = Path(
    os.environ.get("CHAINRULE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
MNIST_DIR = DATA_DIR / "mnist"

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
SHAPES = [(7,), (3, 4), (2, 3, 5), (2, 1, 3, 2, 2)]


def _sample(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    return (rng.standard_normal(shape) * 1e3).astype(dtype)


def _idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip(tmp_path, dtype, shape, suffix):
    array = _sample(dtype, shape)
    path = tmp_path / f"a.idx{suffix}"
    assert write_idx(path, array) == path
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)
    assert back.dtype.isnative
    assert back.shape == shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")


def test_high_rank_and_empty_dims(tmp_path):
    tall = np.arange(3, dtype=np.int16).reshape((1,) * 31 + (3,))
    write_idx(tmp_path / "tall.idx", tall)
    assert read_idx(tmp_path / "tall.idx").shape == tall.shape
    rank_255 = tmp_path / "rank255.idx"
    rank_255.write_bytes(bytes([0, 0, 8, 255]) + np.ones(255, ">u4").tobytes() + b"\x07")
    with pytest.raises(IDXError, match="declares rank 255, which NumPy cannot represent"):
        read_idx(rank_255)
    empty = np.zeros((0, 4), dtype=np.float32)
    write_idx(tmp_path / "empty.idx", empty)
    assert read_idx(tmp_path / "empty.idx").shape == (0, 4)


def test_big_endian_input_and_known_bytes(tmp_path):
    array = np.array([1, -2, 300], dtype=">i4")
    path = write_idx(tmp_path / "be.idx", array)
    assert path.read_bytes() == bytes.fromhex("0000 0c01 00000003 00000001 fffffffe 0000012c")
    back = read_idx(path)
    assert back.dtype == np.dtype("int32") and back.dtype.isnative
    np.testing.assert_array_equal(back, [1, -2, 300])


def test_gzip_detected_by_content_not_name(tmp_path):
    array = _sample(np.float32, (4, 5))
    gz_named_plain = tmp_path / "plain.gz.not"
    gz_named_plain.write_bytes(gzip.compress(_idx_bytes(array, 0x0D)))
    np.testing.assert_array_equal(read_idx(gz_named_plain), array)
    plain_named_gz = tmp_path / "raw.gz"
    plain_named_gz.write_bytes(_idx_bytes(array, 0x0D))
    np.testing.assert_array_equal(read_idx(plain_named_gz), array)


def _good_labels() -> bytes:
    return _idx_bytes(np.arange(10, dtype=np.uint8), 0x08)


CORRUPTIONS = {
    "bad_magic": (
        lambda b: b"\x00\x01" + b[2:],
        "first two magic bytes must be 0x00 0x00, got 0x00 0x01",
    ),
    "not_idx": (lambda b: b"PK\x03\x04" + b[4:], "got 0x50 0x4B"),
    "unknown_type": (lambda b: b[:2] + b"\x07" + b[3:], "unknown IDX type code 0x07"),
    "rank_zero": (lambda b: b[:3] + b"\x00" + b[4:], "rank 0"),
    "too_short": (lambda b: b[:3], "3 bytes"),
    "truncated_header": (lambda b: b[:3] + b"\x03" + b[4:10], "needs 16 header bytes"),
    "truncated_payload": (
        lambda b: b[:-3],
        "truncated: expected 10 payload bytes for shape (10,) uint8, file has 7",
    ),
    "trailing_bytes": (lambda b: b + b"xyz", "file has 13 (3 trailing bytes)"),
}


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corruption_is_idx_error_naming_file(tmp_path, case, gz):
    damage, message = CORRUPTIONS[case]
    data = damage(_good_labels())
    path = tmp_path / f"broken-{case}.idx{'.gz' if gz else ''}"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(IDXError) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_truncated_mnist_sized_message(tmp_path):
    header = bytes([0, 0, 8, 3]) + np.array([60000, 28, 28], ">u4").tobytes()
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(header + bytes(1000))
    with pytest.raises(
        IDXError,
        match=r"expected 47040000 payload bytes for shape "
        r"\(60000, 28, 28\) uint8, file has 1000",
    ):
        read_idx(path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda z: z[: len(z) // 2],
        lambda z: z[:10] + bytes(b ^ 0xFF for b in z[10:20]) + z[20:],
        lambda z: z[:-8] + bytes(8),
    ],
    ids=["cut", "flipped", "bad_crc"],
)
def test_corrupt_gzip(tmp_path, damage):
    path = tmp_path / "labels.gz"
    path.write_bytes(damage(gzip.compress(_idx_bytes(np.arange(500, dtype=np.uint8) % 10, 8))))
    with pytest.raises(IDXError, match="corrupt gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_swapped_files_expect_check(tmp_path):
    labels = write_idx(tmp_path / "labels.gz", np.arange(5, dtype=np.uint8))
    images = write_idx(tmp_path / "images.gz", np.zeros((5, 28, 28), dtype=np.uint8))
    with pytest.raises(IDXError) as info:
        read_idx_images(labels)
    message = str(info.value)
    assert str(labels) in message
    assert "has magic 2049 (labels, rank 1); expected 2051 (images, rank 3)" in message
    assert "swapped" in message
    with pytest.raises(IDXError, match=r"has magic 2051 \(images, rank 3\); expected 2049"):
        read_idx_labels(images)
    with pytest.raises(IDXError, match=r"magic 2049 .* expected 2051"):
        read_idx(labels, expect="images")
    assert read_idx(images, expect=2051).shape == (5, 28, 28)
    floats = write_idx(tmp_path / "f.idx", np.zeros((2, 2, 2), np.float32))
    with pytest.raises(IDXError, match=r"magic 3331 \(float32, rank 3\); expected 2051"):
        read_idx_images(floats)
    with pytest.raises(ValueError, match="expect must be"):
        read_idx(images, expect="pictures")


@pytest.mark.parametrize(
    "array",
    [np.zeros(3, np.int64), np.zeros(3, bool), np.zeros(3, np.float16), np.zeros(3, np.uint16)],
    ids=lambda a: a.dtype.name,
)
def test_write_refuses_dtypes_without_code(tmp_path, array):
    path = tmp_path / "x.idx"
    with pytest.raises(IDXError, match=f"dtype {array.dtype} has no IDX type code") as info:
        write_idx(path, array)
    assert str(path) in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_rank_zero(tmp_path):
    with pytest.raises(IDXError, match="rank 1 to 255, got rank 0"):
        write_idx(tmp_path / "x.idx", np.float32(1.0))


@pytest.mark.parametrize("name", ["x.idx", "x.idx.gz"])
def test_atomic_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch, name):
    path = tmp_path / name
    write_idx(path, np.arange(4, dtype=np.uint8))
    before = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        write_idx(path, np.arange(100, dtype=np.int32))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert path.read_bytes() == before


def test_atomic_write_interrupted_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "new.idx"
    real_fsync = os.fsync

    def interrupted_fsync(fd):
        real_fsync(fd)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        write_idx(path, np.ones((10, 10), np.float64))
    assert list(tmp_path.iterdir()) == []


def test_real_mnist_train_labels():
    path = MNIST_DIR / "train-labels-idx1-ubyte.gz"
    labels = read_idx_labels(path)
    assert labels.shape == (60000,)
    assert labels.dtype == np.uint8
    assert labels.min() == 0 and labels.max() == 9
    assert np.bincount(labels).min() > 5000
    with pytest.raises(IDXError, match="swapped"):
        read_idx_images(path)
