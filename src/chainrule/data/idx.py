"""Read and write IDX files, the format of MNIST and its relatives.

Layout of an IDX file (optionally gzip-compressed as a whole):

    bytes 0-1   0x00 0x00
    byte  2     type code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     rank r (number of dimensions, 1..255)
    4·r bytes   the dimensions, big-endian uint32
    payload     prod(dims) values in C order, big-endian

The first four bytes read as one big-endian integer are the "magic number":
2051 (0x00000803) for MNIST image files (uint8, rank 3), 2049 (0x00000801) for label files
(uint8, rank 1).
"""

from __future__ import annotations

import gzip
import math
import os
import stat
import zlib
from pathlib import Path

import numpy as np

from ..fileio import atomic_write

__all__ = [
    "IDXError",
    "IMAGES_MAGIC",
    "LABELS_MAGIC",
    "MAX_BYTES",
    "read_idx",
    "read_idx_images",
    "read_idx_labels",
    "write_idx",
]

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

_GZIP_MAGIC = b"\x1f\x8b"

#: The largest payload ``read_idx`` accepts by default: 4 GiB, about 90 times MNIST's training
#: images (47 MB). A header that declares more is refused before anything is allocated, so a
#: small file cannot make the reader ask for more memory than this; read a genuine larger file
#: with ``read_idx(path, max_bytes=...)``.
MAX_BYTES = 4 * 2**30

_CHUNK = 2**20  # bytes per read: memory is the declared array plus one chunk
_TRAILING_SCAN = 2**20  # bytes past the declared payload read to say how many trail it

_CODE_TO_DTYPE = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_KIND_SIZE_TO_CODE = {(dt.kind, dt.itemsize): code for code, dt in _CODE_TO_DTYPE.items()}
_KNOWN_CODES = ", ".join(
    f"0x{code:02X} {dt.newbyteorder('=').name}" for code, dt in _CODE_TO_DTYPE.items()
)
_SUPPORTED_DTYPES = ", ".join(dt.newbyteorder("=").name for dt in _CODE_TO_DTYPE.values())
_EXPECT_ALIASES = {"images": IMAGES_MAGIC, "labels": LABELS_MAGIC}
_MAGIC_NAMES = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}


class IDXError(ValueError):
    """An IDX file is malformed, or is not the kind of IDX file that was expected."""


def _describe_magic(magic: int) -> str:
    """Render a magic number as e.g. '2049 (labels, rank 1)' or '3331 (float32, rank 3)'."""
    code, rank = (magic >> 8) & 0xFF, magic & 0xFF
    if magic in _MAGIC_NAMES:
        kind = _MAGIC_NAMES[magic]
    elif code in _CODE_TO_DTYPE:
        kind = _CODE_TO_DTYPE[code].newbyteorder("=").name
    else:
        kind = f"type code 0x{code:02X}"
    return f"{magic} ({kind}, rank {rank})"


def _resolve_expect(expect: int | str | None) -> int | None:
    if expect is None:
        return None
    if isinstance(expect, str):
        try:
            return _EXPECT_ALIASES[expect]
        except KeyError:
            raise ValueError(
                f"expect must be 'images', 'labels', an int magic number or None, got {expect!r}"
            ) from None
    magic = int(expect)
    if not 0 <= magic <= 0xFFFF:
        raise ValueError(f"expect={magic} is not an IDX magic number (expected 0..65535)")
    return magic


