"""Checks of constructor arguments shared by layers, losses, optimizers and schedules.

Each check returns the value in its canonical Python type or raises ValueError naming the class
and the argument: ``Dense: units must be a positive integer, got 'abc'``. A saved model's config
reaches the constructors unchanged, so these checks are also what turns a tampered file into
one clear message (``load_model`` adds the file and the field's place in the config).
"""

from __future__ import annotations

import inspect
import math

import numpy as np

#: rule → (test on a finite float, how the message states it)
_RULES = {
    "finite": (lambda x: True, "must be a finite number"),
    "> 0": (lambda x: x > 0, "must be > 0"),
    "positive": (lambda x: x > 0, "must be positive"),
    ">= 0": (lambda x: x >= 0, "must be >= 0"),
    "[0, 1)": (lambda x: 0 <= x < 1, "must lie in [0, 1)"),
    "[0, 1]": (lambda x: 0 <= x <= 1, "must lie in [0, 1]"),
    "(0, 0.5)": (lambda x: 0 < x < 0.5, "must lie in (0, 0.5)"),
}


def is_int(value) -> bool:
    """True for Python and NumPy integers, False for bools."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def is_number(value) -> bool:
    """True for Python and NumPy integers and floats, False for bools (and complex)."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_)


def positive_int(value, what: str, kind: str) -> int:
    """``value`` as an int ≥ 1.

    Raises:
        ValueError: ``{kind}: {what} must be a positive integer, got …``.
    """
    if not is_int(value) or value <= 0:
        raise ValueError(f"{kind}: {what} must be a positive integer, got {value!r}")
    return int(value)


def non_negative_int(value, what: str, kind: str) -> int:
    """``value`` as an int ≥ 0.

    Raises:
        ValueError: ``{kind}: {what} must be an integer >= 0, got …``.
    """
    if not is_int(value) or value < 0:
        raise ValueError(f"{kind}: {what} must be an integer >= 0, got {value!r}")
    return int(value)


def number(value, what: str, kind: str, rule: str = "finite", note: str = "") -> float:
    """``value`` as a finite float obeying ``rule`` ("> 0", ">= 0", "[0, 1)", …).

    Args:
        note: text added after the rule in the message, e.g. a convention to remember.

    Raises:
        ValueError: ``{kind}: {what} must lie in [0, 1){note}, got …`` (or must be finite).
    """
    test, phrase = _RULES[rule]
    if is_number(value) and not math.isfinite(float(value)):
        raise ValueError(f"{kind}: {what} must be finite, got {value!r}")
    if not is_number(value) or not test(float(value)):
        raise ValueError(f"{kind}: {what} {phrase}{note}, got {value!r}")
    return float(value)


def boolean(value, what: str, kind: str) -> bool:
    """``value`` as a bool; only True, False (and NumPy bools) are accepted, not 0, 1 or "no".

    Raises:
        ValueError: ``{kind}: {what} must be True or False, got …``.
    """
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{kind}: {what} must be True or False, got {value!r}")
    return bool(value)


def seed(value, what: str, kind: str) -> int | None:
    """``value`` as None or an int ≥ 0 (what ``np.random.default_rng`` takes).

    Raises:
        ValueError: ``{kind}: {what} must be None or an integer >= 0, got …``.
    """
    if value is None:
        return None
    if not is_int(value) or value < 0:
        raise ValueError(f"{kind}: {what} must be None or an integer >= 0, got {value!r}")
    return int(value)


def construct(cls: type, config, kind: str | None = None):
    """``cls(**config)`` for a saved config, refusing keys the constructor does not take.

    Raises:
        ValueError: if ``config`` is not a dict with string keys, or names an argument ``cls``
            does not have (``Dense: unexpected argument 'unit'; it takes units, …``); and
            whatever the constructor raises for a bad value.
    """
    kind = kind or cls.__name__
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise ValueError(f"{kind}: the config must be a dict of arguments, got {config!r}")
    try:
        inspect.signature(cls).bind(**config)
    except TypeError as exc:
        takes = ", ".join(inspect.signature(cls).parameters)
        raise ValueError(f"{kind}: {exc} (it takes {takes})") from None
    return cls(**config)
