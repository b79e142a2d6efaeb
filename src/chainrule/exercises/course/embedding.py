"""Embedding: a table lookup whose gradient must add up repeated ids."""

from __future__ import annotations

import numpy as np

from ... import layers
from ..base import Case, Exercise, Output, Variant, register
from ..patterns import forward_backward, upstream_value


def _cases(rng):
    out = []
    for (n, t), (v, e), repeats in (((1, 4), (7, 3), False), ((3, 5), (6, 4), True),
                                    ((4, 2), (5, 3), True)):
        ids = (rng.permutation(v)[: n * t].reshape(n, t) if not repeats
               else rng.integers(0, v, (n, t)))
        if repeats:
            ids.reshape(-1)[:3] = ids.reshape(-1)[0]  # at least one id three times
        out.append(Case(f"ids {ids.shape}, W {(v, e)}" + (", repeated ids" if repeats else ""),
                        {"ids": ids, "W": rng.standard_normal((v, e)),
                         "grad_y": rng.standard_normal((n, t, e))}))
    return out


def _reference(case):
    i = case.inputs
    layer = layers.Embedding(*i["W"].shape)
    layer.build(i["ids"].shape[1:], dtype=np.float64)
    layer.W.value = np.array(i["W"], dtype=np.float64)
    y = layer.forward(i["ids"], training=True)
    layer.backward(i["grad_y"])
    return {"y": y, "grad_W": layer.W.grad}


def _variants(case, reference):
    i = case.inputs
    overwritten = np.zeros(i["W"].shape)
    overwritten[i["ids"].reshape(-1)] += i["grad_y"].reshape(-1, i["W"].shape[1])
    return [Variant("repeated_ids", "a repeated id keeps one position's gradient "
                    "(grad_W[ids] += g buffers the writes), not the sum over its positions",
                    {"grad_W": overwritten})]


register(Exercise(
    name="embedding",
    title="an embedding lookup and its gradient",
    statement="""\
An embedding looks up one row of a table W (V, E) per integer id:

    y[n, t] = W[ids[n, t]]          ids (N, T) in [0, V),  y (N, T, E)

y copies rows, so dL/dW[v] collects grad_y at every position whose id is v, and a row
looked up three times gets the sum of three gradients. Ids repeat in the graded batches.
(No gradient flows to the ids: they are integers.)

    embedding_forward(ids, W) → (y, cache)
    embedding_backward(grad_y, cache) → grad_W          grad_y (N, T, E), grad_W (V, E)""",
    hints=(
        "The forward is W[ids]; keep ids (and W's shape) for the backward.",
        "grad_W starts as zeros of W's shape; every position (n, t) adds grad_y[n, t] to row "
        "ids[n, t].",
        "grad_W[ids] += grad_y does not add repeats (NumPy writes each row once); "
        "np.add.at(grad_W, ids.reshape(-1), grad_y.reshape(-1, E)) does.",
    ),
    entries=("embedding_forward", "embedding_backward"),
    outputs=(Output("y"), Output("grad_W", gradient_of="W")),
    cases=_cases,
    run=forward_backward("embedding_forward", "embedding_backward", ("ids", "W"), "y",
                         ("grad_W",)),
    reference=_reference,
    variants=_variants,
    fd_value=upstream_value("embedding_forward", ("ids", "W")),
))
