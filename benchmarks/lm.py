"""Validation loss of the language-model presets: chainrule against PyTorch, same recipe.

Usage:
    python benchmarks/lm.py [--presets mlp lstm gpt] [--threads 1] [--out runs/bench-lm]
        [--seed 0]

For each preset, chainrule's figure comes from the default command itself,
``chainrule lm train --model PRESET --seed 0 --out OUT/PRESET`` (run in-process, its run folder
kept for ``chainrule lm sample``), on the seeded train/validation/test split of
/usr/share/dict/words. The PyTorch model is the same architecture written in torch
(benchmarks/lm_torch.py), started from the chainrule model's initial weights (``build_lm`` with
the same seed), trained with the same recipe from chainrule.models.LM_RECIPE: AdamW, the same
cosine decay per step, batch size, epochs, and the same batches in the same order. Both are
scored on the same validation words in nats per character (each word's end counts as one
character). This is a benchmark, not a test; it takes about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["mlp", "lstm", "gpt"],
                        choices=["mlp", "lstm", "gpt"])
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS and torch threads (default 1: the loss comparison does not "
                        "depend on it, and one thread each suffers least on a shared machine)")
    parser.add_argument("--out", default="runs/bench-lm", help="folder for the chainrule runs")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


ARGS = parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import lm_torch  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from chainrule import generate, models, runs  # noqa: E402
from chainrule.cli import main as chainrule_main  # noqa: E402
from chainrule.data import text  # noqa: E402

torch.set_num_threads(ARGS.threads)


def main():
    out = Path(ARGS.out)
    words = text.read_words("words")
    vocab = text.Vocabulary.from_words(words)
    train, val, _ = text.split_words(words, seed=ARGS.seed)
    rows = []
    for preset in ARGS.presets:
        run_dir = out / preset
        if (run_dir / runs.MODEL).exists():
            raise SystemExit(f"{run_dir} already holds a run; remove it or pass another --out")
        started = time.perf_counter()
        status = chainrule_main(["lm", "train", "--model", preset, "--seed", str(ARGS.seed),
                                 "--out", str(run_dir), "--quiet"])
        ours_seconds = time.perf_counter() - started
        if status != 0:
            raise SystemExit(f"chainrule lm train --model {preset} failed ({status})")
        ours = runs.read_manifest(run_dir)["final"]["val_nats_per_char"]

        arch, recipe = models.LM_ARCH[preset], models.LM_RECIPE[preset]
        start = models.build_lm(preset, len(vocab), seed=ARGS.seed)
        x, y = generate.examples(start, train, vocab)
        x_val, y_val = generate.examples(start, val, vocab)
        twin = lm_torch.from_chainrule(preset, start, arch)
        # The two start from the same function: their initial validation losses agree.
        initial = (generate.nats_per_char(start, x_val, y_val),
                   lm_torch.nats_per_char(twin, x_val, y_val))
        torch.manual_seed(ARGS.seed)
        started = time.perf_counter()
        lm_torch.train_epochs(twin, x, y, recipe["epochs"], recipe["batch_size"], recipe["lr"],
                              recipe["weight_decay"], ARGS.seed)
        theirs_seconds = time.perf_counter() - started
        theirs = lm_torch.nats_per_char(twin, x_val, y_val)
        rows.append((preset, start.count_params(), recipe, initial, ours, theirs,
                     ours_seconds, theirs_seconds))
        print(f"{preset}: chainrule {ours:.4f}, torch {theirs:.4f} nats/char", flush=True)

    print(f"\n{len(words):,} words of {text.DEFAULT_WORDS}: {len(train):,} train, {len(val):,} "
          f"validation (seed {ARGS.seed}); {vocab.describe()}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {ARGS.threads} thread(s) "
          f"each; NumPy {np.__version__}, torch {torch.__version__}; load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    print("\n| preset | parameters | recipe (AdamW, cosine) | validation nats/char at init "
          "(chainrule / torch) | chainrule validation nats/char | PyTorch validation nats/char "
          "| difference | chainrule `lm train` s (whole command) | PyTorch train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for preset, params, recipe, initial, ours, theirs, t_ours, t_theirs in rows:
        print(f"| {preset} | {params:,} | {recipe['epochs']} epochs, batch "
              f"{recipe['batch_size']}, lr {recipe['lr']:g}, wd {recipe['weight_decay']:g} | "
              f"{initial[0]:.4f} / {initial[1]:.4f} | {ours:.4f} | {theirs:.4f} | "
              f"{100 * (ours - theirs) / theirs:+.2f}% | {t_ours:.0f} | {t_theirs:.0f} |")


if __name__ == "__main__":
    main()
