"""Run folders written by ``chainrule train``: their files, the settings in config.json, tidying.

A run folder holds config.json (the run's settings, written before the first step), then
checkpoint.npz after every epoch until the run finishes, then model.npz, history.json/.csv,
manifest.json and report.html. Each file is written by ``serialization.atomic_write``, through a
temporary ``.NAME.<8 hex>.tmp`` next to it that a killed process can leave behind.

The settings' checks are written once here: ``chainrule train`` turns them into its option
types and applies them to config.json when it resumes a run, ``chainrule report`` to the run
it reads; and a checkpoint is resumed only once it is shown to hold the run's model.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from .models import PRESETS

CONFIG = "config.json"
CHECKPOINT = "checkpoint.npz"
MODEL = "model.npz"
HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
MANIFEST = "manifest.json"
REPORT = "report.html"
RUN_FILES = (CONFIG, CHECKPOINT, MODEL, HISTORY_JSON, HISTORY_CSV, MANIFEST, REPORT)

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("cosine", "constant")
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
    "augment": (is_non_negative_int, NON_NEGATIVE_INT, ("cnn",)),
    "dropout": (is_fraction, FRACTION, ("mlp", "cnn")),
}


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


def check_config(config, path) -> dict:
    """``config`` (read from ``path``) if it holds every setting of a run, each as train writes it.

    Raises:
        ValueError: naming the file and the first missing or invalid setting.
    """
    if not isinstance(config, dict):
        raise ValueError(
            f"{path}: expected a JSON object of run settings, got {type(config).__name__}"
        )
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
