"""Hostile input to the command line and to run folders (issue 11).

Every failing command runs as a user runs it, ``python -m chainrule …`` in a subprocess, and
must: exit non-zero, print exactly one line on stderr (``chainrule CMD: error: …``) with no
traceback, and leave no file under the test's folder that was not there before, nor change
one. The cases are grouped as in the issue: options, training, labels and shapes, run folders
and resume, messages. A few need to reach inside (a loss that blows up after the first
checkpoint, a full disk) and call ``chainrule.cli.main`` in-process instead.

All training runs on tiny random IDX datasets (40 images of 28×28), so every case takes about
a second.
"""

import errno
import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

from chainrule import cli, load_model, report, runs, serialization
from chainrule.model import Sequential
from cli_helpers import run_cli, sha256, tiny_idx_dataset

TINY_MLP = ["--model", "mlp", "--hidden", "16", "--batch-size", "8", "--quiet", "--no-report"]


def snapshot(folder) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder``, hidden ones included."""
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def assert_refused(result, command: str, *fragments: str, status: int = 1) -> str:
    """Exit ``status``, one line 'chainrule COMMAND: error: …' on stderr holding every
    fragment, no traceback, nothing on stdout; returns the line."""
    assert result.returncode == status, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(f"chainrule {command}: error: ".replace(" :", ":")), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in: {line}"
    assert result.stdout == ""
    return line


def run_refused(tmp_path, command: str, argv, *fragments: str, status: int = 1) -> str:
    """Run ``chainrule ARGV`` in ``tmp_path``; assert it is refused and changed nothing there."""
    before = snapshot(tmp_path)
    result = run_cli(*argv, cwd=tmp_path)
    line = assert_refused(result, command, *fragments, status=status)
    assert snapshot(tmp_path) == before, "a refused command created or changed files"
    return line


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A valid tiny dataset folder, shared read-only by the module."""
    return tiny_idx_dataset(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny):
    """A finished run folder (with report.html) of a tiny MLP."""
    run = tmp_path_factory.mktemp("finished") / "run"
    result = run_cli("train", *TINY_MLP, "--report", "--epochs", "1", "--dataset", tiny,
                     "--out", run, cwd=run.parent)
    assert result.returncode == 0, result.stderr
    return run


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory, tiny):
    """A run folder interrupted after epoch 1 of 2: config.json, checkpoint.npz, history."""
    run = tmp_path_factory.mktemp("unfinished") / "run"
    original = runs.EpochCheckpoint.on_epoch_end

    def interrupt_after_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as m:
        m.setattr(runs.EpochCheckpoint, "on_epoch_end", interrupt_after_first_epoch)
        status = cli.main(["train", *TINY_MLP, "--epochs", "2", "--dataset", str(tiny),
                           "--out", str(run)])
    assert status == 130
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint.npz", "config.json", "history.csv", "history.json"]
    return run


def copy_run(run, tmp_path):
    return shutil.copytree(run, tmp_path / "run")


