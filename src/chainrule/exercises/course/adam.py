"""Adam, one step and several, equal to torch.optim.Adam's formula."""

from __future__ import annotations

import numpy as np

from ... import optimizers
from ...parameter import Parameter
from ..base import Case, Exercise, Output, Variant, register

SETTINGS = ("lr", "beta1", "beta2", "eps")


def _cases(rng):
    shape = (3, 4)
    first = {"param": rng.standard_normal(shape), "m": np.zeros(shape), "v": np.zeros(shape),
             "t": 1, "lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
             "grads": [rng.standard_normal(shape)]}
    later = {"param": rng.standard_normal(shape), "m": 0.1 * rng.standard_normal(shape),
             "v": rng.uniform(0.01, 0.1, shape), "t": 7, "lr": 0.01, "beta1": 0.8,
             "beta2": 0.99, "eps": 0.1, "grads": [0.3 * rng.standard_normal(shape)]}
    several = {"param": rng.standard_normal(shape), "m": np.zeros(shape), "v": np.zeros(shape),
               "t": 1, "lr": 0.05, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
               "grads": [rng.standard_normal(shape) for _ in range(5)]}
    return [Case("the first step, t = 1", first),
             Case("one step at t = 7 with ε = 0.1", later),
             Case("five steps from t = 1, your m and v fed back", several)]


def _run(ctx, case):
    i = case.inputs
    param, m, v = i["param"], i["m"], i["v"]
    for k, grad in enumerate(i["grads"]):
        out = ctx.call("adam_step", param=param, grad=grad, m=m, v=v, t=i["t"] + k,
                       **{s: i[s] for s in SETTINGS})
        param, m, v = ctx.unpack(out, ("param", "m", "v"), "adam_step")
        if k + 1 < len(i["grads"]):
            param, m, v = (np.asarray(a, dtype=np.float64) for a in (param, m, v))
    return {"param": param, "m": m, "v": v}


def _reference(case):
    i = case.inputs
    p = Parameter(np.array(i["param"], dtype=np.float64), "param")
    adam = optimizers.Adam(i["lr"], i["beta1"], i["beta2"], i["eps"])
    adam.state[p] = {"step": i["t"] - 1, "m": i["m"].copy(), "v": i["v"].copy()}
    for grad in i["grads"]:
        p.grad = grad
        adam.step([p])
    return {"param": p.value, "m": adam.state[p]["m"], "v": adam.state[p]["v"]}


def _formula(i, bias_correction=True, eps_inside=False):
    param, m, v = i["param"], i["m"], i["v"]
    b1, b2, eps = i["beta1"], i["beta2"], i["eps"]
    for k, g in enumerate(i["grads"]):
        t = i["t"] + k
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = (m / (1 - b1**t), v / (1 - b2**t)) if bias_correction else (m, v)
        step = m_hat / (np.sqrt(v_hat + eps) if eps_inside else np.sqrt(v_hat) + eps)
        param = param - i["lr"] * step
    return param


def _variants(case, reference):
    i = case.inputs
    return [
        Variant("mismatch", "Adam without the bias corrections 1 − β₁ᵗ and 1 − β₂ᵗ",
                {"param": _formula(i, bias_correction=False)}),
        Variant("mismatch", "ε inside the square root, √(v̂ + ε); torch.optim.Adam adds it "
                "outside: √v̂ + ε", {"param": _formula(i, eps_inside=True)}),
    ]


register(Exercise(
    name="adam_step",
    title="one step of Adam, as torch.optim.Adam",
    statement="""\
Adam keeps two moving averages per parameter, m of the gradient and v of its square, and
corrects both for starting at 0. Step t (counting from 1), for gradient g:

    m ← β₁ m + (1 − β₁) g               v ← β₂ v + (1 − β₂) g²
    m̂ = m / (1 − β₁ᵗ)                   v̂ = v / (1 − β₂ᵗ)
    param ← param − lr · m̂ / (√v̂ + ε)       (ε outside the root, as torch.optim.Adam)

    adam_step(param, grad, m, v, t, lr, beta1, beta2, eps) → (param, m, v)

All arrays have one shape; return new ones and leave the inputs unchanged. Graded on the
first step, a step at t = 7 with ε = 0.1 (where ε's place shows), and five steps in a row
with your own m and v fed back.""",
    hints=(
        "Update m and v first, then correct them: m_hat = m / (1 - beta1**t), likewise v_hat.",
        "The step is lr * m_hat / (np.sqrt(v_hat) + eps), subtracted from param.",
        "m = beta1 * m + (1 - beta1) * grad makes a new array; m *= beta1 would change the "
        "caller's m.",
    ),
    entries=("adam_step",),
    outputs=(Output("param", baseline="param"), Output("m"), Output("v")),
    cases=_cases,
    run=_run,
    reference=_reference,
    variants=_variants,
))
