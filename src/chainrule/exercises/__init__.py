"""Exercises: write a backward pass, and the grader says whether it is right and what is wrong.

    from chainrule import exercises
    exercises.names()                          # in course order
    ex = exercises.get("dense")
    print(ex.statement); print(ex.template())
    result = exercises.check("dense", dense_backward)    # or a tuple, globals(), a module, a path
    result.ok, result.outputs, result.diagnosis
    print(result)                              # the report: outputs, diagnosis, hints
    exercises.hint("dense", level=1); exercises.solution("dense")

The grader runs the learner's code on several cases in float64, in a child process it can stop
(``runner.py``), compares each output with chainrule's own layers, losses and optimizers, and
names what is wrong with a code from a fixed vocabulary (``codes.CODES``).
"""

from __future__ import annotations

from . import (
    course,  # noqa: F401  (registers the exercises)
    progress,
)
from .base import Case, Exercise, Output, UnknownExercise, Variant, get, names
from .codes import CODES
from .learner import SolutionError, resolve
from .result import OutputCheck, Result
from .result import build as _build
from .runner import run as _run

#: Seconds one case (or the central differences, or the timing) may take by default.
TIME_LIMIT = 10.0


def check(name: str, solution, *, time_limit: float = TIME_LIMIT, record: bool = False,
          seed: int = 0) -> Result:
    """Grade ``solution`` for exercise ``name``.

    Args:
        name: the exercise, one of :func:`names`.
        solution: a function (or class) for an exercise with one definition; a tuple of them in
            the template's order; a dict such as ``globals()``, a module or an object with them
            as attributes; or the path of a .py file that defines them.
        time_limit: seconds each case may run before the learner's code is stopped.
        record: store a pass in the progress file (``chainrule exercise list`` shows ✓).
        seed: seeds the cases' random inputs.

    Returns:
        Result: ``ok``, ``outputs``, ``diagnosis``; ``print(result)`` shows the report.

    The learner's code runs in a child process forked from this one (so a notebook's functions
    need no pickling, and a crash or an endless loop stops only the child). Where fork is
    unavailable it runs in this process: exceptions are still reported, a case found to have
    run past ``time_limit`` is a timeout once it returns, but an endless loop cannot be stopped.

    Raises:
        UnknownExercise: (a KeyError) for an unknown exercise name.
        SolutionError: (a ValueError) when the solution cannot be graded at all: a missing
            file, a file that does not import, a definition the exercise needs is missing.
    """
    exercise = get(name)
    if not (isinstance(time_limit, int | float) and time_limit > 0):
        raise ValueError(f"check: time_limit must be a positive number of seconds, got "
                         f"{time_limit!r}")
    messages = _run(exercise, resolve(exercise, solution), time_limit=float(time_limit),
                    seed=seed)
    for message in messages:
        if message[0] == "load_error":
            raise SolutionError(message[1])
    result = _build(exercise, messages, float(time_limit))
    if record:
        progress.record(result)
    return result


def hint(name: str, level: int = 1) -> str:
    """Hint number ``level`` (from 1, the gentlest) for exercise ``name``.

    Raises:
        ValueError: for a level the exercise has no hint for.
    """
    hints = get(name).hints
    if not (isinstance(level, int) and 1 <= level <= len(hints)):
        raise ValueError(f"{name} has {len(hints)} hints: level 1 to {len(hints)}, got {level!r}")
    return hints[level - 1]


def solution(name: str) -> str:
    """A correct answer to exercise ``name``, as Python source in the template's form."""
    return get(name).solution()


__all__ = [
    "CODES",
    "Case",
    "Exercise",
    "Output",
    "OutputCheck",
    "Result",
    "SolutionError",
    "TIME_LIMIT",
    "UnknownExercise",
    "Variant",
    "check",
    "get",
    "hint",
    "names",
    "solution",
]
