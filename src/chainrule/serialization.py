"""Saving and loading models: one .npz of arrays plus a JSON config, written atomically.

Layout of the archive (format 2; all plain arrays, so ``np.load(..., allow_pickle=False)``
reads it):

    __chainrule__              JSON text: format version, model config, compile config
                               (schema: ``model_schema.py``)
    <layer>.<name>             every entry of ``model.state_dict()``: parameters (dense_1.W),
                               buffers (batchnorm_1.running_mean) and the random state of the
                               layers that draw (dropout_1.rng), so training resumes exactly
    optimizer/<param>/<key>    ``optimizer.state_dict()``, by parameter name: arrays in the
                               model dtype, and integer counters such as Adam's ``step`` as 0-d
                               int64 arrays, read back as exact ints

Files of format 1 (``param/<layer>/<name>``, ``state/<layer>/<name>``,
``optimizer/<index>/<key>`` and the random states in the JSON) load as before.

Loading trusts nothing in the file: the config is read first (at most ``MAX_CONFIG_BYTES``) and
checked against the schema; the weights it implies are counted before anything is allocated
(``Sequential.weight_shapes``); every entry is matched against that list, and each array's
declared size and ``.npy`` header (shape, dtype) are checked before its data is read. So the
memory a file can make ``load_model`` use is what its architecture honestly needs, whatever
its entries inflate to, and no pickle is ever unpickled.

The same arrays and config can be written in the safetensors format instead (a
``.safetensors`` path; ``chainrule.interop.safetensors``), with the same checks on loading.

The model classes a file can describe are looked up in ``MODELS`` (``Sequential`` registers
itself there), so this module needs nothing from ``model.py``, which imports it to save.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optimizers as optimizers_mod
from .backend import as_weights
from .fileio import atomic_write
from .layers.base import layer_class
from .model_schema import FORMAT, FORMAT_VERSION, check_config, show
from .random_state import check_state_array
from .registry import Registry
from .version import __version__

__all__ = ["CONFIG_KEY", "FORMAT", "FORMAT_VERSION", "MAX_CONFIG_BYTES", "MODELS",
           "ArchiveLoader", "Entry", "load_model", "looks_like_safetensors", "model_arrays",
           "save_model"]

CONFIG_KEY = "__chainrule__"

#: The model classes a saved config can name (``Sequential`` registers itself).
MODELS = Registry("model class")

#: The largest ``__chainrule__`` entry ``load_model`` reads: 64 MiB, about 16 M characters of
#: JSON (a config with a long training history is some kilobytes).
MAX_CONFIG_BYTES = 64 * 2**20

# What a damaged archive raises while an entry is opened or read.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError,
               NotImplementedError, ValueError)
_OPTIMIZER_KEY = re.compile(r"optimizer/(?P<param>.+)/(?P<key>[A-Za-z_][A-Za-z0-9_]*)")


def save_model(model, path, include_optimizer: bool = True, metadata: dict | None = None) -> None:
    """Save ``model`` to ``path``: written to a temporary file, then renamed into place.

    A ``.safetensors`` path gets the safetensors format (``chainrule.interop.safetensors``: the
    same arrays and config); any other path the .npz archive described above. A failure at any
    point (disk full, Ctrl-C) leaves an existing file at ``path`` untouched and no partial file
    behind.

    Args:
        model: a built Sequential.
        path: target file.
        include_optimizer: also store the optimizer's state (to resume training exactly).
        metadata: JSON-able extras (e.g. a training checkpoint's epoch and history), given back
            as ``model.metadata`` by :func:`load_model`.

    Raises:
        ValueError: if the model is not built (it has no weights yet).
        ImportError: for a ``.safetensors`` path without the safetensors package.
    """
    if Path(path).suffix == ".safetensors":
        from .interop.safetensors import save_safetensors

        save_safetensors(model, path, include_optimizer=include_optimizer, metadata=metadata)
        return
    arrays, config = model_arrays(model, include_optimizer, metadata)
    arrays[CONFIG_KEY] = np.array(json.dumps(config))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def model_arrays(model, include_optimizer: bool = True, metadata: dict | None = None
                 ) -> tuple[dict[str, np.ndarray], dict]:
    """What a saved model holds: (name → array, the JSON config), for every file format.

    The arrays are ``model.state_dict()`` then, when the model is compiled and
    ``include_optimizer``, ``optimizer/<param>/<key>`` for the optimizer's state.

    Raises:
        ValueError: if the model is not built (it has no weights yet).
    """
    if not model.built:
        raise ValueError("save: the model is not built yet (no weights); fit or build it first")
    arrays: dict[str, np.ndarray] = dict(model.state_dict())
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "chainrule_version": __version__,
        "model": model.get_config(),
        "compile": None,
        "metadata": metadata or {},
    }
    if model.loss is not None and model.optimizer is not None:
        opt = model.optimizer
        state = opt.state_dict()
        config["compile"] = {
            "loss": {"class_name": type(model.loss).__name__, "config": model.loss.get_config()},
            "optimizer": {
                "class_name": type(opt).__name__,
                "config": opt.get_config(),
                "iterations": state["iterations"],
                "epoch": state["epoch"],
            },
            "metrics": [m.name for m in model.metrics],
            "include_optimizer": include_optimizer,
        }
        if include_optimizer:
            for name, entries in state["state"].items():
                for key, value in entries.items():
                    if isinstance(value, int):
                        value = np.array(value, dtype=np.int64)
                    arrays[f"optimizer/{name}/{key}"] = value
    return arrays, config


def load_model(path, compile: bool = True, custom_objects: dict | None = None):
    """Load a model written by ``save``: same architecture, weights, and (if saved) optimizer.

    Reads the .npz archive and the safetensors format alike, told apart by their first bytes
    (a zip archive starts with ``PK``, a safetensors file with its header's length and ``{``).

    Every field of the config and every array is checked before use (see the module
    docstring); the first problem found is raised with the file and the field or entry.

    Args:
        path: the .npz or .safetensors file.
        compile: restore the loss, metrics and optimizer (with its state) when the file has them;
            with False, the optimizer entries are not read.
        custom_objects: name → class for layer classes defined outside chainrule (a file that
            names one is refused without it: loading never builds a class by accident).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        IsADirectoryError: if ``path`` is a directory.
        PermissionError: if the file cannot be read.
        ValueError: if the file is not a chainrule model (not an .npz, a truncated or corrupt
            one, or no chainrule config); a config field of the wrong type or value; weights
            beyond ``MAX_WEIGHT_BYTES``; an entry the architecture does not have, or one of the
            wrong shape, size or dtype (complex, strings, objects); NaN or inf weights; a
            safetensors file with a corrupt header or no chainrule config in its metadata.
    """
    path = Path(path)
    where = f"load_model: {path}"
    if path.is_dir():
        inside = " (pass the model.npz inside it)" if (path / "model.npz").is_file() else ""
        raise IsADirectoryError(f"{where} is a directory, not a model file{inside}")
    if not path.exists():
        raise FileNotFoundError(f"load_model: no such file: {path}")
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed below, after the archive
    except PermissionError:
        raise PermissionError(f"{where}: permission denied (the file cannot be read)") from None
    with file:
        magic = file.read(9)
        file.seek(0)
        if magic[:2] != b"PK" and (path.suffix == ".safetensors"
                                   or looks_like_safetensors(magic)):
            from .interop.safetensors import SafetensorsLoader

            return SafetensorsLoader(file, where).load(compile, custom_objects)
        try:
            archive = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            if magic[:2] == b"PK":
                raise ValueError(
                    f"{where} is a truncated or corrupt .npz (zip) archive ({exc}); save the "
                    "model again or restore an intact copy"
                ) from None
            raise ValueError(
                f"{where} is not a chainrule model file (not a readable .npz archive)"
            ) from None
        with archive:
            return ArchiveLoader(archive, where).load(compile, custom_objects)


def looks_like_safetensors(head: bytes) -> bool:
    """True when ``head``, a file's first 9 bytes, opens a safetensors file: a little-endian
    u64 header length (below 100 MB, the format's own limit), then the header's ``{``."""
    return len(head) == 9 and int.from_bytes(head[:8], "little") < 10**8 and head[8:9] == b"{"


@dataclass(frozen=True)
class Entry:
    """An archive member and what its ``.npy`` header declares (``offset``: the header's size)."""

    key: str
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int


class ArchiveLoader:
    """One ``load_model`` call: the archive, its entries and the message prefix.

    Every check of a saved model lives here; the file format enters only through
    ``members`` (entry name → where it is), ``read_config``, ``entry_header``,
    ``check_entry_size`` and ``read_entry``, which the safetensors format overrides
    (``chainrule.interop.safetensors.SafetensorsLoader``).
    """

    def __init__(self, archive: zipfile.ZipFile, where: str):
        self.archive = archive
        self.where = where
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in archive.infolist():
            name = info.filename
            if info.is_dir() or not name.endswith(".npy"):
                raise ValueError(f"{where} holds an entry {name!r} that is not an .npy array; "
                                 "a chainrule model holds nothing else")
            key = name[:-len(".npy")]
            if key in self.members:
                raise ValueError(f"{where} holds two entries named {name!r}; the archive has "
                                 "been tampered with")
            self.members[key] = info

    # ------------------------------------------------------------------ the whole load
    def load(self, compile: bool, custom_objects):
        config = self.read_config()
        if config["format_version"] == 1:
            self._rename_format_1()
        spec = config["model"]
        layers = [self._layer(i, layer_spec, custom_objects)
                  for i, layer_spec in enumerate(spec["layers"])]
        try:
            model = MODELS.get("Sequential")(layers, dtype=spec["dtype"], seed=spec.get("seed"),
                                             name=spec["name"])
            plan = model.weight_shapes(tuple(spec["input_shape"]))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{self.where}: {exc}") from None
        compiled = config["compile"]
        optimizer = None
        if compiled is not None and compile:
            optimizer = self._optimizer(compiled["optimizer"])
        # The weights whose shapes are known before building are checked first, so a file
        # cannot make the build allocate for an architecture its arrays do not match.
        self._check_known(plan, model.dtype, compiled)
        try:
            model.build(tuple(spec["input_shape"]))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{self.where}: {exc}") from None
        entries = model.state_entries()
        self._check_names(model, entries, compiled, optimizer, config["format_version"])
        state = {}
        for name, _, _, kind, target in entries:
            if kind == "rng":
                if name in self.members:
                    state[name] = self._rng_array(name)
            else:
                self._check_array(name, target.shape, model.dtype)
                state[name] = self._weights(name, model.dtype)
        model.load_state_dict(state, strict=False)
        self._rng_states(model, config["rng_states"])
        model.metadata = config["metadata"]
        if optimizer is not None:
            self._compile(model, compiled, optimizer)
        return model

    def _rename_format_1(self) -> None:
        """Format 1 named entries ``param/<layer>/<name>`` and ``state/<layer>/<name>`` (a
        Residual's inner ``<layer>/<name>`` too): the state_dict names with '.' for '/'."""
        renamed = {}
        for key, info in self.members.items():
            kind, _, rest = key.partition("/")
            renamed[rest.replace("/", ".") if kind in ("param", "state") else key] = info
        self.members = renamed

    # ------------------------------------------------------------------ the config
    def read_config(self) -> dict:
        info = self.members.pop(CONFIG_KEY, None)
        if info is None:
            raise ValueError(
                f"{self.where} is an .npz archive but not a chainrule model (no "
                f"{CONFIG_KEY!r} entry); it holds {sorted(self.members)[:5]}"
            )
        if info.file_size > MAX_CONFIG_BYTES:
            raise ValueError(
                f"{self.where}: the {CONFIG_KEY!r} entry declares {info.file_size} bytes, more "
                f"than a model config may take ({MAX_CONFIG_BYTES}, "
                "chainrule.serialization.MAX_CONFIG_BYTES)"
            )
        entry = self.entry_header(CONFIG_KEY, info)
        if entry.dtype.kind != "U" or entry.shape != ():
            raise ValueError(
                f"{self.where}: the {CONFIG_KEY!r} entry must be a text scalar, got an array of "
                f"shape {entry.shape} and dtype {entry.dtype}"
            )
        self.check_entry_size(entry)
        try:
            config = json.loads(str(self.read_entry(entry)[()]))
        except (ValueError, RecursionError) as exc:
            raise ValueError(
                f"{self.where} has a corrupt chainrule config: {type(exc).__name__}: {exc}"
            ) from None
        return check_config(config, self.where)

    def _layer(self, i: int, spec: dict, custom_objects):
        field = f"model.layers[{i}]"
        try:
            cls = layer_class(spec, custom_objects)
        except ValueError as exc:
            raise ValueError(f"{self.where}: {field}.class_name: {exc}") from None
        try:
            return cls.from_config(dict(spec["config"]), custom_objects=custom_objects)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{self.where}: {field}.config: {exc}") from None

    def _optimizer(self, spec: dict):
        try:
            return optimizers_mod.from_config(spec["class_name"], spec["config"])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{self.where}: compile.optimizer: {exc}") from None

    # ------------------------------------------------------------------ entry names
    def _check_known(self, plan, dtype, compiled) -> None:
        """Before building: refuse entries no layer can own; check the arrays whose shapes
        the plan (``Sequential.weight_shapes``) knows. A layer that cannot say its shapes
        before it is built (None) may own any entry under its name until then."""
        owners = {layer.name for layer, _, _, _ in plan}
        for key in self.members:
            owner, dot, _ = key.partition(".")
            if not (dot and owner in owners) and not (
                    compiled is not None and key.startswith("optimizer/")):
                raise ValueError(
                    f"{self.where} holds an unexpected entry {key!r} (the architecture in its "
                    "config has no such weights)"
                )
        for layer, _, params, buffers in plan:
            for shapes, what in ((params, "weights"), (buffers, "layer state")):
                for name, shape in (shapes or {}).items():
                    key = f"{layer.name}.{name}"
                    if key not in self.members:
                        raise ValueError(f"{self.where} lacks the {what} {key!r}")
                    self._check_array(key, tuple(shape), dtype)

    def _check_names(self, model, entries, compiled, optimizer, version: int) -> None:
        """Once built: every state entry the model has is there (a format 1 file keeps its
        random states in the JSON), and nothing else but the optimizer's entries."""
        kinds = {name: kind for name, _, _, kind, _ in entries}
        what = {"param": "weights", "buffer": "layer state", "rng": "random state"}
        for name, kind in kinds.items():
            if name not in self.members and not (kind == "rng" and version == 1):
                raise ValueError(f"{self.where} lacks the {what[kind]} {name!r}")
        saves_optimizer = compiled is not None and compiled["include_optimizer"]
        layout = None if optimizer is None else optimizer.state_layout()
        params = [name for name, _ in model.named_parameters()]
        for key in self.members:
            if key in kinds:
                continue
            match = _OPTIMIZER_KEY.fullmatch(key)
            param = None if match is None else match["param"]
            if version == 1 and param is not None and param.isdigit():
                param = params[int(param)] if int(param) < len(params) else None
            if saves_optimizer and param in params and (layout is None
                                                        or match["key"] in layout):
                continue
            why = "the architecture in its config has no such weights"
            if key.startswith("optimizer/"):
                if not saves_optimizer:
                    why = "the config saves no optimizer state"
                elif param not in params:
                    why = f"the model has no parameter {match['param'] if match else key!r}"
                else:
                    why = (f"not a state entry {sorted(layout)} of {type(optimizer).__name__}")
            raise ValueError(f"{self.where} holds an unexpected entry {key!r} ({why})")

    # ------------------------------------------------------------------ entries
    def _check_array(self, key: str, shape: tuple[int, ...], dtype) -> Entry:
        """The entry's header against the shape and dtype the architecture needs."""
        entry = self.entry_header(key, self.members[key])
        if not np.can_cast(entry.dtype, dtype, "same_kind"):
            raise ValueError(
                f"{self.where}: {key} has dtype {entry.dtype}, expected float32 or float64 (or "
                f"integers and bools that {np.dtype(dtype)} holds exactly)"
            )
        if entry.shape != shape:
            raise ValueError(
                f"{self.where}: {key} has shape {entry.shape}, the architecture needs {shape}"
            )
        self.check_entry_size(entry)
        return entry

    def entry_header(self, key: str, info: zipfile.ZipInfo) -> Entry:
        """Read only the ``.npy`` header of an entry; refuse object (pickled) arrays."""
        fmt = np.lib.format
        try:
            with self.archive.open(info) as f:
                version = fmt.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = fmt.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = fmt.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported .npy format version {version}")
                offset = f.tell()
        except _ZIP_ERRORS as exc:
            raise ValueError(
                f"{self.where}: {key} cannot be read as an .npy array ({type(exc).__name__}: "
                f"{exc}); the file is corrupt"
            ) from None
        if dtype.hasobject:
            raise ValueError(
                f"{self.where}: {key} holds Python objects (dtype {dtype}), which only a pickle "
                "can restore; chainrule models never do, and unpickling could run code"
            )
        return Entry(key, info, tuple(shape), dtype, offset)

    def check_entry_size(self, entry: Entry) -> None:
        """The entry's declared uncompressed size must be its header plus its data, exactly:
        a larger one is a bomb or hides data, a smaller one a truncated entry."""
        need = entry.offset + math.prod(entry.shape) * entry.dtype.itemsize
        if entry.info.file_size != need:
            raise ValueError(
                f"{self.where}: {entry.key} declares {entry.info.file_size} bytes uncompressed, "
                f"but its header describes {need} (an array of shape {entry.shape} and dtype "
                f"{entry.dtype}); the entry is corrupt or was tampered with"
            )

    def read_entry(self, entry: Entry) -> np.ndarray:
        """The array of a checked entry (NumPy reads it in chunks, without pickles)."""
        try:
            with self.archive.open(entry.info) as f:
                return np.lib.format.read_array(f, allow_pickle=False)
        except _ZIP_ERRORS as exc:
            raise ValueError(
                f"{self.where}: {entry.key} cannot be read ({type(exc).__name__}: {exc}); the "
                "file is corrupt"
            ) from None

    def _weights(self, key: str, dtype) -> np.ndarray:
        """A checked weight array, cast to ``dtype``; refused for NaN/inf or inexact values."""
        entry = self.entry_header(key, self.members[key])
        try:
            return as_weights(self.read_entry(entry), dtype, f"{self.where}: {key}")
        except TypeError as exc:
            raise ValueError(str(exc)) from None

    def _rng_array(self, key: str) -> np.ndarray:
        """A random state entry: a (6,) uint64 array (see ``chainrule.random_state``)."""
        entry = self.entry_header(key, self.members[key])
        if entry.shape != (6,) or entry.dtype != np.uint64:
            raise ValueError(
                f"{self.where}: {key} must be a random state, a (6,) uint64 array, got shape "
                f"{entry.shape} and dtype {entry.dtype}"
            )
        self.check_entry_size(entry)
        return check_state_array(self.read_entry(entry), f"{self.where}: {key}")

    # ------------------------------------------------------------------ the rest of the state
    def _rng_states(self, model, states: dict) -> None:
        """Format 1 kept the random states in the JSON, as bit-generator state dicts."""
        drawing = {layer.name: layer for layer in model.layers
                   if isinstance(getattr(layer, "rng", None), np.random.Generator)}
        for name, state in states.items():
            field = f"rng_states[{show(name)}]"
            if name not in drawing:
                raise ValueError(
                    f"{self.where}: {field} names no layer that draws random numbers; those "
                    f"are {sorted(drawing)}"
                )
            bit_generator = drawing[name].rng.bit_generator
            try:
                bit_generator.state = state
            except (TypeError, ValueError, KeyError, OverflowError) as exc:
                raise ValueError(
                    f"{self.where}: {field} is not a valid {type(bit_generator).__name__} "
                    f"state ({type(exc).__name__}: {exc})"
                ) from None

    def _compile(self, model, compiled: dict, optimizer) -> None:
        try:
            loss = losses_mod.from_config(compiled["loss"]["class_name"],
                                          compiled["loss"]["config"])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{self.where}: compile.loss: {exc}") from None
        for i, name in enumerate(compiled["metrics"]):
            try:
                metrics_mod.get_metric(name)
            except ValueError as exc:
                raise ValueError(f"{self.where}: compile.metrics[{i}]: {exc}") from None
        try:
            model.compile(optimizer=optimizer, loss=loss, metrics=compiled["metrics"] or None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{self.where}: compile: {exc}") from None
        layout = optimizer.state_layout()
        state = {}
        for i, (name, p) in enumerate(model.named_parameters()):
            prefixes = [f"optimizer/{name}/", f"optimizer/{i}/"]
            keys = [key for key in self.members
                    if any(key.startswith(prefix) for prefix in prefixes)]
            if not keys:
                continue
            prefix = next(pre for pre in prefixes if keys[0].startswith(pre))
            missing = [k for k, kind in layout.items()
                       if kind == "array" and prefix + k not in self.members]
            if missing:
                raise ValueError(
                    f"{self.where} lacks the optimizer state {prefix + missing[0]!r} (it has "
                    f"{sorted(keys)})"
                )
            entries = {}
            for key in keys:
                entry_name = key[len(prefix):]
                if layout[entry_name] == "count":
                    entries[entry_name] = self._counter(key)
                else:
                    self._check_array(key, p.shape, model.dtype)
                    entries[entry_name] = self._weights(key, model.dtype)
            if "step" in layout and "step" not in entries:
                # Files written before Adam counted steps per parameter: their moments were
                # bias-corrected with the optimizer's iterations.
                entries["step"] = compiled["optimizer"]["iterations"]
            state[name] = entries
        try:
            optimizer.load_state_dict({"iterations": compiled["optimizer"]["iterations"],
                                       "epoch": compiled["optimizer"]["epoch"], "state": state})
        except ValueError as exc:
            raise ValueError(f"{self.where}: {exc}") from None

    def _counter(self, key: str) -> int:
        """An integer counter saved as a 0-d integer array (Adam's step), as an exact int."""
        entry = self.entry_header(key, self.members[key])
        if entry.shape != () or entry.dtype.kind not in "iu":
            raise ValueError(
                f"{self.where}: {key} must be an integer scalar, got an array of shape "
                f"{entry.shape} and dtype {entry.dtype}"
            )
        self.check_entry_size(entry)
        value = int(self.read_entry(entry))
        if value < 0:
            raise ValueError(f"{self.where}: {key} must be >= 0, got {value}")
        return value
