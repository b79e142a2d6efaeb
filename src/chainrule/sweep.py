"""``chainrule sweep SPEC.toml``: a grid or random search of ``chainrule train`` settings.

The spec (TOML; relative paths are relative to the spec's folder)::

    out = "sweeps/lr"            # the sweep folder (``--out`` wins; default sweeps/SPEC-NAME)
    strategy = "grid"            # every combination of [search]; or "random"
    trials = 8                   # random: how many trials
    seed = 0                     # random: the seed the trials are drawn with
    metric = "val_accuracy"      # what ranks the trials, from each run's final metrics

    [train]                      # the settings every trial shares
    model = "softmax"
    dataset = "digits"           # mnist, fashion-mnist, kmnist or a folder of IDX files
    epochs = 1

    [search]                     # the settings searched
    lr = [0.01, 0.1]             # a list: every value (grid), one of them per trial (random)
    batch_size = [32, 64]
    # random only: dropout = {uniform = [0.0, 0.5]}, lr = {log_uniform = [1e-4, 1e-1]},
    #              epochs = {int_uniform = [1, 3]} (both ends included)

The settings are ``chainrule train``'s, as its config.json names them (``runs.SETTINGS``):
model, dataset, data_dir, epochs, batch_size, optimizer, lr, schedule, seed, validation_split,
hidden, augment, dropout; each is checked as ``train`` checks it before any trial starts, and an
unknown one is an error naming it. A trial without a ``seed`` gets train's default, 0: trials
are independent and reproducible.

Each trial is a ``chainrule train`` run in its own folder, OUT/trial-000, … (config.json,
checkpoint after every epoch, model.npz, history, manifest.json; ``--no-report``), started
through ``cli.cmd_train``; OUT/sweep.json lists the trials, OUT/results.csv and OUT/results.md
rank them, best first, and are rewritten as trials finish.

Where trials run: locally, ``--jobs`` processes at a time (a ``ProcessPoolExecutor``); or with
``--scheduler tcp://HOST:PORT`` as tasks on a Dask cluster (``dask.distributed``), which
reschedules the trial of a worker that dies. Running the same command again resumes a sweep: a
trial whose manifest.json exists is finished and skipped, one with a checkpoint continues
(``train --resume``), any other starts over. A trial holds an exclusive lock on
OUT/trial-k/.lock while it runs, so two attempts at one trial (a resumed sweep while a killed
one's process still runs) never write the same folder at once. OUT/trial-k/attempts.log has a
line per attempt.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

from .fileio import atomic_write
from .runs import CHECKPOINT, CONFIG, MANIFEST, MODEL, SETTINGS, read_manifest

__all__ = ["METRICS", "SEARCHABLE", "SweepError", "load_spec", "run_sweep", "run_trial",
           "trial_argv"]

#: The options of ``chainrule train`` by setting name.
FLAGS = {"model": "--model", "dataset": "--dataset", "data_dir": "--data-dir",
         "epochs": "--epochs", "batch_size": "--batch-size", "optimizer": "--optimizer",
         "lr": "--lr", "schedule": "--schedule", "seed": "--seed",
         "validation_split": "--validation-split", "hidden": "--hidden",
         "augment": "--augment", "dropout": "--dropout"}
SEARCHABLE = tuple(FLAGS)
#: The final metrics of a run's manifest a sweep can rank by; losses rank lowest first.
METRICS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "accuracy", "loss")
DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform")
SPEC_KEYS = ("out", "strategy", "trials", "seed", "metric", "train", "search")
SWEEP_FILE = "sweep.json"
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
ATTEMPTS = "attempts.log"
LOCK = ".lock"
#: How often local trials are started again after their worker process died.
LOCAL_RETRIES = 2


class SweepError(ValueError):
    """A mistake in the spec or the sweep folder: one line for the user."""


# ---------------------------------------------------------------------- the spec
def load_spec(path) -> dict:
    """The checked spec: ``{"out", "strategy", "metric", "trials": [{"id", "settings"}, …]}``.

    Raises:
        SweepError: for a file that is not TOML, an unknown key or setting, a value ``train``
            would refuse (naming the table, setting and value), or an empty search.
    """
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ImportError('chainrule sweep needs tomli on Python 3.10: pip install '
                              '"chainrule[sweep]"') from None
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep spec not found: {path}")
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SweepError(f"{path} is not valid TOML: {exc}") from None
    where = str(path)
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise SweepError(f"{where}: unknown key {unknown[0]!r}; a sweep spec has "
                         f"{', '.join(SPEC_KEYS)} (the train settings go in [train] and "
                         "[search])")
    strategy = spec.get("strategy", "grid")
    if strategy not in ("grid", "random"):
        raise SweepError(f"{where}: strategy must be 'grid' or 'random', got {strategy!r}")
    metric = spec.get("metric", "val_accuracy")
    if metric not in METRICS:
        raise SweepError(f"{where}: metric must be one of {', '.join(METRICS)}, got {metric!r}")
    fixed = _table(spec, "train", where)
    search = _table(spec, "search", where)
    if not search:
        raise SweepError(f"{where}: [search] names no setting to search")
    both = sorted(set(fixed) & set(search))
    if both:
        raise SweepError(f"{where}: {both[0]!r} is both in [train] and in [search]")
    for name, value in search.items():
        _check_space(where, name, value, strategy)
    points = _points(where, spec, strategy, search)
    base = spec.get("out")
    if base is not None and not (isinstance(base, str) and base):
        raise SweepError(f"{where}: out must be a folder name, got {base!r}")
    trials = []
    for i, point in enumerate(points):
        settings = {**fixed, **point}
        for name in ("dataset", "data_dir"):
            if name in settings:
                settings[name] = _resolve(path.parent, settings[name], name == "dataset")
        _check_trial(where, i, settings, metric)
        trials.append({"id": f"trial-{i:03d}", "settings": settings})
    return {"out": None if base is None else str((path.parent / base).resolve()),
            "name": path.stem, "strategy": strategy, "metric": metric, "trials": trials,
            "searched": list(search)}


def _table(spec: dict, name: str, where: str) -> dict:
    table = spec.get(name, {})
    if not isinstance(table, dict):
        raise SweepError(f"{where}: {name} must be a table ([{name}])")
    for key in table:
        if key not in FLAGS:
            raise SweepError(f"{where}: unknown setting {key!r} in [{name}]; the train settings "
                             f"are {', '.join(SEARCHABLE)}")
    return table


def _check_space(where: str, name: str, value, strategy: str) -> None:
    if isinstance(value, list):
        if not value:
            raise SweepError(f"{where}: [search] {name} is an empty list")
        return
    if isinstance(value, dict):
        if strategy != "random":
            raise SweepError(f"{where}: [search] {name} is a distribution; a grid needs a list "
                             "of values (or strategy = \"random\")")
        kinds = list(value)
        bounds = value.get(kinds[0]) if len(kinds) == 1 else None
        if (len(kinds) != 1 or kinds[0] not in DISTRIBUTIONS or not isinstance(bounds, list)
                or len(bounds) != 2 or not all(_is_number(b) for b in bounds)
                or not bounds[0] <= bounds[1]):
            raise SweepError(f"{where}: [search] {name} must be a list or one of "
                             f"{{uniform | log_uniform | int_uniform = [low, high]}}, got "
                             f"{json.dumps(value)}")
        if kinds[0] == "log_uniform" and bounds[0] <= 0:
            raise SweepError(f"{where}: [search] {name}: log_uniform needs low > 0")
        return
    raise SweepError(f"{where}: [search] {name} must be a list of values"
                     f"{' or a distribution' if strategy == 'random' else ''}, got "
                     f"{json.dumps(value)}; a single value belongs in [train]")


def _points(where: str, spec: dict, strategy: str, search: dict) -> list[dict]:
    names = list(search)
    if strategy == "grid":
        return [dict(zip(names, values, strict=True))
                for values in itertools.product(*(search[n] for n in names))]
    trials, seed = spec.get("trials"), spec.get("seed", 0)
    if not (isinstance(trials, int) and not isinstance(trials, bool) and trials > 0):
        raise SweepError(f"{where}: a random search needs trials = a positive integer, got "
                         f"{trials!r}")
    if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        raise SweepError(f"{where}: seed must be an integer >= 0, got {seed!r}")
    rng = np.random.default_rng(seed)
    points = []
    for _ in range(trials):
        point = {}
        for name in names:
            space = search[name]
            if isinstance(space, list):
                point[name] = space[int(rng.integers(len(space)))]
                continue
            (kind, (low, high)), = space.items()
            if kind == "uniform":
                point[name] = float(rng.uniform(low, high))
            elif kind == "log_uniform":
                point[name] = float(math.exp(rng.uniform(math.log(low), math.log(high))))
            else:
                point[name] = int(rng.integers(math.ceil(low), math.floor(high) + 1))
        points.append(point)
    return points


def _resolve(folder: Path, value, dataset: bool):
    """A dataset folder or data_dir from the spec, absolute (workers may start elsewhere)."""
    from .data import is_known_dataset

    if not isinstance(value, str) or (dataset and is_known_dataset(value)):
        return value
    return str((folder / Path(value).expanduser()).resolve())


def _check_trial(where: str, i: int, settings: dict, metric: str) -> None:
    """Every setting as ``chainrule train`` would check it (``runs.SETTINGS``)."""
    model = settings.setdefault("model", "mlp")
    for name, value in settings.items():
        check, what, models = SETTINGS[name]
        value = list(value) if name == "hidden" and isinstance(value, list) else value
        if not check(value):
            raise SweepError(f"{where}: trial {i} ({_describe(settings)}): {name} must be {what}, "
                             f"got {json.dumps(value)}")
        if models is not None and model not in models:
            raise SweepError(f"{where}: {name} applies to model {' and '.join(models)} only, "
                             f"trial {i} trains {model!r}")
    if metric.startswith("val_") and settings.get("validation_split", 1 / 12) == 0:
        raise SweepError(f"{where}: metric {metric!r} needs a validation split, trial {i} has "
                         "validation_split = 0; rank by test_accuracy or keep a split")


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _describe(settings: dict, names=None) -> str:
    names = list(settings) if names is None else names
    return ", ".join(f"{n}={_text(settings[n])}" for n in names if n in settings)


def _text(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return repr(value) if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------- one trial
def trial_argv(settings: dict, run_dir) -> list[str]:
    """The ``chainrule train`` arguments of a trial (without the leading ``train``)."""
    argv = ["--out", str(run_dir), "--quiet", "--no-report"]
    for name, value in settings.items():
        if value is not None:
            argv += [FLAGS[name], _text(value)]
    return argv


def is_finished(run_dir: Path) -> bool:
    return (run_dir / MANIFEST).is_file() and (run_dir / MODEL).is_file()


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` for the block (where ``fcntl`` exists; else none)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def run_trial(trial: dict) -> dict:
    """Run (or resume, or skip) one trial in ``trial["run_dir"]``; return its result row.

    What local processes and Dask workers execute. Never raises for a failed run: the row
    says ``"status": "failed"`` with the error line ``chainrule train`` would print.
    """
    from . import cli

    run_dir = Path(trial["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    with _locked(run_dir / LOCK):
        if is_finished(run_dir):
            (run_dir / CHECKPOINT).unlink(missing_ok=True)
            return result_row(trial, run_dir)
        with open(run_dir / ATTEMPTS, "a") as log:
            log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()} host "
                      f"{socket.gethostname()}\n")
        resume = (run_dir / CHECKPOINT).is_file() and (run_dir / CONFIG).is_file()
        argv = ["train", "--out", str(run_dir), "--quiet", "--no-report", "--resume"] if \
            resume else ["train", *trial_argv(trial["settings"], run_dir)]
        from .data import resolve_data_env

        resolve_data_env()
        error = None
        try:
            args = cli.build_parser().parse_args(argv)
            status = cli.cmd_train(args)
            if status != 0:
                error = f"chainrule train stopped with status {status}"
        except SystemExit as exc:
            error = f"chainrule train refused its arguments (status {exc.code})"
        except (cli.CLIError, OSError, ValueError, TypeError, ImportError, FloatingPointError,
                RuntimeError, MemoryError) as exc:
            error = " ".join(str(exc).split()) or type(exc).__name__
        return result_row(trial, run_dir, error)


def result_row(trial: dict, run_dir: Path, error: str | None = None) -> dict:
    """A trial's row of the results: status, settings, final metrics, attempts."""
    attempts = (run_dir / ATTEMPTS).read_text().count("\n") if (run_dir / ATTEMPTS).is_file() \
        else 0
    row = {"trial": trial["id"], "status": "failed", "error": error, "attempts": attempts,
           "settings": trial["settings"], "final": {}, "train_seconds": None,
           "run_dir": str(run_dir)}
    if error is None and is_finished(run_dir):
        manifest = read_manifest(run_dir)
        row.update(status="done", final=manifest.get("final", {}),
                   train_seconds=manifest.get("train_seconds_this_session"))
    elif error is None:
        row["error"] = "the run left no manifest.json"
    return row