# ====================================================================== options
# (argv, the option, the message after "argument OPTION: "): refused by argparse (status 2)
# before anything is read or written.
POSITIVE_INT = "must be a positive integer, got "
OPTION_CASES = {
    "epochs-negative": (["train", "--epochs", "-1"], "--epochs", POSITIVE_INT + "-1"),
    "epochs-zero": (["train", "--epochs", "0"], "--epochs", POSITIVE_INT + "0"),
    "epochs-fraction": (["train", "--epochs", "1.5"], "--epochs", POSITIVE_INT + "1.5"),
    "batch-size-negative": (["train", "--batch-size", "-5"], "--batch-size", POSITIVE_INT + "-5"),
    "batch-size-zero": (["train", "--batch-size", "0"], "--batch-size", POSITIVE_INT + "0"),
    "validation-split-one": (["train", "--validation-split", "1"], "--validation-split",
                             "must be a number in [0, 1), got 1"),
    "validation-split-above-one": (["train", "--validation-split", "1.5"], "--validation-split",
                                   "must be a number in [0, 1), got 1.5"),
    "validation-split-nan": (["train", "--validation-split", "nan"], "--validation-split",
                             "must be a number in [0, 1), got nan"),
    "validation-split-negative": (["train", "--validation-split", "-0.1"], "--validation-split",
                                  "must be a number in [0, 1), got -0.1"),
    "seed-negative": (["train", "--seed", "-1"], "--seed", "must be an integer >= 0, got -1"),
    "hidden-not-a-number": (["train", "--hidden", "abc"], "--hidden",
                            "must be comma-separated integer sizes in 1 … 16384, got abc"),
    "hidden-zero": (["train", "--hidden", "0"], "--hidden",
                    "must be comma-separated integer sizes in 1 … 16384, got 0"),
    "hidden-absurd": (["train", "--hidden", "256,100000000"], "--hidden",
                      "must be comma-separated integer sizes in 1 … 16384, got 256,100000000"),
    "hidden-empty-size": (["train", "--hidden", "256,"], "--hidden",
                          "must be comma-separated integer sizes in 1 … 16384, got 256,"),
    "lr-zero": (["train", "--lr", "0"], "--lr", "must be a finite number > 0, got 0"),
    "lr-nan": (["train", "--lr", "nan"], "--lr", "must be a finite number > 0, got nan"),
    "lr-negative": (["train", "--lr", "-1"], "--lr", "must be a finite number > 0, got -1"),
    "lr-inf": (["train", "--lr", "inf"], "--lr", "must be a finite number > 0, got inf"),
    "dropout-above-one": (["train", "--dropout", "1.5"], "--dropout",
                          "must be a number in [0, 1), got 1.5"),
    "dropout-one": (["train", "--dropout", "1"], "--dropout",
                    "must be a number in [0, 1), got 1"),
    "augment-negative": (["train", "--model", "cnn", "--augment", "-1"], "--augment",
                         "must be an integer >= 0, got -1"),
    "gradcheck-tol-nan": (["gradcheck", "--tol", "nan"], "--tol",
                          "must be a finite number > 0, got nan"),
    "gradcheck-tol-negative": (["gradcheck", "--tol", "-1"], "--tol",
                               "must be a finite number > 0, got -1"),
    "gradcheck-seed-negative": (["gradcheck", "--seed", "-1"], "--seed",
                                "must be an integer >= 0, got -1"),
    "serve-port-too-large": (["serve", "m.npz", "--port", "99999"], "--port",
                             "must be a port number in 1 … 65535, got 99999"),
    "serve-port-negative": (["serve", "m.npz", "--port", "-1"], "--port",
                            "must be a port number in 1 … 65535, got -1"),
    "serve-port-zero": (["serve", "m.npz", "--port", "0"], "--port",
                        "must be a port number in 1 … 65535, got 0"),
}


@pytest.mark.parametrize("case", OPTION_CASES)
def test_an_invalid_option_is_refused_by_name_before_anything_is_written(case, tmp_path):
    argv, option, message = OPTION_CASES[case]
    command = argv[0]
    if command == "train":
        argv = [*argv, "--out", tmp_path / "run"]
    line = run_refused(tmp_path, command, argv, status=2)
    assert line == f"chainrule {command}: error: argument {option}: {message}"


def test_an_unknown_command_is_one_line(tmp_path):
    run_refused(tmp_path, "", ["trian"], "argument command: invalid choice: 'trian'", status=2)


# Options whose limit depends on the data: checked once the images are read, before the run
# folder is written.
DATA_OPTION_CASES = {
    "augment-beyond-the-image": (
        ["--model", "cnn", "--augment", "100"],
        ["argument --augment: must be less than half the image side, at most 13 for 28×28 "
         "images, got 100"]),
    "validation-split-leaves-no-training-images": (
        ["--validation-split", "0.99"],
        ["argument --validation-split: 0.99 of 40 training images leaves no training images"]),
    "validation-split-leaves-no-validation-images": (
        ["--validation-split", "0.001"],
        ["argument --validation-split: 0.001 of 40 training images leaves no validation "
         "images"]),
}


