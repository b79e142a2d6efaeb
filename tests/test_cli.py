"""The ``chainrule`` command line end to end on real MNIST.

Commands run as a user runs them (``python -m chainrule ...`` in a subprocess), except where a
test has to reach inside: the planted wrong backward for ``gradcheck`` and the simulated Ctrl-C
for ``train --resume`` call ``chainrule.cli.main`` in-process. One softmax model, trained once
per module, serves evaluate, predict and the error paths.
"""

import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import chainrule
from chainrule import cli, functional, load_model, runs
from chainrule.data import load_mnist, preprocess_digit
from chainrule.data.datasets import SYSTEM_DATA_ROOT
from chainrule.layers.activations import ReLU
from cli_helpers import DATA_ROOT, assert_one_line_error, run_cli, sha256, tiny_idx_dataset

MNIST = DATA_ROOT / "mnist"
DATA_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
RUN_FILES = ("config.json", "history.csv", "history.json", "manifest.json", "model.npz",
             "report.html")


def class_supports(report: str) -> dict[int, int]:
    """Class -> support from the rows of a printed classification report."""
    rows = re.findall(r"^\s*(\d+)\s+[01]\.\d+\s+[01]\.\d+\s+[01]\.\d+\s+(\d+)\s*$", report, re.M)
    return {int(c): int(n) for c, n in rows}


def printed_metrics(out: str) -> tuple[float, float]:
    m = re.search(r"test loss (\d+\.\d+)\s+test accuracy (\d+\.\d+)", out)
    assert m, f"no 'test loss … test accuracy …' line in:\n{out}"
    return float(m.group(1)), float(m.group(2))


def write_digit_png(image: np.ndarray, path: Path) -> Path:
    """An MNIST image (uint8, white on black) as a user's picture: 140×140, dark ink on white."""
    Image.fromarray(255 - image).resize((140, 140), Image.Resampling.BICUBIC).save(path)
    return path


