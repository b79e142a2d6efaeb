"""``chainrule lm train`` and ``chainrule lm sample``: character language models on words.

The main parser registers them with one call, ``add_commands(subparsers, parents)``. Errors
are raised as ValueError / OSError and printed by ``chainrule.cli.main`` as one line,
'chainrule lm: error: …'.

A run folder of ``lm train`` holds what ``chainrule train``'s does (``chainrule.runs``):
config.json (with "task": "lm"), checkpoint.npz after every epoch until the end, then
model.npz (its metadata holds the vocabulary, so ``lm sample`` needs nothing else),
history.json/.csv (loss and val_loss in nats per character), manifest.json and report.html.
An interrupted run continues from its last checkpoint with ``lm train --resume --out RUN``,
exactly as if it had not stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import generate, models, runs
from .cli import non_negative_int, positive_int, positive_number
from .data import text
from .runs import CHECKPOINT, CONFIG, MODEL, REPORT
from .serialization import load_model

#: The report's and ``lm train``'s sampled words: how many, and at what temperature.
REPORT_SAMPLES = 20
REPORT_TEMPERATURE = 0.8


def context_length(text: str) -> int:
    """argparse type: an integer in 1 … ``models.MAX_LM_CONTEXT``."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= models.MAX_LM_CONTEXT:
        raise argparse.ArgumentTypeError(
            f"must be an integer in 1 … {models.MAX_LM_CONTEXT}, got {text}")
    return value


def add_commands(subparsers, parents=()) -> argparse.ArgumentParser:
    """Add ``lm`` with its subcommands ``train`` and ``sample`` to the main parser's
    ``subparsers``; ``parents`` give every command the main CLI's ``--debug``."""
    parents = list(parents)
    parser = subparsers.add_parser(
        "lm", parents=parents, help="character language models: train on words, sample new ones",
        description="Character-level language models (an MLP, an LSTM, a small GPT) trained to "
        "write new words that look like the words of a text file.")
    sub = parser.add_subparsers(dest="lm_command", required=True, metavar="COMMAND")
    R = models.LM_RECIPE

    p = sub.add_parser("train", parents=parents, help="train a language model on words",
                       description="Train a character language model; writes a run folder.")
    p.add_argument("--data", default="words",
                   help=f"'words' for {text.DEFAULT_WORDS} (Debian's wamerican, lowercase a–z "
                   "words; the default) or a UTF-8 text file whose whitespace-separated "
                   "tokens are the words (./words for a file named words)")
    p.add_argument("--model", choices=models.LM_PRESETS, default="mlp")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="default: " + ", ".join(f"{R[m]['epochs']} for {m}" for m in R))
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="default: " + ", ".join(f"{R[m]['batch_size']} for {m}" for m in R)
                   + " (windows for mlp, words for lstm and gpt)")
    p.add_argument("--lr", type=positive_number, default=None,
                   help="AdamW's initial rate, cosine-decayed to 0 (default: "
                   + ", ".join(f"{R[m]['lr']:g} for {m}" for m in R) + ")")
    p.add_argument("--context", default=None, metavar="T",
                   type=context_length,
                   help=f"characters the model reads, 1 … {models.MAX_LM_CONTEXT} (default: "
                   + ", ".join(f"{models.LM_ARCH[m]['context']} for {m}" for m in R) + ")")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seeds the split, the weights and the shuffling (default 0)")
    p.add_argument("--out", default=None, help="run folder (default runs/lm-MODEL-TIMESTAMP)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last epoch checkpoint, with the "
                   "run's saved settings (other training options are ignored)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or tables")
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="write RUN/report.html with the loss curves and sampled words "
                   "(default: on; needs matplotlib)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", parents=parents, help="new words from a trained model",
                       description="Print words sampled from a model trained by lm train.")
    p.add_argument("run", help="a run folder written by lm train (or its model.npz)")
    p.add_argument("--n", type=positive_int, default=20, help="how many words (default 20)")
    p.add_argument("--temperature", type=positive_number, default=REPORT_TEMPERATURE,
                   help="> 0: below 1 safer, more common words, above 1 wilder ones (default "
                   f"{REPORT_TEMPERATURE})")
    p.add_argument("--seed", type=non_negative_int, default=None,
                   help="the same seed gives the same words (default: new words every time)")
    p.add_argument("--prefix", default="", help="characters every word starts with")
    p.add_argument("--max-length", type=positive_int, default=generate.MAX_WORD_LENGTH,
                   help=f"cut words at this many characters (default "
                   f"{generate.MAX_WORD_LENGTH})")
    p.set_defaults(func=cmd_sample)
    return parser


