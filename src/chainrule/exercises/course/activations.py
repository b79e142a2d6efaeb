"""Activations, each a forward and a backward: ReLU, LeakyReLU, sigmoid, tanh, softmax."""

from __future__ import annotations

from ... import functional as F
from ... import layers
from ..base import Case, Exercise, Variant, register
from ..patterns import forward_backward, large, layer_pass, pair_outputs, upstream_value, with_zeros

SHAPES = ((1, 5), (3, 4), (4, 6))
PAIR = """\
Write the pair, as in CS231n's layers: the forward returns its output and a cache (whatever
the backward will need), the backward takes dL/dy and that cache:

    {name}_forward({args}) → (y, cache)
    {name}_backward(grad_y, cache) → grad_x          x, y, grad_y, grad_x all (N, D)

Leave grad_y unchanged (return a new array)."""


def _elementwise(name: str, title: str, layer, cases, statement: str, hints, args=("x",)):
    """An element-wise activation exercise whose reference is the chainrule layer."""

    def reference(case):
        y, grad_x, _ = layer_pass(layer(case), case.inputs["x"], case.inputs["grad_y"])
        return {"y": y, "grad_x": grad_x}

    register(Exercise(
        name=name,
        title=title,
        statement=statement + "\n\n" + PAIR.format(name=name, args=", ".join(args)),
        hints=hints,
        entries=(f"{name}_forward", f"{name}_backward"),
        outputs=pair_outputs("y", {"grad_x": "x"}),
        cases=cases,
        run=forward_backward(f"{name}_forward", f"{name}_backward", args, "y", ("grad_x",)),
        reference=reference,
        fd_value=upstream_value(f"{name}_forward", args),
    ))


def _kink_cases(extra: dict):
    """Three batches; two hold inputs exactly at 0, the kink."""

    def cases(rng):
        out = []
        for (n, d), zeros in zip(SHAPES, (1, 2, 0), strict=True):
            x = with_zeros(rng, (n, d), zeros)
            at_kink = f", {zeros} input{'s' * (zeros > 1)} exactly 0" if zeros else ""
            out.append(Case(f"N={n}, D={d}{at_kink}",
                            {"x": x, **extra, "grad_y": rng.standard_normal((n, d))},
                            kinks={"grad_x": x == 0}))
        return out

    return cases


def _saturating_cases(rng, scale):
    """Two moderate batches, then one with inputs of ±scale next to moderate ones."""
    out = [Case(f"N={n}, D={d}", {"x": 2.0 * rng.standard_normal((n, d)),
                                  "grad_y": rng.standard_normal((n, d))})
           for n, d in SHAPES[:2]]
    x = large(rng, (3, 4), scale)
    x[:, 0] = rng.standard_normal(3)
    out.append(Case(f"large inputs (±{scale:g}), N=3, D=4",
                    {"x": x, "grad_y": rng.standard_normal((3, 4))}, large=True))
    return out


_elementwise(
    "relu", "the rectified linear unit, forward and backward",
    lambda case: layers.ReLU(), _kink_cases({}),
    """\
The rectified linear unit, element-wise:

    y = max(x, 0)            dy/dx = 1 where x > 0, 0 where x < 0

At x = 0 exactly y has a kink and no derivative; take 0 there, as PyTorch (and chainrule's
ReLU) do.""",
    (
        "On each side of 0, y is either x or the constant 0: what is dy/dx on each piece? The "
        "chain rule makes dL/dx = dL/dy · dy/dx, entry by entry.",
        "Keep the boolean mask x > 0 as the cache; the backward is grad_y times that mask.",
        "x > 0, not x >= 0: at exactly 0 the derivative is taken as 0. And return "
        "grad_y * mask rather than setting grad_y[~mask] = 0, which changes the caller's array.",
    ),
)

_elementwise(
    "leaky_relu", "the leaky ReLU, forward and backward",
    lambda case: layers.LeakyReLU(case.inputs["alpha"]),
    _kink_cases({"alpha": 0.1}),
    """\
The leaky ReLU with slope α for negative inputs (α = 0.1 here), element-wise:

    y = x where x > 0,  α x elsewhere          dy/dx = 1 where x > 0,  α where x < 0

At x = 0 exactly take α, as PyTorch (and chainrule's LeakyReLU) do.""",
    (
        "Two linear pieces: slope 1 for x > 0 and slope α for x < 0. dL/dx = dL/dy · slope.",
        "Cache the mask x > 0 (and α); the backward is np.where(mask, grad_y, alpha * grad_y).",
        "At exactly x = 0 the slope is α: use x > 0, not x >= 0, for the mask.",
    ),
    args=("x", "alpha"),
)

