"""Losses with their gradients: softmax cross-entropy (fused) and the lecture's ½ MSE."""

from __future__ import annotations

import numpy as np

from ... import functional as F
from ... import losses
from ..base import Case, Exercise, Output, Variant, register
from ..patterns import large


def _loss_run(name: str, args: tuple[str, str], grad: str):
    def run(ctx, case):
        out = ctx.call(name, **{k: case.inputs[k] for k in args})
        loss, g = ctx.unpack(out, ("loss", grad), name)
        return {"loss": loss, grad: g}

    return run


def _loss_value(name: str, args: tuple[str, str]):
    def value(ctx, inputs):
        out = ctx.call(name, **{k: inputs[k] for k in args})
        return ctx.unpack(out, ("loss", "grad"), name)[0]

    return value


def _loss_reference(loss, args, grad):
    def reference(case):
        fn = loss()
        value = fn(*(case.inputs[k] for k in args))
        return {"loss": value, grad: fn.backward()}

    return reference


# ---------------------------------------------------------------------- softmax_cross_entropy
def _sce_cases(rng):
    out = []
    for n, c in ((1, 4), (3, 5), (5, 3)):
        out.append(Case(f"N={n}, C={c}", {"z": 2.0 * rng.standard_normal((n, c)),
                                          "y": rng.integers(0, c, n)}, counts={"N": n}))
    out.append(Case("large logits (±1000), N=4, C=3",
                    {"z": large(rng, (4, 3)), "y": rng.integers(0, 3, 4)}, large=True,
                    counts={"N": 4}))
    out.append(Case("N=4000, C=10", {"z": 2.0 * rng.standard_normal((4000, 10)),
                                     "y": rng.integers(0, 10, 4000)}, counts={"N": 4000},
                    timing=True))
    return out


def _sce_variants(case, reference):
    z, y = case.inputs["z"], case.inputs["y"]
    n, rows = len(y), np.arange(len(y))
    s0 = F.softmax(z, axis=0)
    grad = s0.copy()
    grad[rows, y] -= 1.0
    return [Variant("wrong_axis", "the softmax of each column (axis 0), not of each row",
                    {"loss": -np.mean(np.log(s0[rows, y])), "grad_z": grad / n})]


register(Exercise(
    name="softmax_cross_entropy",
    title="softmax and cross-entropy fused, with dL/dz = (softmax(z) − Y)/N",
    statement="""\
The lecture's classifier loss on a batch of logits z (N, C) with integer labels y (N,):

    L = −(1/N) Σₙ log softmax(zₙ)[yₙ]

Through the softmax Jacobian diag(s) − s sᵀ the gradient collapses to

    dL/dz = (softmax(z) − Y) / N          Y the one-hot rows of y

Return both, without a one-hot matrix or a Jacobian, and finite for logits of ±1000:

    softmax_cross_entropy(z, y) → (loss, grad_z)        a float and (N, C)""",
    hints=(
        "log softmax(z)_i = (z_i − m) − log Σ_j exp(z_j − m) with m the row's maximum: the "
        "log-sum-exp form, finite for any logits, with no log of a probability that underflowed "
        "to 0.",
        "Pick each row's entry at its label with log_s[np.arange(N), y]; the loss is minus "
        "their mean.",
        "grad_z = softmax(z), then subtract 1 at [np.arange(N), y] (that is − Y), then divide "
        "everything by N: the loss is a mean.",
    ),
    entries=("softmax_cross_entropy",),
    outputs=(Output("loss"), Output("grad_z", gradient_of="z")),
    cases=_sce_cases,
    run=_loss_run("softmax_cross_entropy", ("z", "y"), "grad_z"),
    reference=_loss_reference(lambda: losses.SparseCategoricalCrossEntropy(from_logits=True),
                              ("z", "y"), "grad_z"),
    variants=_sce_variants,
    fd_value=_loss_value("softmax_cross_entropy", ("z", "y")),
))


# ---------------------------------------------------------------------- mse
def _mse_cases(rng):
    out = []
    for n, d in ((1, 3), (3, 5), (5, 1)):
        # A mean over N·D entries; dividing by N or D alone is off by a count too.
        out.append(Case(f"N={n}, D={d}", {"pred": rng.standard_normal((n, d)),
                                          "target": rng.standard_normal((n, d))},
                        counts={"N·D": n * d, "N": n, "D": d}))
    return out


register(Exercise(
    name="mse",
    title="the lecture's ½ mean squared error and its gradient",
    statement="""\
Half the mean squared error over all N·D entries of a prediction against a target:

    L = ½ · (1/(N·D)) Σₙ Σ_d (pred_nd − target_nd)²          dL/dpred = (pred − target) / (N·D)

The ½ cancels the 2 of the square. Return both:

    mse(pred, target) → (loss, grad_pred)          pred, target, grad_pred (N, D); loss a float""",
    hints=(
        "Differentiate one term: d/dp ½ (p − t)² = p − t. The mean divides every term by the "
        "number of entries.",
        "diff = pred - target; loss = 0.5 * np.mean(diff ** 2); grad = diff / diff.size.",
    ),
    entries=("mse",),
    outputs=(Output("loss"), Output("grad_pred", gradient_of="pred")),
    cases=_mse_cases,
    run=_loss_run("mse", ("pred", "target"), "grad_pred"),
    reference=_loss_reference(lambda: losses.MeanSquaredError(half=True), ("pred", "target"),
                              "grad_pred"),
    fd_value=_loss_value("mse", ("pred", "target")),
))
