"""Run folders written by ``chainrule train`` and ``chainrule lm train``: their files, read and
written here only.

A run folder holds config.json (the run's settings, written before the first step), then
checkpoint.npz after every epoch until the run finishes (``EpochCheckpoint``), then model.npz,
history.json/.csv, manifest.json and report.html. Each file is written by
``fileio.atomic_write``, through a temporary ``.NAME.<8 hex>.tmp`` next to it that a killed
process can leave behind (``remove_stale_temporaries`` tidies them).

The settings' checks are written once here: ``chainrule train`` turns them into its option
types and applies them to config.json when it resumes a run, ``chainrule report`` to the run
it reads; and a checkpoint is resumed only once it is shown to hold the run's model.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import platform
import re
from pathlib import Path

import numpy as np

from .callbacks import Callback
from .fileio import atomic_write
from .models import LM_PRESETS, OPTIMIZERS, PRESETS, SCHEDULES
from .version import __version__

CONFIG = "config.json"
CHECKPOINT = "checkpoint.npz"
MODEL = "model.npz"
HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
MANIFEST = "manifest.json"
REPORT = "report.html"
RUN_FILES = (CONFIG, CHECKPOINT, MODEL, HISTORY_JSON, HISTORY_CSV, MANIFEST, REPORT)

# No MNIST-sized MLP needs wider layers: a larger size is a typo (100000000 would ask for 300 GB).
MAX_HIDDEN = 16384

_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{8}\.tmp")


# ---------------------------------------------------------------------- what a setting may be
def is_int(value) -> bool:
    """True for an integer that is not a bool (JSON's true is no epoch count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_positive_int(value) -> bool:
    return is_int(value) and value > 0


def is_non_negative_int(value) -> bool:
    return is_int(value) and value >= 0


def is_positive_number(value) -> bool:
    return is_number(value) and math.isfinite(value) and value > 0


def is_fraction(value) -> bool:
    """A number in [0, 1) (NaN is not)."""
    return is_number(value) and 0 <= value < 1


def is_hidden(value) -> bool:
    """A non-empty list of layer sizes, each in 1 … MAX_HIDDEN."""
    return (isinstance(value, list | tuple) and len(value) > 0
            and all(is_int(h) and 0 < h <= MAX_HIDDEN for h in value))


POSITIVE_INT = "a positive integer"
NON_NEGATIVE_INT = "an integer >= 0"
POSITIVE_NUMBER = "a finite number > 0"
FRACTION = "a number in [0, 1)"
HIDDEN = f"a non-empty list of integer sizes in 1 … {MAX_HIDDEN}"

# name -> (check, what it must be, the models it applies to (None: all)); for the other models
# the setting is null.
SETTINGS = {
    "model": (lambda v: v in PRESETS, f"one of {', '.join(PRESETS)}", None),
    "dataset": (lambda v: isinstance(v, str) and v != "", "a dataset name or folder", None),
    "data_dir": (lambda v: v is None or (isinstance(v, str) and v != ""),
                 "null or a folder", None),
    "epochs": (is_positive_int, POSITIVE_INT, None),
    "batch_size": (is_positive_int, POSITIVE_INT, None),
    "optimizer": (lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}", None),
    "lr": (is_positive_number, POSITIVE_NUMBER, None),
    "schedule": (lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}", None),
    "seed": (is_non_negative_int, NON_NEGATIVE_INT, None),
    "validation_split": (is_fraction, FRACTION, None),
    "hidden": (is_hidden, HIDDEN, ("mlp",)),
    "augment": (is_non_negative_int, NON_NEGATIVE_INT, ("mlp", "cnn")),
    "dropout": (is_fraction, FRACTION, ("mlp", "cnn")),
}


# The settings of a language-model run (``chainrule lm train``), marked "task": "lm" in
# config.json: name -> (check, what it must be).
LM_TASK = "lm"
LM_SETTINGS = {
    "task": (lambda v: v == LM_TASK, f"{LM_TASK!r}"),
    "model": (lambda v: v in LM_PRESETS, f"one of {', '.join(LM_PRESETS)}"),
    "data": (lambda v: isinstance(v, str) and v != "", "'words' or a text file"),
    "context": (is_positive_int, POSITIVE_INT),
    "epochs": (is_positive_int, POSITIVE_INT),
    "batch_size": (is_positive_int, POSITIVE_INT),
    "lr": (is_positive_number, POSITIVE_NUMBER),
    "weight_decay": (lambda v: is_number(v) and math.isfinite(v) and v >= 0,
                     "a finite number >= 0"),
    "seed": (is_non_negative_int, NON_NEGATIVE_INT),
    "vocab": (lambda v: isinstance(v, str) and v != "" and len(set(v)) == len(v),
              "the model's characters, each once"),
}


def is_lm_config(config) -> bool:
    """True for the config.json of a language-model run (``chainrule lm train``)."""
    return isinstance(config, dict) and config.get("task") == LM_TASK


def max_shift(image_shape) -> int:
    """The largest ``augment`` shift for images of ``image_shape`` (…, H, W): less than half the
    shorter side, so that a shifted digit still overlaps the picture's centre."""
    return (min(image_shape[-2:]) - 1) // 2


# ---------------------------------------------------------------------- reading the files
def read_json(path) -> object:
    """The JSON value in ``path``.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: for a file that is not UTF-8 JSON, naming the file and where it breaks.
    """
    path = Path(path)
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"{path} is empty, not JSON (was its writing interrupted?)")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not JSON: it is not even UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None


