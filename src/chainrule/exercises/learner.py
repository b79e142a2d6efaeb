"""The learner's code as the grader calls it: resolved, loaded, called through Ctx.

:class:`Ctx` passes copies of the inputs, notices an input changed in place, times the
learner's own calls, and turns an exception into :class:`LearnerError` with the learner's
frames of the traceback only. :func:`resolve` and :func:`load_file` find the definitions an
exercise needs in whatever the learner handed over.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import time
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import Variant

#: The grader's own files: their frames are left out of the learner's tracebacks.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class SolutionError(ValueError):
    """The solution cannot be graded at all: no such file, it does not import, or it lacks a
    function the exercise needs. The message is one line."""


class LearnerError(Exception):
    """The learner's code raised; ``text`` is the traceback through the learner's frames."""

    def __init__(self, where: str, exc: BaseException):
        super().__init__(f"{where} raised {type(exc).__name__}")
        self.where = where
        self.kind = type(exc).__name__
        self.text = learner_traceback(exc)


class Problem(Exception):
    """An answer the grader cannot use (three values where two were asked): a diagnosis."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass
class Finding:
    """One diagnosed problem: its code, what exactly, on which case.

    ``unless``: codes that explain this finding better; it is dropped when one of them is
    found too (W changed by backward is ``mutates_input`` unless it made ``stale_weights``).
    """

    code: str
    detail: str
    case: str | None = None
    text: str = ""
    unless: tuple[str, ...] = ()


def learner_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` without the grader's frames."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not os.path.abspath(f.filename).startswith(PACKAGE_DIR + os.sep)]
    lines = traceback.format_list(frames) + traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip()


def _copy(value):
    return value.copy() if isinstance(value, np.ndarray) else value


def _unchanged(before: np.ndarray, after) -> bool:
    return (isinstance(after, np.ndarray) and after.shape == before.shape
            and np.array_equal(before, after, equal_nan=before.dtype.kind == "f"))


def _describe(value) -> str:
    if isinstance(value, tuple | list):
        return f"{len(value)} values"
    if isinstance(value, np.ndarray):
        return f"one array of shape {value.shape}"
    return f"a {type(value).__name__}"


class Ctx:
    """The learner's code, as one case's runner sees it.

    ``call(name, **args)`` calls the learner's function ``name`` with copies of ``args`` (in
    order, positionally) and records an argument changed in place as ``mutates_input``; an
    argument named ``cache`` (what the learner's forward returned) passes as it is.
    """

    def __init__(self, entries: dict):
        self.entries = entries
        #: Outputs a runner has already got: still compared when a later call raises.
        self.out: dict = {}
        self.findings: list[Finding] = []
        self.variants: list[Variant] = []
        self.elapsed = 0.0

    def call(self, name: str, /, **args):
        return self.invoke(name, self.entries[name], args)

    def method(self, obj, name: str, /, **args):
        label = f"{type(obj).__name__}.{name}"
        fn = getattr(obj, name, None)
        if not callable(fn):
            raise Problem("exception", f"{type(obj).__name__} has no method {name}()")
        return self.invoke(label, fn, args)

    def invoke(self, label: str, fn, args: dict):
        # The cache is the learner's own (from their forward): passed as is, never checked.
        copies = {k: v if k == "cache" else _copy(v) for k, v in args.items()}
        started = time.perf_counter()
        try:
            out = fn(*copies.values())
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit included: the learner's code must not end us
            raise LearnerError(label, exc) from None
        finally:
            self.elapsed += time.perf_counter() - started
        for k, v in args.items():
            if k != "cache" and isinstance(v, np.ndarray) and not _unchanged(v, copies[k]):
                self.findings.append(Finding("mutates_input", f"{label} changed {k} in place"))
        return out

    def unpack(self, value, names: tuple[str, ...], where: str) -> tuple:
        """``value`` as len(names) values; a single name takes the value itself."""
        if len(names) == 1:
            return (value,)
        if isinstance(value, tuple | list) and len(value) == len(names):
            return tuple(value)
        raise Problem("shape", f"{where} returned {_describe(value)}, expected {len(names)}: "
                      f"({', '.join(names)})")

    def attribute(self, obj, name: str, shape: tuple):
        """A copy of ``obj.name`` (an array the learner's object keeps, such as ``grad_W``)."""
        if not hasattr(obj, name):
            raise Problem("shape", f"{type(obj).__name__} has no attribute {name} (expected an "
                          f"array of shape {shape})")
        return _copy(getattr(obj, name))


# ---------------------------------------------------------------------- solutions
def resolve(exercise, solution):
    """The learner's entries as {name: callable}, or the Path of a file to load.

    Accepts a callable (for an exercise with one entry), a tuple of callables in the entries'
    order, a dict (``globals()``), a module or any object with the names as attributes, or a
    path to a .py file.

    Raises:
        SolutionError: for a missing file, or an object without the entries.
    """
    entries = exercise.entries
    if isinstance(solution, str | os.PathLike):
        path = Path(solution).expanduser()
        if not path.is_file():
            raise SolutionError(f"{path}: no such file")
        return path.resolve()
    needs = " and ".join(entries)
    if isinstance(solution, tuple | list):
        if len(solution) != len(entries):
            raise SolutionError(f"{exercise.name} needs {len(entries)} definitions ({needs}), "
                                f"got {len(solution)}")
        found = dict(zip(entries, solution, strict=True))
    elif isinstance(solution, dict):
        found = {name: solution.get(name) for name in entries}
    elif callable(solution) and not isinstance(solution, types.ModuleType):
        if len(entries) != 1:
            raise SolutionError(
                f"{exercise.name} needs {needs}: pass them as a tuple ({', '.join(entries)}), "
                "a dict such as globals(), a module, or the path of a file")
        found = {entries[0]: solution}
    else:
        found = {name: getattr(solution, name, None) for name in entries}
    return _check_entries(exercise, found, "the solution")


def _check_entries(exercise, found: dict, where: str) -> dict:
    for name, value in found.items():
        if value is None:
            raise SolutionError(f"{where} defines no {name} (the template's name; see chainrule "
                                f"exercise template {exercise.name})")
        if not callable(value):
            raise SolutionError(f"{where}: {name} is a {type(value).__name__}, not a function "
                                "or class")
    return found


def load_file(exercise, path: Path) -> dict:
    """Import the learner's file and return its entries.

    Raises:
        SolutionError: one line naming the error and its line for a file that does not import.
    """
    name = "chainrule_learner_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise SolutionError(f"{path.name} does not import: SyntaxError: {exc.msg} "
                            f"(line {exc.lineno})") from None
    except BaseException as exc:  # the learner's top-level code, whatever it raises
        lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__)
                 if os.path.abspath(f.filename) == str(path)]
        where = f" (line {lines[-1]})" if lines else ""
        message = " ".join(str(exc).split())
        raise SolutionError(f"{path.name} does not import: {type(exc).__name__}"
                            f"{': ' + message if message else ''}{where}") from None
    found = {entry: getattr(module, entry, None) for entry in exercise.entries}
    return _check_entries(exercise, found, path.name)
