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

Inside a step the learner's functions are called through ``learner.Ctx``.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..gradcheck import gradcheck_function
from .compare import Comparison, as_array, compare, explain
from .learner import Ctx, Finding, LearnerError, Problem, SolutionError, load_file

#: Seconds of the learner's forward the central differences may take.
FD_SECONDS = 2.0
#: Entries checked by central differences per gradient, at most.
FD_ENTRIES = 12
#: Timing: the learner's code runs again until it has taken this long (three runs at most).
TIMING_SECONDS = 1.0


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
