"""The safetensors format for chainrule models: the arrays of the .npz, a JSON header, no pickle.

A chainrule ``.safetensors`` file holds exactly what the .npz archive holds
(``serialization.model_arrays``):

    tensors                    every entry of ``model.state_dict()`` under its own name
                               (dense_1.W, batchnorm_1.running_mean, dropout_1.rng as U64), then
                               ``optimizer/<param>/<key>`` for a compiled model's optimizer
    __metadata__["chainrule"]  the JSON config of the ``__chainrule__`` entry (model_schema.py)

so ``safetensors.numpy.load_file`` (or any other safetensors reader: Rust, JS, torch) reads its
weights, and ``load_model`` reads it back with the .npz's checks, through ``ArchiveLoader``.

The layout of the file (https://github.com/huggingface/safetensors): 8 bytes, the little-endian
length n of the header; n bytes of JSON, ``{name: {"dtype": "F32", "shape": [..],
"data_offsets": [begin, end]}, …, "__metadata__": {str: str}}``; then the byte buffer, which
the offsets must cover exactly, without holes or overlaps. Reading checks all of that before
any tensor is read, and reads each tensor with one ``seek`` and ``read`` of its own bytes: a
corrupt header is one ValueError naming the file and what is wrong with it.

Writing needs the ``safetensors`` package (``pip install "chainrule[safetensors]"``); reading
needs NumPy only.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from ..fileio import atomic_write
from ..serialization import MAX_CONFIG_BYTES, ArchiveLoader, Entry, model_arrays

__all__ = ["METADATA_KEY", "SafetensorsLoader", "save_safetensors"]

#: The ``__metadata__`` key that holds the chainrule config.
METADATA_KEY = "chainrule"

#: safetensors dtype names and the NumPy dtypes they are (little-endian); BF16 and the F8 types
#: have no NumPy dtype, and a chainrule model has none.
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
          "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}


def save_safetensors(model, path, include_optimizer: bool = True,
                     metadata: dict | None = None) -> None:
    """Write ``model`` to ``path`` in the safetensors format, atomically (as ``save_model``).

    Raises:
        ImportError: without the safetensors package, naming the install command.
        ValueError: if the model is not built.
    """
    try:
        from safetensors.numpy import save
    except ImportError:
        raise ImportError(
            "saving a .safetensors file needs the safetensors package: "
            'pip install "chainrule[safetensors]"'
        ) from None
    arrays, config = model_arrays(model, include_optimizer, metadata)
    # np.ascontiguousarray would turn the 0-d counters (Adam's step) into shape (1,).
    tensors = {name: np.require(array, requirements="C") for name, array in arrays.items()}
    data = save(tensors, metadata={METADATA_KEY: json.dumps(config)})
    atomic_write(path, lambda f: f.write(data))


class SafetensorsLoader(ArchiveLoader):
    """One ``load_model`` call on an open safetensors file: its header parsed and checked, the
    tensors as the entries ``ArchiveLoader`` checks against the config.

    Raises:
        ValueError: for a file too short for its header, a header that is not the JSON object
            the format describes, offsets that do not tile the byte buffer, or tensor sizes
            that do not match their dtype and shape.
    """

    def __init__(self, file, where: str):
        self.file = file
        self.where = where
        size = os.fstat(file.fileno()).st_size
        head = file.read(8)
        if len(head) < 8:
            self._corrupt(f"the file has {size} bytes, fewer than the 8 of the header length")
        n = int.from_bytes(head, "little")
        if n > MAX_CONFIG_BYTES:
            self._corrupt(f"it declares a header of {n} bytes, more than a model's may take "
                          f"({MAX_CONFIG_BYTES}, chainrule.serialization.MAX_CONFIG_BYTES)")
        if 8 + n > size:
            self._corrupt(f"it declares a header of {n} bytes, but the file has only "
                          f"{size - 8} after the length (truncated?)")
        try:
            header = json.loads(file.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            self._corrupt(f"the header is not JSON ({type(exc).__name__}: {exc})")
        if not isinstance(header, dict):
            self._corrupt(f"the header is a JSON {type(header).__name__}, not an object")
        self.start = 8 + n
        self.metadata = header.pop("__metadata__", {})
        if not isinstance(self.metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()):
            self._corrupt("__metadata__ must be an object of strings")
        self.members = {name: self._describe(name, info) for name, info in header.items()}
        self._check_tiling(size - self.start)

    def _corrupt(self, why: str):
        raise ValueError(f"{self.where} has a corrupt safetensors header: {why}")

    def _describe(self, name: str, info) -> tuple[np.dtype, tuple[int, ...], int, int]:
        """(dtype, shape, begin, end) of a tensor's header entry, each field checked."""
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            self._corrupt(f"tensor {name!r} must be an object with exactly dtype, shape and "
                          f"data_offsets, got {json.dumps(info)[:80]}")
        if info["dtype"] not in DTYPES:
            self._corrupt(f"tensor {name!r} has dtype {info['dtype']!r}; NumPy reads "
                          f"{sorted(DTYPES)}")
        shape, offsets = info["shape"], info["data_offsets"]
        if not (isinstance(shape, list) and all(_is_count(d) for d in shape)):
            self._corrupt(f"tensor {name!r} has shape {shape!r}, not a list of integers >= 0")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(_is_count(o) for o in offsets) and offsets[0] <= offsets[1]):
            self._corrupt(f"tensor {name!r} has data_offsets {offsets!r}, not [begin, end] "
                          "with 0 <= begin <= end")
        dtype = np.dtype(DTYPES[info["dtype"]])
        need = math.prod(shape) * dtype.itemsize
        if offsets[1] - offsets[0] != need:
            self._corrupt(f"tensor {name!r} spans {offsets[1] - offsets[0]} bytes, but a "
                          f"{info['dtype']} tensor of shape {tuple(shape)} takes {need}")
        return dtype, tuple(shape), offsets[0], offsets[1]

    def _check_tiling(self, buffer: int) -> None:
        """The tensors' byte ranges must cover the buffer exactly, in order, as the format
        requires: a gap hides data, an overlap makes two tensors share bytes."""
        at = 0
        for name, (_, _, begin, end) in sorted(self.members.items(), key=lambda m: m[1][2:]):
            if begin != at:
                what = "overlaps the one before it" if begin < at else f"leaves bytes {at} … " \
                    f"{begin - 1} of the buffer to no tensor"
                self._corrupt(f"tensor {name!r} starts at byte {begin}: it {what}")
            at = end
        if at != buffer:
            self._corrupt(f"the tensors cover {at} bytes of data, the file holds {buffer} "
                          "after the header (truncated, or data appended)")

    # ------------------------------------------------------------------ ArchiveLoader's hooks
    def read_config(self) -> dict:
        from ..model_schema import check_config

        text = self.metadata.get(METADATA_KEY)
        if text is None:
            raise ValueError(
                f"{self.where} is a safetensors file but not a chainrule model (no "
                f"{METADATA_KEY!r} entry in its __metadata__); it holds "
                f"{sorted(self.members)[:5]}"
            )
        try:
            config = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ValueError(
                f"{self.where} has a corrupt chainrule config: {type(exc).__name__}: {exc}"
            ) from None
        return check_config(config, self.where)

    def entry_header(self, key: str, info) -> Entry:
        dtype, shape, begin, _ = info
        return Entry(key, info, shape, dtype, self.start + begin)

    def check_entry_size(self, entry: Entry) -> None:
        """Nothing more to check: the header's sizes were matched to the shapes on opening."""

    def read_entry(self, entry: Entry) -> np.ndarray:
        size = math.prod(entry.shape) * entry.dtype.itemsize
        self.file.seek(entry.offset)
        data = self.file.read(size)
        if len(data) != size:
            raise ValueError(f"{self.where}: {entry.key} cannot be read: the file ends early; "
                             "it is truncated")
        return np.frombuffer(data, dtype=entry.dtype).reshape(entry.shape)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
