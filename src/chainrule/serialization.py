"""Saving and loading models: one .npz of arrays plus a JSON config, written atomically.

Layout of the archive (all plain arrays, so ``np.load(..., allow_pickle=False)`` reads it):

    __chainrule__              JSON text: format version, model config, compile config and the
                               random state of layers that draw (Dropout), so training resumes
                               exactly
    param/<layer>/<name>       every parameter value
    state/<layer>/<name>       every non-trainable buffer (``Layer.buffers()``, e.g. BatchNorm's
                               running statistics)
    optimizer/<index>/<key>    optimizer state per parameter (index in model.parameters()):
                               arrays in the model dtype, and integer counters such as Adam's
                               ``step`` as 0-d int64 arrays, read back as exact ints
"""

from __future__ import annotations

import json
import os
import secrets
import zipfile
from pathlib import Path

import numpy as np

from . import losses as losses_mod
from . import optimizers as optimizers_mod

FORMAT = "chainrule-model"
FORMAT_VERSION = 1
CONFIG_KEY = "__chainrule__"


def save_model(model, path, include_optimizer: bool = True, metadata: dict | None = None) -> None:
    """Save ``model`` to ``path`` (.npz): written to a temporary file, then renamed into place.

    A failure at any point (disk full, Ctrl-C) leaves an existing file at ``path`` untouched and
    no partial file behind.

    Args:
        model: a built Sequential.
        path: target file.
        include_optimizer: also store the optimizer's state (to resume training exactly).
        metadata: JSON-able extras (e.g. a training checkpoint's epoch and history), given back
            as ``model.metadata`` by :func:`load_model`.

    Raises:
        ValueError: if the model is not built (it has no weights yet).
    """
    from . import __version__

    if not model.built:
        raise ValueError("save: the model is not built yet (no weights); fit or build it first")
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    for layer in model.layers:
        for p in layer.parameters():
            arrays[f"param/{layer.name}/{p.name}"] = p.value
        for name, value in layer.buffers().items():
            arrays[f"state/{layer.name}/{name}"] = value
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
        config["compile"] = {
            "loss": {"class_name": type(model.loss).__name__, "config": model.loss.get_config()},
            "optimizer": {
                "class_name": type(opt).__name__,
                "config": opt.get_config(),
                "iterations": opt.iterations,
                "epoch": opt.epoch,
            },
            "metrics": [m.name for m in model.metrics],
            "include_optimizer": include_optimizer,
        }
        if include_optimizer:
            for i, p in enumerate(model.parameters()):
                for key, value in opt.state.get(p, {}).items():
                    if isinstance(value, int):
                        value = np.array(value, dtype=np.int64)
                    arrays[f"optimizer/{i}/{key}"] = value
    config["rng_states"] = {
        layer.name: layer.rng.bit_generator.state
        for layer in model.layers
        if isinstance(getattr(layer, "rng", None), np.random.Generator)
    }
    arrays[CONFIG_KEY] = np.array(json.dumps(config))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_write(path, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it to ``path``.

    The file gets the permissions an ordinary ``open`` would give (0o666 minus the umask), not
    the owner-only 0o600 of ``tempfile.mkstemp``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_model(path, compile: bool = True, custom_objects: dict | None = None):
    """Load a model written by ``save``: same architecture, weights, and (if saved) optimizer.

    Args:
        path: the .npz file.
        compile: restore the loss, metrics and optimizer (with its state) when the file has them.
        custom_objects: name → class for layer classes defined outside chainrule (a file that
            names one is refused without it: loading never builds a class by accident).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a chainrule model (not an .npz, or no chainrule config),
            or its weights do not fit its architecture.
    """
    from .model import Sequential

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_model: no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ValueError(
            f"load_model: {path} is not a chainrule model file (not a readable .npz archive)"
        ) from exc
    if CONFIG_KEY not in arrays:
        raise ValueError(
            f"load_model: {path} is an .npz archive but not a chainrule model (no "
            f"{CONFIG_KEY!r} entry); it holds {sorted(arrays)[:5]}"
        )
    try:
        config = json.loads(str(arrays.pop(CONFIG_KEY)))
    except json.JSONDecodeError as exc:
        raise ValueError(f"load_model: {path} has a corrupt chainrule config: {exc}") from None
    if config.get("format") != FORMAT:
        raise ValueError(
            f"load_model: {path} is not a chainrule model (format {config.get('format')!r})"
        )
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"load_model: {path} uses format version {config['format_version']}, newer than "
            f"this chainrule ({FORMAT_VERSION}); upgrade chainrule"
        )
    model = Sequential.from_config(config["model"], custom_objects=custom_objects)
    if not model.built:
        raise ValueError(f"load_model: {path} describes a model that was never built")
    for layer in model.layers:
        for p in layer.parameters():
            key = f"param/{layer.name}/{p.name}"
            if key not in arrays:
                raise ValueError(f"load_model: {path} lacks the weights {key!r}")
            value = arrays[key]
            if value.shape != p.value.shape:
                raise ValueError(
                    f"load_model: {path}: {key} has shape {value.shape}, the architecture needs "
                    f"{p.value.shape}"
                )
            p.value = value.astype(model.dtype, copy=True)
        buffers = {}
        for name, own in layer.buffers().items():
            key = f"state/{layer.name}/{name}"
            if key not in arrays:
                raise ValueError(f"load_model: {path} lacks the layer state {key!r}")
            if arrays[key].shape != own.shape:
                raise ValueError(
                    f"load_model: {path}: {key} has shape {arrays[key].shape}, the architecture "
                    f"needs {own.shape}"
                )
            buffers[name] = arrays[key]
        layer.set_buffers(buffers)
    for layer in model.layers:
        state = config.get("rng_states", {}).get(layer.name)
        if state is not None:
            layer.rng.bit_generator.state = state
    model.metadata = config.get("metadata", {})
    compiled = config.get("compile")
    if compile and compiled:
        loss = losses_mod.from_config(compiled["loss"]["class_name"], compiled["loss"]["config"])
        spec = compiled["optimizer"]
        optimizer = optimizers_mod.from_config(spec["class_name"], spec["config"])
        optimizer.iterations = int(spec.get("iterations", 0))
        optimizer.epoch = int(spec.get("epoch", 0))
        model.compile(optimizer=optimizer, loss=loss, metrics=compiled.get("metrics") or None)
        for i, p in enumerate(model.parameters()):
            prefix = f"optimizer/{i}/"
            state = {
                key[len(prefix):]: _state_entry(value, model.dtype)
                for key, value in arrays.items()
                if key.startswith(prefix)
            }
            if state:
                if isinstance(optimizer, optimizers_mod.Adam) and "step" not in state:
                    # Files written before Adam counted steps per parameter: their moments
                    # were bias-corrected with the optimizer's iterations.
                    state["step"] = optimizer.iterations
                optimizer.state[p] = state
    return model


def _state_entry(value: np.ndarray, dtype) -> np.ndarray | int:
    """A saved optimizer-state entry: an integer counter as an exact int, an array in ``dtype``."""
    if value.ndim == 0 and np.issubdtype(value.dtype, np.integer):
        return int(value)
    return value.astype(dtype, copy=True)