def _describe_bytes(n: int) -> str:
    """A byte count for messages: '4.0 GiB', '47.0 MiB', '816 bytes'."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _read_up_to(stream, n: int) -> bytes:
    """Up to ``n`` bytes from ``stream``, fewer only at the end of the data."""
    parts, got = [], 0
    while got < n:
        part = stream.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _parse_header(stream, path: Path) -> tuple[np.dtype, tuple[int, ...], int, int]:
    """Read and validate the header; return (big-endian dtype, shape, magic, header length)."""
    data = _read_up_to(stream, 4)
    if len(data) < 4:
        raise IDXError(
            f"{path} is too short to be an IDX file: {len(data)} bytes, "
            "the magic number alone needs 4"
        )
    if data[0] != 0 or data[1] != 0:
        raise IDXError(
            f"{path} is not an IDX file: the first two magic bytes must be 0x00 0x00, "
            f"got 0x{data[0]:02X} 0x{data[1]:02X}"
        )
    code, rank = data[2], data[3]
    if code not in _CODE_TO_DTYPE:
        raise IDXError(
            f"{path} has unknown IDX type code 0x{code:02X} (magic byte 3); "
            f"known codes: {_KNOWN_CODES}"
        )
    if rank == 0:
        raise IDXError(
            f"{path} declares rank 0 (magic byte 4); an IDX file needs at least one dimension"
        )
    offset = 4 + 4 * rank
    data += _read_up_to(stream, offset - 4)
    if len(data) < offset:
        raise IDXError(
            f"{path} is truncated inside its header: rank {rank} needs {offset} header bytes, "
            f"file has {len(data)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=rank, offset=4))
    magic = int.from_bytes(data[:4], "big")
    return _CODE_TO_DTYPE[code], shape, magic, offset


def _check_max_bytes(max_bytes) -> int:
    if not isinstance(max_bytes, int | np.integer) or isinstance(max_bytes, bool) or max_bytes < 0:
        raise ValueError(f"read_idx: max_bytes must be an integer >= 0, got {max_bytes!r}")
    return int(max_bytes)


def read_idx(path: str | os.PathLike, expect: int | str | None = None,
             max_bytes: int | None = None) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed, into a native-endian NumPy array.

    Compression is detected from the content (gzip magic bytes 1f 8b), not the file name. The
    file is read as a stream: the header first, then exactly the payload it declares, straight
    into the result, so memory is the declared array plus a 1 MiB chunk whatever the file
    inflates to. A header declaring more than ``max_bytes`` of payload is refused before any
    payload is read; data past the declared payload is an error (at most 1 MiB of it is read
    to say how much there is).

    Args:
        path: the file to read.
        expect: optional check of the full magic number before the payload is read:
            'images' (2051: uint8, rank 3), 'labels' (2049: uint8, rank 1) or any int magic.
        max_bytes: the largest payload accepted, in bytes; default ``MAX_BYTES`` (4 GiB).

    Returns:
        An array with the header's shape and dtype (uint8, int8, int16, int32, float32 or
        float64), native byte order, writable.

    Raises:
        FileNotFoundError: the file does not exist.
        IDXError: corrupt gzip, bad magic bytes, unknown type code, rank 0, truncated header
            or payload, trailing bytes, a payload larger than ``max_bytes``, or a magic number
            other than `expect`.
    """
    path = Path(path)
    expected_magic = _resolve_expect(expect)
    max_bytes = _check_max_bytes(MAX_BYTES if max_bytes is None else max_bytes)
    with open(path, "rb") as raw:
        if raw.peek(2)[:2] != _GZIP_MAGIC:
            info = os.fstat(raw.fileno())
            size = info.st_size if stat.S_ISREG(info.st_mode) else None
            return _read_stream(raw, path, expected_magic, max_bytes, size)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _read_stream(stream, path, expected_magic, max_bytes, None)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise IDXError(
                f"{path} is a corrupt gzip file ({type(exc).__name__}: {exc}); "
                "download it again or replace it with an intact copy"
            ) from exc


