"""Layers put together: the notebooks' MLP, a Dense layer object, batch normalisation."""

from __future__ import annotations

import numpy as np

from ... import layers, losses, optimizers
from ..base import Case, Exercise, Output, Variant, register
from ..learner import Finding
from ..patterns import layer_pass


# ---------------------------------------------------------------------- mlp_backward
def _mlp_cases(rng):
    out = []
    for n, d, h, c in ((1, 4, 5, 3), (3, 6, 4, 5), (6, 3, 7, 4)):
        out.append(Case(f"N={n}, D={d}, H={h}, C={c}", {
            "x": rng.standard_normal((n, d)), "y": rng.integers(0, c, n),
            "W1": rng.standard_normal((d, h)) / np.sqrt(d),
            "W2": rng.standard_normal((h, c)) / np.sqrt(h)}, counts={"N": n}))
    return out


def _mlp_reference(case):
    i = case.inputs
    first = layers.Dense(i["W1"].shape[1], use_bias=False)
    relu = layers.ReLU()
    second = layers.Dense(i["W2"].shape[1], use_bias=False)
    loss = losses.SparseCategoricalCrossEntropy(from_logits=True)  # softmax → log → mean NLL
    for layer, shape, W in ((first, i["x"].shape[1:], i["W1"]), (relu, i["W1"].shape[1:], None),
                            (second, i["W1"].shape[1:], i["W2"])):
        layer.build(shape, dtype=np.float64)
        if W is not None:
            layer.W.value = np.array(W, dtype=np.float64)
    loss(second.forward(relu.forward(first.forward(i["x"], True), True), True), i["y"])
    first.backward(relu.backward(second.backward(loss.backward())))
    return {"grad_W1": first.W.grad, "grad_W2": second.W.grad}


def _mlp_run(ctx, case):
    i = case.inputs
    out = ctx.call("mlp_backward", x=i["x"], y=i["y"], W1=i["W1"], W2=i["W2"])
    names = ("grad_W1", "grad_W2")
    return dict(zip(names, ctx.unpack(out, names, "mlp_backward"), strict=True))


register(Exercise(
    name="mlp_backward",
    title="backpropagation through the notebooks' MLP",
    statement="""\
The network the student notebooks built layer by layer, on a batch x (N, D) with integer
labels y (N,):

    h = x W1         Matmul         W1 (D, H),  h (N, H)
    a = ReLU(h)
    z = a W2         Matmul         W2 (H, C),  z (N, C)
    s = softmax(z)   Softmax
    ℓ = log s        Log
    L = −(1/N) Σₙ ℓ[n, yₙ]          mean negative log-likelihood

Return the gradients of L with respect to both weight matrices:

    mlp_backward(x, y, W1, W2) → (grad_W1, grad_W2)          (D, H) and (H, C)""",
    hints=(
        "Go backwards one layer at a time, keeping each forward value. Softmax, Log and the "
        "mean NLL together give dL/dz = (s − Y) / N (the softmax_cross_entropy exercise).",
        "Through a Matmul z = a W2: dL/dW2 = aᵀ dL/dz and dL/da = dL/dz W2ᵀ. Through the "
        "ReLU: dL/dh = dL/da where h > 0, else 0.",
        "Then dL/dW1 = xᵀ dL/dh. Check every shape: (D, N)(N, H) = (D, H).",
    ),
    entries=("mlp_backward",),
    outputs=(Output("grad_W1"), Output("grad_W2")),
    cases=_mlp_cases,
    run=_mlp_run,
    reference=_mlp_reference,
))


# ---------------------------------------------------------------------- dense_layer
LAYER_LR = 0.1


def _layer_cases(rng):
    out = []
    for n, d, m in ((1, 4, 3), (3, 5, 2), (5, 3, 4)):
        out.append(Case(f"N={n}, D={d}, M={m}", {
            "W": rng.standard_normal((d, m)), "b": rng.standard_normal(m),
            "x": rng.standard_normal((n, d)), "grad_z": rng.standard_normal((n, m)),
            "lr": LAYER_LR}, counts={"N": n}))
    return out


