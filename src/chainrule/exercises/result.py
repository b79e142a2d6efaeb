"""Result: what the grader found, and the report a learner reads.

Per output, each failing case proposes candidate codes (``compare.explain``); the code kept is
the most specific one that explains *every* failing case (a bias gradient of shape (1, M) at
N = 1 could be unsummed or reshaped; at N = 3 only one of the two still fits). When no code
explains them all, each case's best one is kept.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field

from .codes import CODES, NOTES, rank
from .learner import Finding
from .runner import CaseOutcome, FDReport

#: ``slow``: the learner's time against the reference's on the timing case, and the least time
#: that counts (below it, timer noise and call overhead decide the ratio).
SLOW_RATIO = 10.0
SLOW_SECONDS = 2e-3
#: Line width of the report's sentences.
WIDTH = 96


@dataclass
class OutputCheck:
    """One output over all cases: the first failing case's comparison (the worst one if all
    passed). ``learner`` and ``reference`` are the values at ``worst_index``."""

    name: str
    ok: bool
    shape: tuple | None = None
    got_shape: tuple | None = None
    max_rel_error: float = math.nan
    worst_index: tuple | None = None
    learner: float | None = None
    reference: float | None = None
    case: str | None = None
    note: str = ""


@dataclass
class Result:
    """The grade of one answer to one exercise.

    Attributes:
        ok: every output of every case equals the reference, nothing raised, ran over time or
            changed its inputs.
        outputs: an OutputCheck per output.
        diagnosis: the codes of what is wrong (empty when ok), in the vocabulary's order.
        notes: codes that go with a passing answer (``slow``).
        findings: one per problem: code, detail, case, and a traceback for ``exception``.
        cases: the labels of the cases that ran.
        fd: central differences of the learner's own forward on the first failing case.
        timing: (learner's seconds, reference's seconds) on the timing case, when measured.
    """

    exercise: str
    ok: bool
    outputs: list[OutputCheck] = field(default_factory=list)
    diagnosis: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    cases: list[str] = field(default_factory=list)
    fd: FDReport | None = None
    timing: tuple[float, float] | None = None

    @property
    def codes(self) -> list[str]:
        """``diagnosis`` and ``notes`` together."""
        return self.diagnosis + self.notes

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return format_report(self)


# ---------------------------------------------------------------------- aggregation
def build(exercise, messages: list, time_limit: float) -> Result:
    """The Result of one grading from the runner's messages."""
    outcomes = [m[1] for m in messages if m[0] == "case"]
    fd = next((m[1] for m in messages if m[0] == "fd"), None)
    findings: list[Finding] = []
    for outcome in outcomes:
        findings += outcome.findings
    for message in messages:
        if message[0] == "timeout":
            findings.append(Finding("timeout", f"stopped after {time_limit:g} s during "
                                    f"{message[1]}", None))
        elif message[0] == "died":
            findings.append(Finding(
                "exception", f"your code ended the grading process (exit code {message[2]}) "
                f"during {message[1]}", None))
        elif message[0] == "crash":
            findings.append(Finding("exception", "the grader itself failed; please report it",
                                    None, message[1]))
    findings += _output_findings(exercise, outcomes, downstream=False)
    if not findings:
        findings += _output_findings(exercise, outcomes, downstream=True)
    codes = {f.code for f in findings}
    findings = _dedupe([f for f in findings if not codes.intersection(f.unless)])
    findings.sort(key=lambda f: rank(f.code))
    diagnosis = list(dict.fromkeys(f.code for f in findings))
    ok = not diagnosis and bool(outcomes)
    result = Result(exercise.name, ok, _output_checks(exercise, outcomes), diagnosis,
                    findings=findings, cases=[o.label for o in outcomes], fd=fd)
    timed = next((o for o in outcomes if o.timing is not None), None)
    if ok and timed is not None:
        result.timing = learner, reference = timed.timing
        if learner >= SLOW_SECONDS and learner >= SLOW_RATIO * reference:
            result.notes.append("slow")
            result.findings.append(Finding(
                "slow", f"{learner * 1e3:.1f} ms on case {timed.label}, the reference "
                f"{reference * 1e3:.2f} ms: {learner / reference:.0f}× slower", timed.label))
    assert not set(result.diagnosis) & set(NOTES)
    return result


