"""Gradient checking: compare every hand-written backward with finite differences.

For each checked entry θᵢ of an array (an input, a prediction or a parameter), f is the scalar
the backward differentiates (a loss, or Σ g ⊙ y for a layer with upstream gradient g) and

    D(s) = (f(θ + s eᵢ) − f(θ − s eᵢ)) / (2s)          central difference, error O(s²)
    R(s) = (4 D(s) − D(2s)) / 3                         Richardson's extrapolation, error O(s⁴)

The step starts at s₀ = h · max(|θᵢ|, 1), so it scales with the entry, and never exceeds |θᵢ|/4
when θᵢ ≠ 0: θᵢ ± 2s keeps the sign of θᵢ, so a function defined only for positive inputs (a
log, a division) is never stepped across zero. The step is then halved, level after level, until
two successive R agree (|R(sₖ) − R(sₖ₋₁)| is the estimate of the numeric error), or rounding
noise starts to grow. Strong curvature (log p at p = 10⁻⁶) and a kink near θᵢ (a ReLU input of
10⁻⁵) are resolved that way: once the steps no longer reach past the kink, f is smooth.

Rounding. When the two R keep disagreeing, the noise of f itself is measured (f at θᵢ ± s/1024,
where a smooth f changes by a known amount): if the disagreement is of that size, it is
rounding in long reductions, not a bug, and the entry passes when |analytic − numeric| is within
the tolerance plus that uncertainty. The report shows the uncertainty as "fd error".

Kinks. A kink exactly at θᵢ (a ReLU input of exactly 0, a tie in a max-pool) shows in the
symmetric second difference J(s) = (f(θ + s) + f(θ − s) − 2f(θ)) / s, which tends to the jump in
slope at a kink but shrinks like s where f is smooth. At a kink, and where the steps cannot get
clear of one, the analytic value must equal the left or the right one-sided derivative

    D₊(s) = (−3f(θ) + 4f(θ + s) − f(θ + 2s)) / (2s)
    D₋(s) = (3f(θ) − 4f(θ − s) + f(θ − 2s)) / (2s)

(each extrapolated like R): any subgradient convention passes, anything else fails. An array
whose checked entries are mostly kinks proves little, so more than ``KINK_FRACTION`` of them
(and more than one) fails the array, with a message that says so.

Each entry's error is |analytic − numeric| / max(|analytic|, |numeric|, floor); ``floor`` keeps
near-zero gradients from counting rounding as relative error. Checks run on a float64 copy of
the layer, loss or model, cloned through its own class: the original is never touched.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .layers.base import Layer
from .losses import Loss
from .model import Sequential

#: Largest share of an array's checked entries that may be kinks (at least one is allowed).
KINK_FRACTION = 0.1
#: Halvings of the step at most (s₀ down to s₀ / 2¹¹).
LEVELS = 12
#: Two Richardson estimates within this share of the tolerance count as converged.
CONVERGED = 0.05
#: |J(s)| above this share of the slope is a jump, not rounding (see the module docstring).
JUMP_TOL = 1e-3
EPS = float(np.finfo(np.float64).eps)
#: Evaluations of f per smooth entry, for the time estimate.
EVALS_PER_ENTRY = 6
#: Checks expected to run longer than this many seconds print their estimate first.
ANNOUNCE_SECONDS = 10.0


@dataclass
class GradcheckEntry:
    """The comparison for one array (an input, a prediction or a parameter).

    Attributes:
        checked: entries compared (all, or a seeded sample of ``max_entries``).
        kinks: entries at (or too close to) a kink, checked against one-sided derivatives.
        failed: entries whose analytic value disagrees with the numeric one.
        max_rel_error: the largest relative error; ``worst_index``, ``analytic`` and
            ``numeric`` are that entry's.
        fd_error: the largest estimated relative error of the numeric values themselves.
        note: what went wrong at the worst entry ("" when nothing did).
    """

    name: str
    shape: tuple
    checked: int
    kinks: int
    failed: int
    max_rel_error: float
    fd_error: float
    worst_index: tuple | None
    analytic: float
    numeric: float
    tol: float
    note: str = ""

    @property
    def max_kinks(self) -> int:
        """Kinks allowed: ``KINK_FRACTION`` of the checked entries, at least one."""
        return max(1, math.floor(KINK_FRACTION * self.checked))

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.kinks <= self.max_kinks

    @property
    def reason(self) -> str:
        """Why the array failed, in a sentence ("" when it passed)."""
        reasons = []
        if self.failed:
            reasons.append(
                f"{self.failed} of {self.checked} entries differ from the finite differences "
                f"(worst at {self.worst_index}: analytic {self.analytic:.10g}, numeric "
                f"{self.numeric:.10g}{'; ' + self.note if self.note else ''})"
            )
        if self.kinks > self.max_kinks:
            reasons.append(
                f"{self.kinks} of {self.checked} checked entries ({self.kinks / self.checked:.0%})"
                f" are at kinks, more than {KINK_FRACTION:.0%}: too few smooth entries for a "
                "meaningful check; move the inputs or weights away from the kinks"
            )
        return "; ".join(reasons)


@dataclass
class GradcheckReport:
    """All entries of one gradient check; ``ok`` when every array passes."""

    subject: str
    tol: float
    entries: list[GradcheckEntry] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.entries)

    @property
    def max_rel_error(self) -> float:
        return max((e.max_rel_error for e in self.entries), default=0.0)

    def __getitem__(self, name: str) -> GradcheckEntry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(f"no array named {name!r}; have {[e.name for e in self.entries]}")

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        head = (
            f"gradcheck {self.subject}: {verdict} (max relative error "
            f"{self.max_rel_error:.2e}, tolerance {self.tol:.0e})"
        )
        rows = [("array", "shape", "checked", "kinks", "max rel err", "fd error", "worst index",
                 "analytic", "numeric", "")]
        for e in self.entries:
            rows.append((
                e.name, str(e.shape), str(e.checked), str(e.kinks), f"{e.max_rel_error:.2e}",
                f"{e.fd_error:.0e}", "-" if e.worst_index is None else str(e.worst_index),
                f"{e.analytic:.10g}", f"{e.numeric:.10g}", "ok" if e.ok else "FAIL",
            ))
        widths = [max(len(r[i]) for r in rows) + 2 for i in range(len(rows[0]))]
        lines = ["".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines += [f"{e.name}: {e.reason}" for e in self.entries if not e.ok]
        return "\n".join([head, *lines])


def gradcheck(obj, *args, tol: float = 1e-6, h: float = 1e-3, floor: float = 1e-4,
              max_entries: int | None = 200, seed: int = 0, grad_y=None,
              verbose: bool = True) -> GradcheckReport:
    """Check the backward pass of a layer, a loss or a compiled model against finite differences.

    Usage:
        gradcheck(layer, x)              f(x, θ) = Σ g ⊙ layer(x), g random (or ``grad_y``)
        gradcheck(loss, pred, target)    f(pred) = loss(pred, target)
        gradcheck(model, x, y)           f(x, θ) = model.loss(model(x), y), model compiled

    Args:
        tol: the largest relative error that passes (a positive number).
        h: the first step, relative to max(|θᵢ|, 1); halved until the estimate converges.
        floor: denominators never go below this (gradients smaller than it compare absolutely).
        max_entries: entries checked per array; larger arrays are sampled (seeded), always
            including their largest analytic gradient. None checks every entry.
        seed: seeds the upstream gradient, the sampling and the weights of an unbuilt layer.
        grad_y: upstream gradient for a layer check (random normal by default).
        verbose: print the estimated time to stderr first when it exceeds 10 s.

    Returns:
        GradcheckReport with a row per array: max relative error, the worst entry's index and
        both values there, the estimated error of the finite differences, the number of
        entries at kinks; ``report.ok``.

    Raises:
        TypeError: for an object that is not a Layer, Loss or Sequential.
        ValueError: for a tolerance, step, floor or max_entries that is not positive.
    """
    _check_options(tol, h, floor, max_entries)
    opts = dict(rng=np.random.default_rng(seed), tol=float(tol), h=float(h),
                floor=float(floor), max_entries=max_entries, verbose=verbose)
    if isinstance(obj, Loss):
        if len(args) != 2:
            raise TypeError("gradcheck(loss, pred, target) takes a prediction and a target")
        return _check_loss(obj, *args, **opts)
    if isinstance(obj, Layer):
        if len(args) != 1:
            raise TypeError("gradcheck(layer, x) takes one input batch")
        return _check_layer(obj, args[0], grad_y, **opts)
    if isinstance(obj, Sequential):
        if len(args) != 2:
            raise TypeError("gradcheck(model, x, y) takes inputs and targets")
        return _check_model(obj, *args, **opts)
    raise TypeError(
        f"gradcheck expects a Layer, a Loss or a Sequential, got {type(obj).__name__}"
    )


def gradcheck_function(f, x, analytic, *, name: str = "x", tol: float = 1e-6, h: float = 1e-3,
                       floor: float = 1e-4, max_entries: int | None = 200,
                       seed: int = 0) -> GradcheckEntry:
    """Check ``analytic`` = ∂f/∂x for a scalar function f of one array, as gradcheck does.

    The same central differences, convergence test and one-sided derivatives at kinks as
    :func:`gradcheck`, for any f (a learner's forward, a hand-written loss), on a float64 copy.

    Args:
        f: called as ``f(θ)`` with a float64 array of x's shape; returns a number. θ is changed
            in place between calls, so f must not keep it.
        x: the point to differentiate at.
        analytic: the claimed gradient, x's shape.
        name, tol, h, floor, max_entries, seed: as for :func:`gradcheck`.

    Returns:
        GradcheckEntry for the array (``ok``, ``failed``, ``max_rel_error``, the worst entry).

    Raises:
        ValueError: for an ``analytic`` of another shape, or options as :func:`gradcheck` refuses.
    """
    _check_options(tol, h, floor, max_entries)
    theta = np.array(x, dtype=np.float64)
    analytic = np.asarray(analytic, dtype=np.float64)
    if analytic.shape != theta.shape:
        raise ValueError(f"gradcheck_function: the gradient has shape {analytic.shape}, the "
                         f"array {theta.shape}")
    picks = _picks(analytic, max_entries, np.random.default_rng(seed))

    def at_theta():
        return float(f(theta))

    return _compare(name, theta.shape, theta.reshape(-1), analytic.reshape(-1), picks,
                    at_theta, at_theta(), tol=float(tol), h=float(h), floor=float(floor))


def _check_options(tol, h, floor, max_entries) -> None:
    for label, value in (("tol", tol), ("h", h), ("floor", floor)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"gradcheck: {label} must be a positive number, got {value!r}")
    if max_entries is not None and (not isinstance(max_entries, int) or max_entries < 1):
        raise ValueError(f"gradcheck: max_entries must be a positive int or None, got "
                         f"{max_entries!r}")


# ---------------------------------------------------------------------- float64 copies
def _float64(x):
    x = np.asarray(x)
    return x.astype(np.float64) if np.issubdtype(x.dtype, np.floating) else x.copy()


def _rngs(layers):
    return [layer.rng for layer in layers if isinstance(getattr(layer, "rng", None),
                                                        np.random.Generator)]


def _clone_layer(layer: Layer, x, rng) -> Layer:
    clone = layer.twin()
    shape = layer.input_shape if layer.built else np.asarray(x).shape[1:]
    clone.build(shape, rng=rng, dtype=np.float64)
    if layer.built:
        for mine, theirs in zip(clone.parameters(), layer.parameters(), strict=True):
            mine.value = theirs.value.astype(np.float64)
        clone.set_buffers(layer.buffers())
    if isinstance(getattr(layer, "rng", None), np.random.Generator):
        clone.rng = np.random.default_rng()
        clone.rng.bit_generator.state = layer.rng.bit_generator.state
    return clone


# ---------------------------------------------------------------------- the three subjects
def _check_loss(loss, pred, target, *, rng, **opts):
    loss64 = type(loss)(**loss.get_config())
    pred64 = np.array(pred, dtype=np.float64)
    target64 = _float64(target)
    loss64(pred64, target64)
    analytic = loss64.backward()
    return _run(type(loss).__name__, [("pred", pred64, analytic)],
                lambda: loss64(pred64, target64), rng, **opts)


def _check_layer(layer, x, grad_y, *, rng, **opts):
    clone = _clone_layer(layer, x, rng)
    x64 = _float64(x)
    gens = _rngs([clone])
    states = [g.bit_generator.state for g in gens]

    def restore():
        for g, s in zip(gens, states, strict=True):
            g.bit_generator.state = s

    restore()
    y = clone.forward(x64, training=True)
    g = rng.standard_normal(y.shape) if grad_y is None else np.array(grad_y, dtype=np.float64)
    grad_x = clone.backward(g)

    def f():
        restore()
        return float(np.sum(g * clone.forward(x64, training=True)))

    arrays = [] if grad_x is None else [("input", x64, grad_x)]
    arrays += [(p.name, p.value, p.grad.copy()) for p in clone.parameters()]
    return _run(f"{type(layer).__name__} '{layer.name}'", arrays, f, rng, **opts)


def _check_model(model, x, y, *, rng, **opts):
    if model.loss is None:
        raise ValueError("gradcheck(model, x, y) needs a compiled model (it uses model.loss)")
    x64 = _float64(x)
    clone = model.copy(dtype="float64", input_shape=x64.shape[1:])
    loss = type(model.loss)(**model.loss.get_config())
    y = _float64(y)
    gens = _rngs(clone.layers)
    states = [g.bit_generator.state for g in gens]

    def f():
        for gen, s in zip(gens, states, strict=True):
            gen.bit_generator.state = s
        return loss(clone.forward(x64, training=True), y)

    f()
    grad_x = clone.backward(loss.backward())
    arrays = []
    if grad_x is not None and np.issubdtype(x64.dtype, np.floating):
        arrays.append(("input", x64, grad_x))
    arrays += [(name, p.value, p.grad.copy()) for name, p in clone.named_parameters()]
    return _run(f"model '{model.name}'", arrays, f, rng, **opts)


# ---------------------------------------------------------------------- comparison
def _run(subject, arrays, f, rng, *, tol, h, floor, max_entries, verbose) -> GradcheckReport:
    """Compare each (name, array, analytic) on sampled entries; announce a long check."""
    plans = []
    for name, array, analytic in arrays:
        analytic = np.asarray(analytic, dtype=np.float64)
        if analytic.shape != array.shape:
            raise ValueError(
                f"gradcheck: the gradient of {name!r} has shape {analytic.shape}, the array "
                f"{array.shape}"
            )
        flat = array.reshape(-1)
        if not np.shares_memory(flat, array):
            raise ValueError(f"gradcheck: {name!r} is not contiguous; cannot perturb it in place")
        plans.append((name, array, flat, analytic.reshape(-1), _picks(analytic, max_entries, rng)))
    started = time.perf_counter()
    f0 = f()
    seconds = time.perf_counter() - started
    total = sum(len(p[-1]) for p in plans)
    estimate = seconds * total * EVALS_PER_ENTRY
    if verbose and estimate > ANNOUNCE_SECONDS:
        print(
            f"gradcheck {subject}: {total:,} entries, about {EVALS_PER_ENTRY} evaluations of "
            f"{seconds * 1e3:.0f} ms each: roughly {estimate:.0f} s "
            "(pass a smaller max_entries to check fewer)",
            file=sys.stderr, flush=True,
        )
    report = GradcheckReport(subject, tol)
    for name, array, flat, a_flat, picks in plans:
        report.entries.append(
            _compare(name, array.shape, flat, a_flat, picks, f, f0, tol=tol, h=h, floor=floor)
        )
    return report


def _picks(analytic: np.ndarray, max_entries: int | None, rng) -> np.ndarray:
    """Flat indices to check: all, or a seeded sample that includes the largest gradient."""
    size = analytic.size
    if max_entries is None or size <= max_entries:
        return np.arange(size)
    largest = int(np.argmax(np.abs(analytic)))
    others = rng.choice(size - 1, size=max_entries - 1, replace=False)
    others[others >= largest] += 1  # skip over the largest, which is always checked
    return np.sort(np.append(others, largest))


@dataclass
class _Verdict:
    numeric: float
    rel_error: float
    fd_error: float        # estimated relative error of the numeric value
    kink: bool
    ok: bool
    note: str = ""


def _compare(name, shape, flat, a_flat, picks, f, f0, *, tol, h, floor) -> GradcheckEntry:
    """Finite-difference ``f`` in each picked entry of ``flat`` (in place, then restored)."""
    kinks = failed = 0
    fd_error = 0.0
    worst = None  # (failing, relative error, index, verdict): failing entries rank first
    for i in picks:
        a = float(a_flat[i])
        v = _check_entry(f, flat, int(i), f0, a, tol=tol, h=h, floor=floor)
        kinks += v.kink
        failed += not v.ok
        if not v.kink:
            fd_error = max(fd_error, v.fd_error)
        key = (not v.ok, v.rel_error)
        if worst is None or key > worst[:2]:
            worst = (*key, int(i), a, v)
    _, rel, index, a, v = worst if worst is not None else (False, 0.0, None, math.nan, None)
    return GradcheckEntry(
        name=name,
        shape=tuple(shape),
        checked=int(len(picks)),
        kinks=kinks,
        failed=failed,
        max_rel_error=rel,
        fd_error=fd_error,
        worst_index=None if index is None else tuple(int(k) for k in np.unravel_index(index,
                                                                                    shape)),
        analytic=a,
        numeric=math.nan if v is None else v.numeric,
        tol=tol,
        note="" if v is None or v.ok else v.note,
    )


def _extrapolate(d, s0: float, target, floor: float) -> tuple[float, float, list[float]]:
    """Richardson's extrapolation of the difference quotient ``d`` over halving steps.

    E(s) = (4 d(s) − d(2s)) / 3 for s = s0, s0/2, s0/4, …, until two successive E agree within
    ``target(E)``, or their disagreement, already small, grows three times in a row (rounding).

    Returns:
        (the E with the smallest disagreement, that disagreement, the steps used).
    """
    steps, estimates, errors = [], [], []
    previous = d(2.0 * s0)
    for k in range(LEVELS):
        s = s0 / 2.0**k
        current = d(s)
        estimates.append((4.0 * current - previous) / 3.0)
        steps.append(s)
        previous = current
        if k == 0:
            continue
        e = abs(estimates[-1] - estimates[-2])
        errors.append(e if math.isfinite(e) else math.inf)
        if errors[-1] <= target(estimates[-1]):
            break
        # Close to the answer, a disagreement that grows three times running is rounding
        # noise; far from it (steps still too large for the curvature) it is not.
        if (len(errors) >= 3 and errors[-1] > errors[-2] > errors[-3]
                and errors[-1] <= 1e-3 * max(abs(estimates[-1]), floor)):
            break
    best = int(np.argmin(errors)) + 1
    return estimates[best], errors[best - 1], steps


def _check_entry(f, flat, i, f0, a, *, tol, h, floor) -> _Verdict:
    """The numeric derivative of f in entry i and the verdict on the analytic value ``a``."""
    theta = float(flat[i])
    values = {0.0: f0}

    def at(offset: float) -> float:
        value = values.get(offset)
        if value is None:
            flat[i] = theta + offset
            try:
                value = float(f())
            finally:
                flat[i] = theta
            values[offset] = value
        return value

    def central(s: float) -> float:
        # Divide by the offsets actually applied (θ ± s rounds to a float64).
        return (at(s) - at(-s)) / (((theta + s) - theta) + (theta - (theta - s)))

    def one_sided(sign: float):
        return lambda s: sign * (-3.0 * f0 + 4.0 * at(sign * s) - at(sign * 2.0 * s)) / (2.0 * s)

    def target(estimate: float) -> float:
        return CONVERGED * tol * max(abs(estimate), floor)

    def rounding(s: float) -> float:
        # The least rounding of a difference quotient: that of f's own value, over the step.
        return 4.0 * EPS * max(abs(f0), abs(at(s)), abs(at(-s))) / s

    def within(numeric: float, allowance: float) -> tuple[float, bool]:
        denominator = max(abs(a), abs(numeric), floor)
        rel = abs(a - numeric) / denominator
        return rel, math.isfinite(numeric) and abs(a - numeric) <= tol * denominator + allowance

    s_full = h * max(abs(theta), 1.0)
    # Never step across 0: θ ± 2s keeps the sign of θ when s ≤ |θ|/4. If that shrunk step
    # leaves the estimate too noisy to judge by (a max-pool input of 1e-6 that is not the
    # maximum, a ReLU input of 1e-9), the full step is tried next: it may cross 0 wherever f is
    # smooth there, which the estimate itself shows.
    s0 = min(s_full, abs(theta) / 4.0) if theta != 0.0 else s_full
    def smooth_from(start: float) -> float | None:
        """The first of start, start/2, … at which f shows no jump in slope; None at a kink.

        J(s) = S(s)/s tends to the jump in slope at a kink but shrinks like s where f is
        smooth: J no longer shrinking when s halves means a kink within s of θ. f can look
        kinked at a large step and be smooth at a smaller one (logits of ±1e4, where the step
        is 10 and softmax changes within 1), so the steps halve until J does too.
        """
        previous = None
        for k in range(LEVELS):
            s = start / 2.0**k
            jump = abs(at(s) + at(-s) - 2.0 * f0) / s
            if jump <= JUMP_TOL * max(abs(central(s)), floor) or (
                    previous is not None and jump <= 0.7 * previous):
                return s
            previous = jump
        return None

    at_kink, numeric = False, central(s0)
    for start in (s0, s_full) if s0 < s_full else (s0,):
        smooth = smooth_from(start)
        at_kink = smooth is None
        if at_kink:
            continue
        numeric, error, steps = _extrapolate(central, smooth, target, floor)
        scale = max(abs(a), abs(numeric), floor)
        # Estimates that disagree by no more than rounding explains have converged. Long
        # reductions inside f round more than f's own value, so when the estimates disagree,
        # f's noise is measured: f(θ ± δ) differs from f(θ) ± numeric·δ by rounding alone.
        s = steps[-1]
        noise = rounding(s)
        resolved = error <= max(target(numeric), 8.0 * noise)
        if not resolved:
            delta = s / 1024.0
            noise = max(noise, abs(at(delta) - f0 - numeric * delta) / s,
                        abs(at(-delta) - f0 + numeric * delta) / s)
            resolved = error <= 8.0 * noise
        error = max(error, noise)
        if resolved and error > target(numeric):
            # Rounding noise falls as 1/s: a 32× larger step (where f allows it) may cost
            # little truncation error and give a sharper estimate.
            big = 32.0 * smooth
            if (theta == 0.0 or big <= abs(theta) / 4.0) and smooth_from(big) == big:
                estimate, e_big, big_steps = _extrapolate(central, big, target, floor)
                e_big = max(e_big, rounding(big_steps[-1]), noise * s / big_steps[-1])
                if e_big < error:
                    numeric, error = estimate, e_big
        if resolved and (start == s_full or error <= tol * scale):
            rel, ok = within(numeric, 2.0 * error)
            return _Verdict(numeric, rel, error / scale, False, ok)

    # At a kink, or where the steps could not get clear of one, the analytic value must be the
    # left or the right one-sided derivative. On the side away from 0 the full step is tried
    # too, and the better-converged of the two estimates is used.
    sides = {}
    for sign, label in ((1.0, "right"), (-1.0, "left")):
        starts = [s0]
        if theta != 0.0 and math.copysign(1.0, theta) == sign and s0 < s_full:
            starts.append(s_full)
        value, side_error, used = min(
            (_extrapolate(one_sided(sign), start, target, floor) for start in starts),
            key=lambda result: result[1] / max(abs(result[0]), floor),
        )
        side_error = max(side_error, rounding(used[-1]))
        rel, ok = within(value, 2.0 * side_error)
        sides[label] = (not ok, rel, value)
    bad, rel, value = min(sides.values())
    if not bad:
        return _Verdict(value, rel, 0.0, True, True)
    where = "at a kink" if at_kink else "near a kink the steps could not get clear of"
    rel, _ = within(numeric, 0.0)
    return _Verdict(numeric, rel, 0.0, True, False,
                    f"{where}: the analytic value matches neither the left "
                    f"({sides['left'][2]:.10g}) nor the right ({sides['right'][2]:.10g}) "
                    "derivative")
