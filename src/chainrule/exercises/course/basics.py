"""The lecture's first two steps: the chain rule on one number, then the Dense layer."""

from __future__ import annotations

import numpy as np

from ... import layers, losses, optimizers
from ...parameter import Parameter
from ..base import Case, Exercise, Output, register
from ..patterns import layer_pass

LR, STEPS = 0.01, 50


# ---------------------------------------------------------------------- chain_rule_scalar
def _scalar_grad(x: float) -> float:
    """dL/dx through chainrule: Dense(1) with W = 5, b = −10, then ½ (y − 10)²."""
    layer = layers.Dense(1)
    layer.build((1,), dtype=np.float64)
    layer.W.value[...] = 5.0
    layer.b.value[...] = -10.0
    y = layer.forward(np.array([[x]], dtype=np.float64), training=True)
    loss = losses.MeanSquaredError(half=True)
    loss(y, np.array([[10.0]]))
    return float(layer.backward(loss.backward())[0, 0])


def _scalar_cases(rng):
    cases = [Case(f"x = {x:g}", {"x": x}) for x in (0.0, 3.7, -1.5, 4.0)]
    cases.append(Case(f"descend(lr={LR:g}, steps=1)", {"lr": LR, "steps": 1}))
    cases.append(Case(f"descend(lr={LR:g}, steps={STEPS})", {"lr": LR, "steps": STEPS}))
    return cases


def _scalar_run(ctx, case):
    if "x" in case.inputs:
        return {"dL_dx": ctx.call("dL_dx", x=case.inputs["x"])}
    x = ctx.call("descend", lr=case.inputs["lr"], steps=case.inputs["steps"])
    return {"x_1" if case.inputs["steps"] == 1 else "x_final": x}


def _scalar_reference(case):
    if "x" in case.inputs:
        return {"dL_dx": _scalar_grad(case.inputs["x"])}
    if case.inputs["steps"] != 1:
        return {"x_final": 4.0}  # graded within 1e-3 of the minimum, not of our last step
    x = Parameter(np.zeros(1), "x")
    sgd = optimizers.SGD(case.inputs["lr"])
    x.grad = np.array([_scalar_grad(float(x.value[0]))])
    sgd.step([x])
    return {"x_1": float(x.value[0])}


register(Exercise(
    name="chain_rule_scalar",
    title="the chain rule on one number, and gradient descent",
    statement=f"""\
The lecture's first example: one input, one weight, no matrices.

    y = 5x − 10              the prediction
    L = ½ (y − 10)²          the squared error against the target 10

L depends on x only through y, so by the chain rule

    dL/dx = dL/dy · dy/dx

Write two functions:

    dL_dx(x)                 → the number dL/dx at x
    descend(lr, steps)       → x after `steps` steps of gradient descent from x = 0,
                               each  x ← x − lr · dL/dx

Graded: dL_dx at x = 0, 3.7, −1.5 and 4; one step of descend({LR:g}, 1) (it must land
exactly where one step lands); and descend({LR:g}, {STEPS}) within 1e-3 of 4, the x where
y = 10 and L = 0, in at most {STEPS} steps with learning rate {LR:g}.""",
    hints=(
        "Two derivatives, one per arrow x → y → L: dy/dx of 5x − 10, and dL/dy of ½ (y − 10)² "
        "(the ½ cancels the 2 of the square).",
        "dL/dy = y − 10 and dy/dx = 5, so dL/dx = 5 (5x − 10 − 10) = 25x − 100. At x = 0 that "
        "is −100; at x = 4 it is 0.",
        f"descend: start at x = 0.0, repeat `steps` times x = x - lr * dL_dx(x), return x. One "
        f"step with lr = {LR:g} gives x = 1; each later step shrinks the distance to 4 by "
        f"1 − 25·lr = {1 - 25 * LR:g}.",
    ),
    entries=("dL_dx", "descend"),
    outputs=(Output("dL_dx"), Output("x_1"),
             Output("x_final", atol=1e-3, plain=True, downstream=True)),
    cases=_scalar_cases,
    run=_scalar_run,
    reference=_scalar_reference,
))


# ---------------------------------------------------------------------- dense
def _dense_cases(rng):
    cases = []
    for n, d, m in ((1, 4, 3), (3, 5, 2), (5, 3, 4)):
        cases.append(Case(
            f"N={n}, D={d}, M={m}",
            {"x": rng.standard_normal((n, d)), "W": rng.standard_normal((d, m)),
             "b": rng.standard_normal(m), "grad_z": rng.standard_normal((n, m))},
            counts={"N": n}))
    return cases


def _dense_reference(case):
    i = case.inputs
    _, grad_x, grads = layer_pass(layers.Dense(i["W"].shape[1]), i["x"], i["grad_z"],
                                  {"W": i["W"], "b": i["b"]})
    return {"grad_x": grad_x, "grad_W": grads["W"], "grad_b": grads["b"]}


def _dense_run(ctx, case):
    i = case.inputs
    out = ctx.call("dense_backward", x=i["x"], W=i["W"], b=i["b"], grad_z=i["grad_z"])
    names = ("grad_x", "grad_W", "grad_b")
    return dict(zip(names, ctx.unpack(out, names, "dense_backward"), strict=True))


register(Exercise(
    name="dense",
    title="the backward pass of a Dense layer",
    statement="""\
The lecture's linear layer, with a batch of N samples in rows:

    z = x W + b              x (N, D),  W (D, M),  b (M,),  z (N, M)

Backpropagation hands the layer g = dL/dz (N, M), the gradient of the loss L with respect
to its output. Return the gradients with respect to its input and its parameters:

    dense_backward(x, W, b, grad_z) → (grad_x, grad_W, grad_b)
                                         (N, D)  (D, M)   (M,)

Each has the shape of what it differentiates by. Graded on batches of 1, 3 and 5 with
D ≠ M, so that a transposed product cannot pass.""",
    hints=(
        "Write one entry: z_nm = Σ_d x_nd W_dm + b_m. Then ∂z_nm/∂W_dm = x_nd, "
        "∂z_nm/∂b_m = 1 and ∂z_nm/∂x_nd = W_dm.",
        "The chain rule sums over every z an entry reaches: dL/dW_dm = Σ_n x_nd g_nm, which "
        "is the matrix product xᵀ g, (D, N)(N, M) = (D, M).",
        "b_m is added to every row, so dL/db_m = Σ_n g_nm: grad_z.sum(axis=0), shape (M,). "
        "And dL/dx = g Wᵀ, (N, M)(M, D).",
    ),
    entries=("dense_backward",),
    outputs=(Output("grad_x"), Output("grad_W"),
             Output("grad_b", reduction=("grad_z", (0,)))),
    cases=_dense_cases,
    run=_dense_run,
    reference=_dense_reference,
))