def _output_findings(exercise, outcomes: list[CaseOutcome], downstream: bool) -> list[Finding]:
    found = []
    for out in exercise.outputs:
        if out.downstream != downstream:
            continue
        failing = [(o, o.candidates[out.name]) for o in outcomes if out.name in o.candidates]
        # A formula wrong at moderate inputs often overflows at large ones as well: the large
        # cases then say nothing more, and ``unstable`` is for failures at large inputs only.
        failing = [f for f in failing if not f[0].large] or failing
        if not failing:
            continue
        common = set.intersection(*({c.key for c in cands} for _, cands in failing))
        if common:
            keys = [min(common, key=_specific)]
        else:
            # No one explanation: each case's own, but a factor that changes from case to
            # case is not "off by a constant factor".
            keys = list(dict.fromkeys(
                min((c.key for c in cands if c.code != "scale"), key=_specific)
                for _, cands in failing))
        for key in keys:
            outcome, cand = next((o, c) for o, cands in failing for c in cands if c.key == key)
            found.append(Finding(cand.code, cand.detail, outcome.label))
    return found


def _specific(key: tuple) -> tuple:
    """Sort key: the vocabulary's order, then a known wrong answer before a generic one."""
    return rank(key[0]), len(key) == 1, str(key)


def _dedupe(findings: list[Finding]) -> list[Finding]:
    """One finding per (code, detail): the same exception on every case is reported once, with
    the first case's traceback."""
    seen: dict[tuple, Finding] = {}
    counts: dict[tuple, int] = {}
    for f in findings:
        key = (f.code, f.detail)
        counts[key] = counts.get(key, 0) + 1
        seen.setdefault(key, f)
    out = []
    for key, f in seen.items():
        if counts[key] > 1 and f.case is not None:
            more = counts[key] - 1
            f = Finding(f.code, f.detail, f"{f.case} ({more} more time{'s' * (more > 1)})",
                        f.text, f.unless)
        out.append(f)
    return out


def _output_checks(exercise, outcomes: list[CaseOutcome]) -> list[OutputCheck]:
    checks = []
    for out in exercise.outputs:
        compared = [(o.label, o.comparisons[out.name]) for o in outcomes
                    if out.name in o.comparisons]
        if not compared:
            checks.append(OutputCheck(out.name, False, note="not compared"))
            continue
        failing = [(label, c) for label, c in compared if not c.ok]
        label, c = failing[0] if failing else max(
            compared, key=lambda lc: -1.0 if math.isnan(lc[1].max_rel_error)
            else lc[1].max_rel_error)
        checks.append(OutputCheck(out.name, not failing, c.expected_shape, c.got_shape,
                                  c.max_rel_error, c.worst_index, c.learner, c.reference,
                                  label, c.note))
    return checks


# ---------------------------------------------------------------------- the report
def _table(rows: list[tuple]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) + 2 for i in range(len(rows[0]))]
    return ["  " + "".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ",
                         break_on_hyphens=False, break_long_words=False)


def _wrap_with_case(text: str, case: str | None, indent: str) -> list[str]:
    """``text`` wrapped, then "[case …]" kept whole: on the last line if it fits."""
    lines = _wrap(text, indent)
    if case:
        tag = f"[case {case}]"
        if len(lines[-1]) + 1 + len(tag) <= WIDTH + len(indent):
            lines[-1] += " " + tag
        else:
            lines.append(indent + "  " + tag)
    return lines