@pytest.mark.parametrize("case", DATA_OPTION_CASES)
def test_an_option_beyond_what_the_data_allows_is_refused_before_the_run_folder(case, tmp_path):
    options, fragments = DATA_OPTION_CASES[case]
    data = tiny_idx_dataset(tmp_path / "tiny")
    run_refused(tmp_path, "train", ["train", *TINY_MLP, *options, "--dataset", data,
                                    "--out", tmp_path / "run"], *fragments)


# ====================================================================== training
@pytest.mark.parametrize("lr, fragments", [
    ("1e6", ["training diverged: the loss stayed above", "consecutive steps", "at epoch 1, step",
             "Try a lower learning rate", "nothing was saved"]),
    # Overflows to NaN: NumPy's overflow warnings must not add lines to the one message.
    ("1e308", ["training diverged: the loss became nan at epoch 1, step", "nothing was saved"]),
])
def test_a_diverging_run_stops_with_one_line_and_leaves_no_run_folder(lr, fragments, tmp_path):
    data = tiny_idx_dataset(tmp_path / "tiny")
    run_refused(tmp_path, "train", ["train", *TINY_MLP, "--lr", lr, "--batch-size", "2",
                                    "--dataset", data, "--out", tmp_path / "run"], *fragments)


def test_divergence_after_a_checkpoint_keeps_the_last_good_one(tmp_path, capsys, monkeypatch):
    """A finite loss that explodes in epoch 2 (of 3): exit 1, one line, checkpoint of epoch 1."""
    data = tiny_idx_dataset(tmp_path / "tiny")
    original = Sequential.train_step

    def explode_from_epoch_2(self, x, y):
        loss, output = original(self, x, y)
        return (1e12 if self.optimizer.epoch >= 1 else loss), output

    monkeypatch.setattr(Sequential, "train_step", explode_from_epoch_2)
    run = tmp_path / "run"
    status = cli.main(["train", *TINY_MLP, "--batch-size", "4", "--epochs", "3", "--dataset",
                       str(data), "--out", str(run)])
    err = capsys.readouterr().err
    assert status == 1
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("chainrule train: error: training diverged: "), lines[0]
    assert "at epoch 2, step" in lines[0] and "lower learning rate" in lines[0]
    assert f"the last good checkpoint, after epoch 1, is kept in {run / 'checkpoint.npz'}" in err
    assert load_model(run / "checkpoint.npz").metadata["completed_epochs"] == 1
    assert not (run / "model.npz").exists()


# ====================================================================== labels and shapes
def _labels(n, **changes):
    labels = np.arange(n) % 10
    for index, value in changes.items():
        labels[int(index[1:])] = value
    return labels


