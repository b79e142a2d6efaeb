"""Compare a learner's output with the reference, and name what is wrong with it.

Entry i agrees when |yours − reference| ≤ RTOL · max(|yours|, |reference|, floor), floor =
FLOOR · max |reference| (entries far below the array's scale compare absolutely), or within an
output's own ``atol``. A disagreeing output gets a list of candidate explanations, each a
diagnosis code: the grader keeps the one that explains every failing case (``result.py``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

#: Largest relative error of an entry that agrees: float64 rounding in another summation order
#: stays near 1e-15; a real bug is off by far more.
RTOL = 1e-6
#: Entries below this share of the largest |reference| compare absolutely.
FLOOR = 1e-6


@dataclass
class Comparison:
    """One output of one case against the reference.

    Attributes:
        ok: every entry agrees (and the shape is right).
        expected_shape / got_shape: got_shape is None when the output is not an array.
        max_rel_error: the largest relative error (nan when the shapes differ).
        worst_index: that entry's index; ``learner`` and ``reference`` are its values.
        wrong: how many entries disagree, of ``size``.
        note: why nothing could be compared ("got None"), or "".
    """

    name: str
    ok: bool
    expected_shape: tuple
    got_shape: tuple | None
    max_rel_error: float = math.nan
    worst_index: tuple | None = None
    learner: float | None = None
    reference: float | None = None
    wrong: int = 0
    size: int = 0
    note: str = ""


@dataclass(frozen=True)
class Candidate:
    """One explanation of a failing output. Candidates with equal ``key`` explain two cases the
    same way (a scale bug keeps its factor in the key, so factors 1/3 and 1/5 differ)."""

    code: str
    detail: str
    key: tuple


def as_array(value) -> tuple[np.ndarray | None, str]:
    """The learner's value as a float64 array, or (None, what it was instead)."""
    if value is None:
        return None, "got None (does the function return it?)"
    if isinstance(value, str | bytes | dict):
        return None, f"got a {type(value).__name__}, not an array"
    try:
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(array.dtype)
        return array.astype(np.float64), ""
    except (TypeError, ValueError):
        return None, f"got {type(value).__name__}, not an array of numbers"


def _floor(reference: np.ndarray) -> float:
    finite = np.abs(reference[np.isfinite(reference)])
    scale = float(finite.max()) if finite.size else 0.0
    return max(FLOOR * scale, 1e-250)


def wrong_entries(ours: np.ndarray, reference: np.ndarray, atol=None):
    """(relative error per entry, bool mask of the entries that disagree); NaN never agrees."""
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(ours - reference)
        scale = np.maximum(np.maximum(np.abs(ours), np.abs(reference)), _floor(reference))
        rel = diff / scale
        same = (ours == reference) | (np.isnan(ours) & np.isnan(reference))
        rel = np.where(same, 0.0, rel)
        rel = np.where(np.isnan(rel), np.inf, rel)
        if atol is not None:
            return rel, ~(np.where(same, 0.0, diff) <= atol)
        return rel, ~(rel <= RTOL)


def close(ours: np.ndarray, reference: np.ndarray) -> bool:
    """Every entry agrees (same shape, RTOL)."""
    if ours.shape != reference.shape:
        return False
    return not wrong_entries(ours, reference)[1].any()


def compare(name: str, value, reference, atol=None) -> tuple[Comparison, np.ndarray | None]:
    """Compare one output; returns the comparison and the learner's value as an array."""
    reference = np.asarray(reference, dtype=np.float64)
    ours, why = as_array(value)
    if ours is None:
        return Comparison(name, False, reference.shape, None, note=why), None
    if ours.shape != reference.shape:
        return Comparison(name, False, reference.shape, ours.shape,
                          note=f"shape {ours.shape}, expected {reference.shape}"), ours
    rel, wrong = wrong_entries(ours, reference, atol)
    if rel.size == 0:
        return Comparison(name, True, reference.shape, ours.shape, 0.0), ours
    flat = int(np.argmax(np.where(wrong, rel, -1.0) if wrong.any() else rel))
    index = tuple(int(i) for i in np.unravel_index(flat, rel.shape))
    return Comparison(
        name, not wrong.any(), reference.shape, ours.shape, float(rel.max()), index,
        float(ours[index]), float(reference[index]), int(wrong.sum()), int(rel.size),
    ), ours


