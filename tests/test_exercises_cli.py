"""``chainrule exercise …``: exit statuses, one-line errors, the progress file.

Most commands run in-process through ``chainrule.cli.main`` (the grading still forks its own
child); one test runs ``python -m chainrule`` as a user would, with a template written by
``chainrule exercise template`` and redirected to a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from chainrule import cli, exercises


@pytest.fixture(autouse=True)
def data_home(tmp_path, monkeypatch):
    """Progress goes to a temporary XDG_DATA_HOME, never the user's."""
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["exercise", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def progress_file(home) -> dict:
    return json.loads((home / "chainrule" / "progress.json").read_text())["exercises"]


def test_list_shows_every_exercise_in_order(capsys):
    code, out, err = run(capsys, "list")
    assert code == 0 and err == ""
    rows = out.splitlines()[:len(exercises.names())]
    assert [row.split()[0] for row in rows] == [str(i) for i in range(1, 17)]
    assert [row.split()[1] for row in rows] == exercises.names()
    assert "✓" not in out and "0 of 16 passed" in out


def test_template_check_and_progress(capsys, tmp_path, data_home):
    mine = tmp_path / "mine.py"
    code, out, _ = run(capsys, "template", "dense")
    assert code == 0 and "def dense_backward(x, W, b, grad_z):" in out
    mine.write_text(out)
    code, out, err = run(capsys, "check", "dense", mine)
    assert code == 1 and err == ""
    assert "exception: your code raised an exception" in out and "NotImplementedError" in out
    assert progress_file(data_home)["dense"]["last_ok"] is False

    code, out, _ = run(capsys, "solution", "dense")
    assert code == 0 and "grad_z.sum(axis=0)" in out
    mine.write_text(out)
    code, out, err = run(capsys, "check", "dense", mine)
    assert code == 0 and err == "" and out.startswith("dense: passed")
    entry = progress_file(data_home)["dense"]
    assert entry["last_ok"] is True and entry["passed"]

    code, out, _ = run(capsys, "list")
    dense_row = next(row for row in out.splitlines() if " dense " in row)
    assert dense_row.lstrip().startswith("✓") and "1 of 16 passed" in out
    assert str(data_home / "chainrule" / "progress.json") in out

    mine.write_text(mine.read_text().replace("grad_z.sum(axis=0)", "grad_z"))
    code, out, _ = run(capsys, "check", "dense", mine)
    assert code == 1 and "missing_sum" in out
    entry_after = progress_file(data_home)["dense"]
    assert entry_after["passed"] == entry["passed"] and entry_after["last_ok"] is False


def test_reset(capsys, tmp_path, data_home):
    exercises.check("relu", exercises.solutions, record=True)
    code, out, _ = run(capsys, "list", "--reset")
    assert code == 0 and "0 of 16 passed" in out
    assert not (data_home / "chainrule" / "progress.json").exists()
    exercises.check("relu", exercises.solutions, record=True)
    code, out, _ = run(capsys, "reset")
    assert code == 0 and "progress forgotten" in out
    code, out, _ = run(capsys, "reset")
    assert code == 0 and "no progress to forget" in out


def test_unreadable_progress_counts_as_none(capsys, data_home):
    (data_home / "chainrule").mkdir(parents=True)
    (data_home / "chainrule" / "progress.json").write_text("{not json")
    code, out, _ = run(capsys, "list")
    assert code == 0 and "0 of 16 passed" in out


@pytest.mark.parametrize(("source", "message"), [
    ("import numpy as np\n\ndef dense_backward(x, W, b, grad_z)\n    return x\n",
     "mine.py does not import: SyntaxError: expected ':' (line 3)"),
    ("import nump\n", "mine.py does not import: ModuleNotFoundError: No module named 'nump' "
     "(line 1)"),
    ("def dense_forward(x):\n    return x\n",
     "mine.py defines no dense_backward (the template's name; see chainrule exercise "
     "template dense)"),
])
def test_files_that_cannot_be_graded_get_one_line(capsys, tmp_path, source, message):
    mine = tmp_path / "mine.py"
    mine.write_text(source)
    code, out, err = run(capsys, "check", "dense", mine)
    assert code == 1 and out == ""
    assert err == f"chainrule exercise check: error: {message}\n"


def test_errors_are_one_line(capsys, tmp_path):
    code, out, err = run(capsys, "check", "dense", tmp_path / "missing.py")
    assert code == 1 and err.count("\n") == 1 and "missing.py: no such file" in err
    code, out, err = run(capsys, "show", "dnse")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("chainrule exercise show: error: unknown exercise 'dnse'; did you "
                          "mean 'dense'?")
    code, out, err = run(capsys, "hint", "dense", "--level", "4")
    assert code == 1 and err == ("chainrule exercise hint: error: dense has 3 hints: level 1 "
                                 "to 3, got 4\n")
    code, out, err = run(capsys, "check", "dense", tmp_path / "missing.py", "--time-limit", "0")
    assert code == 1 and err.count("\n") == 1


def test_show_hint_solution(capsys):
    code, out, _ = run(capsys, "show", "softmax")
    assert code == 0 and out.startswith("softmax: ")
    assert "diag(s) − s sᵀ" in out and "chainrule exercise template softmax > mine.py" in out
    code, out, _ = run(capsys, "hint", "softmax")
    assert code == 0 and out.startswith("hint 1 of 3 for softmax:")
    code, out, _ = run(capsys, "hint", "softmax", "--level", "3")
    assert code == 0 and "keepdims=True" in out
    code, out, _ = run(capsys, "solution", "dense_layer")
    assert code == 0 and "class DenseLayer:" in out and "def update(self, lr):" in out


def test_time_limit(capsys, tmp_path):
    mine = tmp_path / "mine.py"
    mine.write_text("def dense_backward(x, W, b, grad_z):\n    while True:\n        pass\n")
    code, out, _ = run(capsys, "check", "dense", mine, "--time-limit", "0.3")
    assert code == 1 and "timeout: your code ran longer than the time limit" in out
    assert "stopped after 0.3 s during case N=1, D=4, M=3" in out


def test_as_a_user_runs_it(tmp_path, data_home):
    env = {**os.environ, "XDG_DATA_HOME": str(data_home)}

    def chainrule(*argv, stdout=subprocess.PIPE):
        return subprocess.run([sys.executable, "-m", "chainrule", "exercise", *map(str, argv)],
                              cwd=tmp_path, env=env, stdout=stdout, stderr=subprocess.PIPE,
                              text=True, timeout=120)

    with open(tmp_path / "mine.py", "w") as f:
        assert chainrule("template", "relu", stdout=f).returncode == 0
    done = chainrule("check", "relu", "mine.py")
    assert done.returncode == 1 and "relu_forward raised NotImplementedError" in done.stdout
    assert 'mine.py", line' in done.stdout and "raise NotImplementedError" in done.stdout
    (tmp_path / "mine.py").write_text(exercises.solution("relu"))
    done = chainrule("check", "relu", "mine.py")
    assert done.returncode == 0 and done.stdout.startswith("relu: passed"), done.stderr
    assert progress_file(data_home)["relu"]["passed"]
