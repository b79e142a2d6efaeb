"""``chainrule exercise …``: list, show, template, check, hint, solution, reset.

The main parser registers these with one call, ``add_commands(subparsers, parents)``. Every
command returns its exit status: 0, or 1 with a one-line error on stderr (an unknown exercise,
a file that does not import or lacks the function, a check that fails).
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from . import TIME_LIMIT, check, get, hint, names, progress
from .base import UnknownExercise
from .learner import SolutionError


def add_commands(subparsers, parents=()) -> argparse.ArgumentParser:
    """Add ``exercise`` and its subcommands to the main parser's ``subparsers``.

    Args:
        subparsers: what ``parser.add_subparsers()`` returned.
        parents: parsers whose options every command takes (the main CLI's ``--debug``).

    Returns:
        the ``exercise`` parser.
    """
    parents = list(parents)
    parser = subparsers.add_parser(
        "exercise", parents=parents, help="write backward passes; the grader names the bug",
        description="Exercises: the lecture's gradients to derive and write yourself, graded "
        "against chainrule in float64, with a diagnosis of what is wrong.")
    sub = parser.add_subparsers(dest="exercise_command", required=True, metavar="COMMAND")

    def command(name, help, func):
        p = sub.add_parser(name, help=help, parents=parents, description=help)
        p.set_defaults(func=func)
        return p

    p = command("list", "the exercises in course order, ✓ for those you passed", _list)
    p.add_argument("--reset", action="store_true", help="forget your progress first")
    command("reset", "forget your progress", _reset)
    command("show", "the statement: the math, what to return, the shapes",
            _show).add_argument("name")
    command("template", "Python source to fill in (chainrule exercise template NAME > mine.py)",
            _template).add_argument("name")
    p = command("check", "grade your file; exit status 0 when it passes", _check)
    p.add_argument("name")
    p.add_argument("file", help="a .py file defining the template's function(s)")
    p.add_argument("--time-limit", type=float, default=TIME_LIMIT, metavar="SECONDS",
                   help=f"stop your code after this long on one case (default {TIME_LIMIT:g})")
    p = command("hint", "a hint; --level 2 and 3 say more", _hint)
    p.add_argument("name")
    p.add_argument("--level", type=int, default=1)
    command("solution", "a correct answer (try the hints first)", _solution).add_argument("name")
    return parser


def _error(args, exc) -> int:
    message = " ".join(str(exc).split())
    print(f"chainrule exercise {args.exercise_command}: error: {message}", file=sys.stderr)
    return 1


def _list(args) -> int:
    if args.reset:
        progress.reset()
    done = progress.passed()
    for i, name in enumerate(names(), 1):
        mark = "✓" if name in done else " "
        print(f" {mark} {i:2d}  {name:22s}  {get(name).title}")
    print(f"\n{sum(n in done for n in names())} of {len(names())} passed "
          f"(progress: {progress.path()})")
    return 0


def _reset(args) -> int:
    had = progress.reset()
    print(f"progress forgotten ({progress.path()})" if had else "no progress to forget")
    return 0


def _show(args) -> int:
    try:
        exercise = get(args.name)
    except UnknownExercise as exc:
        return _error(args, exc)
    print(f"{exercise.name}: {exercise.title}\n\n{exercise.statement}\n")
    print(f"Start from the template:  chainrule exercise template {exercise.name} > mine.py")
    print(f"Grade it:                 chainrule exercise check {exercise.name} mine.py")
    return 0


def _template(args) -> int:
    return _print_source(args, lambda exercise: exercise.template())


def _check(args) -> int:
    try:
        result = check(args.name, args.file, time_limit=args.time_limit)
    except (UnknownExercise, SolutionError, ValueError) as exc:
        return _error(args, exc)
    try:
        progress.record(result)
    except OSError as exc:
        print(f"chainrule exercise check: warning: progress not saved: {exc}", file=sys.stderr)
    print(result)
    return 0 if result.ok else 1


def _hint(args) -> int:
    try:
        text = hint(args.name, args.level)
        count = len(get(args.name).hints)
    except (UnknownExercise, ValueError) as exc:
        return _error(args, exc)
    print(f"hint {args.level} of {count} for {args.name}:")
    print(textwrap.fill(text, 96, initial_indent="  ", subsequent_indent="  ",
                        break_on_hyphens=False, break_long_words=False))
    return 0


def _solution(args) -> int:
    return _print_source(args, lambda exercise: exercise.solution())


def _print_source(args, source) -> int:
    """Print ``source(exercise)``: the template or the solution."""
    try:
        print(source(get(args.name)), end="")
    except UnknownExercise as exc:
        return _error(args, exc)
    return 0
