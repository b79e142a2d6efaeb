"""Step through one backward pass, from the loss back to the input, one layer at a time.

``explain_backward(model, x, y)`` runs one training-mode forward and backward on a float64 copy
of a compiled model (the model itself is not touched) and reports, for the loss and then for
each layer in reverse order:

- the formula its backward applies, taken from the layer's (or loss's) own docstring;
- every factor of that step with its shape, e.g. ``dL/dW₂ = a₁ᵀ (256×8) · dL/dz₂ (8×10) →
  (256×10)``, and its norm;
- for a small example (at most 4 samples, every axis of the array at most 5) the numbers.

Tensors are named as in the lecture: the input is x, a Dense or Conv2D layer's output z₁, z₂, …
(numbered by weight layer), an activation's output a₁, a₂, … (the number of the weight layer
before it), a Flatten's output keeps its input's name and a Dropout's or RandomShift's adds a
prime (a₁′: a₁ with its dropout mask); every other layer's output is yᵢ (i = its position in
the model).
"""

from __future__ import annotations

import html
import inspect
from dataclasses import dataclass, field

import numpy as np

from . import losses as losses_mod
from .layers import activations
from .layers.augment import RandomShift
from .layers.base import Layer
from .layers.conv import Conv2D
from .layers.dense import Dense
from .layers.dropout import Dropout
from .layers.normalization import BatchNorm
from .layers.reshape import Flatten

#: Arrays with every axis at most this long are printed in full.
SMALL_AXIS = 5
#: Batches of at most this many samples are printed in full.
SMALL_BATCH = 4

_SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def _sub(k: int) -> str:
    return str(k).translate(_SUBSCRIPTS)


def _shape(a: np.ndarray) -> str:
    """(8×10) for a matrix, (10,) for a vector: the notation of the formulas."""
    if a.ndim == 1:
        return f"({a.shape[0]},)"
    return "(" + "×".join(map(str, a.shape)) + ")"


def backward_formula(obj) -> str:
    """The lines of ``obj``'s class docstring that state its backward (those with "dL/d" or
    starting "Backward", up to a "Derivation" paragraph), dedented; "" when there are none."""
    doc = inspect.getdoc(type(obj)) or ""
    picked = []
    for line in (line.strip() for line in doc.splitlines()):
        if line.startswith("Derivation"):
            break  # the derivation that follows the formulas is for reading, not repeating
        if "dL/d" in line or line.startswith("Backward"):
            picked.append(line)
    return "\n".join(picked)


@dataclass
class Factor:
    """One array of a step: its name, how it is computed (with shapes), and its value."""

    name: str
    formula: str
    value: np.ndarray

    @property
    def norm(self) -> float:
        return float(np.linalg.norm(self.value))


@dataclass
class Step:
    """The loss or one layer: what its backward computes, factor by factor."""

    title: str
    formula: str
    factors: list[Factor] = field(default_factory=list)


@dataclass
class BackwardReport:
    """The steps of one backward pass, loss first; printable, and rendered in notebooks."""

    model: str
    samples: int
    loss: float
    steps: list[Step]

    def _printed(self, factor: Factor) -> bool:
        """Numbers are shown for small examples: ≤ 4 samples, every axis ≤ 5."""
        a = factor.value
        return self.samples <= SMALL_BATCH and a.ndim <= 2 and all(d <= SMALL_AXIS
                                                                    for d in a.shape)

    def __getitem__(self, title: str) -> Step:
        for step in self.steps:
            if step.title == title:
                return step
        raise KeyError(f"no step {title!r}; have {[s.title for s in self.steps]}")

    def __str__(self) -> str:
        out = [f"backward pass of model '{self.model}' on {self.samples} samples: "
               f"L = {self.loss:.6g}", ""]
        for number, step in enumerate(self.steps, start=1):
            out.append(f"{number}. {step.title}")
            out += [f"   {line}" for line in step.formula.splitlines()]
            for factor in step.factors:
                out.append(f"   {factor.name} = {factor.formula}   ‖·‖ = {factor.norm:.4g}")
                if self._printed(factor):
                    out += [f"      {line}" for line in _numbers(factor.value).splitlines()]
            out.append("")
        return "\n".join(out).rstrip() + "\n"

    def _repr_html_(self) -> str:
        parts = [f"<div class='chainrule-backward'><p><b>Backward pass of model "
                 f"'{html.escape(self.model)}'</b> on {self.samples} samples: "
                 f"L = {self.loss:.6g}</p><ol>"]
        for step in self.steps:
            parts.append(f"<li><p><b>{html.escape(step.title)}</b></p>")
            if step.formula:
                parts.append(f"<pre>{html.escape(step.formula)}</pre>")
            parts.append("<table><tr><th>factor</th><th>computed as</th><th>‖·‖</th>"
                         "<th>values</th></tr>")
            for factor in step.factors:
                values = (f"<pre>{html.escape(_numbers(factor.value))}</pre>"
                          if self._printed(factor) else "")
                parts.append(
                    f"<tr><td>{html.escape(factor.name)}</td>"
                    f"<td><code>{html.escape(factor.formula)}</code></td>"
                    f"<td>{factor.norm:.4g}</td><td>{values}</td></tr>"
                )
            parts.append("</table></li>")
        parts.append("</ol></div>")
        return "".join(parts)