def _read_stream(stream, path: Path, expected_magic: int | None, max_bytes: int,
                 size: int | None) -> np.ndarray:
    """Header, checks, then the payload of an IDX stream (``size``: the total, when known)."""
    be_dtype, shape, magic, offset = _parse_header(stream, path)
    if expected_magic is not None and magic != expected_magic:
        hint = ""
        if {magic, expected_magic} == {IMAGES_MAGIC, LABELS_MAGIC}:
            hint = "; the images and labels files look swapped"
        raise IDXError(
            f"{path} has magic {_describe_magic(magic)}; "
            f"expected {_describe_magic(expected_magic)}{hint}"
        )
    dtype = be_dtype.newbyteorder("=")
    count = math.prod(shape)
    need = count * dtype.itemsize
    if need > max_bytes:
        raise IDXError(
            f"{path} declares shape {shape} {dtype.name}: {need} payload bytes "
            f"({_describe_bytes(need)}), more than the limit of {max_bytes} bytes "
            f"({_describe_bytes(max_bytes)}); if the file is genuine, pass a larger "
            "read_idx(..., max_bytes=) (the default is chainrule.data.idx.MAX_BYTES)"
        )
    what = f"expected {need} payload bytes for shape {shape} {dtype.name}"
    if size is not None and size - offset != need:
        _refuse_size(path, what, size - offset, need, exact=True)
    array = np.empty(count, dtype=dtype)
    view = memoryview(array.view(np.uint8).reshape(-1))
    got = 0
    while got < need:
        n = stream.readinto(view[got:got + _CHUNK])
        if not n:
            break
        got += n
    if got < need:
        _refuse_size(path, what, got, need, exact=True)
    extra = 0
    while extra <= _TRAILING_SCAN:
        part = stream.read(_CHUNK)
        if not part:
            break
        extra += len(part)
    if extra:
        _refuse_size(path, what, need + extra, need, exact=extra <= _TRAILING_SCAN)
    if not be_dtype.isnative:
        array.byteswap(inplace=True)
    try:
        return array.reshape(shape)
    except ValueError as exc:
        raise IDXError(
            f"{path} declares rank {len(shape)}, which NumPy cannot represent ({exc})"
        ) from exc


def _refuse_size(path: Path, what: str, have: int, need: int, exact: bool) -> None:
    """Raise the truncated / trailing-bytes IDXError for a payload of ``have`` bytes."""
    if have < need:
        raise IDXError(f"{path} is truncated: {what}, file has {have}; download the file again")
    if exact:
        extra = f"file has {have} ({have - need} trailing bytes)"
    else:
        extra = f"file has more than {have} (over {have - need} trailing bytes; not all read)"
    raise IDXError(
        f"{path} is longer than its header says: {what}, {extra}; "
        "the file is corrupt or was written with a wrong header"
    )


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """Read an MNIST-style image file (magic 2051): uint8 array of shape (N, H, W).

    Raises:
        IDXError: as `read_idx`, including when the file is a label file (magic 2049).
    """
    return read_idx(path, expect=IMAGES_MAGIC)


def read_idx_labels(path: str | os.PathLike) -> np.ndarray:
    """Read an MNIST-style label file (magic 2049): uint8 array of shape (N,).

    Raises:
        IDXError: as `read_idx`, including when the file is an image file (magic 2051).
    """
    return read_idx(path, expect=LABELS_MAGIC)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write an array as an IDX file, gzip-compressed when the name ends in '.gz'.

    The file is written to a temporary file in the same directory and moved into place with
    os.replace, so `path` either keeps its old content or gets the complete new one.

    Args:
        path: destination file.
        array: array-like of rank 1..255, every dimension < 2**32, dtype uint8, int8, int16,
            int32, float32 or float64 (any byte order).

    Returns:
        The destination path.

    Raises:
        IDXError: the dtype has no IDX type code (e.g. int64, bool, float16), or the rank or
            a dimension does not fit the header.
    """
    path = Path(path)
    array = np.asarray(array)
    code = _KIND_SIZE_TO_CODE.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise IDXError(
            f"cannot write {path}: dtype {array.dtype} has no IDX type code; supported dtypes "
            f"are {_SUPPORTED_DTYPES}; cast first, e.g. array.astype(np.int32)"
        )
    if not 1 <= array.ndim <= 255:
        raise IDXError(
            f"cannot write {path}: IDX needs an array of rank 1 to 255, got rank {array.ndim}; "
            "use np.atleast_1d for scalars"
        )
    if any(d >= 2**32 for d in array.shape):
        raise IDXError(
            f"cannot write {path}: shape {array.shape} has a dimension >= 2**32, "
            "which does not fit the IDX header"
        )
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(array, dtype=_CODE_TO_DTYPE[code]).reshape(-1).view(np.uint8)
    compress = path.name.lower().endswith(".gz")

    def write(raw) -> None:
        if compress:
            with gzip.GzipFile(filename=path.name, mode="wb", fileobj=raw, mtime=0) as gz:
                gz.write(header)
                gz.write(payload)
        else:
            raw.write(header)
            raw.write(payload)

    atomic_write(path, write)
    return path