_elementwise(
    "sigmoid", "the logistic sigmoid, forward and backward",
    lambda case: layers.Sigmoid(), lambda rng: _saturating_cases(rng, 800.0),
    """\
The logistic sigmoid, element-wise:

    y = σ(x) = 1 / (1 + e^(−x))          dσ/dx = σ(x) (1 − σ(x))

The forward must stay finite and right for inputs of ±800 (e^800 overflows a float64).""",
    (
        "Differentiate 1 / (1 + e^(−x)) with the quotient rule and write the result in terms "
        "of σ itself: e^(−x) / (1 + e^(−x))² = σ (1 − σ). So the output y is a good cache.",
        "The backward is grad_y * y * (1 - y).",
        "For a stable forward use e = np.exp(-np.abs(x)), which never overflows: σ = 1/(1 + e) "
        "for x ≥ 0 and e/(1 + e) for x < 0. e^x / (1 + e^x) gives inf/inf = NaN at x = 800.",
    ),
)

_elementwise(
    "tanh", "the hyperbolic tangent, forward and backward",
    lambda case: layers.Tanh(), lambda rng: _saturating_cases(rng, 1000.0),
    """\
The hyperbolic tangent, element-wise:

    y = tanh(x) = (eˣ − e⁻ˣ) / (eˣ + e⁻ˣ)          d tanh/dx = 1 − tanh²(x)

The forward must stay finite and right for inputs of ±1000.""",
    (
        "Like the sigmoid, the derivative is a function of the output: 1 − y². Cache y.",
        "The backward is grad_y * (1 - y * y).",
        "(eˣ − e⁻ˣ)/(eˣ + e⁻ˣ) is inf/inf = NaN once |x| > 709; np.tanh is stable (and so "
        "is 2σ(2x) − 1 with a stable σ).",
    ),
)


# ---------------------------------------------------------------------- softmax
def _softmax_cases(rng):
    out = [Case(f"N={n}, C={c}", {"z": 2.0 * rng.standard_normal((n, c)),
                                  "grad_y": rng.standard_normal((n, c))})
           for n, c in ((1, 5), (4, 3), (3, 6))]
    out.append(Case("large logits (±1000), N=3, C=4",
                    {"z": large(rng, (3, 4)), "grad_y": rng.standard_normal((3, 4))},
                    large=True))
    out.append(Case("N=4000, C=10", {"z": 2.0 * rng.standard_normal((4000, 10)),
                                     "grad_y": rng.standard_normal((4000, 10))}, timing=True))
    return out


def _softmax_reference(case):
    s, grad_z, _ = layer_pass(layers.Softmax(), case.inputs["z"], case.inputs["grad_y"])
    return {"s": s, "grad_z": grad_z}


def _softmax_variants(case, reference):
    z, g = case.inputs["z"], case.inputs["grad_y"]
    s, s0 = reference["s"], F.softmax(z, axis=0)
    return [
        Variant("wrong_axis", "the softmax of each column (axis 0), not of each row",
                {"s": s0, "grad_z": s0 * (g - (g * s0).sum(axis=0, keepdims=True))}),
        Variant("wrong_axis", "the sum ⟨g, s⟩ runs over axis 0, not over each row",
                {"grad_z": s * (g - (g * s).sum(axis=0, keepdims=True))}),
        Variant("wrong_axis", "right for a softmax over axis 0, which the forward computed",
                {"grad_z": s0 * (g - (g * s0).sum(axis=-1, keepdims=True))}),
    ]


register(Exercise(
    name="softmax",
    title="a stable forward, and the backward as a Jacobian-vector product",
    statement="""\
Softmax over each row of logits z (N, C):

    s_i = exp(z_i) / Σ_j exp(z_j)  =  exp(z_i − m) / Σ_j exp(z_j − m),   m = max_j z_j

The second form is the same number and never overflows: use it (logits of ±1000 are graded).
Its Jacobian, per row, is

    ∂s_i/∂z_j = s_i (δ_ij − s_j),    i.e.  J = diag(s) − s sᵀ

and the backward returns dL/dz = Jᵀ g for g = dL/ds, one row at a time. J is (C, C) per
sample, but J g needs only a dot product per row: no (N, C, C) array is required (a correct
loop over Jacobians passes, with a note that it is slow).

    softmax_forward(z) → (s, cache)
    softmax_backward(grad_y, cache) → grad_z          z, s, grad_y, grad_z all (N, C)""",
    hints=(
        "Subtract each row's maximum before exp: z - z.max(axis=-1, keepdims=True). Then "
        "divide by the row sums, again with keepdims=True so the division broadcasts per row.",
        "dL/dz_j = Σ_i g_i ∂s_i/∂z_j = Σ_i g_i s_i (δ_ij − s_j) = s_j g_j − s_j Σ_i g_i s_i.",
        "In NumPy: s * (grad_y - (grad_y * s).sum(axis=-1, keepdims=True)), with s the cache.",
    ),
    entries=("softmax_forward", "softmax_backward"),
    outputs=pair_outputs("s", {"grad_z": "z"}),
    cases=_softmax_cases,
    run=forward_backward("softmax_forward", "softmax_backward", ("z",), "s", ("grad_z",)),
    reference=_softmax_reference,
    variants=_softmax_variants,
    fd_value=upstream_value("softmax_forward", ("z",)),
))
