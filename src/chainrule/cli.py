"""The ``chainrule`` command line: train, report, evaluate, predict, gradcheck, info, serve,
studio, export, sweep (and ``lm train`` / ``lm sample``, from ``chainrule.lm_cli``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from . import layers, losses, models, runs
from .exercises.cli import add_commands as add_exercise_commands
from .model import Sequential
from .runs import CHECKPOINT, CONFIG, MODEL, REPORT
from .serialization import load_model
from .version import __version__


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


# ---------------------------------------------------------------------- option types
def _parsed(text: str, parse, check, what: str):
    """``parse(text)`` if it passes ``check``; else the one-line argparse error
    'argument --opt: must be WHAT, got TEXT'."""
    try:
        value = parse(text)
    except (ValueError, OverflowError):
        value = None
    if value is None or not check(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    return _parsed(text, int, runs.is_positive_int, runs.POSITIVE_INT)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _parsed(text, int, runs.is_non_negative_int, runs.NON_NEGATIVE_INT)


def positive_number(text: str) -> float:
    """argparse type: a finite float > 0."""
    return _parsed(text, float, runs.is_positive_number, runs.POSITIVE_NUMBER)


def fraction(text: str) -> float:
    """argparse type: a float in [0, 1)."""
    return _parsed(text, float, runs.is_fraction, runs.FRACTION)


def hidden_sizes(text: str) -> list[int]:
    """argparse type: comma-separated layer sizes, each in 1 … runs.MAX_HIDDEN."""
    return _parsed(text, lambda t: [int(h) for h in t.split(",")], runs.is_hidden,
                   f"comma-separated integer sizes in 1 … {runs.MAX_HIDDEN}")


def port(text: str) -> int:
    """argparse type: a TCP port, 1 … 65535."""
    return _parsed(text, int, lambda v: 1 <= v <= 65535, "a port number in 1 … 65535")


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, 'chainrule train: error: …' (usage: --help)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


# ---------------------------------------------------------------------- helpers
def _load_dataset(dataset: str, data_dir, progress: bool = True):
    from .data import dataset_files, load_idx_dataset

    files = dataset_files(dataset, data_dir, progress=progress)
    train, test = load_idx_dataset(dataset, data_dir, progress=progress)
    return files, train, test


def _ensure_compiled(model) -> None:
    if model.loss is None:
        logits = not model.outputs_probabilities
        model.compile(optimizer="adam",
                      loss=losses.SparseCategoricalCrossEntropy(from_logits=logits),
                      metrics=["accuracy"])


def _load_model(path) -> object:
    path = Path(path)
    if not path.exists():
        raise CLIError(f"model file not found: {path}")
    return load_model(path)


def _report(model, x, y, out=print) -> dict:
    from . import metrics

    _ensure_compiled(model)
    result = model.evaluate(x, y, batch_size=1000)
    pred = np.argmax(model.predict_proba(x), axis=1)
    # A model saved with compile(metrics=None) still gets its accuracy reported.
    result.setdefault("accuracy", metrics.accuracy(y, pred))
    out(f"test loss {result['loss']:.4f}  test accuracy {result['accuracy']:.4f}")
    out(metrics.classification_report(y, pred))
    return {"result": result, "pred": pred}


# ---------------------------------------------------------------------- train
def _new_config(args, run_dir: Path) -> dict:
    """The settings of a new run from the command line (refusing a folder that holds a run)."""
    if (run_dir / CHECKPOINT).exists():
        raise CLIError(
            f"{run_dir} holds an unfinished run ({CHECKPOINT}); pass --resume to continue it, "
            "or choose another --out"
        )
    if (run_dir / MODEL).exists():
        raise CLIError(f"{run_dir} already holds a finished run ({MODEL}); choose another --out")
    optimizer = args.optimizer
    lr = args.lr if args.lr is not None else models.default_lr(args.model, optimizer)
    return {
        "model": args.model,
        "dataset": args.dataset,
        "data_dir": None if args.data_dir is None else str(args.data_dir),
        "epochs": args.epochs if args.epochs is not None else models.DEFAULT_EPOCHS[args.model],
        "batch_size": args.batch_size,
        "optimizer": optimizer,
        "lr": lr,
        "schedule": args.schedule,
        "seed": args.seed,
        "validation_split": args.validation_split,
        "hidden": list(args.hidden) if args.model == "mlp" else None,
        "augment": None if args.model == "softmax" else (
            args.augment if args.augment is not None else models.DEFAULT_AUGMENT[args.model]),
        "dropout": None if args.model == "softmax" else (
            args.dropout if args.dropout is not None else models.DEFAULT_DROPOUT[args.model]),
    }


def _resume_config(run_dir: Path) -> dict:
    """The settings of the run to continue in ``run_dir``, read and checked once."""
    config_path, checkpoint = run_dir / CONFIG, run_dir / CHECKPOINT
    if not checkpoint.is_file():
        if (run_dir / MODEL).is_file():
            raise CLIError(
                f"--resume: the run in {run_dir} has finished ({MODEL} is saved, no "
                f"{CHECKPOINT} is left); start a new run with another --out"
            )
        raise CLIError(f"--resume: {run_dir} holds no {CHECKPOINT} to resume from")
    if not config_path.is_file():
        raise CLIError(
            f"--resume: {run_dir} has a {CHECKPOINT} but no {CONFIG} with the run's settings"
        )
    return runs.read_config(run_dir)


def _resume_checkpoint(run_dir: Path, config: dict, expected: Sequential):
    """(model, completed epochs, history so far) from the run's checkpoint, once it is shown to
    hold the model and optimizer that config.json builds (``expected``)."""
    model = load_model(run_dir / CHECKPOINT)
    done, history = runs.check_checkpoint(model, expected, run_dir / CHECKPOINT,
                                          run_dir / CONFIG, config["epochs"])
    return model, done, history


def _discard_new_run(run_dir: Path, created: bool) -> None:
    """Remove what a new run wrote before its first checkpoint (and its folder, if new)."""
    for name in (CONFIG, runs.HISTORY_JSON, runs.HISTORY_CSV):
        (run_dir / name).unlink(missing_ok=True)
    runs.remove_stale_temporaries(run_dir)
    if created:
        with contextlib.suppress(OSError):
            run_dir.rmdir()


def cmd_train(args) -> int:
    if args.resume and args.out is None:
        raise CLIError("--resume needs --out RUN, the folder of the run to continue")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.out) if args.out else Path("runs") / f"{args.model}-{stamp}"
    if run_dir.exists() and not run_dir.is_dir():
        raise CLIError(f"--out {run_dir} is a file, not a folder")
    config = _resume_config(run_dir) if args.resume else _new_config(args, run_dir)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a))

    from .data import check_splits

    # Data first, then every check: a run that cannot start leaves no run folder behind.
    files, train, test = _load_dataset(config["dataset"], config["data_dir"],
                                       progress=not args.quiet)
    num_classes = check_splits(files, train, test, config["dataset"])
    (x_train, y_train), (x_test, y_test) = train, test
    shift = runs.max_shift(x_train.shape)
    if config["model"] != "softmax" and config["augment"] > shift:
        h, w = x_train.shape[-2:]
        raise CLIError(
            f"argument --augment: must be less than half the image side, at most {shift} for "
            f"{h}×{w} images, got {config['augment']}"
        )
    n_val = int(round(len(x_train) * config["validation_split"]))
    if config["validation_split"] and not 0 < n_val < len(x_train):
        raise CLIError(
            f"argument --validation-split: {config['validation_split']:g} of "
            f"{len(x_train)} training images leaves "
            f"{'no validation' if n_val == 0 else 'no training'} images; use 0 for no "
            "validation, or a split that keeps both sets"
        )
    x_val, y_val = x_train[len(x_train) - n_val:], y_train[len(y_train) - n_val:]
    x_tr, y_tr = x_train[:len(x_train) - n_val], y_train[:len(y_train) - n_val]
    epochs = config["epochs"]

    model = models.build(config["model"], num_classes=num_classes,
                         input_shape=x_train.shape[1:], seed=config["seed"],
                         hidden=config["hidden"], dropout=config["dropout"],
                         augment=config["augment"])
    # Also refuses a batch size the model cannot train on, before any folder is written.
    steps = model.steps_per_epoch(len(x_tr), config["batch_size"])
    model.compile(
        optimizer=models.make_optimizer(config["optimizer"], config["lr"], epochs * steps,
                                        config["schedule"]),
        loss=model.loss,
        metrics=["accuracy"],
    )
    past, initial_epoch = {}, 0
    if args.resume:
        model, initial_epoch, past = _resume_checkpoint(run_dir, config, model)
        say(f"resuming {run_dir} after epoch {initial_epoch} of {epochs}")
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    runs.remove_stale_temporaries(run_dir)
    if not args.resume:
        runs.write_json(run_dir / CONFIG, config)
    if not args.quiet:
        model.summary()
    checkpoint = runs.EpochCheckpoint(run_dir, past)
    started = time.perf_counter()
    try:
        # fit reports an overflowing loss itself, on one line: NumPy's warnings would add more.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if initial_epoch < epochs:
                model.fit(
                    x_tr, y_tr, epochs=epochs, batch_size=config["batch_size"],
                    seed=config["seed"], validation_data=(x_val, y_val) if n_val else None,
                    callbacks=[checkpoint], verbose=0 if args.quiet else 1,
                    initial_epoch=initial_epoch,
                )
    except BaseException as exc:
        saved = (run_dir / CHECKPOINT).exists()
        if not saved:
            _discard_new_run(run_dir, created)
        done = load_model(run_dir / CHECKPOINT).metadata.get("completed_epochs") if saved \
            else None
        if isinstance(exc, KeyboardInterrupt):
            if not saved:
                print(
                    "\ninterrupted before the first epoch ended: there is no checkpoint to "
                    "resume from and nothing was kept; run the same command again to start over",
                    file=sys.stderr,
                )
            else:
                print(
                    f"\ninterrupted: the checkpoint after epoch {done} is in "
                    f"{run_dir / CHECKPOINT}; continue with: chainrule train --resume --out "
                    f"{run_dir}",
                    file=sys.stderr,
                )
            return 130
        if isinstance(exc, FloatingPointError):
            kept = (f"the last good checkpoint, after epoch {done}, is kept in "
                    f"{run_dir / CHECKPOINT}") if saved else "nothing was saved"
            raise CLIError(f"{exc}; {kept}") from None
        raise
    train_seconds = time.perf_counter() - started
    history = checkpoint.merged() if initial_epoch < epochs else past

    say("")
    evaluation = _report(model, x_test, y_test, out=say)
    try:
        model.save(run_dir / MODEL)
        runs.write_history(run_dir, history)
        runs.write_manifest(
            run_dir, argv=["chainrule", *sys.argv[1:]], config=config, files=files,
            samples={"train": len(x_tr), "validation": n_val, "test": len(x_test)},
            train_seconds=train_seconds,
            final={"test_loss": evaluation["result"]["loss"],
                   "test_accuracy": evaluation["result"]["accuracy"],
                   **{k: v[-1] for k, v in history.items()}})
    except OSError as exc:
        raise CLIError(
            f"could not save the finished run: {exc}; the checkpoint after epoch {epochs} is "
            f"kept in {run_dir / CHECKPOINT}: make room, then finish with: chainrule train "
            f"--resume --out {run_dir}"
        ) from None
    (run_dir / CHECKPOINT).unlink(missing_ok=True)
    say(f"\nsaved {run_dir / MODEL}, history.json/.csv and manifest.json in {run_dir}")
    # The report needs only the test set: releasing the training images (188 MB of float32
    # for MNIST) before matplotlib draws keeps them from adding up in the peak memory.
    del train, x_train, y_train, x_tr, y_tr, x_val, y_val
    if args.report:
        try:
            from .report import write_report

            say(f"report: {write_report(run_dir, test_data=(x_test, y_test))}")
        except ImportError as exc:
            print(f"chainrule train: no report.html: {exc}", file=sys.stderr)
        except OSError as exc:
            raise CLIError(
                f"could not write {run_dir / REPORT}: {exc.strerror or exc}; the model is "
                f"saved in {run_dir / MODEL}; rebuild the report with: chainrule report "
                f"{run_dir}"
            ) from None
    return 0


# ---------------------------------------------------------------------- report
def cmd_report(args) -> int:
    from .report import write_report

    run_dir = Path(args.run_dir)
    if not (run_dir / MODEL).is_file() or not (run_dir / CONFIG).is_file():
        raise CLIError(
            f"{run_dir} holds no {MODEL} and {CONFIG}: pass a run folder written by "
            "chainrule train"
        )
    runs.read_config(run_dir)
    if args.out is None:
        runs.remove_stale_temporaries(run_dir, names=(REPORT,))
    print(write_report(run_dir, data_dir=args.data_dir, path=args.out))
    return 0


# ---------------------------------------------------------------------- evaluate / predict
def cmd_evaluate(args) -> int:
    from . import metrics

    model = _load_model(args.model)
    files, _, (x_test, y_test) = _load_dataset(args.dataset, args.data_dir, progress=False)
    if len(x_test) == 0:
        raise CLIError(f"{files['test_images']} holds no images")
    x_test = model.reshape_input(x_test)
    evaluation = _report(model, x_test, y_test)
    cm = metrics.confusion_matrix(y_test, evaluation["pred"])
    width = max(5, len(str(cm.max())) + 1)
    print("confusion matrix (rows: true class, columns: predicted class)")
    print(" " * 4 + "".join(str(c).rjust(width) for c in range(cm.shape[1])))
    for i, row in enumerate(cm):
        print(str(i).rjust(3) + " " + "".join(str(v).rjust(width) for v in row))
    return 0


def cmd_predict(args) -> int:
    from .data import preprocess_digit

    model = _load_model(args.model)
    results = []
    for name in args.images:
        path = Path(name)
        if not path.is_file():
            raise CLIError(f"image not found: {path}")
        try:
            x = preprocess_digit(path)[None]
        except (ValueError, OSError) as exc:
            raise CLIError(f"cannot read image {path}: {exc}") from None
        probs = model.predict_proba(model.reshape_input(x))[0]
        top = np.argsort(-probs, kind="stable")[:3]
        results.append({
            "file": str(name),
            "class": int(top[0]),
            "probabilities": [float(p) for p in probs],
            "top3": [[int(c), float(probs[c])] for c in top],
            # As the web page's "empty": a blank picture still gets a class, which means nothing.
            "empty": not x.any(),
        })
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            tops = "  ".join(f"{c}: {p:.3f}" for c, p in r["top3"])
            blank = ("   no ink found: the picture is blank, so the class means nothing"
                     if r["empty"] else "")
            print(f"{r['file']}: {r['class']}   ({tops}){blank}")
    return 0


# ---------------------------------------------------------------------- gradcheck / info
def cmd_gradcheck(args) -> int:
    from .gradcheck import gradcheck

    rng = np.random.default_rng(args.seed)
    x = rng.random((8, 28, 28))
    y = rng.integers(0, 10, 8)
    if args.model == "softmax":
        model = models.softmax_regression(seed=args.seed, dtype="float64")
        model.set_weights([rng.standard_normal(w.shape) * 0.1 for w in model.get_weights()])
    elif args.model == "mlp":
        model = models.mlp(hidden=(16, 16), seed=args.seed, dtype="float64")
    else:
        # The cnn preset's layer types at a size that checks in seconds: 12×12 inputs.
        x = rng.random((6, 1, 12, 12))
        y = rng.integers(0, 10, 6)
        model = Sequential([
            layers.Conv2D(4, 3, input_shape=(1, 12, 12)), layers.BatchNorm(), layers.ReLU(),
            layers.MaxPool2D(2), layers.Conv2D(6, 3, padding="same"), layers.BatchNorm(),
            layers.ReLU(), layers.AvgPool2D(2), layers.Flatten(), layers.Dense(10),
        ], dtype="float64", seed=args.seed)
        model.compile("adam", losses.SparseCategoricalCrossEntropy(from_logits=True))
    report = gradcheck(model, x, y, tol=args.tol)
    print(report)
    return 0 if report.ok else 1


def cmd_explain_backward(args) -> int:
    from .data import load_mnist
    from .explain import explain_backward, lecture_example

    if args.data == "lecture":
        x, y = lecture_example(args.samples, seed=args.seed)
        shape = dict(num_classes=3, input_shape=(2,))
        hidden = (4,)
    else:
        _, (x_test, y_test) = load_mnist(progress=False)
        x, y = x_test[:args.samples], y_test[:args.samples]
        shape, hidden = {}, (256, 256)
    if args.model == "softmax":
        model = models.softmax_regression(seed=args.seed, **shape)
    elif args.model == "mlp":
        model = models.mlp(hidden=hidden, seed=args.seed, **shape)
    else:
        model = _load_model(args.model)
        _ensure_compiled(model)
        x = model.reshape_input(x)
    print(explain_backward(model, x, y), end="")
    return 0


def cmd_info(args) -> int:
    from .data import DATASETS, search_paths

    print(f"chainrule {__version__}")
    print(f"python    {platform.python_version()} ({platform.platform()})")
    print(f"numpy     {np.__version__}")
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        print(f"BLAS      {blas.get('name')} {blas.get('version', '')}")
    except Exception:  # noqa: BLE001 - the BLAS report is informative only
        print("BLAS      (unknown)")
    for name in sorted(DATASETS):
        print(f"\n{name}: searched in this order")
        for folder in search_paths(name, args.data_dir):
            have = folder.is_dir() and any(folder.glob("train-images-idx3-ubyte*"))
            print(f"  {'found  ' if have else 'missing'}  {folder}")
    return 0


# ---------------------------------------------------------------------- serve
def cmd_serve(args) -> int:
    from .web import serve

    if not Path(args.model).is_file():
        raise CLIError(f"model file not found: {args.model}")
    serve(args.model, host=args.host, port=args.port, data_dir=args.data_dir,
          allowed_hosts=args.allowed_host, picture_workers=args.picture_workers)
    return 0


# ---------------------------------------------------------------------- studio
def cmd_studio(args) -> int:
    from .web.studio import studio

    studio(host=args.host, port=args.port, data_dir=args.data_dir, runs_dir=args.runs_dir,
           allowed_hosts=args.allowed_host)
    return 0


# ---------------------------------------------------------------------- export
EXPORT_FORMATS = {"onnx": ".onnx", "npz": ".npz", "safetensors": ".safetensors"}


def cmd_export(args) -> int:
    source = Path(args.model)
    if not source.is_file():
        raise CLIError(f"model file not found: {source}")
    out = Path(args.out) if args.out else source.with_suffix(EXPORT_FORMATS[args.to])
    if out.resolve() == source.resolve():
        raise CLIError(f"--out {out} is the model file itself; choose another file")
    if source.suffix == ".onnx":
        from .interop import import_onnx

        model = import_onnx(source)
    else:
        model = load_model(source, compile=False)
    if args.to == "onnx":
        from .interop import OPSET, export_onnx

        export_onnx(model, out)
        shape = ", ".join(map(str, model.input_shape))
        print(f"wrote {out}: ONNX opset {OPSET}, input 'input' (N, {shape}), output 'output' "
              f"(N, {', '.join(map(str, model.output_shape))})")
    else:
        model.save(out)
        print(f"wrote {out}: {args.to}, {len(model.state_dict())} arrays")
    return 0


# ---------------------------------------------------------------------- sweep
def cmd_sweep(args) -> int:
    from .sweep import run_sweep

    return run_sweep(args.spec, out=args.out, scheduler=args.scheduler, jobs=args.jobs,
                     quiet=args.quiet)


# ---------------------------------------------------------------------- parser / main
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="chainrule",
        description="Neural networks in NumPy with hand-derived gradients: train and use "
        "digit classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"chainrule {__version__}")
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, help):
        return sub.add_parser(name, help=help, parents=[common])

    def data_args(p):
        p.add_argument("--dataset", default="mnist",
                       help="mnist, fashion-mnist, kmnist, or a folder with the 4 IDX files")
        p.add_argument("--data-dir", default=None,
                       help="folder holding the dataset (default: search, then download)")

    p = command("train", help="train a model on MNIST (or another IDX dataset)")
    p.add_argument("--model", choices=models.PRESETS, default="mlp")
    data_args(p)
    E, LR, D = models.DEFAULT_EPOCHS, models.DEFAULT_LR, models.DEFAULT_DROPOUT
    p.add_argument("--epochs", type=positive_int, default=None,
                   help=f"default: {E['softmax']} for softmax, {E['mlp']} for mlp, {E['cnn']} "
                   "for cnn")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=positive_number, default=None,
                   help="initial learning rate (default: Adam "
                   f"{LR['softmax']['adam']:g} softmax, {LR['mlp']['adam']:g} mlp, "
                   f"{LR['cnn']['adam']:g} cnn; SGD {LR['softmax']['sgd']:g}, "
                   f"{LR['mlp']['sgd']:g}, {LR['cnn']['sgd']:g})")
    p.add_argument("--optimizer", choices=models.OPTIMIZERS, default="adam")
    p.add_argument("--schedule", choices=models.SCHEDULES, default="cosine",
                   help="learning-rate schedule over the run (cosine decays to 0)")
    p.add_argument("--hidden", type=hidden_sizes,
                   default=",".join(map(str, models.DEFAULT_HIDDEN)),
                   help=f"mlp hidden sizes, comma separated, each 1 … {runs.MAX_HIDDEN}")
    p.add_argument("--dropout", type=fraction, default=None,
                   help=f"dropout rate in [0, 1): mlp after each hidden layer (default "
                   f"{D['mlp']}), cnn before the output layer (default {D['cnn']})")
    A = models.DEFAULT_AUGMENT
    p.add_argument("--augment", type=non_negative_int, default=None, metavar="PIXELS",
                   help="mlp and cnn: shift training images randomly by up to this many "
                   f"pixels, less than half the image side (default {A['mlp']} for mlp, "
                   f"{A['cnn']} for cnn; 0 turns augmentation off)")
    p.add_argument("--validation-split", type=fraction, default=1 / 12,
                   help="fraction of the training set held out, in [0, 1) (default 1/12: 5,000 "
                   "images)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--out", default=None, help="run folder (default runs/MODEL-TIMESTAMP)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last epoch checkpoint, with the "
                   "run's saved settings (other training options are ignored)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or tables")
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="write RUN/report.html with curves, confusion matrix, mistakes and "
                   "weight images (default: on; needs matplotlib)")
    p.set_defaults(func=cmd_train)

    p = command("report", help="(re)build RUN/report.html from a run folder")
    p.add_argument("run_dir", help="a run folder written by train")
    p.add_argument("--data-dir", default=None,
                   help="folder holding the dataset (default: the run's, then search)")
    p.add_argument("--out", default=None, help="write the page here (default RUN/report.html)")
    p.set_defaults(func=cmd_report)

    p = command("evaluate", help="loss, accuracy, report and confusion matrix")
    p.add_argument("model", help="a model .npz written by train")
    data_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = command("predict", help="classify images of handwritten digits")
    p.add_argument("model", help="a model .npz written by train")
    p.add_argument("images", nargs="+", help="PNG/JPEG files, any size")
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.set_defaults(func=cmd_predict)

    p = command("gradcheck", help="check the backward passes of a small float64 model")
    p.add_argument("--model", choices=models.PRESETS, default="mlp")
    p.add_argument("--tol", type=positive_number, default=1e-6)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.set_defaults(func=cmd_gradcheck)

    p = command("explain-backward",
                help="walk one backward pass from the loss to the input, layer by layer")
    p.add_argument("--model", default="softmax",
                   help="softmax or mlp (a preset, fresh), or a model .npz (default softmax)")
    p.add_argument("--data", choices=("lecture", "mnist"), default="lecture",
                   help="the lecture's 2-D red/green/blue points (default) or MNIST test "
                   "digits")
    p.add_argument("--samples", type=positive_int, default=3,
                   help="samples in the batch (default 3; numbers are printed up to 4)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.set_defaults(func=cmd_explain_backward)

    p = command("info", help="versions, BLAS, and where datasets are looked for")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_info)

    p = command("serve", help="a web page to draw digits and watch the model classify them")
    p.add_argument("model", help="a model .npz written by train")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=8000, help="1 … 65535 (default 8000)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding MNIST, for the nearest training digits (never downloads)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="also answer requests whose Host header is NAME (on the server's port) "
                   "or NAME:PORT, besides localhost, 127.0.0.1, [::1] and --host; repeatable")
    p.add_argument("--picture-workers", default=2, metavar="N",
                   type=lambda text: _parsed(text, int, lambda v: 0 <= v <= 64,
                                             "an integer in 0 … 64"),
                   help="processes that read the pictures sent, 0 … 64 (default 2; 0: the "
                   "server's own process)")
    p.set_defaults(func=cmd_serve)

    p = command("studio", help="a web page to train a network and watch it learn, live")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=8000, help="1 … 65535 (default 8000)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding MNIST / Fashion-MNIST (default: the usual search; "
                   "never downloads)")
    p.add_argument("--runs-dir", default="runs/studio",
                   help="where Save writes run folders (default runs/studio)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="also answer requests whose Host header is NAME (on the server's port) "
                   "or NAME:PORT, besides localhost, 127.0.0.1, [::1] and --host; repeatable")
    p.set_defaults(func=cmd_studio)

    p = command("export", help="convert a model: .npz, .safetensors or .onnx to another of them")
    p.add_argument("model", help="a model .npz or .safetensors written by train or save, or an "
                   ".onnx graph of supported operators")
    p.add_argument("--to", choices=sorted(EXPORT_FORMATS), required=True,
                   help="the format to write")
    p.add_argument("-o", "--out", default=None,
                   help="the file to write (default: MODEL with the format's extension)")
    p.set_defaults(func=cmd_export)

    p = command("sweep", help="a grid or random search over train settings, one run per trial")
    p.add_argument("spec", help="the sweep's TOML file (see README: Sweeps)")
    p.add_argument("--out", default=None,
                   help="the sweep folder (default: the spec's 'out', else sweeps/SPEC-NAME)")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="run the trials on this Dask cluster (default: local processes)")
    p.add_argument("--jobs", type=positive_int, default=None,
                   help="local trials at a time (default: the number of CPUs)")
    p.add_argument("--quiet", action="store_true", help="no line per finished trial")
    p.set_defaults(func=cmd_sweep)

    add_exercise_commands(sub, [common])
    from .lm_cli import add_commands as add_lm_commands

    add_lm_commands(sub, [common])
    return parser


def _absolute_paths(args) -> None:
    """Make the folders a user typed relative to where they stand absolute, once, first:
    ``$CHAINRULE_DATA``, ``--data-dir`` and a ``--dataset`` folder (a run's config.json then
    names them wherever it is resumed from)."""
    from .data import is_known_dataset, resolve_data_env

    resolve_data_env()
    if getattr(args, "data_dir", None) is not None:
        args.data_dir = os.path.abspath(os.path.expanduser(args.data_dir))
    dataset = getattr(args, "dataset", None)
    if dataset is not None and not is_known_dataset(dataset):
        args.dataset = os.path.abspath(os.path.expanduser(dataset))


def main(argv=None) -> int:
    """Entry point of ``chainrule`` and ``python -m chainrule``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _absolute_paths(args)
    try:
        return args.func(args)
    # MemoryError too: running out of memory is the machine's limit, not a bug to trace.
    except (CLIError, OSError, ValueError, TypeError, ImportError, FloatingPointError,
            RuntimeError, MemoryError) as exc:
        if args.debug:
            raise
        message = " ".join(str(exc).split())
        if isinstance(exc, MemoryError):
            message = f"out of memory: {message or 'an array did not fit'}"
        print(f"chainrule {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"chainrule {args.command}: interrupted", file=sys.stderr)
        return 130