# id: (dataset kwargs, dataset name to train as (None: the folder), message fragments)
DATA_CASES = {
    "train-label-200-mnist": (
        dict(train_labels=_labels(40, i5=200)), "mnist",
        ["train-labels-idx1-ubyte: label 200 (sample 5) is not one of mnist's 10 classes 0–9"]),
    "train-label-200-folder": (
        dict(train_labels=_labels(40, i5=200)), None,
        ["train-labels-idx1-ubyte holds classes 0–9, 200, without 10–199"]),
    "test-label-12-mnist": (
        dict(test_labels=_labels(10, i3=12)), "mnist",
        ["t10k-labels-idx1-ubyte: label 12 (sample 3) is not one of mnist's 10 classes 0–9"]),
    "test-label-10-kmnist": (
        dict(test_labels=_labels(10, i3=10)), "kmnist",
        ["t10k-labels-idx1-ubyte: label 10 (sample 3) is not one of kmnist's 10 classes"]),
    "test-label-12-folder": (
        dict(test_labels=_labels(10, i3=12)), None,
        ["t10k-labels-idx1-ubyte: label 12 (sample 3) is not among the training classes 0–9"]),
    "all-zero-labels-mnist": (
        dict(train_labels=np.zeros(40), test_labels=np.zeros(10)), "mnist",
        ["train-labels-idx1-ubyte holds class 0 only, of mnist's 10 classes 0–9"]),
    "all-zero-labels-fashion-mnist": (
        dict(train_labels=np.zeros(40), test_labels=np.zeros(10)), "fashion-mnist",
        ["holds class 0 only, of fashion-mnist's 10 classes"]),
    "all-zero-labels-folder": (
        dict(train_labels=np.zeros(40), test_labels=np.zeros(10)), None,
        ["holds class 0 only: a classifier needs at least two classes"]),
    "class-missing-folder": (
        dict(train_labels=np.where(_labels(40) == 5, 6, _labels(40))), None,
        ["train-labels-idx1-ubyte holds classes 0–4, 6–9, without 5"]),
    "test-images-32x32": (
        dict(test_shape=(32, 32)), None,
        ["t10k-images-idx3-ubyte holds 32×32 images but", "train-images-idx3-ubyte holds "
         "28×28 ones"]),
    "no-training-images": (dict(n_train=0), None, ["train-images-idx3-ubyte holds no images"]),
    "no-test-images": (dict(n_test=0), "mnist", ["t10k-images-idx3-ubyte holds no images"]),
}


@pytest.mark.parametrize("case", DATA_CASES)
def test_a_hostile_dataset_is_refused_before_the_first_step(case, tmp_path):
    kwargs, name, fragments = DATA_CASES[case]
    data = tiny_idx_dataset(tmp_path / "data", **kwargs)
    where = ["--dataset", data] if name is None else ["--dataset", name, "--data-dir", data]
    run_refused(tmp_path, "train", ["train", *TINY_MLP, *where, "--out", tmp_path / "run"],
                *fragments)


def test_evaluate_on_a_test_set_without_images_says_so(finished, tmp_path):
    data = tiny_idx_dataset(tmp_path / "data", n_test=0)
    run_refused(tmp_path, "evaluate", ["evaluate", finished / "model.npz", "--dataset", data],
                "t10k-images-idx3-ubyte holds no images")


# ====================================================================== run folders and resume
def _edit_config(**changes):
    def edit(run):
        config = json.loads((run / "config.json").read_text())
        for key, value in changes.items():
            if value is _DELETE:
                del config[key]
            else:
                config[key] = value
        (run / "config.json").write_text(json.dumps(config))
    return edit


_DELETE = object()


def _write(name, content: str | bytes):
    def edit(run):
        path = run / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return edit


