"""Run a learner's code on an exercise's cases, in a child process that can be stopped.

The grading runs in a child made with ``multiprocessing.get_context("fork")``: the child is a
copy of this process, so functions and classes defined in a notebook or a script are there
without pickling, and nothing the learner's code does (an endless loop, ``sys.exit``, a crash)
reaches the caller. The child reports each step as it starts (loading the file, a case, the
central differences, the timing) and its result when done; a step that takes longer than the
time limit is stopped by killing the child.

Where fork is unavailable (Windows; macOS where it is unsafe) the steps run in this process
instead: exceptions are still caught and reported, and a step found to have run past the limit
is reported as a timeout once it returns, but code that never returns cannot be stopped there.

Inside a step the learner's functions are called through :class:`Ctx`, which passes copies of
the inputs, notices inputs changed in place, times the learner's own calls, and turns an
exception into :class:`LearnerError` with the learner's frames of the traceback only.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import re
import sys
import time
import traceback
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..gradcheck import gradcheck_function
from .base import Variant
from .compare import Comparison, as_array, compare, explain

#: The grader's own files: their frames are left out of the learner's tracebacks.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
#: Seconds of the learner's forward the central differences may take.
FD_SECONDS = 2.0
#: Entries checked by central differences per gradient, at most.
FD_ENTRIES = 12
#: Timing: the learner's code runs again until it has taken this long (three runs at most).
TIMING_SECONDS = 1.0


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


@dataclass
class FDCheck:
    """The learner's gradient against central differences of the learner's own forward."""

    output: str
    wrt: str
    ok: bool
    checked: int
    max_rel_error: float
    worst_index: tuple | None
    analytic: float
    numeric: float


@dataclass
class FDReport:
    case: str
    checks: list = field(default_factory=list)
    notes: list = field(default_factory=list)


@dataclass
class CaseOutcome:
    """What one case gave: comparisons per output, candidates for the failing ones, findings."""

    label: str
    comparisons: dict = field(default_factory=dict)
    candidates: dict = field(default_factory=dict)
    findings: list = field(default_factory=list)
    large: bool = False
    learner_seconds: float = 0.0
    timing: tuple[float, float] | None = None

    @property
    def ok(self) -> bool:
        return not self.findings and all(c.ok for c in self.comparisons.values())


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


# ---------------------------------------------------------------------- the steps
def grade_case(exercise, entries: dict, case) -> tuple[CaseOutcome, dict]:
    """Run one case; returns its outcome and the learner's raw outputs."""
    outcome = CaseOutcome(case.label, large=case.large)
    reference = exercise.reference(case)
    ctx = Ctx(entries)
    outputs: dict = ctx.out
    try:
        outputs = exercise.run(ctx, case)
    except LearnerError as exc:
        outcome.findings.append(Finding("exception", f"{exc.where} raised {exc.kind}",
                                        case.label, exc.text))
    except Problem as exc:
        outcome.findings.append(Finding(exc.code, exc.detail, case.label))
    except Exception as exc:  # what the learner returned broke the runner itself
        outcome.findings.append(Finding(
            "exception", f"the grader could not use what your code returned "
            f"({type(exc).__name__}: {exc})", case.label))
    for f in ctx.findings:
        f.case = case.label
        outcome.findings.append(f)
    variants = None
    for out in exercise.outputs:
        if out.name not in reference or out.name not in outputs:
            continue
        cmp, ours = compare(out.name, outputs[out.name], reference[out.name], out.atol)
        outcome.comparisons[out.name] = cmp
        if not cmp.ok:
            if variants is None:
                variants = list(ctx.variants)
                if exercise.variants is not None:
                    variants += exercise.variants(case, reference)
            outcome.candidates[out.name] = explain(
                cmp, ours, reference[out.name], output=out, case=case, variants=variants,
                inputs=case.inputs)
    outcome.learner_seconds = ctx.elapsed
    return outcome, outputs


def _time(exercise, entries, case, first: float) -> tuple[float, float]:
    """(learner's best time, reference's best time) on ``case``, seconds."""
    best, spent, runs = first, first, 1
    while spent < TIMING_SECONDS and runs < 3:
        ctx = Ctx(entries)
        try:
            exercise.run(ctx, case)
        except (LearnerError, Problem):
            break
        best, spent, runs = min(best, ctx.elapsed), spent + ctx.elapsed, runs + 1
    reference = []
    for _ in range(3):
        started = time.perf_counter()
        exercise.reference(case)
        reference.append(time.perf_counter() - started)
    return best, min(reference)