def _layer_reference(case):
    i = case.inputs
    dense = layers.Dense(i["W"].shape[1])
    z, grad_x, grads = layer_pass(dense, i["x"], i["grad_z"], {"W": i["W"], "b": i["b"]})
    optimizers.SGD(i["lr"]).step(dense.parameters())
    return {"z": z, "grad_x": grad_x, "grad_W": grads["W"], "grad_b": grads["b"],
            "W_updated": dense.W.value, "b_updated": dense.b.value}


def _layer_run(ctx, case):
    i = case.inputs
    W, b = i["W"], i["b"]
    obj = ctx.call("DenseLayer", W=W, b=b)
    out = ctx.out
    out["z"] = ctx.method(obj, "forward", x=i["x"])
    before = ctx.attribute(obj, "W", W.shape)
    out["grad_x"] = ctx.method(obj, "backward", grad_z=i["grad_z"])
    after = ctx.attribute(obj, "W", W.shape)
    if not (np.shape(after) == np.shape(before) and np.array_equal(after, before)):
        # The notebooks' bug: update inside backward, then grad_x from the new W.
        ctx.findings.append(Finding("mutates_input", "DenseLayer.backward changed self.W",
                                    unless=("stale_weights",)))
        ctx.variants.append(Variant(
            "stale_weights", "equals grad_z @ W.T with W as backward left it, not as forward "
            "used it", {"grad_x": i["grad_z"] @ np.asarray(after, dtype=np.float64).T}))
    out["grad_W"] = ctx.attribute(obj, "grad_W", W.shape)
    out["grad_b"] = ctx.attribute(obj, "grad_b", b.shape)
    ctx.method(obj, "update", lr=i["lr"])
    out["W_updated"] = ctx.attribute(obj, "W", W.shape)
    out["b_updated"] = ctx.attribute(obj, "b", b.shape)
    return out


register(Exercise(
    name="dense_layer",
    title="a Dense layer object with forward, backward and update",
    statement=f"""\
The notebooks' layer class, z = x W + b, with the chainrule contract: backward computes
every gradient from the weights forward used and changes none of them; update(lr) takes
the step.

    layer = DenseLayer(W, b)       W (D, M), b (M,), kept as layer.W and layer.b
    z = layer.forward(x)           x (N, D) → z (N, M)
    grad_x = layer.backward(grad_z)   sets layer.grad_W (D, M) and layer.grad_b (M,);
                                      returns grad_x (N, D)
    layer.update(lr)               W ← W − lr·grad_W,  b ← b − lr·grad_b

Graded on z, grad_x, grad_W, grad_b, and W and b after update({LAYER_LR:g}) — and on backward
leaving W as it was.""",
    hints=(
        "forward keeps x (self.x = x): backward needs it for grad_W = xᵀ g.",
        "backward: self.grad_W = self.x.T @ grad_z, self.grad_b = grad_z.sum(axis=0), "
        "return grad_z @ self.W.T. No assignment to self.W in backward.",
        "The notebooks' version updated W inside backward and returned grad_z @ W.T with the "
        "new W: the gradient of a layer that forward never ran. Update in update() only.",
    ),
    entries=("DenseLayer",),
    outputs=(Output("z"), Output("grad_x"), Output("grad_W"),
             Output("grad_b", reduction=("grad_z", (0,))),
             Output("W_updated", baseline="W", downstream=True),
             Output("b_updated", baseline="b", downstream=True)),
    cases=_layer_cases,
    run=_layer_run,
    reference=_layer_reference,
))


# ---------------------------------------------------------------------- batchnorm
EPS = 1e-5