# ---------------------------------------------------------------------- train
def _resume_config(run_dir: Path) -> dict:
    """The settings of the language-model run to continue in ``run_dir``, read and checked."""
    if not (run_dir / CHECKPOINT).is_file():
        finished = (run_dir / MODEL).is_file()
        raise ValueError(
            f"--resume: the run in {run_dir} has finished ({MODEL} is saved); start a new run "
            "with another --out" if finished else
            f"--resume: {run_dir} holds no {CHECKPOINT} to resume from")
    config = runs.read_config(run_dir)
    if not runs.is_lm_config(config):
        raise ValueError(f"--resume: {run_dir} holds a run of chainrule train, not of lm train; "
                         f"resume it with: chainrule train --resume --out {run_dir}")
    return config


def _new_config(args, run_dir: Path, data: str, vocab: text.Vocabulary) -> dict:
    for name in (CHECKPOINT, MODEL):
        if (run_dir / name).exists():
            raise ValueError(f"{run_dir} already holds a run ({name}); choose another --out"
                             + (", or pass --resume to continue it" if name == CHECKPOINT
                                else ""))
    recipe = models.LM_RECIPE[args.model]
    return {
        "task": runs.LM_TASK,
        "model": args.model,
        "data": data,
        "context": args.context or models.LM_ARCH[args.model]["context"],
        "epochs": args.epochs or recipe["epochs"],
        "batch_size": args.batch_size or recipe["batch_size"],
        "lr": args.lr or recipe["lr"],
        "weight_decay": recipe["weight_decay"],
        "seed": args.seed,
        "vocab": "".join(vocab.chars),
    }