def _matches(ours: np.ndarray, variant) -> bool:
    """``ours`` equals a known wrong answer (one that is finite: two overflows prove nothing)."""
    variant = np.asarray(variant, dtype=np.float64)
    return bool(np.isfinite(variant).all()) and close(ours, variant)


def _at(array: np.ndarray, index) -> str:
    return f"{float(array[index]):.6g}"


def _where(index) -> str:
    return "" if index in ((), None) else f" at {index}"


def _factor(c: float) -> str:
    """2, 0.2 (= 1/5), −3: a factor as a reader recognises it."""
    if abs(c) < 1 and c != 0 and abs(1 / c - round(1 / c)) < 1e-6:
        return f"{c:.6g} (= 1/{round(1 / c)})"
    return f"{c:.6g}"


def _close_factor(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b))


def explain(cmp: Comparison, ours, reference, *, output, case, variants, inputs) -> list:
    """The candidate explanations of a failing output, most specific first."""
    name = output.name
    if ours is None:
        return [Candidate("shape", f"{name}: {cmp.note}", ("shape",))]
    reference = np.asarray(reference, dtype=np.float64)
    found: list[Candidate] = []
    if case.large:
        bad = int(np.count_nonzero(~np.isfinite(ours))) if ours.shape == reference.shape else 0
        what = (f"{bad} of {ours.size} entries are NaN or inf" if bad
                else "wrong at large inputs")
        found.append(Candidate("unstable", f"{name}: {what}", ("unstable",)))
    if ours.shape != reference.shape:
        found += _shape_candidates(name, ours, reference, output, variants, inputs)
        return found
    _, wrong = wrong_entries(ours, reference, output.atol)
    if output.plain:
        return found + [_mismatch(name, cmp, ours, wrong, output.atol)]
    mask = case.kinks.get(name)
    if mask is not None and wrong.any() and not (wrong & ~mask).any():
        first = tuple(int(i) for i in np.argwhere(wrong)[0])
        found.append(Candidate(
            "kink_convention",
            f"{name}: differs only at the {int(wrong.sum())} of {int(mask.sum())} entries whose "
            f"input is exactly at a kink (first{_where(first)}: yours {_at(ours, first)}, "
            f"reference {_at(reference, first)})", ("kink_convention",)))
    for v in variants:
        if name in v.outputs and _matches(ours, v.outputs[name]):
            found.append(Candidate(v.code, f"{name}: {v.detail}", (v.code, v.detail)))
    if output.reduction is not None:
        found += _one_sample(name, ours, output, inputs)
    found += _factor_candidates(name, ours, reference, output, case, inputs)
    n_wrong = int(wrong.sum())
    first = tuple(int(i) for i in np.argwhere(wrong)[0]) if n_wrong else ()
    if ours.size > 1 and 0 < n_wrong <= ours.size // 2:
        found.append(Candidate(
            "partial", f"{name}: {n_wrong} of {ours.size} entries are wrong, the first"
            f"{_where(first)}: yours {_at(ours, first)}, reference {_at(reference, first)}",
            ("partial",)))
    found.append(_mismatch(name, cmp, ours, wrong, output.atol))
    return found


def _mismatch(name, cmp, ours, wrong, atol=None) -> Candidate:
    bad = int(np.count_nonzero(~np.isfinite(ours)))
    worst = cmp.worst_index
    if atol is not None and ours.size == 1:
        return Candidate("mismatch", f"{name}: {cmp.learner:.6g}, not within {atol:g} of "
                         f"{cmp.reference:.6g}", ("mismatch",))
    count = f"{int(wrong.sum())} of {ours.size} entries differ" if ours.size > 1 else "differs"
    return Candidate(
        "mismatch",
        f"{name}: {count}" + (f" ({bad} NaN or inf)" if bad else "")
        + (f"; worst{_where(worst)}: yours {cmp.learner:.6g}, reference {cmp.reference:.6g}"
           if worst is not None else ""),
        ("mismatch",))