@pytest.fixture(scope="module")
def test_set():
    """MNIST's test images (uint8) and labels."""
    _, (x, y) = load_mnist(DATA_ROOT, normalize=False)
    return x, y


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``train --model softmax --epochs 1 --quiet`` once: (the finished process, its run folder)."""
    work = tmp_path_factory.mktemp("cli")
    result = run_cli("train", "--model", "softmax", "--epochs", "1", "--out", work / "run",
                     "--quiet", cwd=work)
    assert result.returncode == 0, result.stderr
    return result, work / "run"


@pytest.fixture(scope="module")
def digits(trained, test_set):
    """Two PNGs of test digits of different classes that the trained model gets right.

    Chosen so that the model is right both on the raw 28×28 array and on what
    preprocess_digit makes of the PNG: the predict tests are about the CLI, not the model.
    """
    _, run = trained
    model = load_model(run / "model.npz")
    x, y = test_set
    raw_pred = np.argmax(model.predict(x[:100].astype(np.float32) / 255.0), axis=1)
    chosen: list[tuple[Path, int]] = []
    for i in np.flatnonzero(raw_pred == y[:100]):
        label = int(y[i])
        if any(label == c for _, c in chosen):
            continue
        png = write_digit_png(x[i], run.parent / f"digit-{i}-{label}.png")
        if int(np.argmax(model.predict(preprocess_digit(png)[None]))) == label:
            chosen.append((png, label))
        if len(chosen) == 2:
            return chosen
    pytest.fail(f"fewer than two usable test digits among the first 100: {chosen}")


# ---------------------------------------------------------------------- train
def test_train_quiet_writes_a_complete_reproducible_run(trained):
    result, run = trained
    assert result.stdout == "" and result.stderr == "", "--quiet must print nothing"
    assert sorted(p.name for p in run.iterdir()) == sorted(RUN_FILES), (
        "a finished run holds exactly the run files: no checkpoint.npz, no temporary files"
    )

    manifest = json.loads((run / "manifest.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert manifest["final"]["test_accuracy"] > 0.90
    assert manifest["config"] == config
    assert config["model"] == "softmax" and config["epochs"] == 1
    assert manifest["seed"] == config["seed"] == 0
    assert manifest["versions"] == {
        "chainrule": chainrule.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    assert manifest["model_sha256"] == sha256(run / "model.npz")

    assert set(manifest["data"]) == set(DATA_FILES)
    for key, name in DATA_FILES.items():
        entry = manifest["data"][key]
        assert Path(entry["path"]).resolve() == (MNIST / name).resolve()
        assert entry["sha256"] == sha256(MNIST / name), f"{key}: hash of another file"

    history = json.loads((run / "history.json").read_text())
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 1 for v in history.values())
    for key, values in history.items():
        assert manifest["final"][key] == values[-1]
    rows = (run / "history.csv").read_text().splitlines()
    assert rows[0].split(",") == ["epoch", *history]
    assert len(rows) == 2 and rows[1].startswith("1,")
    assert float(rows[1].split(",")[1]) == history["loss"][0]


def test_train_without_quiet_prints_the_report_and_trains_the_same_model(trained, test_set,
                                                                         tmp_path):
    result = run_cli("train", "--model", "softmax", "--epochs", "1", "--out", tmp_path / "run",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    loss, accuracy = printed_metrics(result.stdout)
    assert accuracy == pytest.approx(manifest["final"]["test_accuracy"], abs=5e-5)
    assert loss == pytest.approx(manifest["final"]["test_loss"], abs=5e-5)
    assert "precision" in result.stdout and "recall" in result.stdout
    _, y = test_set
    assert class_supports(result.stdout) == dict(enumerate(np.bincount(y).tolist()))

    # Printing (summary, progress bar, report) must not change what is trained.
    _, quiet_run = trained
    ours = load_model(tmp_path / "run" / "model.npz").get_weights()
    theirs = load_model(quiet_run / "model.npz").get_weights()
    assert len(ours) == len(theirs)
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_train_cnn_with_a_last_batch_of_one_sample_completes(tmp_path):
    """40 images: 37 train after the 1/12 validation split, 37 = 12·3 + 1. The cnn's
    BatchNorm after its Dense cannot train on one sample: that batch is left out, said once."""
    data = tiny_idx_dataset(tmp_path / "tiny")
    result = run_cli("train", "--model", "cnn", "--batch-size", "3", "--epochs", "1",
                     "--dataset", data, "--out", tmp_path / "run", "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    note = ("fit: the last batch of each epoch (1 of 37 samples, shuffled, so not the same "
            "ones) is left out: BatchNorm 'batchnorm_3' needs at least 2 samples per training "
            "batch")
    assert result.stderr.count(note) == 1, result.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["samples"] == {"train": 37, "validation": 3, "test": 10}
    optimizer = load_model(tmp_path / "run" / "model.npz").optimizer
    # The cosine schedule spans the steps actually taken, and ends at 0 on the last one.
    assert optimizer.iterations == optimizer.lr.T_max == 12


def test_train_batch_size_one_is_refused_before_a_run_folder_is_written(tmp_path):
    data = tiny_idx_dataset(tmp_path / "tiny")
    result = run_cli("train", "--model", "cnn", "--batch-size", "1", "--epochs", "1",
                     "--dataset", data, "--out", tmp_path / "run", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        "chainrule train: error: fit: batch_size=1 is too small for BatchNorm 'batchnorm_3', "
        "which needs at least 2 samples per training batch on input of shape (N, 256); use "
        "batch_size=2 or more\n")
    assert not (tmp_path / "run").exists()


def test_relative_data_folders_are_resolved_where_they_were_typed(tmp_path):
    """``CHAINRULE_DATA=rel`` and ``--dataset rel`` mean folders under the directory the user
    stands in, and config.json names them absolutely, so a resume from anywhere finds them."""
    tiny_idx_dataset(tmp_path / "data" / "tiny")
    env = {**os.environ, "CHAINRULE_DATA": "data"}
    result = run_cli("train", "--model", "softmax", "--epochs", "1", "--dataset", "data/tiny",
                     "--out", "run", "--no-report", "--quiet", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["dataset"] == str(tmp_path / "data" / "tiny")
    probe = ("import os, chainrule.data; os.chdir('/'); "
             "print(os.environ['CHAINRULE_DATA'])")
    printed = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                             capture_output=True, text=True, check=True).stdout.strip()
    assert printed == str(tmp_path / "data")


# ---------------------------------------------------------------------- evaluate / predict
def test_evaluate_prints_metrics_report_and_confusion_matrix(trained, test_set):
    _, run = trained
    result = run_cli("evaluate", run / "model.npz", cwd=run.parent)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    manifest = json.loads((run / "manifest.json").read_text())
    loss, accuracy = printed_metrics(out)
    assert accuracy == pytest.approx(manifest["final"]["test_accuracy"], abs=5e-5)
    assert loss == pytest.approx(manifest["final"]["test_loss"], abs=5e-5)
    _, y = test_set
    supports = np.bincount(y)
    assert class_supports(out) == dict(enumerate(supports.tolist()))

    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("confusion matrix"))
    assert lines[start + 1].split() == [str(c) for c in range(10)]
    rows = [[int(v) for v in line.split()] for line in lines[start + 2:start + 12]]
    assert [r[0] for r in rows] == list(range(10))
    cm = np.array([r[1:] for r in rows])
    assert cm.shape == (10, 10)
    assert cm.sum() == 10000
    np.testing.assert_array_equal(cm.sum(axis=1), supports)
    assert np.trace(cm) / 10000 == pytest.approx(accuracy, abs=5e-5)


def test_predict_prints_the_class_of_a_png(trained, digits):
    _, run = trained
    png, label = digits[0]
    result = run_cli("predict", run / "model.npz", png, cwd=run.parent)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert re.match(rf"{re.escape(str(png))}: {label}\s", lines[0]), lines[0]


def test_predict_json_gives_one_object_per_image_in_order(trained, digits):
    _, run = trained
    model = load_model(run / "model.npz")
    (first, first_label), (second, second_label) = digits
    result = run_cli("predict", run / "model.npz", second, first, "--json", cwd=run.parent)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert isinstance(answer, list) and len(answer) == 2
    for obj, png, label in zip(answer, (second, first), (second_label, first_label),
                               strict=True):
        assert set(obj) == {"file", "class", "probabilities", "top3", "empty"}
        assert obj["file"] == str(png)
        assert obj["empty"] is False
        assert obj["class"] == label
        probs = np.array(obj["probabilities"])
        assert probs.shape == (10,) and all(isinstance(p, float) for p in obj["probabilities"])
        assert probs.sum() == pytest.approx(1.0, abs=1e-5)
        expected = functional.softmax(model.predict(preprocess_digit(png)[None]))[0]
        np.testing.assert_allclose(probs, expected, rtol=1e-6, atol=1e-9)

        top3 = obj["top3"]
        assert len(top3) == 3 and top3[0][0] == label
        assert [p for _, p in top3] == sorted((p for _, p in top3), reverse=True)
        assert all(p == obj["probabilities"][c] for c, p in top3)
        assert {c for c, _ in top3} == set(np.argsort(-probs, kind="stable")[:3].tolist())


# ---------------------------------------------------------------------- gradcheck / info
@pytest.mark.parametrize("model", ["softmax", "mlp", "cnn"])
def test_gradcheck_passes(model, tmp_path):
    result = run_cli("gradcheck", "--model", model, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout and "FAIL" not in result.stdout
    assert re.search(r"^\S*dense_1\.W\s.*\bok$", result.stdout, re.M), result.stdout


def test_gradcheck_fails_on_a_planted_wrong_backward(monkeypatch, capsys):
    def wrong_backward(self, grad_y, need_input_grad):
        return 2.0 * grad_y * self.cache if need_input_grad else None

    monkeypatch.setattr(ReLU, "_backward", wrong_backward)
    assert cli.main(["gradcheck", "--model", "mlp"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out
    assert re.search(r"^input\s.*FAIL$", out, re.M), out


def test_info_shows_versions_and_marks_the_data_folder_found(tmp_path):
    result = run_cli("info", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(rf"^chainrule\s+{re.escape(chainrule.__version__)}$", out, re.M), out
    assert re.search(rf"^numpy\s+{re.escape(np.__version__)}$", out, re.M), out
    assert "mnist: searched in this order" in out
    assert re.search(rf"^\s*found\s+{re.escape(str(MNIST))}$", out, re.M), out


def test_version():
    result = run_cli("--version", cwd=Path.cwd())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"chainrule {chainrule.__version__}"


# ---------------------------------------------------------------------- resume
# "legacy": a run folder written before the mlp preset had random shifts says "augment": null
# in its config.json; it resumes as the run it was, without shifts.
@pytest.mark.parametrize("legacy", [False, True], ids=["current", "augment-null"])
def test_interrupted_run_resumes_bit_identically(legacy, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHAINRULE_DATA", str(DATA_ROOT))
    monkeypatch.chdir(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    config = ["--model", "mlp", "--hidden", "16", "--dropout", "0.2", "--epochs", "2",
              "--seed", "3", "--quiet", *(["--augment", "0"] if legacy else [])]
    assert cli.main(["train", *config, "--out", str(a)]) == 0

    original = runs.EpochCheckpoint.on_epoch_end

    def interrupt_after_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt

    capsys.readouterr()
    with monkeypatch.context() as m:
        m.setattr(runs.EpochCheckpoint, "on_epoch_end", interrupt_after_first_epoch)
        assert cli.main(["train", *config, "--out", str(b)]) == 130
    err = capsys.readouterr().err
    assert "--resume" in err and str(b) in err
    assert (b / "checkpoint.npz").is_file()
    assert not (b / "model.npz").exists()
    assert load_model(b / "checkpoint.npz").metadata["completed_epochs"] == 1
    if legacy:
        saved = json.loads((b / "config.json").read_text())
        assert saved["augment"] == 0
        (b / "config.json").write_text(json.dumps({**saved, "augment": None}))

    assert cli.main(["train", "--resume", "--out", str(b), "--quiet"]) == 0
    assert not (b / "checkpoint.npz").exists()
    weights_a = load_model(a / "model.npz").get_weights()
    weights_b = load_model(b / "model.npz").get_weights()
    assert len(weights_a) == len(weights_b) == 4
    for wa, wb in zip(weights_a, weights_b, strict=True):
        assert np.array_equal(wa, wb), f"max |a − b| = {np.max(np.abs(wa - wb))}"
    history_a = json.loads((a / "history.json").read_text())
    history_b = json.loads((b / "history.json").read_text())
    assert all(len(v) == 2 for v in history_a.values())
    assert history_b == history_a
    manifest_a = json.loads((a / "manifest.json").read_text())
    manifest_b = json.loads((b / "manifest.json").read_text())
    assert manifest_b["final"] == manifest_a["final"]
    assert manifest_b["config"] == manifest_a["config"]


def test_interrupt_before_the_first_checkpoint_does_not_offer_resume(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.setenv("CHAINRULE_DATA", str(DATA_ROOT))
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--model", "softmax", "--epochs", "1", "--quiet", "--out", str(tmp_path / "r")]

    def interrupt(self, epoch, logs=None):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(runs.EpochCheckpoint, "on_epoch_end", interrupt)
        assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert not (tmp_path / "r" / "checkpoint.npz").exists()
    assert "--resume" not in err and "checkpoint after epoch" not in err, err
    assert "no checkpoint" in err
    assert not (tmp_path / "r").exists(), "the interrupted new run left its folder behind"
    # The advice given (run the same command again) works.
    assert cli.main(argv) == 0
    assert (tmp_path / "r" / "model.npz").is_file()


# ---------------------------------------------------------------------- errors
def offline_env(tmp_path) -> dict:
    """No $CHAINRULE_DATA, an empty user cache, and a mirror that refuses connections."""
    env = {k: v for k, v in os.environ.items() if k != "CHAINRULE_DATA"}
    (tmp_path / "xdg").mkdir()
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    env["CHAINRULE_MIRROR"] = "http://127.0.0.1:9/"
    return env


def _not_a_model(tmp_path):
    (tmp_path / "x.npz").write_text("this is not an npz archive\n")
    return tmp_path / "x.npz"


def _bad_png(tmp_path):
    (tmp_path / "bad.png").write_text("this is not a PNG\n")
    return tmp_path / "bad.png"


def _empty_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


# id: (command, argv from (tmp_path, trained model file), text the message must contain)
ERROR_CASES = {
    "evaluate-missing-model": (
        "evaluate", lambda t, m: ["evaluate", t / "nope.npz"], "model file not found"),
    "predict-missing-model": (
        "predict", lambda t, m: ["predict", t / "nope.npz", t / "a.png"], "model file not found"),
    "evaluate-not-a-model": (
        "evaluate", lambda t, m: ["evaluate", _not_a_model(t)], "not a chainrule model"),
    "predict-not-a-model": (
        "predict", lambda t, m: ["predict", _not_a_model(t), _bad_png(t)],
        "not a chainrule model"),
    "predict-unreadable-image": (
        "predict", lambda t, m: ["predict", m, _bad_png(t)], "bad.png"),
    "predict-missing-image": (
        "predict", lambda t, m: ["predict", m, t / "missing.png"], "missing.png"),
    "evaluate-dataset-missing": (
        "evaluate", lambda t, m: ["evaluate", m, "--dataset", "/nonexistent"], "/nonexistent"),
    "train-dataset-missing": (
        "train", lambda t, m: ["train", "--model", "softmax", "--quiet", "--out", t / "run",
                               "--dataset", "/nonexistent"], "/nonexistent"),
    "evaluate-data-dir-empty": (
        "evaluate", lambda t, m: ["evaluate", m, "--data-dir", _empty_dir(t)], "empty"),
    "train-data-dir-empty": (
        "train", lambda t, m: ["train", "--model", "softmax", "--quiet", "--out", t / "run",
                               "--data-dir", _empty_dir(t)], "empty"),
    "train-existing-run": (
        "train", lambda t, m: ["train", "--model", "softmax", "--quiet", "--out", m.parent],
        "already holds a finished run"),
    "train-resume-without-checkpoint": (
        "train", lambda t, m: ["train", "--resume", "--quiet", "--out", _empty_dir(t)],
        "checkpoint.npz"),
}


@pytest.mark.parametrize("case", ERROR_CASES)
def test_error_is_one_line_without_traceback(case, trained, tmp_path):
    command, argv, fragment = ERROR_CASES[case]
    _, run = trained
    before = {p.name: sha256(p) for p in run.iterdir()}
    args = argv(tmp_path, run / "model.npz")
    result = run_cli(*args, cwd=tmp_path)
    line = assert_one_line_error(result, command)
    assert fragment in line
    assert {p.name: sha256(p) for p in run.iterdir()} == before, "the run folder was changed"
    if command == "train" and tmp_path / "run" in args:
        assert not (tmp_path / "run").exists(), "a failed train must not leave a run folder"


@pytest.mark.parametrize("command", ["evaluate", "train"])
def test_offline_without_data_says_where_it_looked(command, trained, tmp_path):
    if any((SYSTEM_DATA_ROOT / "mnist").glob("train-images-idx3-ubyte*")):
        pytest.skip(f"MNIST is installed in {SYSTEM_DATA_ROOT}, so it is never 'missing' here")
    _, run = trained
    env = offline_env(tmp_path)
    argv = (["evaluate", run / "model.npz"] if command == "evaluate"
            else ["train", "--model", "softmax", "--quiet", "--out", tmp_path / "run"])
    result = run_cli(*argv, cwd=tmp_path, env=env)
    line = assert_one_line_error(result, command)
    assert "Looked in" in line
    assert str(tmp_path / "xdg" / "chainrule" / "mnist") in line
    assert str(SYSTEM_DATA_ROOT / "mnist") in line
    assert "127.0.0.1:9" in line
    assert not any(p.is_file() for p in (tmp_path / "xdg").rglob("*")), "partial download left"
    assert not (tmp_path / "run").exists(), "a failed train must not leave a run folder"


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("--debug", "evaluate", tmp_path / "nope.npz", cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "CLIError: model file not found" in result.stderr