def _num(value) -> str:
    return "-" if value is None else f"{value:.6g}"


def format_report(result: Result) -> str:
    """The readable report: a verdict, a row per output, the diagnosis in words with hints."""
    n_cases = len(result.cases)
    wrong = [o for o in result.outputs if not o.ok and o.note != "not compared"]
    if result.ok:
        head = (f"{result.exercise}: passed — every output equals the reference on "
                f"{n_cases} case{'s' if n_cases != 1 else ''}")
    elif {"exception", "timeout"} & set(result.diagnosis):
        head = f"{result.exercise}: FAILED"
    elif wrong:
        head = (f"{result.exercise}: FAILED — {len(wrong)} of {len(result.outputs)} outputs "
                "wrong")
    else:
        head = f"{result.exercise}: FAILED — the values are right, but see the diagnosis"
    lines = [head]
    if result.cases:
        lines.append(f"  cases: {' · '.join(result.cases)}")
    rows = [("output", "result", "max rel err", "worst at", "yours", "reference", "case")]
    for o in result.outputs:
        if o.note == "not compared":
            rows.append((o.name, "-", "", "", "", "", "not compared"))
        elif o.ok:
            rows.append((o.name, "ok", f"{o.max_rel_error:.1e}", "", "", "", ""))
        elif o.got_shape != o.shape:
            yours = "not an array" if o.got_shape is None else f"shape {o.got_shape}"
            rows.append((o.name, "FAIL", "-", "-", yours, f"shape {o.shape}", o.case or ""))
        else:
            worst = "-" if o.worst_index in (None, ()) else str(o.worst_index)
            rows.append((o.name, "FAIL", f"{o.max_rel_error:.1e}", worst, _num(o.learner),
                         _num(o.reference), o.case or ""))
    if any(o.note != "not compared" for o in result.outputs):
        lines += [""] + _table(rows)
    failures = [f for f in result.findings if f.code not in NOTES]
    if failures:
        lines += ["", "diagnosis"]
        for code in result.diagnosis:
            lines.append(f"  {code}: {CODES[code][0]}")
            for f in (f for f in failures if f.code == code):
                lines += _wrap_with_case(f.detail, f.case, "    ")
                lines += [f"      {line}" for line in f.text.splitlines()]
            lines += _wrap(f"hint: {CODES[code][1]}", "    ")
    notes = [f for f in result.findings if f.code in NOTES]
    if notes:
        lines += ["", "note"]
        for f in notes:
            lines += [f"  {f.code}: {CODES[f.code][0]}", *_wrap(f.detail, "    "),
                      *_wrap(f"hint: {CODES[f.code][1]}", "    ")]
    if result.fd is not None and (result.fd.checks or result.fd.notes):
        lines += ["", f"central differences of your own forward (case {result.fd.case})"]
        for c in result.fd.checks:
            if c.ok:
                lines.append(f"  {c.output}: agrees with them on {c.checked} entries of "
                             f"{c.wrt} (max rel error {c.max_rel_error:.1e})")
            else:
                lines.append(f"  {c.output}: disagrees with them at {c.worst_index}: yours "
                             f"{c.analytic:.6g}, numeric {c.numeric:.6g}")
        lines += [f"  {note}" for note in result.fd.notes]
        checked = {c.output for c in result.fd.checks}
        forward_wrong = any(not o.ok for o in result.outputs if o.name not in checked)
        if result.fd.checks and not all(c.ok for c in result.fd.checks):
            lines += _wrap("→ your backward is not the derivative of your forward.", "  ")
        elif result.fd.checks and forward_wrong:
            lines += _wrap("→ your backward is consistent with your forward: fix the forward "
                           "first.", "  ")
        elif result.fd.checks:
            lines += _wrap("→ your backward agrees with them (at a kink either side's "
                           "derivative does): the diagnosis says how it differs from the "
                           "reference.", "  ")
    return "\n".join(lines)