# ---------------------------------------------------------------------- the whole sweep
def run_sweep(spec_path, out=None, scheduler: str | None = None, jobs: int | None = None,
              quiet: bool = False) -> int:
    """Run every unfinished trial of the spec; write the results; return the exit status.

    Raises:
        SweepError: for a bad spec, a sweep folder holding other trials, an unreachable
            scheduler, or failed trials (after writing the results).
    """
    spec = load_spec(spec_path)
    out = Path(out or spec["out"] or Path("sweeps") / spec["name"]).resolve()
    trials = [{**t, "run_dir": str(out / t["id"])} for t in spec["trials"]]
    _claim(out, spec)
    say = (lambda *a: None) if quiet else print
    rows = {}
    todo = []
    for trial in trials:
        if is_finished(Path(trial["run_dir"])):
            rows[trial["id"]] = result_row(trial, Path(trial["run_dir"]))
        else:
            todo.append(trial)
    if rows:
        say(f"{len(rows)} of {len(trials)} trials already finished in {out}: skipped")
    client = _connect(scheduler) if scheduler and todo else None
    where = f"on {scheduler}" if scheduler else "locally"
    say(f"sweep {spec['name']}: {len(todo)} trials to run {where}, ranked by {spec['metric']}")

    def finished(row):
        rows[row["trial"]] = row
        write_results(out, spec, list(rows.values()))
        metric = row["final"].get(spec["metric"])
        shown = f"{spec['metric']} {metric:.4f}" if isinstance(metric, float) else row["error"]
        searched = _describe(row["settings"], spec["searched"])
        say(f"{row['trial']} {row['status']}  {shown}  ({searched})  [{len(rows)}/{len(trials)}]")

    try:
        if client is not None:
            _on_dask(client, out, todo, finished)
        else:
            _locally(todo, jobs or os.cpu_count() or 1, finished)
    except KeyboardInterrupt:
        print(f"chainrule sweep: interrupted: {len(rows)} of {len(trials)} trials finished; run "
              "the same command again to continue", file=sys.stderr)
        return 130
    ranked = write_results(out, spec, list(rows.values()))
    failed = [r for r in ranked if r["status"] != "done"]
    if ranked and ranked[0]["status"] == "done":
        best = ranked[0]
        score = _number(best['final'].get(spec['metric']))
        say(f"best: {best['trial']} {spec['metric']} {score} "
            f"({_describe(best['settings'], spec['searched'])}); results in {out / RESULTS_MD}")
    if failed:
        raise SweepError(
            f"{len(failed)} of {len(trials)} trials failed (first: {failed[0]['trial']}: "
            f"{failed[0]['error']}); results in {out / RESULTS_MD}; run the same command again "
            "to retry them"
        )
    return 0


