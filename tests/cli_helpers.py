"""Helpers shared by the command-line tests: run ``python -m chainrule``, write tiny datasets,
check a one-line error."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from chainrule.data import write_idx

DATA_ROOT = Path(
    os.environ.get("CHAINRULE_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_cli(*args, cwd, env=None) -> subprocess.CompletedProcess:
    """``python -m chainrule ARGS`` in ``cwd``; by default with $CHAINRULE_DATA set to the data."""
    if env is None:
        env = {**os.environ, "CHAINRULE_DATA": str(DATA_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "chainrule", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def tiny_idx_dataset(folder: Path, n_train: int = 40, n_test: int = 10, *, shape=(28, 28),
                     test_shape=None, train_labels=None, test_labels=None) -> Path:
    """The four IDX files of a random dataset written to ``folder``: by default 28×28 images
    with ten classes (labels 0, 1, …, 9, 0, 1, …); any part can be replaced by a hostile one."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for split, n, image_shape, labels in (("train", n_train, shape, train_labels),
                                          ("t10k", n_test, test_shape or shape, test_labels)):
        write_idx(folder / f"{split}-images-idx3-ubyte",
                  rng.integers(0, 256, (n, *image_shape), dtype=np.uint8))
        if labels is None:
            labels = np.arange(n) % 10
        write_idx(folder / f"{split}-labels-idx1-ubyte", np.asarray(labels, dtype=np.uint8))
    return folder


def assert_one_line_error(result, command, status=1):
    """The process failed with ``status`` and printed exactly one line, 'chainrule COMMAND:
    error: …', on stderr, no traceback and nothing on stdout; returns that line."""
    assert result.returncode == status, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"chainrule {command}: error: "), lines[0]
    assert result.stdout == ""
    return lines[0]
