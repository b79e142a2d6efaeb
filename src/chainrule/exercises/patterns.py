"""The shapes most exercises share: a forward/backward pair graded through ``Ctx``, and a
chainrule layer run once in float64 as the reference."""

from __future__ import annotations

import numpy as np

from .base import Output


def forward_backward(forward: str, backward: str, args: tuple[str, ...], y: str,
                     grads: tuple[str, ...]):
    """``run`` for ``forward(*args) -> (y, cache)`` then ``backward(grad_y, cache) -> grads``."""

    def run(ctx, case):
        inputs = case.inputs
        out = ctx.call(forward, **{k: inputs[k] for k in args})
        ctx.out[y], cache = ctx.unpack(out, (y, "cache"), forward)
        back = ctx.call(backward, grad_y=inputs["grad_y"], cache=cache)
        ctx.out.update(zip(grads, ctx.unpack(back, grads, backward), strict=True))
        return ctx.out

    return run


def upstream_value(forward: str, args: tuple[str, ...]):
    """``fd_value`` for a forward/backward pair: f = Σ grad_y ⊙ y, y from the learner's forward."""

    def value(ctx, inputs):
        out = ctx.call(forward, **{k: inputs[k] for k in args})
        y, _ = ctx.unpack(out, ("y", "cache"), forward)
        return np.sum(np.asarray(inputs["grad_y"]) * np.asarray(y, dtype=np.float64))

    return value


def pair_outputs(y: str, grads: dict[str, str]) -> tuple[Output, ...]:
    """The forward's output, then each gradient (name → the input it differentiates by)."""
    return (Output(y),) + tuple(Output(g, gradient_of=wrt) for g, wrt in grads.items())


def layer_pass(layer, x, grad_y, params: dict | None = None):
    """Run a chainrule layer in float64: (y, grad_x, {param name: grad}).

    ``params`` sets the layer's parameters by name (W, b, gamma, beta) before the pass.
    """
    layer.build(np.shape(x)[1:], rng=np.random.default_rng(0), dtype=np.float64)
    for p in layer.parameters():
        p.value = np.array(params[p.name], dtype=np.float64)
    y = layer.forward(x, training=True)
    grad_x = layer.backward(np.asarray(grad_y, dtype=np.float64))
    return y, grad_x, {p.name: p.grad for p in layer.parameters()}


def with_zeros(rng, shape, count: int) -> np.ndarray:
    """Standard normal values with ``count`` entries set exactly to 0 (a kink of ReLU)."""
    x = rng.standard_normal(shape)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, size=count, replace=False)] = 0.0
    return x


def large(rng, shape, scale: float = 1000.0) -> np.ndarray:
    """Values of order ±scale, where exp overflows without care."""
    return scale * rng.uniform(0.3, 1.0, shape) * rng.choice([-1.0, 1.0], shape)