def _claim(out: Path, spec: dict) -> None:
    """Write OUT/sweep.json, or check that the one there lists the same trials."""
    record = {"format": "chainrule-sweep", "version": 1, "strategy": spec["strategy"],
              "metric": spec["metric"],
              "trials": [{"id": t["id"], "settings": t["settings"]} for t in spec["trials"]]}
    path = out / SWEEP_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = None
        if not isinstance(old, dict) or old.get("trials") != record["trials"]:
            raise SweepError(
                f"{out} holds a sweep of other trials ({SWEEP_FILE}); the spec was changed "
                "since it started: use another --out, or restore the spec"
            )
        return
    if out.exists() and any(out.iterdir()):
        raise SweepError(f"{out} is not empty and holds no {SWEEP_FILE}; choose another --out")
    atomic_write(path, lambda f: f.write(json.dumps(record, indent=2).encode()))


def _locally(todo: list, jobs: int, finished) -> None:
    """The trials in ``jobs`` worker processes; a trial whose process died is started again
    (``LOCAL_RETRIES`` times)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    deaths: dict[str, int] = {}
    while todo:
        broken = []
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=context) as pool:
            futures = {pool.submit(run_trial, trial): trial for trial in todo}
            try:
                for future in as_completed(futures):
                    trial = futures[future]
                    try:
                        row = future.result()
                    except BrokenProcessPool:
                        broken.append(trial)
                        continue
                    except Exception as exc:  # noqa: BLE001 - a trial's error is its row
                        row = result_row(trial, Path(trial["run_dir"]),
                                         f"{type(exc).__name__}: {' '.join(str(exc).split())}")
                    finished(row)
            except KeyboardInterrupt:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        todo = []
        for trial in broken:
            deaths[trial["id"]] = deaths.get(trial["id"], 0) + 1
            if deaths[trial["id"]] > LOCAL_RETRIES:
                finished(result_row(trial, Path(trial["run_dir"]),
                                    f"its process died {deaths[trial['id']]} times"))
            else:
                todo.append(trial)


def _connect(scheduler: str):
    """A dask.distributed Client of the scheduler at ``tcp://HOST:PORT``.

    Raises:
        ImportError: without dask.distributed, naming the install command.
        SweepError: when nothing answers there (checked with one plain TCP connection first,
            so a wrong address fails at once rather than after the client's retries).
    """
    try:
        from distributed import Client
    except ImportError:
        raise ImportError('chainrule sweep --scheduler needs dask.distributed: pip install '
                          '"chainrule[sweep]"') from None
    from urllib.parse import urlsplit

    address = urlsplit(scheduler if "://" in scheduler else f"tcp://{scheduler}")
    try:
        host, port = address.hostname, address.port
        if address.scheme != "tcp" or host is None or port is None:
            raise ValueError("expected tcp://HOST:PORT")
        socket.create_connection((host, port), timeout=10).close()
        return Client(scheduler, timeout="30s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise SweepError(f"cannot reach the Dask scheduler at {scheduler}: "
                         f"{' '.join(str(exc).split())}") from None


def _on_dask(client, out: Path, todo: list, finished) -> None:
    """The trials as tasks of a Dask cluster: a worker's death reschedules its trial (up to
    the scheduler's ``distributed.scheduler.allowed-failures``)."""
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    tag = f"{abs(hash(str(out))) % 16**8:08x}"
    with client:
        futures = {client.submit(run_trial, trial, key=f"chainrule-sweep-{tag}-{trial['id']}",
                                 pure=False): trial for trial in todo}
        for future in as_completed(futures):
            trial = futures[future]
            try:
                finished(future.result())
            except KilledWorker as exc:
                finished(result_row(trial, Path(trial["run_dir"]),
                                    f"the workers running it died ({exc})"))
            except Exception as exc:  # noqa: BLE001 - any task error becomes the trial's row
                finished(result_row(trial, Path(trial["run_dir"]),
                                    f"{type(exc).__name__}: {' '.join(str(exc).split())}"))


# ---------------------------------------------------------------------- results
def rank(rows: list, metric: str) -> list:
    """Finished trials by ``metric``, best first (losses lowest), then the others by id."""
    sign = 1.0 if metric.endswith("loss") else -1.0

    def key(row):
        value = row["final"].get(metric)
        done = row["status"] == "done" and isinstance(value, int | float)
        return (0 if done else 1, sign * value if done else 0.0, row["trial"])

    return sorted(rows, key=key)


def write_results(out: Path, spec: dict, rows: list) -> list:
    """OUT/results.csv and OUT/results.md, best trial first; returns the ranked rows."""
    ranked = rank(rows, spec["metric"])
    searched = spec["searched"]
    metrics = [spec["metric"], *(m for m in METRICS if m != spec["metric"])]
    header = ["rank", "trial", "status", *searched, *metrics, "train_seconds", "attempts",
              "run_dir", "error"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    table = []
    for i, row in enumerate(ranked, start=1):
        values = [i if row["status"] == "done" else "", row["trial"], row["status"],
                  *(_text(row["settings"].get(n)) for n in searched),
                  *(_number(row["final"].get(m)) for m in metrics),
                  _number(row["train_seconds"]), row["attempts"],
                  os.path.relpath(row["run_dir"], out), row["error"] or ""]
        writer.writerow(values)
        table.append(values)
    atomic_write(out / RESULTS_CSV, lambda f: f.write(buf.getvalue().encode()))
    shown = ["rank", "trial", "status", *searched, spec["metric"],
             *(m for m in ("test_accuracy",) if m != spec["metric"]), "attempts"]
    index = [header.index(h) for h in shown]
    done = sum(r["status"] == "done" for r in ranked)
    order = "lowest" if spec["metric"].endswith("loss") else "highest"
    lines = [f"# Sweep {spec['name']}", "",
             f"{spec['strategy']} search, {len(spec['trials'])} trials ({done} finished), "
             f"ranked by {spec['metric']} ({order} first).", "",
             "| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(str(values[i]) for i in index) + " |" for values in table]
    text = "\n".join(lines) + "\n"
    atomic_write(out / RESULTS_MD, lambda f: f.write(text.encode()))
    return ranked


def _number(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)