def cmd_train(args) -> int:
    if args.resume and args.out is None:
        raise ValueError("--resume needs --out RUN, the folder of the run to continue")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.out) if args.out else Path("runs") / f"lm-{args.model}-{stamp}"
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--out {run_dir} is a file, not a folder")
    say = (lambda *a: None) if args.quiet else print
    resumed = _resume_config(run_dir) if args.resume else None
    data = resumed["data"] if resumed else (
        "words" if args.data == "words" else os.path.abspath(os.path.expanduser(args.data)))

    # Data and every check first: a run that cannot start leaves no folder behind.
    words = text.read_words(data)
    vocab = text.Vocabulary.from_words(words)
    config = resumed or _new_config(args, run_dir, data, vocab)
    if "".join(vocab.chars) != config["vocab"]:
        raise ValueError(f"--resume: {data} has other characters than when the run started "
                         f"({''.join(vocab.chars)!r}, not {config['vocab']!r}): it was changed")
    train_words, val_words, test_words = text.split_words(words, seed=config["seed"])
    if not test_words:
        raise ValueError(f"{data}: {len(set(words))} distinct words leave no test words; a "
                         "corpus needs at least 10 distinct words")
    preset, seed = config["model"], config["seed"]
    probe = models.build_lm(preset, len(vocab), seed=seed, context=config["context"])
    x, y = generate.examples(probe, train_words, vocab)
    x_val, y_val = generate.examples(probe, val_words, vocab)
    x_test, y_test = generate.examples(probe, test_words, vocab)
    steps = probe.steps_per_epoch(len(x), config["batch_size"])
    model = models.build_lm(preset, len(vocab), seed=seed, context=config["context"],
                            lr=config["lr"], weight_decay=config["weight_decay"],
                            total_steps=config["epochs"] * steps)
    past, initial_epoch = {}, 0
    if resumed:
        saved = load_model(run_dir / CHECKPOINT)
        initial_epoch, past = runs.check_checkpoint(saved, model, run_dir / CHECKPOINT,
                                                    run_dir / CONFIG, config["epochs"])
        model = saved
        say(f"resuming {run_dir} after epoch {initial_epoch} of {config['epochs']}")
    say(f"{len(words):,} words from {data}: {len(train_words):,} train, {len(val_words):,} "
        f"validation, {len(test_words):,} test; {vocab.describe()}")

    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    runs.remove_stale_temporaries(run_dir)
    if not resumed:
        runs.write_json(run_dir / CONFIG, config)
    if not args.quiet:
        model.summary()
    checkpoint = runs.EpochCheckpoint(run_dir, past)
    started = time.perf_counter()
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if initial_epoch < config["epochs"]:
                model.fit(x, y, epochs=config["epochs"], batch_size=config["batch_size"],
                          seed=seed, validation_data=(x_val, y_val), callbacks=[checkpoint],
                          verbose=0 if args.quiet else 1, initial_epoch=initial_epoch)
    except BaseException as exc:
        if not (run_dir / CHECKPOINT).exists():
            for name in (CONFIG, runs.HISTORY_JSON, runs.HISTORY_CSV):
                (run_dir / name).unlink(missing_ok=True)
            if created:
                with contextlib.suppress(OSError):
                    run_dir.rmdir()
        if isinstance(exc, KeyboardInterrupt):
            kept = (f"the checkpoint of the last finished epoch is in {run_dir / CHECKPOINT}; "
                    f"continue with: chainrule lm train --resume --out {run_dir}"
                    if (run_dir / CHECKPOINT).exists() else "nothing was kept")
            print(f"\ninterrupted: {kept}", file=sys.stderr)
            return 130
        raise
    train_seconds = time.perf_counter() - started
    history = checkpoint.merged() if initial_epoch < config["epochs"] else past
    val = generate.nats_per_char(model, x_val, y_val)
    test = generate.nats_per_char(model, x_test, y_test)
    say(f"\nvalidation {val:.4f} nats/char, test {test:.4f} nats/char "
        f"({test / np.log(2):.4f} bits/char)")
    model.save(run_dir / MODEL, metadata={"task": runs.LM_TASK, "vocab": config["vocab"]})
    runs.write_history(run_dir, history)
    runs.write_manifest(
        run_dir, argv=["chainrule", *sys.argv[1:]], config=config,
        files={"text": text.DEFAULT_WORDS if data == "words" else Path(data)},
        samples={"train_words": len(train_words), "validation_words": len(val_words),
                 "test_words": len(test_words), "train_targets": int(np.sum(y != -100))},
        train_seconds=train_seconds,
        final={"val_nats_per_char": val, "test_nats_per_char": test,
               **{k: v[-1] for k, v in history.items()}})
    (run_dir / CHECKPOINT).unlink(missing_ok=True)
    say(f"\nsaved {run_dir / MODEL}, history.json/.csv and manifest.json in {run_dir}")
    words_out = generate.sample_words(model, vocab, REPORT_SAMPLES, REPORT_TEMPERATURE,
                                      seed=seed)
    say(f"sampled at temperature {REPORT_TEMPERATURE}: {' '.join(words_out)}")
    if args.report:
        try:
            from .report import write_report

            say(f"report: {write_report(run_dir)}")
        except ImportError as exc:
            print(f"chainrule lm train: no report.html: {exc}", file=sys.stderr)
        except OSError as exc:
            raise OSError(f"could not write {run_dir / REPORT}: {exc.strerror or exc}; the "
                          f"model is saved in {run_dir / MODEL}; rebuild the report with: "
                          f"chainrule report {run_dir}") from None
    return 0


# ---------------------------------------------------------------------- sample
def cmd_sample(args) -> int:
    model, vocab = generate.load_language_model(args.run)
    for word in generate.sample_words(model, vocab, args.n, args.temperature, seed=args.seed,
                                      prefix=args.prefix, max_length=args.max_length):
        print(word)
    return 0