def _numbers(a: np.ndarray) -> str:
    # Rounded to the 4 printed decimals, then + 0.0, which turns the −0.0 of a rounded −1e-17
    # into 0.0: the same number, and it reads as one.
    return np.array2string(np.round(np.asarray(a, dtype=np.float64), 4) + 0.0, precision=4,
                           suppress_small=True, max_line_width=90)


# ---------------------------------------------------------------------- the walk
def explain_backward(model, x, y) -> BackwardReport:
    """Walk one backward pass of a compiled model on (x, y), loss first, then layer by layer.

    Args:
        model: a compiled Sequential (built, or built here from x).
        x: inputs (N, …).
        y: targets, as the model's loss takes them.

    Returns:
        A BackwardReport: ``str(report)`` is the text, ``report._repr_html_()`` the notebook view,
        ``report.steps[k].factors`` the arrays themselves.

    Raises:
        ValueError: if the model is not compiled (the walk starts at its loss).
    """
    if model.loss is None:
        raise ValueError("explain_backward needs a compiled model (the walk starts at its loss)")
    x = np.asarray(x)
    x64 = x.astype(np.float64) if np.issubdtype(x.dtype, np.floating) else x
    copy = model.copy(dtype="float64", input_shape=x64.shape[1:])
    loss = type(model.loss)(**model.loss.get_config())
    y = np.asarray(y)
    target = y.astype(np.float64) if np.issubdtype(y.dtype, np.floating) else y

    symbols = _symbols(copy.layers)
    inputs, out = [], x64
    for layer in copy.layers:
        inputs.append(out)
        out = layer.forward(out, training=True)
    value = loss(out, target)
    grad = loss.backward()
    steps = [_loss_step(loss, out, target, grad, symbols[-1][1])]
    for i in range(len(copy.layers) - 1, -1, -1):
        layer = copy.layers[i]
        cache = layer.cache  # what the step shows of it (backward releases it)
        grad_x = layer.backward(grad)
        steps.append(_layer_step(layer, cache, inputs[i], grad, grad_x, *symbols[i]))
        grad = grad_x
    return BackwardReport(model.name, len(x64), float(value), steps)


def _symbols(layers: list[Layer]) -> list[tuple[str, str]]:
    """(input symbol, output symbol) of each layer: x, z₁, a₁, z₂, … (see the module doc)."""
    out, k, current = [], 0, "x"
    for i, layer in enumerate(layers, start=1):
        if isinstance(layer, Flatten):
            name = current  # the same values, reshaped
        elif isinstance(layer, Dropout | RandomShift):
            name = current + "′"  # the same tensor, masked or moved in training
        elif isinstance(layer, Dense | Conv2D):
            k += 1
            name = f"z{_sub(k)}"
        elif isinstance(layer, (*activations.ELEMENTWISE, activations.Softmax)):
            name = f"a{_sub(k)}"
        else:
            name = f"y{_sub(i)}"
        out.append((current, name))
        current = name
    return out


def _loss_step(loss, pred, target, grad, z: str) -> Step:
    name = type(loss).__name__
    n = pred.shape[0]
    # A cross-entropy's docstring gives both paths; keep the one this loss takes.
    other = "Probabilities" if getattr(loss, "from_logits", False) else "Logits"
    formula = "\n".join(line for line in backward_formula(loss).splitlines()
                        if not line.startswith(other))
    step = Step(f"loss: {name}", formula)
    g = f"dL/d{z}"
    fused = (losses_mod.SparseCategoricalCrossEntropy, losses_mod.CategoricalCrossEntropy)
    # The one-hot walk-through is for (N, C) logits; (N, T, C) ones get the plain gradient.
    if isinstance(loss, fused) and loss.from_logits and pred.ndim == 2:
        a = np.exp(pred - pred.max(axis=1, keepdims=True))
        a /= a.sum(axis=1, keepdims=True)
        Y = target if target.shape == pred.shape else np.eye(pred.shape[1])[target]
        step.factors += [
            Factor(f"a = softmax({z})", f"exp({z}) / Σ exp({z}) {_shape(a)}", a),
            Factor("Y", f"one-hot targets {_shape(Y)}", Y),
            Factor(g, f"(a − Y) / N, N = {n} → {_shape(grad)}", grad),
            Factor(f"N · {g}", f"a − Y {_shape(grad)}   (the per-sample result)", grad * n),
        ]
    else:
        step.factors.append(Factor(g, f"loss.backward() → {_shape(grad)}", grad))
    return step


