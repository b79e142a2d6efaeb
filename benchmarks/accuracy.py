"""Train the model presets on full MNIST with the command line's default settings; print a table.

Usage:
    CHAINRULE_DATA=../shared/data python benchmarks/accuracy.py [--models softmax,mlp,cnn]

Each row is one `chainrule train --model NAME` run (defaults only, seed 0) in a temporary run
folder: test accuracy, epochs and wall time on this machine. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARS = {"softmax": 0.925, "mlp": 0.983, "cnn": 0.993}


def run(model: str, workdir: Path) -> dict:
    out = workdir / model
    cmd = [sys.executable, "-m", "chainrule", "train", "--model", model, "--out", str(out),
           "--quiet"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "model": model,
        "epochs": manifest["config"]["epochs"],
        "test_accuracy": manifest["final"]["test_accuracy"],
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="softmax,mlp,cnn")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            rows.append(run(model, Path(tmp)))
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print("| model | epochs | test accuracy | bar | wall time |")
    print("|---|---|---|---|---|")
    for r in rows:
        bar = BARS.get(r["model"])
        verdict = "" if bar is None else (" ✓" if r["test_accuracy"] >= bar else " ✗")
        print(f"| {r['model']} | {r['epochs']} | {100 * r['test_accuracy']:.2f}% | "
              f"{'' if bar is None else f'>= {100 * bar:.1f}%'}{verdict} | {r['wall_s']:.1f} s |")


if __name__ == "__main__":
    main()