def _shape_candidates(name, ours, reference, output, variants, inputs) -> list:
    found = []
    shapes = f"expected shape {reference.shape}, got {ours.shape}"
    if ours.ndim == reference.ndim >= 2:
        for perm in itertools.permutations(range(reference.ndim)):
            if perm == tuple(range(reference.ndim)):
                continue
            turned = reference.transpose(perm)
            if turned.shape == ours.shape and close(ours, turned):
                axes = "" if reference.ndim == 2 else f" (axes {perm})"
                found.append(Candidate(
                    "transposed", f"{name}: {shapes}, the reference transposed{axes}",
                    ("transposed",)))
                break
    if output.reduction is not None:
        source_name, axes = output.reduction
        source = np.asarray(inputs[source_name], dtype=np.float64)
        if ours.shape == source.shape and close(ours, source):
            found.append(Candidate(
                "missing_sum", f"{name}: {shapes}: {source_name} itself, not summed over "
                f"axis {axes if len(axes) > 1 else axes[0]}", ("missing_sum",)))
        for k in range(1, source.ndim + 1):
            for other in itertools.combinations(range(source.ndim), k):
                if other == tuple(axes):
                    continue
                summed = source.sum(axis=other)
                if summed.shape == ours.shape and close(ours, summed):
                    found.append(Candidate(
                        "missing_sum", f"{name}: {shapes}: {source_name} summed over axis "
                        f"{other if k > 1 else other[0]}, not "
                        f"{axes if len(axes) > 1 else axes[0]}", ("missing_sum",)))
    if ours.size == reference.size and close(ours.reshape(reference.shape), reference):
        found.append(Candidate("shape", f"{name}: {shapes} (the values are right)", ("shape",)))
    for v in variants:
        if name in v.outputs and _matches(ours, v.outputs[name]):
            found.append(Candidate(v.code, f"{name}: {v.detail}", (v.code, v.detail)))
    found.append(Candidate("shape", f"{name}: {shapes}", ("shape",)))
    return found


def _one_sample(name, ours, output, inputs) -> list:
    """A reduction that took one sample (the first or the last) instead of the sum."""
    source_name, axes = output.reduction
    source = np.asarray(inputs[source_name], dtype=np.float64)
    if source.shape[axes[0]] < 2:
        return []
    for which, label in ((0, "first"), (-1, "last")):
        taken = np.take(source, which, axis=axes[0])
        rest = tuple(a - 1 for a in axes[1:])
        taken = taken.sum(axis=rest) if rest else taken
        if taken.shape == ours.shape and close(ours, taken):
            return [Candidate("missing_sum", f"{name}: the {label} sample's {source_name} only, "
                              f"not the sum over axis {axes[0]}", ("missing_sum",))]
    return []


def _factor_candidates(name, ours, reference, output, case, inputs) -> list:
    base = 0.0
    if output.baseline is not None:
        base = np.asarray(inputs[output.baseline], dtype=np.float64)
    d_ours, d_ref = ours - base, reference - base
    if not (np.isfinite(d_ours).all() and np.isfinite(d_ref).all()):
        return []
    norm = float(np.sum(d_ref * d_ref))
    if norm == 0.0:
        return []
    c = float(np.sum(d_ours * d_ref)) / norm
    if c == 0.0 or _close_factor(c, 1.0) or not close(d_ours, c * d_ref):
        return []
    change = " (its change from the input)" if output.baseline else ""
    if _close_factor(c, -1.0):
        return [Candidate("sign", f"{name}: minus the reference{change}", ("sign",))]
    found = []
    for label, k in case.counts.items():
        count = label if len(label) == 1 else f"({label})"
        if k > 1 and _close_factor(c, k):
            found.append(Candidate(
                "batch_mean", f"{name}: {k} × the reference{change}: a missing 1/{count} "
                f"({label} = {k})", ("batch_mean",)))
        elif k > 1 and _close_factor(c, 1.0 / k):
            found.append(Candidate(
                "batch_mean", f"{name}: 1/{k} of the reference{change}: an extra 1/{count} "
                f"({label} = {k})", ("batch_mean",)))
    found.append(Candidate("scale", f"{name}: {_factor(c)} × the reference{change}",
                           ("scale", float(f"{c:.6g}"))))
    return found