def _layer_step(layer, cache, x, grad_y, grad_x, x_sym: str, y_sym: str) -> Step:
    step = Step(f"{type(layer).__name__} '{layer.name}'", backward_formula(layer))
    g = f"dL/d{y_sym}"
    gx = f"dL/d{x_sym}"
    f = step.factors
    if isinstance(layer, Dense):
        x2, g2 = x.reshape(-1, x.shape[-1]), grad_y.reshape(-1, grad_y.shape[-1])
        W = layer.W.value
        f.append(Factor(f"{x_sym}", f"the layer's input {_shape(x2)}", x2))
        f.append(Factor(g, f"from the step before {_shape(g2)}", g2))
        f.append(Factor(
            f"dL/dW{y_sym[1:]}",
            f"{x_sym}ᵀ {_shape(x2.T)} · {g} {_shape(g2)} → {_shape(layer.W.grad)}", layer.W.grad))
        if layer.use_bias:
            f.append(Factor(f"dL/db{y_sym[1:]}", f"Σₙ {g} {_shape(g2)} → {_shape(layer.b.grad)}",
                            layer.b.grad))
        if grad_x is not None:
            f.append(Factor(gx, f"{g} {_shape(g2)} · W{y_sym[1:]}ᵀ {_shape(W.T)} → "
                                f"{_shape(grad_x)}", grad_x))
        return step
    if isinstance(layer, Flatten):
        f.append(Factor(gx, f"{g} {_shape(grad_y)} reshaped → {_shape(grad_x)}", grad_x))
        return step
    f.append(Factor(g, f"from the step before {_shape(grad_y)}", grad_y))
    local = _local_derivative(layer, cache, x, x_sym, y_sym)
    if local is not None:
        label, value = local
        f.append(Factor(label, f"{_shape(value)}", value))
        f.append(Factor(gx, f"{g} {_shape(grad_y)} ⊙ {label} {_shape(value)} → {_shape(grad_x)}",
                        grad_x))
        return step
    if isinstance(layer, activations.Softmax):
        s = cache
        f.append(Factor("s", f"the softmax output {_shape(s)}", s))
        f.append(Factor(gx, f"s ⊙ ({g} − ⟨{g}, s⟩) {_shape(s)} → {_shape(grad_x)}   "
                            "(the Jacobian diag(s) − s sᵀ applied, never formed)", grad_x))
        return step
    for p in layer.parameters():
        f.append(Factor(f"dL/d{p.name} ({layer.name})", f"{_shape(p.grad)}", p.grad))
    if isinstance(layer, BatchNorm):
        x_hat = layer.x_hat(cache)
        f.insert(1, Factor("x̂", f"(x − μ) / σ, batch statistics {_shape(x_hat)}", x_hat))
    if grad_x is not None:
        f.append(Factor(gx, f"backward({g} {_shape(grad_y)}) → {_shape(grad_x)}", grad_x))
    return step


def _local_derivative(layer, cache, x, x_sym: str,
                      y_sym: str) -> tuple[str, np.ndarray] | None:
    """The element-wise derivative d(out)/d(in) of an activation, named and as an array
    (None for other layers)."""
    if isinstance(layer, activations.ReLU):
        return f"[{x_sym} > 0]", (x > 0).astype(np.float64)
    if isinstance(layer, activations.LeakyReLU):
        return f"(1 where {x_sym} > 0, else {layer.alpha:g})", np.where(x > 0, 1.0, layer.alpha)
    if isinstance(layer, activations.Sigmoid):
        return f"{y_sym} (1 − {y_sym})", cache * (1.0 - cache)
    if isinstance(layer, activations.Tanh):
        return f"(1 − {y_sym}²)", 1.0 - cache * cache
    if isinstance(layer, activations.Identity):
        return "1", np.ones_like(x, dtype=np.float64)
    return None


def lecture_example(samples: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The lecture's red, green and blue points in the plane: x (samples, 2), y (samples,).

    The first three are the classes' centres, one per class; more samples are drawn around
    the centres in turn (σ = 0.5, seeded). With a softmax regression whose weights start at
    zero, every class scores the same, so a = (⅓, ⅓, ⅓) for each point and dL/dz = a − y has
    ⅓ − 1 = −⅔ on the true class.
    """
    centres = np.array([[0.0, 2.0], [-1.8, -1.0], [1.8, -1.0]])
    y = np.arange(samples) % 3
    x = centres[y].copy()
    x[3:] += 0.5 * np.random.default_rng(seed).standard_normal((max(samples - 3, 0), 2))
    return x, y
