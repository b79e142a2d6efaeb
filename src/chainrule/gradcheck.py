"""Gradient checking: compare every hand-written backward with central finite differences.

    numeric ∂f/∂θᵢ ≈ (4 D(h) − D(2h)) / 3,   D(s) = (f(θ + s eᵢ) − f(θ − s eᵢ)) / (2s)

is Richardson's extrapolation of two central differences: its error is O(h⁴) instead of O(h²),
so float64 reaches relative errors around 1e-10 on smooth functions. Each entry's error is

    |analytic − numeric| / max(|analytic|, |numeric|, floor)

(``floor`` keeps rounding noise on near-zero gradients from counting as relative error). Where
D(h) and D(2h) disagree, f is not differentiable within 2h of the point (a ReLU kink, a clip):
the entry is flagged as a kink and left out of the maximum rather than failed. A kink exactly at
the point is symmetric, so D(h) = D(2h) there; it shows in the second differences instead:

    J = (4 S(h) − S(2h)) / (2h),   S(s) = f(θ + s eᵢ) + f(θ − s eᵢ) − 2 f(θ)

is O(h³) where f is smooth and the jump in slope at a kink on the point, so a large J is a kink.

Checks run on a float64 copy of the layer, loss or model; the original is not touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .layers.base import Layer, make_layer
from .losses import Loss

KINK_TOL = 1e-4


@dataclass
class GradcheckEntry:
    """The comparison for one array (an input, a prediction or a parameter)."""

    name: str
    shape: tuple
    checked: int
    kinks: int
    max_rel_error: float
    worst_index: tuple | None
    analytic: float
    numeric: float
    tol: float

    @property
    def ok(self) -> bool:
        return self.max_rel_error < self.tol and (self.checked == 0 or self.kinks < self.checked)


@dataclass
class GradcheckReport:
    """All entries of one gradient check; ``ok`` when every array is within ``tol``."""

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
        rows = [("array", "shape", "checked", "kinks", "max rel err", "worst index",
                 "analytic", "numeric", "")]
        for e in self.entries:
            rows.append((
                e.name, str(e.shape), str(e.checked), str(e.kinks), f"{e.max_rel_error:.2e}",
                "-" if e.worst_index is None else str(e.worst_index),
                f"{e.analytic:.10g}", f"{e.numeric:.10g}", "ok" if e.ok else "FAIL",
            ))
        widths = [max(len(r[i]) for r in rows) + 2 for i in range(len(rows[0]))]
        lines = ["".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        return "\n".join([head, *lines])


def gradcheck(obj, *args, tol: float = 1e-6, h: float = 1e-4, floor: float = 1e-4,
              max_entries: int = 200, seed: int = 0, grad_y=None) -> GradcheckReport:
    """Check the backward pass of a layer, a loss or a compiled model against finite differences.

    Usage:
        gradcheck(layer, x)              f(x, θ) = Σ g ⊙ layer(x), g random (or ``grad_y``)
        gradcheck(loss, pred, target)    f(pred) = loss(pred, target)
        gradcheck(model, x, y)           f(x, θ) = model.loss(model(x), y), model compiled

    Args:
        tol: the largest relative error that passes.
        h: finite-difference step (D(h) and D(2h) are both evaluated).
        floor: denominators never go below this (gradients smaller than it compare absolutely).
        max_entries: entries checked per array; larger arrays are sampled (seeded), always
            including their largest analytic gradient.
        seed: seeds the upstream gradient, the sampling and the weights of an unbuilt layer.
        grad_y: upstream gradient for a layer check (random normal by default).

    Returns:
        GradcheckReport with a row per array: max relative error, the worst entry's index and
        both values there, the number of entries flagged as kinks; ``report.ok``.

    Raises:
        TypeError: for an object that is not a Layer, Loss or Sequential.
    """
    from .model import Sequential

    rng = np.random.default_rng(seed)
    if isinstance(obj, Loss):
        if len(args) != 2:
            raise TypeError("gradcheck(loss, pred, target) takes a prediction and a target")
        return _check_loss(obj, *args, rng=rng, tol=tol, h=h, floor=floor, max_entries=max_entries)
    if isinstance(obj, Layer):
        if len(args) != 1:
            raise TypeError("gradcheck(layer, x) takes one input batch")
        return _check_layer(obj, args[0], grad_y, rng=rng, tol=tol, h=h, floor=floor,
                            max_entries=max_entries)
    if isinstance(obj, Sequential):
        if len(args) != 2:
            raise TypeError("gradcheck(model, x, y) takes inputs and targets")
        return _check_model(obj, *args, rng=rng, tol=tol, h=h, floor=floor,
                            max_entries=max_entries)
    raise TypeError(
        f"gradcheck expects a Layer, a Loss or a Sequential, got {type(obj).__name__}"
    )


def _float64(x):
    x = np.asarray(x)
    return x.astype(np.float64) if np.issubdtype(x.dtype, np.floating) else x.copy()


def _rngs(layers):
    return [layer.rng for layer in layers if isinstance(getattr(layer, "rng", None),
                                                        np.random.Generator)]


def _check_loss(loss, pred, target, *, rng, **opts):
    loss64 = type(loss)(**loss.get_config())
    pred64 = np.array(pred, dtype=np.float64)
    target64 = _float64(target)
    loss64(pred64, target64)
    analytic = loss64.backward()
    report = GradcheckReport(type(loss).__name__, opts["tol"])
    report.entries.append(
        _compare("pred", pred64, analytic, lambda: loss64(pred64, target64), rng, **opts)
    )
    return report


def _clone_layer(layer: Layer, x, rng) -> Layer:
    clone = make_layer(type(layer).__name__, {**layer.get_config(), "input_shape": None})
    shape = layer.input_shape if layer.built else np.asarray(x).shape[1:]
    clone.build(shape, rng=rng, dtype=np.float64)
    if layer.built:
        for mine, theirs in zip(clone.parameters(), layer.parameters(), strict=True):
            mine.value = theirs.value.astype(np.float64)
    if isinstance(getattr(layer, "rng", None), np.random.Generator):
        clone.rng = np.random.default_rng()
        clone.rng.bit_generator.state = layer.rng.bit_generator.state
    return clone


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

    report = GradcheckReport(f"{type(layer).__name__} '{layer.name}'", opts["tol"])
    if grad_x is not None:
        report.entries.append(_compare("input", x64, grad_x, f, rng, **opts))
    for p in clone.parameters():
        report.entries.append(_compare(p.name, p.value, p.grad.copy(), f, rng, **opts))
    return report


def _check_model(model, x, y, *, rng, **opts):
    from .model import Sequential

    if model.loss is None:
        raise ValueError("gradcheck(model, x, y) needs a compiled model (it uses model.loss)")
    x64 = _float64(x)
    clone = Sequential.from_config(
        {**model.get_config(), "input_shape": None}, dtype="float64"
    )
    for src, dst in zip(model.layers, clone.layers, strict=True):
        dst.name = src.name
    clone.build(model.input_shape if model.built else x64.shape[1:], seed=model.seed)
    if model.built:
        clone.set_weights(model.get_weights())
        for src, dst in zip(model.layers, clone.layers, strict=True):
            if isinstance(getattr(src, "rng", None), np.random.Generator):
                dst.rng.bit_generator.state = src.rng.bit_generator.state
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
    report = GradcheckReport(f"model '{model.name}'", opts["tol"])
    if grad_x is not None and np.issubdtype(x64.dtype, np.floating):
        report.entries.append(_compare("input", x64, grad_x, f, rng, **opts))
    for layer in clone.layers:
        for p in layer.parameters():
            report.entries.append(
                _compare(f"{layer.name}/{p.name}", p.value, p.grad.copy(), f, rng, **opts)
            )
    return report


def _compare(name, array, analytic, f, rng, *, tol, h, floor, max_entries) -> GradcheckEntry:
    """Finite-difference ``f`` in each sampled entry of ``array`` (in place, then restored)."""
    analytic = np.asarray(analytic, dtype=np.float64)
    if analytic.shape != array.shape:
        raise ValueError(
            f"gradcheck: the gradient of {name!r} has shape {analytic.shape}, the array "
            f"{array.shape}"
        )
    flat = array.reshape(-1)
    if not np.shares_memory(flat, array):
        raise ValueError(f"gradcheck: {name!r} is not contiguous; cannot perturb it in place")
    size = flat.size
    if size <= max_entries:
        picks = np.arange(size)
    else:
        picks = rng.choice(size, size=max_entries - 1, replace=False)
        picks = np.unique(np.append(picks, np.argmax(np.abs(analytic))))
    a_flat = analytic.reshape(-1)
    worst = (-1.0, None, math.nan, math.nan)
    kinks = 0
    f0 = f()
    for i in picks:
        original = flat[i]
        values = []
        for step in (h, -h, 2 * h, -2 * h):
            flat[i] = original + step
            values.append(f())
        flat[i] = original
        d1 = (values[0] - values[1]) / (2 * h)
        d2 = (values[2] - values[3]) / (4 * h)
        numeric = (4.0 * d1 - d2) / 3.0
        jump = (4.0 * (values[0] + values[1]) - (values[2] + values[3]) - 6.0 * f0) / (2 * h)
        if max(abs(d1 - d2), abs(jump)) > KINK_TOL * max(abs(numeric), floor):
            kinks += 1
            continue
        a = float(a_flat[i])
        err = abs(a - numeric) / max(abs(a), abs(numeric), floor)
        if err > worst[0]:
            worst = (err, i, a, numeric)
    err, index, a, n = worst
    return GradcheckEntry(
        name=name,
        shape=tuple(array.shape),
        checked=int(len(picks)),
        kinks=kinks,
        max_rel_error=max(err, 0.0),
        worst_index=None
        if index is None
        else tuple(int(k) for k in np.unravel_index(index, array.shape)),
        analytic=a,
        numeric=n,
        tol=tol,
    )