def write_json(path, value) -> None:
    """``value`` as indented JSON in ``path``, atomically."""
    atomic_write(path, lambda f: f.write(json.dumps(value, indent=2).encode()))


def write_history(run_dir, history: dict) -> None:
    """history.json and history.csv (one row per epoch, exact ``repr`` floats) in ``run_dir``."""
    run_dir = Path(run_dir)
    write_json(run_dir / HISTORY_JSON, history)
    buf = io.StringIO()
    writer = csv.writer(buf)
    keys = list(history)
    writer.writerow(["epoch", *keys])
    for i in range(len(history[keys[0]]) if keys else 0):
        writer.writerow([i + 1, *(repr(history[k][i]) for k in keys)])
    atomic_write(run_dir / HISTORY_CSV, lambda f: f.write(buf.getvalue().encode()))


def sha256(path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(run_dir, *, argv, config: dict, files: dict, samples: dict,
                   train_seconds: float, final: dict) -> dict:
    """Write manifest.json: how to reproduce the run and what it gave. Returns it.

    Args:
        argv: the command line; config: the run's settings; files: role → data file path
            (each recorded with its SHA-256); samples: split → count; train_seconds: training
            time of this session; final: the final metrics. The SHA-256 of model.npz (which
            must be written first) is recorded too.
    """
    run_dir = Path(run_dir)
    manifest = {
        "argv": list(argv),
        "config": config,
        "seed": config["seed"],
        "versions": {"chainrule": __version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "platform": platform.platform(),
        "data": {key: {"path": str(path), "sha256": sha256(path)} for key, path in files.items()},
        "samples": samples,
        "train_seconds_this_session": round(train_seconds, 2),
        "final": final,
        "model_sha256": sha256(run_dir / MODEL),
    }
    write_json(run_dir / MANIFEST, manifest)
    return manifest


def read_config(run_dir, check: bool = True) -> dict:
    """The run's config.json; with ``check``, every setting as ``check_config`` requires,
    otherwise only a JSON object.

    Raises:
        FileNotFoundError: without config.json. ValueError: naming the file and setting.
    """
    path = Path(run_dir) / CONFIG
    config = read_json(path)
    if check and is_lm_config(config):
        return check_lm_config(config, path)
    if check:
        return check_config(config, path)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def read_history(run_dir) -> dict:
    """The run's history.json (a run folder, or the file itself); {} for a folder without one.

    Raises:
        FileNotFoundError: for a path that is neither. ValueError: for a malformed file.
    """
    path = Path(run_dir)
    if path.is_dir():
        path = path / HISTORY_JSON
        if not path.is_file():
            return {}
    return check_history(read_json(path), path)


def read_manifest(run_dir) -> dict:
    """The run's manifest.json, checked; {} when the folder has none.

    Raises:
        ValueError: for a malformed file, naming it.
    """
    path = Path(run_dir) / MANIFEST
    return check_manifest(read_json(path), path) if path.is_file() else {}


class EpochCheckpoint(Callback):
    """After every epoch: checkpoint.npz (weights, optimizer, completed epochs, the history so
    far) and history.json/.csv, so that a killed run resumes from its last epoch.

    Args:
        run_dir: the run folder.
        past_history: the history of the epochs before this session (when resuming).
    """

    def __init__(self, run_dir, past_history: dict | None = None):
        self.run_dir = Path(run_dir)
        self.past = past_history or {}

    def merged(self) -> dict:
        """The whole run's history: the past epochs, then this session's."""
        merged = {k: list(v) for k, v in self.past.items()}
        for k, v in self.model.history.history.items():
            merged.setdefault(k, []).extend(v)
        return merged

    def on_epoch_end(self, epoch, logs=None):
        history = self.merged()
        self.model.save(self.run_dir / CHECKPOINT,
                        metadata={"completed_epochs": epoch + 1, "history": history})
        write_history(self.run_dir, history)


def check_config(config, path) -> dict:
    """``config`` (read from ``path``) if it holds every setting of a run, each as train writes it
    (an mlp run's ``"augment": null``, from before the preset had random shifts, reads as 0).

    Raises:
        ValueError: naming the file and the first missing or invalid setting.
    """
    if not isinstance(config, dict):
        raise ValueError(
            f"{path}: expected a JSON object of run settings, got {type(config).__name__}"
        )
    if config.get("model") == "mlp" and "augment" in config and config["augment"] is None:
        # Written before the mlp preset had random shifts: the run trained without them.
        config = {**config, "augment": 0}
    for name, (check, what, models) in SETTINGS.items():
        if name not in config:
            raise ValueError(f"{path} has no {name!r} setting ({what})")
        value = config[name]
        applies = models is None or config["model"] in models
        if applies and not check(value):
            raise ValueError(f"{path}: {name!r} must be {what}, got {json.dumps(value)}")
        if not applies and value is not None:
            raise ValueError(
                f"{path}: {name!r} must be null for model {config['model']!r}, got "
                f"{json.dumps(value)}"
            )
    return config


def check_lm_config(config, path) -> dict:
    """``config`` (read from ``path``) if it holds every setting of a language-model run.

    Raises:
        ValueError: naming the file and the first missing or invalid setting.
    """
    for name, (check, what) in LM_SETTINGS.items():
        if name not in config:
            raise ValueError(f"{path} has no {name!r} setting ({what})")
        if not check(config[name]):
            raise ValueError(f"{path}: {name!r} must be {what}, got {json.dumps(config[name])}")
    return config


def check_history(history, path, epochs: int | None = None) -> dict:
    """``history`` (from ``path``) if it maps metric names to equally long lists of numbers.

    Args:
        epochs: the length every list must have, when known.

    Raises:
        ValueError: naming the file and the first offending entry.
    """
    if not isinstance(history, dict):
        raise ValueError(
            f"{path}: the history must be an object of per-epoch lists, got "
            f"{type(history).__name__}"
        )
    for key, values in history.items():
        if not isinstance(values, list) or not all(is_number(v) for v in values):
            raise ValueError(f"{path}: history {key!r} must be a list of numbers")
        if epochs is None:
            epochs = len(values)
        if len(values) != epochs:
            raise ValueError(
                f"{path}: history {key!r} has {len(values)} values, expected {epochs} (one per "
                "epoch)"
            )
    return history


def check_manifest(manifest, path) -> dict:
    """``manifest`` (from ``path``) if the fields a report shows have their types.

    Raises:
        ValueError: naming the file and the field.
    """
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    fields = {
        "argv": (lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v),
                 "a list of strings"),
        "versions": (lambda v: isinstance(v, dict), "an object"),
        "samples": (lambda v: isinstance(v, dict) and all(is_int(n) for n in v.values()),
                    "an object of sample counts"),
        "data": (lambda v: isinstance(v, dict)
                 and all(isinstance(e, dict) and isinstance(e.get("sha256", ""), str)
                         for e in v.values()),
                 "an object of {path, sha256} objects"),
    }
    for name, (check, what) in fields.items():
        if name in manifest and not check(manifest[name]):
            raise ValueError(f"{path}: {name!r} must be {what}")
    return manifest


def _differences(have, want, prefix: str = "") -> list[str]:
    """'key=A vs B' for every (nested) entry where two JSON-like configs differ."""
    if isinstance(have, dict) and isinstance(want, dict):
        out = []
        for key in sorted(set(have) | set(want)):
            out += _differences(have.get(key), want.get(key), f"{prefix}{key}.")
        return out
    return [] if have == want else [f"{prefix[:-1]}={have!r} vs {want!r}"]


def _layer_difference(have: list, want: list) -> str | None:
    """Where two architectures (lists of layer specs) first differ, in words; None if equal."""
    if len(have) != len(want):
        return f"{len(have)} layers in the checkpoint, {len(want)} from the settings"
    for i, (a, b) in enumerate(zip(have, want, strict=True), start=1):
        if a["class_name"] != b["class_name"]:
            return (f"layer {i} is {a['class_name']} in the checkpoint, {b['class_name']} from "
                    "the settings")
        diffs = _differences(a["config"], b["config"])
        if diffs:
            return f"layer {i} ({a['class_name']}) has {', '.join(diffs)} (checkpoint vs settings)"
    return None


def check_checkpoint(model, expected, path, config_path, epochs: int) -> tuple[int, dict]:
    """(completed epochs, history so far) of a checkpoint ``model`` loaded from ``path``, once
    it is shown to hold what the run's settings build: ``expected``, the same preset built and
    compiled from ``config_path`` (architecture, input shape, dtype, optimizer and schedule).

    Raises:
        ValueError: naming both files and the first difference, or the checkpoint's broken
            metadata (completed_epochs outside 1 … ``epochs``, a history of another length).
    """
    mismatch = (f"{path} does not match the run {config_path} describes: {{}}; was one of them "
                "replaced or edited? Resume a run with its own files, or start a new one with "
                "another --out")
    have, want = model.get_config(), expected.get_config()
    if tuple(have["input_shape"] or ()) != tuple(want["input_shape"]):
        raise ValueError(mismatch.format(
            f"it was trained on samples of shape {tuple(have['input_shape'] or ())}, the "
            f"dataset holds {tuple(want['input_shape'])}"))
    difference = _layer_difference(have["layers"], want["layers"])
    if difference is None and have["dtype"] != want["dtype"]:
        difference = f"dtype {have['dtype']} in the checkpoint, {want['dtype']} from the settings"
    if difference is not None:
        raise ValueError(mismatch.format(difference))
    if model.optimizer is None:
        raise ValueError(f"{path} holds no optimizer state to continue training with")
    ours, theirs = model.optimizer, expected.optimizer
    if type(ours) is not type(theirs):
        raise ValueError(mismatch.format(
            f"its optimizer is {type(ours).__name__}, the settings give {type(theirs).__name__}"))
    diffs = _differences(ours.get_config(), theirs.get_config())
    if diffs:
        raise ValueError(mismatch.format(
            f"its {type(ours).__name__} has {', '.join(diffs)} (checkpoint vs settings)"))
    done = model.metadata.get("completed_epochs")
    if not is_positive_int(done) or done > epochs:
        raise ValueError(
            f"{path}: completed_epochs must be an integer in 1 … {epochs} (the run's epochs), "
            f"got {done!r}"
        )
    return done, check_history(model.metadata.get("history", {}), path, epochs=done)


# ---------------------------------------------------------------------- tidying
def remove_stale_temporaries(run_dir, names=RUN_FILES) -> list[Path]:
    """Delete the ``.NAME.<8 hex>.tmp`` files an interrupted write of ``names`` left in
    ``run_dir``; nothing else is touched. Returns the removed paths."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    removed = []
    for path in sorted(run_dir.iterdir()):
        match = _TEMPORARY.fullmatch(path.name)
        if match and match["name"] in names and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
