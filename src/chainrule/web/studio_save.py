"""Saving a studio run: its model as a chainrule .npz, or a run folder with a report.

The run folder has the files and layout of ``chainrule train``'s (``chainrule.runs``):
config.json (the run's settings), model.npz, history.json/.csv (per epoch), manifest.json
(with the SHA-256 of the data files; for 2-D points the points themselves, saved next to
them as points.csv) and report.html (``chainrule.report``; needs matplotlib). The image
models take 28×28 digits, so ``chainrule serve`` and ``chainrule predict`` take their
model.npz as they take one from ``chainrule train``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .. import report, runs
from ..fileio import atomic_write
from .studio_run import Run, save_points_csv

POINTS_CSV = "points.csv"


def model_bytes(run: Run) -> bytes:
    """The run's current model (weights and optimizer state) as the bytes of a .npz file."""
    with run.frozen() as model, tempfile.TemporaryDirectory(prefix="chainrule-studio-") as tmp:
        path = Path(tmp) / runs.MODEL
        model.save(path, metadata={"studio": {"step": run.step, "settings": run.settings}})
        return path.read_bytes()


def folder_name(run: Run) -> str:
    """``<dataset>-<model>-<UTC time>-<id prefix>``: a new name for every save."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{run.data.name}-{run.settings['model']}-{stamp}-{run.id[:6]}"


def write_run_folder(run: Run, runs_dir: Path) -> tuple[Path, list[str]]:
    """Write the run folder under ``runs_dir``; returns it and the names of its files.

    The report is left out (and not listed) when matplotlib is not installed.
    """
    folder = Path(runs_dir) / folder_name(run)
    folder.mkdir(parents=True, exist_ok=False)
    data = run.data
    with run.frozen() as model:
        config = {**run.settings, "dataset": run.settings.get("dataset") or data.name,
                  "data_dir": None, "schedule": "constant", "validation_split": 0.0,
                  "studio_step": run.step}
        runs.write_json(folder / runs.CONFIG, config)
        model.save(folder / runs.MODEL)
        history = run.history()
        runs.write_history(folder, history)
        files = dict(data.files)
        if data.kind == "points":
            save_points_csv(folder / POINTS_CSV, data)
            files = {"points": folder / POINTS_CSV}
        final = {key: value for key, value in run.metrics.items()}
        manifest = runs.write_manifest(
            folder, argv=["chainrule", "studio"], config=config, files=files,
            samples={"train": len(data.y), "validation": len(data.y_val)},
            train_seconds=run.training_seconds(), final=final)
        try:
            page = report.render_report(model, history, config, manifest, data.x_val,
                                        data.y_val, title=f"chainrule studio run {folder.name}")
        except ImportError:
            page = None
    if page is not None:
        atomic_write(folder / runs.REPORT, lambda f: f.write(page.encode("utf-8")))
    return folder, sorted(p.name for p in folder.iterdir())