def central_differences(exercise, entries, case, outputs) -> FDReport:
    """Each gradient the learner returned, against central differences of the learner's forward."""
    report = FDReport(case.label)
    for out in exercise.outputs:
        if out.gradient_of is None or out.name not in outputs:
            continue
        analytic, _ = as_array(outputs[out.name])
        x = np.asarray(case.inputs[out.gradient_of], dtype=np.float64)
        if analytic is None or analytic.shape != x.shape:
            continue
        ctx = Ctx(entries)

        def f(theta, wrt=out.gradient_of, ctx=ctx):
            value = exercise.fd_value(ctx, {**case.inputs, wrt: theta.copy()})
            value, _ = as_array(value)
            if value is None or value.size != 1:
                raise Problem("shape", "the forward's output could not be summed to a number")
            return float(value.reshape(()))

        try:
            started = time.perf_counter()
            f(x.copy())
            per_call = time.perf_counter() - started
            n = min(FD_ENTRIES, int(FD_SECONDS / max(40 * per_call, 1e-9)))
            if n < 3:
                report.notes.append(f"{out.name}: skipped, your forward takes "
                                    f"{per_call * 1e3:.0f} ms a call")
                continue
            entry = gradcheck_function(f, x, analytic, name=out.name, max_entries=n)
        except (LearnerError, Problem) as exc:
            report.notes.append(f"{out.name}: skipped, {exc}")
            continue
        report.checks.append(FDCheck(out.name, out.gradient_of, entry.failed == 0,
                                     entry.checked, entry.max_rel_error, entry.worst_index,
                                     entry.analytic, entry.numeric))
    return report


def _wants_fd(exercise, outcome: CaseOutcome) -> bool:
    if exercise.fd_value is None or outcome.large:
        return False
    for out in exercise.outputs:
        cmp: Comparison | None = outcome.comparisons.get(out.name)
        if out.gradient_of and cmp is not None and not cmp.ok \
                and cmp.got_shape == cmp.expected_shape:
            return True
    return False


def steps(exercise, solution, seed: int):
    """The grading as messages: ("step", what starts), ("case", CaseOutcome), ("fd", FDReport),
    ("load_error", message) and ("done", None)."""
    if isinstance(solution, Path):
        yield ("step", f"loading {solution.name}")
        try:
            solution = load_file(exercise, solution)
        except SolutionError as exc:
            yield ("load_error", str(exc))
            return
    # Overflow in the learner's exp is what ``unstable`` reports, not a warning to print.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = exercise.cases(np.random.default_rng(seed))
        all_ok, fd_done = True, False
        for case in cases:
            if case.timing and not all_ok:
                break
            yield ("step", f"case {case.label}")
            outcome, outputs = grade_case(exercise, solution, case)
            if case.timing and outcome.ok:
                outcome.timing = _time(exercise, solution, case, outcome.learner_seconds)
            all_ok = all_ok and outcome.ok
            yield ("case", outcome)
            if not fd_done and _wants_fd(exercise, outcome):
                fd_done = True
                yield ("step", f"central differences on case {case.label}")
                yield ("fd", central_differences(exercise, solution, case, outputs))
    yield ("done", None)


def _child(exercise, solution, seed, conn) -> None:
    try:
        for message in steps(exercise, solution, seed):
            conn.send(message)
    except BaseException:
        conn.send(("crash", traceback.format_exc()))
    finally:
        conn.close()


def fork_available() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def run(exercise, solution, *, time_limit: float, seed: int = 0) -> list:
    """All messages of the grading, plus ("timeout", step) or ("died", step, exit code)."""
    if not fork_available():
        return _run_here(exercise, solution, time_limit, seed)
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(exercise, solution, seed, send), daemon=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork in a process with threads
        process.start()
    send.close()
    messages, current = [], "starting"
    deadline = time.monotonic() + time_limit
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not receive.poll(remaining):
                messages.append(("timeout", current))
                break
            try:
                message = receive.recv()
            except EOFError:
                process.join(5)
                messages.append(("died", current, process.exitcode))
                break
            if message[0] == "step":
                current, deadline = message[1], time.monotonic() + time_limit
                continue
            messages.append(message)
            if message[0] in ("done", "load_error", "crash"):
                break
    finally:
        receive.close()
        if process.is_alive():
            process.kill()
        process.join()
    return messages


def _run_here(exercise, solution, time_limit, seed) -> list:
    """The fallback without fork: the same steps in this process, a timeout noticed late."""
    messages, current, started = [], "starting", time.monotonic()
    grading = steps(exercise, solution, seed)
    try:
        for message in grading:
            if time.monotonic() - started > time_limit:
                messages.append(("timeout", current))
                break
            if message[0] == "step":
                current, started = message[1], time.monotonic()
                continue
            messages.append(message)
    finally:
        grading.close()  # leaves NumPy's error state and the warning filters as they were
    return messages
