"""``chainrule sweep``: grid and random searches of train settings, locally and on a Dask
cluster (2 worker processes on 127.0.0.1), resumed after a kill, a worker's death retried; the
scikit-learn estimator on joblib's Dask backend."""

from __future__ import annotations

import csv
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from chainrule import sweep
from chainrule.runs import read_config, read_manifest
from cli_helpers import assert_one_line_error, run_cli, sha256, tiny_idx_dataset

SPEC = """out = "out"
[train]
model = "softmax"
dataset = "digits"
epochs = 1
validation_split = 0.1
[search]
lr = [0.003, 0.3]
batch_size = [16, 64]
"""


def write_spec(folder, text=SPEC, name="spec.toml"):
    if not (folder / "digits").exists():
        tiny_idx_dataset(folder / "digits", n_train=400, n_test=40)
    (folder / name).write_text(text)
    return folder / name


def results(out):
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("local")
    spec = write_spec(folder)
    result = run_cli("sweep", spec, "--jobs", "2", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder, result


def test_grid_sweep_locally(local_sweep):
    folder, result = local_sweep
    out = folder / "out"
    rows = results(out)
    assert len(rows) == 4 and [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    scores = [float(r["val_accuracy"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert {(r["lr"], r["batch_size"]) for r in rows} == {
        ("0.003", "16"), ("0.003", "64"), ("0.3", "16"), ("0.3", "64")}
    for row in rows:
        run = out / row["run_dir"]
        config = read_config(run)   # each trial is a chainrule train run
        assert (config["lr"], config["batch_size"]) == (float(row["lr"]), int(row["batch_size"]))
        assert config["model"] == "softmax" and config["epochs"] == 1 and config["seed"] == 0
        assert float(row["test_accuracy"]) == read_manifest(run)["final"]["test_accuracy"]
        assert row["attempts"] == "1" and row["status"] == "done"
    summary = (out / "results.md").read_text()
    assert summary.splitlines()[6].startswith(f"| 1 | {rows[0]['trial']} | done |")
    assert "best: " + rows[0]["trial"] in result.stdout


def test_random_search_is_seeded_and_checked(tmp_path):
    spec = write_spec(tmp_path, """strategy = "random"
trials = 6
seed = 3
[train]
model = "mlp"
dataset = "digits"
[search]
lr = {log_uniform = [1e-4, 1e-1]}
dropout = {uniform = [0.0, 0.5]}
epochs = {int_uniform = [1, 3]}
hidden = [[16], [32, 16]]
""")
    first, again = sweep.load_spec(spec), sweep.load_spec(spec)
    assert first["trials"] == again["trials"] and len(first["trials"]) == 6
    for trial in first["trials"]:
        s = trial["settings"]
        assert 1e-4 <= s["lr"] <= 1e-1 and 0 <= s["dropout"] <= 0.5
        assert s["epochs"] in (1, 2, 3) and s["hidden"] in ([16], [32, 16])
        assert s["dataset"] == str(tmp_path / "digits")
    assert "--hidden" in (argv := sweep.trial_argv(first["trials"][0]["settings"], "run"))
    assert argv[argv.index("--hidden") + 1] in ("16", "32,16")


@pytest.mark.parametrize(("text", "message"), [
    ("[search]\nlearning_rate = [0.1]\n",
     "unknown setting 'learning_rate' in [search]; the train settings are model, dataset"),
    ("workers = 3\n[search]\nlr = [0.1]\n", "unknown key 'workers'"),
    ("[search]\nlr = [0.1, -1]\n", "lr must be a finite number > 0, got -1"),
    ("[train]\nmodel = \"softmax\"\n[search]\nhidden = [[8]]\n",
     "hidden applies to model mlp only, trial 0 trains 'softmax'"),
    ("[search]\nlr = {uniform = [0.1, 1]}\n", "a grid needs a list of values"),
    ("[search]\nlr = 0.1\n", "a single value belongs in [train]"),
    ("[search\nlr = [0.1]\n", "is not valid TOML"),
])
def test_spec_mistakes_are_one_line(tmp_path, text, message):
    (tmp_path / "bad.toml").write_text(text)
    line = assert_one_line_error(run_cli("sweep", "bad.toml", cwd=tmp_path), "sweep")
    assert message in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "sweeps").exists()


def test_killed_sweep_resumes_skipping_finished_trials(tmp_path):
    spec = write_spec(tmp_path, SPEC.replace("batch_size = [16, 64]", "batch_size = [16]"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "chainrule", "sweep", str(spec), "--jobs",
                                "1"], cwd=tmp_path, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = tmp_path / "out" / "trial-000"
    deadline = time.monotonic() + 120
    while not (first / "manifest.json").exists() and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = sha256(first / "model.npz")
    result = run_cli("sweep", spec, "--jobs", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "trials already finished" in result.stdout
    assert sha256(first / "model.npz") == done_before
    rows = {r["trial"]: r for r in results(tmp_path / "out")}
    assert set(rows) == {"trial-000", "trial-001"}
    assert all(r["status"] == "done" for r in rows.values())
    assert rows["trial-000"]["attempts"] == "1"
    # Another spec for the same folder is refused rather than mixed in.
    spec.write_text(SPEC.replace("0.3]", "0.5]"))
    line = assert_one_line_error(run_cli("sweep", spec, cwd=tmp_path), "sweep")
    assert "holds a sweep of other trials" in line


# ---------------------------------------------------------------------- on a Dask cluster
def _die_while_training(run_dir: str, marker: str) -> None:
    """On every worker: a thread that kills this worker process (once) as soon as it is
    training the trial in ``run_dir`` (its config.json written, its first attempt this pid)."""
    import os
    import threading
    import time
    from pathlib import Path

    def watch():
        folder = Path(run_dir)
        while True:
            attempts = folder / "attempts.log"
            if (folder / "config.json").exists() and attempts.exists():
                lines = attempts.read_text().splitlines()
                if lines and f" pid {os.getpid()} " in lines[0]:
                    try:
                        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                    except FileExistsError:
                        return
                    os._exit(1)
                return
            time.sleep(0.001)

    threading.Thread(target=watch, daemon=True).start()


@pytest.fixture(scope="module")
def cluster():
    import cloudpickle
    import dask
    from distributed import Client, LocalCluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with dask.config.set({"distributed.comm.timeouts.connect": "10s",
                          "distributed.comm.timeouts.tcp": "30s"}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address=None, memory_limit="1GiB",
                         silence_logs=logging.ERROR) as local, \
            Client(local, timeout="10s") as client:
        yield local, client
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_sweep_on_dask_retries_the_trial_of_a_killed_worker(cluster, local_sweep, tmp_path):
    local, client = cluster
    spec = write_spec(tmp_path)
    victim = tmp_path / "out" / "trial-001"
    client.run(_die_while_training, str(victim), str(tmp_path / "killed"))
    result = run_cli("sweep", spec, "--scheduler", local.scheduler_address, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "killed").exists()   # a worker did die mid-trial
    rows = {r["trial"]: r for r in results(tmp_path / "out")}
    assert all(r["status"] == "done" for r in rows.values()) and len(rows) == 4
    assert rows["trial-001"]["attempts"] == "2"
    assert {r["attempts"] for t, r in rows.items() if t != "trial-001"} == {"1"}
    # Seeded trials: the cluster's results are the local ones.
    here = {r["trial"]: r for r in results(local_sweep[0] / "out")}
    for trial, row in rows.items():
        for metric in ("val_accuracy", "test_accuracy", "test_loss"):
            assert row[metric] == here[trial][metric], (trial, metric)


def test_scikit_learn_on_joblibs_dask_backend(cluster):
    import joblib
    from sklearn.datasets import load_digits
    from sklearn.model_selection import cross_val_score

    from chainrule.sklearn import NeuralNetClassifier

    X, y = load_digits(return_X_y=True)
    clf = NeuralNetClassifier(hidden=(32,), epochs=5, batch_size=32, lr=1e-2, random_state=0)
    with joblib.parallel_backend("dask"):
        on_dask = cross_val_score(clf, X[:300] / 16, y[:300], cv=3, n_jobs=-1)
    serial = cross_val_score(clf, X[:300] / 16, y[:300], cv=3, n_jobs=1)
    assert np.array_equal(on_dask, serial) and serial.min() > 0.6


def test_unreachable_scheduler_is_one_line(tmp_path):
    spec = write_spec(tmp_path)
    result = run_cli("sweep", spec, "--scheduler", "tcp://127.0.0.1:9", cwd=tmp_path)
    line = assert_one_line_error(result, "sweep")
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in line