def _bn_cases(rng):
    out = []
    for n, d in ((2, 3), (4, 5), (7, 2)):
        out.append(Case(f"N={n}, D={d}", {
            "x": 1.0 + 2.0 * rng.standard_normal((n, d)),
            "gamma": rng.uniform(0.5, 2.0, d) * rng.choice([-1.0, 1.0], d),
            "beta": rng.standard_normal(d), "grad_y": rng.standard_normal((n, d)),
            "eps": EPS}, counts={"N": n}))
    return out


def _bn_reference(case):
    i = case.inputs
    _, grad_x, grads = layer_pass(layers.BatchNorm(eps=i["eps"]), i["x"], i["grad_y"],
                                  {"gamma": i["gamma"], "beta": i["beta"]})
    return {"grad_x": grad_x, "grad_gamma": grads["gamma"], "grad_beta": grads["beta"]}


def _bn_variants(case, reference):
    i = case.inputs
    x, g, gamma, eps = i["x"], i["grad_y"], i["gamma"], i["eps"]
    biased = 1.0 / np.sqrt(x.var(axis=0) + eps)
    unbiased = 1.0 / np.sqrt(x.var(axis=0, ddof=1) + eps)
    x_hat = (x - x.mean(axis=0)) * unbiased
    n = x.shape[0]
    return [
        Variant("mismatch", "equals γ g / σ: μ and σ treated as constants, as at inference; in "
                "training they depend on every xₙ", {"grad_x": gamma * biased * g}),
        Variant("mismatch", "uses the unbiased variance (÷ (N − 1)); training normalises by "
                "the biased one (÷ N)", {
                    "grad_x": (gamma * unbiased / n) * (n * g - g.sum(0)
                                                        - x_hat * (g * x_hat).sum(0)),
                    "grad_gamma": (g * x_hat).sum(0)}),
    ]


def _bn_run(ctx, case):
    i = case.inputs
    out = ctx.call("batchnorm_backward", x=i["x"], gamma=i["gamma"], beta=i["beta"],
                   grad_y=i["grad_y"], eps=i["eps"])
    names = ("grad_x", "grad_gamma", "grad_beta")
    return dict(zip(names, ctx.unpack(out, names, "batchnorm_backward"), strict=True))


register(Exercise(
    name="batchnorm",
    title="batch normalisation's training-mode backward",
    statement=f"""\
Batch normalisation in training mode normalises each feature d by the statistics of the
batch, then scales and shifts it:

    μ = (1/N) Σₙ xₙ         σ² = (1/N) Σₙ (xₙ − μ)²   (biased)        σ̃ = √(σ² + ε)
    x̂ = (x − μ) / σ̃         y = γ x̂ + β

    x, y (N, D);  γ, β, μ, σ² (D,);  ε = {EPS:g}

μ and σ depend on every sample, so each xₙ reaches every yₘ of its feature. Given
grad_y = dL/dy, return

    batchnorm_backward(x, gamma, beta, grad_y, eps) → (grad_x, grad_gamma, grad_beta)
                                                         (N, D)  (D,)        (D,)""",
    hints=(
        "The parameter gradients are sums over the batch: dL/dβ = Σₙ g, dL/dγ = Σₙ g x̂.",
        "For grad_x use ∂μ/∂xⱼ = 1/N and ∂σ̃/∂xⱼ = x̂ⱼ/N; the quotient rule then gives "
        "∂x̂ᵢ/∂xⱼ = (δᵢⱼ − 1/N − x̂ᵢ x̂ⱼ/N) / σ̃.",
        "Summed against γ g: dL/dx = (γ / (N σ̃)) (N g − Σₙ g − x̂ Σₙ g x̂), one line with "
        "sums over axis 0.",
    ),
    entries=("batchnorm_backward",),
    outputs=(Output("grad_x"), Output("grad_gamma"),
             Output("grad_beta", reduction=("grad_y", (0,)))),
    cases=_bn_cases,
    run=_bn_run,
    reference=_bn_reference,
    variants=_bn_variants,
))