def _truncate_config(run):
    text = (run / "config.json").read_text()
    (run / "config.json").write_text(text[:len(text) // 2])


def _remove_config(run):
    (run / "config.json").unlink()


def _checkpoint_metadata(**metadata):
    def edit(run):
        model = load_model(run / "checkpoint.npz")
        model.save(run / "checkpoint.npz", metadata={**model.metadata, **metadata})
    return edit


def _data_of_another_shape(run):
    folder = tiny_idx_dataset(run.parent / "data32", shape=(32, 32))
    _edit_config(dataset=str(folder))(run)


# id: (edit of a copy of the unfinished run, message fragments)
RESUME_CASES = {
    "config-lacks-epochs": (_edit_config(epochs=_DELETE),
                            ["config.json has no 'epochs' setting (a positive integer)"]),
    "config-lacks-dataset": (_edit_config(dataset=_DELETE),
                             ["config.json has no 'dataset' setting"]),
    "config-epochs-a-string": (_edit_config(epochs="2"),
                               ["config.json: 'epochs' must be a positive integer, got \"2\""]),
    "config-epochs-negative": (_edit_config(epochs=-1),
                               ["config.json: 'epochs' must be a positive integer, got -1"]),
    "config-seed-a-bool": (_edit_config(seed=True),
                           ["config.json: 'seed' must be an integer >= 0, got true"]),
    "config-lr-null": (_edit_config(lr=None),
                       ["config.json: 'lr' must be a finite number > 0, got null"]),
    "config-hidden-not-a-list": (_edit_config(hidden=16),
                                 ["config.json: 'hidden' must be a non-empty list"]),
    "config-validation-split-above-one": (_edit_config(validation_split=1.5),
                                          ["'validation_split' must be a number in [0, 1)"]),
    "config-augment-negative": (_edit_config(augment=-1),
                                ["config.json: 'augment' must be an integer >= 0, got -1"]),
    "config-hidden-for-a-softmax": (_edit_config(model="softmax"),
                                    ["'hidden' must be null for model 'softmax', got [16]"]),
    "config-truncated": (_truncate_config, ["config.json is not valid JSON: "]),
    "config-empty": (_write("config.json", ""), ["config.json is empty, not JSON"]),
    "config-an-array": (_write("config.json", "[1, 2]"),
                        ["config.json: expected a JSON object of run settings, got list"]),
    "config-missing": (_remove_config, ["has a checkpoint.npz but no config.json"]),
    "checkpoint-of-other-hidden-sizes": (
        _edit_config(hidden=[32]),
        ["checkpoint.npz does not match the run", "layer 3 (Dense) has units=16 vs 32"]),
    "checkpoint-of-another-model": (
        _edit_config(model="softmax", hidden=None, dropout=None, augment=None),
        ["checkpoint.npz does not match the run", "6 layers in the checkpoint, 2 from the "
         "settings"]),
    "checkpoint-of-another-learning-rate": (
        _edit_config(lr=0.5), ["checkpoint.npz does not match the run",
                               "lr.config.initial_lr=0.002 vs 0.5"]),
    "config-epochs-edited": (_edit_config(epochs=5), ["lr.config.T_max=10 vs 25"]),
    "checkpoint-of-other-image-sizes": (
        _data_of_another_shape, ["it was trained on samples of shape (28, 28), the dataset "
                                 "holds (32, 32)"]),
    "checkpoint-not-a-model": (_write("checkpoint.npz", "not an archive"),
                               ["checkpoint.npz is not a chainrule model file"]),
    "checkpoint-beyond-the-run": (
        _checkpoint_metadata(completed_epochs=5),
        ["checkpoint.npz: completed_epochs must be an integer in 1 … 2 (the run's epochs), "
         "got 5"]),
    "checkpoint-without-epochs": (
        _checkpoint_metadata(completed_epochs=None),
        ["completed_epochs must be an integer in 1 … 2", "got None"]),
    "checkpoint-history-too-long": (
        _checkpoint_metadata(history={"loss": [1.0, 0.5]}),
        ["checkpoint.npz: history 'loss' has 2 values, expected 1"]),
}


@pytest.mark.parametrize("case", RESUME_CASES)
def test_resume_refuses_a_broken_run_folder_naming_the_file(case, unfinished, tmp_path):
    edit, fragments = RESUME_CASES[case]
    run = copy_run(unfinished, tmp_path)
    edit(run)
    run_refused(tmp_path, "train", ["train", "--resume", "--quiet", "--out", run], *fragments)


def test_resume_of_a_finished_run_says_it_finished(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    run_refused(tmp_path, "train", ["train", "--resume", "--out", run],
                f"the run in {run} has finished (model.npz is saved")


@pytest.mark.parametrize("case", ["empty-folder", "no-out", "out-is-a-file"])
def test_resume_without_a_run_to_continue(case, tmp_path):
    if case == "empty-folder":
        (tmp_path / "run").mkdir()
        argv, fragment = ["--out", tmp_path / "run"], "holds no checkpoint.npz to resume from"
    elif case == "no-out":
        argv, fragment = [], "--resume needs --out RUN"
    else:
        (tmp_path / "run").write_text("a file")
        argv, fragment = ["--out", tmp_path / "run"], "is a file, not a folder"
    run_refused(tmp_path, "train", ["train", "--resume", *argv], fragment)


@pytest.mark.parametrize("which", ["unfinished", "finished"])
def test_a_new_run_refuses_a_folder_holding_a_run(which, request, tmp_path, tiny):
    run = copy_run(request.getfixturevalue(which), tmp_path)
    fragment = ("holds an unfinished run (checkpoint.npz); pass --resume" if which == "unfinished"
                else "already holds a finished run (model.npz); choose another --out")
    run_refused(tmp_path, "train", ["train", *TINY_MLP, "--dataset", tiny, "--out", run],
                fragment)


STALE = [".checkpoint.npz.0123abcd.tmp", ".history.json.deadbeef.tmp", ".model.npz.00000000.tmp"]
NOT_OURS = [".notes.txt.0123abcd.tmp", ".checkpoint.npz.0123ABCD.tmp",
            ".checkpoint.npz.0123abc.tmp", "checkpoint.npz.0123abcd.tmp", "notes.txt"]


def test_resume_removes_the_stale_temporary_files_it_owns_and_nothing_else(unfinished, tmp_path):
    run = copy_run(unfinished, tmp_path)
    for name in STALE + NOT_OURS:
        (run / name).write_text("left by a killed write")
    result = run_cli("train", "--resume", "--quiet", "--no-report", "--out", run, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["config.json", "history.csv", "history.json", "manifest.json", "model.npz", *NOT_OURS])
    assert len(json.loads((run / "history.json").read_text())["loss"]) == 2


def test_a_new_run_removes_stale_temporary_files_of_an_earlier_attempt(tmp_path, tiny):
    """A first attempt killed while writing its first checkpoint leaves config.json and a
    temporary checkpoint: starting over in the same folder works and tidies it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    for name in STALE + NOT_OURS:
        (run / name).write_text("left by a killed write")
    result = run_cli("train", *TINY_MLP, "--epochs", "1", "--dataset", tiny, "--out", run,
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["config.json", "history.csv", "history.json", "manifest.json", "model.npz", *NOT_OURS])


# ====================================================================== messages
# id: (edit of a copy of the finished run, message fragments) for `chainrule report RUN`
REPORT_CASES = {
    "config-truncated": (_truncate_config, ["config.json is not valid JSON: "]),
    "config-lacks-dataset": (_edit_config(dataset=_DELETE),
                             ["config.json has no 'dataset' setting"]),
    "history-corrupt": (_write("history.json", '{"loss": [1.0,'),
                        ["history.json is not valid JSON: Expecting value (line 1, column 15)"]),
    "history-wrong-types": (_write("history.json", '{"loss": ["low"]}'),
                            ["history.json: history 'loss' must be a list of numbers"]),
    "history-an-array": (_write("history.json", "[]"),
                         ["history.json: the history must be an object of per-epoch lists"]),
    "manifest-empty": (_write("manifest.json", ""), ["manifest.json is empty, not JSON"]),
    "manifest-not-utf8": (_write("manifest.json", b"\xff\xfe{"), ["manifest.json is not JSON"]),
    "manifest-wrong-types": (_write("manifest.json", '{"versions": ["1.0"]}'),
                             ["manifest.json: 'versions' must be an object"]),
}


@pytest.mark.parametrize("case", REPORT_CASES)
def test_report_names_the_broken_file_of_a_run(case, finished, tmp_path):
    edit, fragments = REPORT_CASES[case]
    run = copy_run(finished, tmp_path)
    edit(run)
    run_refused(tmp_path, "report", ["report", run], *fragments)


def _disk_full_on(name):
    """An atomic_write that fails with ENOSPC halfway through writing a file called ``name``."""
    real = serialization.atomic_write

    def atomic_write(path, write):
        if path.name != name:
            return real(path, write)

        def half_then_full(f):
            f.write(b"<!doctype html>")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, half_then_full)
    return atomic_write


def test_a_full_disk_at_report_html_says_the_model_is_saved_and_how_to_rebuild(
        tmp_path, tiny, monkeypatch, capsys):
    monkeypatch.setattr(report, "atomic_write", _disk_full_on("report.html"))
    run = tmp_path / "run"
    status = cli.main(["train", *TINY_MLP, "--report", "--epochs", "1", "--dataset", str(tiny),
                       "--out", str(run)])
    err = capsys.readouterr().err
    assert status == 1
    assert err.splitlines() == [
        f"chainrule train: error: could not write {run / 'report.html'}: No space left on "
        f"device; the model is saved in {run / 'model.npz'}; rebuild the report with: "
        f"chainrule report {run}"]
    assert sorted(p.name for p in run.iterdir()) == [
        "config.json", "history.csv", "history.json", "manifest.json", "model.npz"]


def test_a_full_disk_at_model_npz_keeps_the_checkpoint_and_resume_finishes(
        tmp_path, tiny, monkeypatch, capsys):
    run = tmp_path / "run"
    argv = ["train", *TINY_MLP, "--epochs", "1", "--dataset", str(tiny), "--out", str(run)]
    with monkeypatch.context() as m:
        m.setattr(serialization, "atomic_write", _disk_full_on("model.npz"))
        assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert "could not save the finished run: [Errno 28] No space left on device" in err
    assert f"chainrule train --resume --out {run}" in err
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint.npz", "config.json", "history.csv", "history.json"]
    assert cli.main(["train", "--resume", "--quiet", "--no-report", "--out", str(run)]) == 0
    assert (run / "model.npz").is_file() and not (run / "checkpoint.npz").exists()


def _blank(tmp_path, kind):
    size, colour = {"white": ((60, 60), 255), "black": ((60, 60), 0), "1x1": ((1, 1), 128)}[kind]
    path = tmp_path / f"{kind}.png"
    Image.new("L", size, colour).save(path)
    return path


def _stroke(tmp_path):
    image = Image.new("L", (60, 60), 255)
    ImageDraw.Draw(image).line([(30, 10), (30, 50)], fill=0, width=6)
    image.save(tmp_path / "one.png")
    return tmp_path / "one.png"


def test_predict_says_no_ink_found_on_blank_pictures(finished, tmp_path):
    blanks = [_blank(tmp_path, kind) for kind in ("white", "black", "1x1")]
    ink = _stroke(tmp_path)
    result = run_cli("predict", finished / "model.npz", *blanks, ink, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    assert all("no ink found" in line for line in lines[:3]), lines
    assert "no ink found" not in lines[3]

    result = run_cli("predict", finished / "model.npz", *blanks, ink, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [r["empty"] for r in json.loads(result.stdout)] == [True, True, True, False]


def test_running_out_of_memory_is_one_line(tmp_path, tiny, monkeypatch, capsys):
    """Far beyond --hidden's bound, model size is the machine's limit: no traceback either."""
    def too_big(**kwargs):
        raise MemoryError("Unable to allocate 292. GiB for an array with shape (784, 100000000)")

    monkeypatch.setattr(cli.models, "mlp", too_big)
    status = cli.main(["train", *TINY_MLP, "--dataset", str(tiny), "--out", str(tmp_path / "r")])
    assert status == 1
    assert capsys.readouterr().err == (
        "chainrule train: error: out of memory: Unable to allocate 292. GiB for an array with "
        "shape (784, 100000000)\n")
    assert not (tmp_path / "r").exists()


def test_evaluate_reports_accuracy_for_a_model_saved_without_metrics(finished, tmp_path, tiny):
    """It was a KeyError traceback: the accuracy came only from the compiled metrics."""
    model = load_model(finished / "model.npz")
    model.compile("adam", model.loss)
    model.save(tmp_path / "no-metrics.npz")
    result = run_cli("evaluate", tmp_path / "no-metrics.npz", "--dataset", tiny, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout
