"""Exercise, Case, Output and the registry that keeps the exercises in course order.

An exercise is its text (statement, hints), the names the learner defines (``entries``), and
three functions the grader calls: ``cases(rng)`` draws the inputs, ``run(ctx, case)`` calls the
learner's code through ``ctx`` and returns its outputs, ``reference(case)`` computes the same
outputs with chainrule's own layers, losses and optimizers in float64. The template shown to
the learner and the solution printed on request both come from ``solutions.py``: the template is
the solution's signatures and docstrings with ``raise NotImplementedError`` as the body.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import solutions


@dataclass(frozen=True)
class Output:
    """One array (or number) the learner returns, and how it is compared.

    Attributes:
        name: as the statement calls it (``grad_W``).
        atol: compare within this absolute tolerance instead of to rounding (the converged x of
            chain_rule_scalar must be within 1e-3 of 4, not equal to the reference's last step).
        downstream: a consequence of the other outputs (a weight after update() is wrong when
            its gradient is): its failure is reported only when nothing else fails.
        baseline: an input the output is an update of (Adam's param): factors and signs are
            judged on the change from it.
        reduction: (input name, axes): the output is that input summed over those axes, as a
            bias gradient is grad_z summed over the batch (for ``missing_sum``).
        gradient_of: the input this output is the gradient of, for the central differences of
            the learner's own forward.
        plain: compared only, no pattern looked for (a converged value off by 6% is not "off
            by a constant factor").
    """

    name: str
    atol: float | None = None
    plain: bool = False
    downstream: bool = False
    baseline: str | None = None
    reduction: tuple[str, tuple[int, ...]] | None = None
    gradient_of: str | None = None


@dataclass(frozen=True)
class Variant:
    """A known wrong answer, computed by the grader: an output that equals it gets ``code``."""

    code: str
    detail: str
    outputs: dict


@dataclass
class Case:
    """One set of inputs.

    Attributes:
        label: how reports name the case ("N=3, D=5, M=2").
        inputs: name → array or number, in the order the learner's function takes them.
        large: inputs large enough that exp overflows without care (for ``unstable``).
        counts: what a mean divides by, by name ({"N": 3}; {"N·D": 15, …} for a mean over
            every entry), for ``batch_mean``.
        kinks: output name → bool mask of the entries whose input sits exactly at a kink.
        timing: the case the learner's time is measured on against the reference's.
    """

    label: str
    inputs: dict
    large: bool = False
    counts: dict = field(default_factory=dict)
    kinks: dict = field(default_factory=dict)
    timing: bool = False


@dataclass
class Exercise:
    """One exercise: its text, what the learner defines, and how it is graded.

    Attributes:
        name: the id used by ``check``, ``hint`` and the CLI.
        title: one line.
        statement: the math, what to return and the shapes, in plain Unicode.
        hints: progressive hints, the first the gentlest.
        entries: the function or class names the learner defines, as in the template.
        outputs: what ``run`` returns, in order.
        cases: rng → list of Case (the timing case, if any, last).
        run: (ctx, case) → {output name: value}, calling the learner through ``ctx``.
        reference: case → {output name: array}, chainrule's answer.
        variants: (case, reference outputs) → list of Variant, known wrong answers.
        fd_value: (ctx, inputs) → the scalar the gradient outputs differentiate, computed
            with the learner's own forward; None where the learner writes no forward.
    """

    name: str
    title: str
    statement: str
    hints: tuple[str, ...]
    entries: tuple[str, ...]
    outputs: tuple[Output, ...]
    cases: Callable[[np.random.Generator], list[Case]]
    run: Callable
    reference: Callable[[Case], dict]
    variants: Callable[[Case, dict], list[Variant]] | None = None
    fd_value: Callable | None = None

    def output(self, name: str) -> Output:
        for out in self.outputs:
            if out.name == name:
                return out
        raise KeyError(name)

    def template(self) -> str:
        """Python source to fill in: the functions (or class) with docstrings and shapes, each
        body ``raise NotImplementedError``."""
        header = (
            f'"""chainrule exercise {self.name}: {self.title}\n\n'
            f"Statement: chainrule exercise show {self.name}\n"
            f"Fill in the {'bodies' if self._stub_count() > 1 else 'body'} below, then grade:"
            f"  chainrule exercise check {self.name} THIS_FILE.py\n"
            f"Stuck?  chainrule exercise hint {self.name} --level 1\n"
            '"""\n\nimport numpy as np\n'
        )
        return header + "".join(f"\n\n{_stub(_source(name))}\n" for name in self.entries)

    def solution(self) -> str:
        """A correct answer, in the template's form."""
        return "import numpy as np\n" + "".join(f"\n\n{_source(name)}" for name in self.entries)

    def _stub_count(self) -> int:
        count = 0
        for name in self.entries:
            node = ast.parse(_source(name)).body[0]
            count += sum(isinstance(n, ast.FunctionDef) for n in node.body) \
                if isinstance(node, ast.ClassDef) else 1
        return count

    def __repr__(self) -> str:
        return f"<exercise {self.name!r}: {self.title}>"


def _source(name: str) -> str:
    return textwrap.dedent(inspect.getsource(getattr(solutions, name))).rstrip() + "\n"


def _stub(source: str) -> str:
    """The signatures and docstrings of a function or class, bodies replaced by a raise."""
    lines = source.splitlines()
    node = ast.parse(source).body[0]
    return "\n".join(_stub_lines(node, lines))


def _stub_lines(node, lines) -> list[str]:
    body = node.body
    has_doc = (isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
               and isinstance(body[0].value.value, str))
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    end = body[0].end_lineno if has_doc else body[0].lineno - 1
    out = lines[start - 1:end]
    indent = " " * body[0].col_offset
    if isinstance(node, ast.ClassDef):
        for item in body:
            if isinstance(item, ast.FunctionDef):
                out += [""] + _stub_lines(item, lines)
    else:
        out.append(f"{indent}raise NotImplementedError")
    return out


# ---------------------------------------------------------------------- the registry
class UnknownExercise(KeyError):
    """An exercise name that is not in the course (the message names the closest one)."""

    def __str__(self) -> str:
        return str(self.args[0])


_EXERCISES: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    """Add an exercise at the end of the course (its name must be new)."""
    if exercise.name in _EXERCISES:
        raise ValueError(f"exercise {exercise.name!r} is already registered")
    for name in exercise.entries:
        if not hasattr(solutions, name):
            raise ValueError(f"exercise {exercise.name!r}: solutions.py has no {name}")
    _EXERCISES[exercise.name] = exercise
    return exercise


def names() -> list[str]:
    """The exercise names in course order."""
    return list(_EXERCISES)


def get(name: str) -> Exercise:
    """The exercise called ``name``.

    Raises:
        UnknownExercise: (a KeyError) for an unknown name, with the closest known one.
    """
    try:
        return _EXERCISES[name]
    except (KeyError, TypeError):
        import difflib

        close = difflib.get_close_matches(str(name), _EXERCISES, n=1)
        guess = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownExercise(
            f"unknown exercise {name!r}{guess} (the exercises: {', '.join(_EXERCISES)})"
        ) from None
