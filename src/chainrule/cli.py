"""The ``chainrule`` command line: train, report, evaluate, predict, gradcheck, info, serve."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__, functional, layers, losses, models, optimizers, schedules
from .callbacks import Callback
from .exercises.cli import add_commands as add_exercise_commands
from .model import Sequential
from .serialization import atomic_write, load_model

CHECKPOINT = "checkpoint.npz"
DEFAULT_LR = {("softmax", "sgd"): 0.5, ("mlp", "sgd"): 0.1, ("cnn", "sgd"): 0.05,
              ("softmax", None): 1e-2, ("mlp", None): 2e-3, ("cnn", None): 1e-3}
DEFAULT_EPOCHS = {"softmax": 10, "mlp": 15, "cnn": 10}
DEFAULT_DROPOUT = {"mlp": 0.2, "cnn": 0.3}


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


# ---------------------------------------------------------------------- helpers
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, obj) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


def _write_history_csv(path: Path, history: dict) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    keys = list(history)
    writer.writerow(["epoch", *keys])
    for i in range(len(history[keys[0]]) if keys else 0):
        writer.writerow([i + 1, *(repr(history[k][i]) for k in keys)])
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def _load_dataset(dataset: str, data_dir, progress: bool = True):
    from .data import dataset_files, load_idx_dataset

    files = dataset_files(dataset, data_dir, progress=progress)
    train, test = load_idx_dataset(dataset, data_dir, progress=progress)
    return files, train, test


def _make_optimizer(name: str, lr: float, total_steps: int, schedule: str):
    rate = lr
    if schedule == "cosine":
        rate = schedules.CosineDecay(lr, T_max=total_steps, per="step")
    if name == "sgd":
        return optimizers.SGD(rate, momentum=0.9, nesterov=True)
    cls = {"adam": optimizers.Adam, "adamw": optimizers.AdamW, "rmsprop": optimizers.RMSprop}
    return cls[name](rate)


def _probabilities(model, x) -> np.ndarray:
    """Class probabilities, whether the model ends in Softmax or outputs logits."""
    out = model.predict(x, batch_size=1000)
    return out if isinstance(model.layers[-1], layers.Softmax) else functional.softmax(out)


def _ensure_compiled(model) -> None:
    if model.loss is None:
        logits = not isinstance(model.layers[-1], layers.Softmax)
        model.compile(optimizer="adam",
                      loss=losses.SparseCategoricalCrossEntropy(from_logits=logits),
                      metrics=["accuracy"])


def _load_model(path) -> object:
    path = Path(path)
    if not path.exists():
        raise CLIError(f"model file not found: {path}")
    return load_model(path)


def _fit_input(model, x: np.ndarray) -> np.ndarray:
    """Reshape (N, 28, 28) images to what the model was built for, e.g. (N, 784)."""
    shape = tuple(model.input_shape)
    if x.shape[1:] != shape:
        if math.prod(x.shape[1:]) != math.prod(shape):
            raise CLIError(
                f"the model expects samples of shape {shape}, the data has {x.shape[1:]}"
            )
        x = x.reshape((len(x),) + shape)
    return x


def _report(model, x, y, out=print) -> dict:
    from . import metrics

    _ensure_compiled(model)
    result = model.evaluate(x, y, batch_size=1000)
    pred = np.argmax(_probabilities(model, x), axis=1)
    out(f"test loss {result['loss']:.4f}  test accuracy {result['accuracy']:.4f}")
    out(metrics.classification_report(y, pred))
    return {"result": result, "pred": pred}


# ---------------------------------------------------------------------- train
class _RunCheckpoint(Callback):
    """After every epoch: checkpoint (weights, optimizer, epoch, history) and history files."""

    def __init__(self, run_dir: Path, past_history: dict):
        self.run_dir = run_dir
        self.past = past_history

    def merged(self) -> dict:
        merged = {k: list(v) for k, v in self.past.items()}
        for k, v in self.model.history.history.items():
            merged.setdefault(k, []).extend(v)
        return merged

    def on_epoch_end(self, epoch, logs=None):
        history = self.merged()
        self.model.save(self.run_dir / CHECKPOINT,
                        metadata={"completed_epochs": epoch + 1, "history": history})
        _write_json(self.run_dir / "history.json", history)
        _write_history_csv(self.run_dir / "history.csv", history)


def cmd_train(args) -> int:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.out) if args.out else Path("runs") / f"{args.model}-{stamp}"
    config_path = run_dir / "config.json"
    if args.resume:
        if not config_path.is_file() or not (run_dir / CHECKPOINT).is_file():
            raise CLIError(
                f"--resume: {run_dir} has no config.json and {CHECKPOINT} to resume from"
            )
        config = json.loads(config_path.read_text())
    else:
        if (run_dir / CHECKPOINT).exists() or (run_dir / "model.npz").exists():
            raise CLIError(
                f"{run_dir} already holds a run; pass --resume to continue it or another --out"
            )
        optimizer = args.optimizer
        lr = args.lr if args.lr is not None else DEFAULT_LR.get(
            (args.model, "sgd" if optimizer == "sgd" else None), 1e-3)
        config = {
            "model": args.model,
            "dataset": args.dataset,
            "data_dir": None if args.data_dir is None else str(args.data_dir),
            "epochs": args.epochs or DEFAULT_EPOCHS[args.model],
            "batch_size": args.batch_size,
            "optimizer": optimizer,
            "lr": lr,
            "schedule": args.schedule,
            "seed": args.seed,
            "validation_split": args.validation_split,
            "hidden": [int(h) for h in args.hidden.split(",")] if args.model == "mlp" else None,
            "augment": args.augment if args.model == "cnn" else None,
            "dropout": None if args.model == "softmax" else (
                args.dropout if args.dropout is not None else DEFAULT_DROPOUT[args.model]),
        }
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a))

    # Data first: a run that cannot find its data leaves no run folder behind.
    files, (x_train, y_train), (x_test, y_test) = _load_dataset(
        config["dataset"], config["data_dir"], progress=not args.quiet
    )
    n_val = int(round(len(x_train) * config["validation_split"]))
    x_val, y_val = x_train[len(x_train) - n_val:], y_train[len(y_train) - n_val:]
    x_tr, y_tr = x_train[:len(x_train) - n_val], y_train[:len(y_train) - n_val]
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    epochs = config["epochs"]

    past, initial_epoch = {}, 0
    if args.resume:
        model = load_model(run_dir / CHECKPOINT)
        initial_epoch = int(model.metadata.get("completed_epochs", 0))
        past = model.metadata.get("history", {})
        say(f"resuming {run_dir} after epoch {initial_epoch} of {epochs}")
    else:
        common = dict(num_classes=num_classes, input_shape=x_train.shape[1:], seed=config["seed"])
        if config["model"] == "softmax":
            model = models.softmax_regression(**common)
        elif config["model"] == "cnn":
            model = models.cnn(dropout=config["dropout"], augment=config.get("augment", 0),
                               **common)
        else:
            model = models.mlp(hidden=config["hidden"], dropout=config["dropout"], **common)
        # Also refuses a batch size the model cannot train on, before any folder is written.
        steps = model.steps_per_epoch(len(x_tr), config["batch_size"])
        model.compile(
            optimizer=_make_optimizer(config["optimizer"], config["lr"], epochs * steps,
                                      config["schedule"]),
            loss=model.loss,
            metrics=["accuracy"],
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(config_path, config)
    if not args.quiet:
        model.summary()
    checkpoint = _RunCheckpoint(run_dir, past)
    started = time.perf_counter()
    try:
        if initial_epoch < epochs:
            model.fit(
                x_tr, y_tr, epochs=epochs, batch_size=config["batch_size"],
                seed=config["seed"], validation_data=(x_val, y_val) if n_val else None,
                callbacks=[checkpoint], verbose=0 if args.quiet else 1,
                initial_epoch=initial_epoch,
            )
    except KeyboardInterrupt:
        if not (run_dir / CHECKPOINT).exists():
            print(
                f"\ninterrupted before the first epoch ended: {run_dir} holds no checkpoint to "
                "resume from; run the same command again to start over",
                file=sys.stderr,
            )
            return 130
        done = load_model(run_dir / CHECKPOINT).metadata.get("completed_epochs", 0)
        print(
            f"\ninterrupted: the checkpoint after epoch {done} is in {run_dir / CHECKPOINT}; "
            f"continue with: chainrule train --resume --out {run_dir}",
            file=sys.stderr,
        )
        return 130
    train_seconds = time.perf_counter() - started
    history = checkpoint.merged() if initial_epoch < epochs else past

    say("")
    evaluation = _report(model, x_test, y_test, out=say)
    model.save(run_dir / "model.npz")
    _write_json(run_dir / "history.json", history)
    _write_history_csv(run_dir / "history.csv", history)
    manifest = {
        "argv": ["chainrule", *sys.argv[1:]],
        "config": config,
        "seed": config["seed"],
        "versions": {"chainrule": __version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "platform": platform.platform(),
        "data": {key: {"path": str(path), "sha256": _sha256(path)} for key, path in files.items()},
        "samples": {"train": len(x_tr), "validation": n_val, "test": len(x_test)},
        "train_seconds_this_session": round(train_seconds, 2),
        "final": {
            "test_loss": evaluation["result"]["loss"],
            "test_accuracy": evaluation["result"]["accuracy"],
            **{k: v[-1] for k, v in history.items()},
        },
        "model_sha256": _sha256(run_dir / "model.npz"),
    }
    _write_json(run_dir / "manifest.json", manifest)
    (run_dir / CHECKPOINT).unlink(missing_ok=True)
    say(f"\nsaved {run_dir / 'model.npz'}, history.json/.csv and manifest.json in {run_dir}")
    if args.report:
        try:
            from .report import write_report

            say(f"report: {write_report(run_dir, test_data=(x_test, y_test))}")
        except ImportError as exc:
            print(f"chainrule train: no report.html: {exc}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------- report
def cmd_report(args) -> int:
    from .report import write_report

    run_dir = Path(args.run_dir)
    if not (run_dir / "model.npz").is_file() or not (run_dir / "config.json").is_file():
        raise CLIError(
            f"{run_dir} holds no model.npz and config.json: pass a run folder written by "
            "chainrule train"
        )
    print(write_report(run_dir, data_dir=args.data_dir, path=args.out))
    return 0


# ---------------------------------------------------------------------- evaluate / predict
def cmd_evaluate(args) -> int:
    from . import metrics

    model = _load_model(args.model)
    _, _, (x_test, y_test) = _load_dataset(args.dataset, args.data_dir, progress=False)
    x_test = _fit_input(model, x_test)
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
        probs = _probabilities(model, _fit_input(model, x))[0]
        top = np.argsort(-probs, kind="stable")[:3]
        results.append({
            "file": str(name),
            "class": int(top[0]),
            "probabilities": [float(p) for p in probs],
            "top3": [[int(c), float(probs[c])] for c in top],
        })
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            tops = "  ".join(f"{c}: {p:.3f}" for c, p in r["top3"])
            print(f"{r['file']}: {r['class']}   ({tops})")
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
    serve(args.model, host=args.host, port=args.port, data_dir=args.data_dir)
    return 0


# ---------------------------------------------------------------------- parser / main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chainrule",
        description="Neural networks in NumPy with hand-derived gradients: train and use "
        "digit classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"chainrule {__version__}")
    common = argparse.ArgumentParser(add_help=False)
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
    p.add_argument("--epochs", type=int, default=None,
                   help="default: 10 for softmax, 15 for mlp, 10 for cnn")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=None,
                   help="initial learning rate (default: Adam 1e-2 softmax, 2e-3 mlp, 1e-3 cnn;"
                   " SGD 0.5, 0.1, 0.05)")
    p.add_argument("--optimizer", choices=("adam", "adamw", "sgd", "rmsprop"), default="adam")
    p.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                   help="learning-rate schedule over the run (cosine decays to 0)")
    p.add_argument("--hidden", default="256,256", help="mlp hidden sizes, comma separated")
    p.add_argument("--dropout", type=float, default=None,
                   help="dropout rate: mlp after each hidden layer (default 0.2), cnn before the "
                   "output layer (default 0.3)")
    p.add_argument("--augment", type=int, default=2, metavar="PIXELS",
                   help="cnn: shift training images randomly by up to this many pixels "
                   "(default 2; 0 turns augmentation off)")
    p.add_argument("--validation-split", type=float, default=1 / 12,
                   help="fraction of the training set held out (default 1/12: 5,000 images)")
    p.add_argument("--seed", type=int, default=0)
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
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_gradcheck)

    p = command("info", help="versions, BLAS, and where datasets are looked for")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_info)

    p = command("serve", help="a web page to draw digits and watch the model classify them")
    p.add_argument("model", help="a model .npz written by train")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", default=None,
                   help="folder holding MNIST, for the nearest training digits (never downloads)")
    p.set_defaults(func=cmd_serve)

    add_exercise_commands(sub, [common])
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
    except (CLIError, OSError, ValueError, TypeError, ImportError, FloatingPointError,
            RuntimeError) as exc:
        if args.debug:
            raise
        message = " ".join(str(exc).split())
        print(f"chainrule {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"chainrule {args.command}: interrupted", file=sys.stderr)
        return 130
