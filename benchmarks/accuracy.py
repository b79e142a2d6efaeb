"""Train the model presets on full MNIST with the command line's default settings; print a table.

Usage:
    CHAINRULE_DATA=../shared/data python benchmarks/accuracy.py [--models softmax,mlp,cnn]

Each row is one `chainrule train --model NAME --no-report` run (defaults, seed 0 unless --seeds;
--train-args adds options, e.g. "--augment 0") in a temporary run folder: test accuracy, epochs
and wall time on this machine. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARS = {"softmax": 0.925, "mlp": 0.983, "cnn": 0.993}
#: The target for the median over seeds 0–3 (MLP in 15 epochs, cnn in 10).
MEDIAN_BARS = {"mlp": 0.985, "cnn": 0.995}


def run(model: str, workdir: Path, seed: int, extra: list[str]) -> dict:
    out = workdir / f"{model}-{seed}"
    cmd = [sys.executable, "-m", "chainrule", "train", "--model", model, "--out", str(out),
           "--quiet", "--no-report", "--seed", str(seed), *extra]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "model": model,
        "seed": seed,
        "epochs": manifest["config"]["epochs"],
        "test_accuracy": manifest["final"]["test_accuracy"],
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="softmax,mlp,cnn")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, one run each")
    parser.add_argument("--train-args", default="",
                        help='extra `chainrule train` options, e.g. "--augment 0" or "--lr 1e-3"')
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for seed in args.seeds.split(","):
                rows.append(run(model, Path(tmp), int(seed), shlex.split(args.train_args)))
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    if args.train_args:
        print(f"extra train options: {args.train_args}")
    print("| model | seed | epochs | test accuracy | bar | wall time |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        bar = BARS.get(r["model"])
        verdict = "" if bar is None else (" ✓" if r["test_accuracy"] >= bar else " ✗")
        print(f"| {r['model']} | {r['seed']} | {r['epochs']} | {100 * r['test_accuracy']:.2f}% | "
              f"{'' if bar is None else f'>= {100 * bar:.1f}%'}{verdict} | {r['wall_s']:.1f} s |")
    for model in args.models.split(","):
        scores = [r["test_accuracy"] for r in rows if r["model"] == model]
        if len(scores) > 1:
            median, target = statistics.median(scores), MEDIAN_BARS.get(model)
            verdict = "" if target is None else (
                f", target >= {100 * target:.1f}% {'✓' if median >= target else '✗'}")
            print(f"{model}: median test accuracy over seeds {args.seeds}: {100 * median:.2f}% "
                  f"(range {100 * min(scores):.2f}–{100 * max(scores):.2f}%{verdict})")


if __name__ == "__main__":
    main()
