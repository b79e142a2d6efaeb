"""Image layers in NCHW: a 2-D convolution with strides and padding, and max pooling."""

from __future__ import annotations

import numpy as np

from ... import layers
from ..base import Case, Exercise, Output, Variant, register
from ..patterns import forward_backward, layer_pass, pair_outputs, upstream_value

CONV_ARGS = ("x", "W", "b", "stride", "pad")
#: (N, C, H, W), (F, kh, kw), stride, pad, timing
CONV_CASES = (
    ((1, 2, 5, 4), (3, 3, 2), 1, 0, False),
    ((2, 3, 6, 5), (2, 2, 3), 1, 1, False),
    ((3, 2, 7, 6), (4, 3, 3), 2, 1, False),
    ((8, 3, 16, 16), (8, 3, 3), 1, 1, True),
)


def _conv_cases(rng):
    out = []
    for (n, c, h, w), (f, kh, kw), s, p, timing in CONV_CASES:
        h_out, w_out = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
        out.append(Case(
            f"x {(n, c, h, w)}, W {(f, c, kh, kw)}, stride {s}, pad {p}",
            {"x": rng.standard_normal((n, c, h, w)),
             "W": rng.standard_normal((f, c, kh, kw)) / np.sqrt(c * kh * kw),
             "b": rng.standard_normal(f), "stride": s, "pad": p,
             "grad_y": rng.standard_normal((n, f, h_out, w_out))}, timing=timing))
    return out


def _conv_pass(inputs, W):
    f, _, kh, kw = W.shape
    layer = layers.Conv2D(f, (kh, kw), strides=inputs["stride"],
                          padding=(inputs["pad"], inputs["pad"]))
    return layer_pass(layer, inputs["x"], inputs["grad_y"], {"W": W, "b": inputs["b"]})


def _conv_reference(case):
    y, grad_x, grads = _conv_pass(case.inputs, case.inputs["W"])
    return {"y": y, "grad_x": grad_x, "grad_W": grads["W"], "grad_b": grads["b"]}


def _conv_variants(case, reference):
    flipped = case.inputs["W"][:, :, ::-1, ::-1]
    y, grad_x, grads = _conv_pass(case.inputs, np.ascontiguousarray(flipped))
    return [Variant("mismatch", "a true convolution, the kernel flipped; conv2d (as PyTorch's) is "
                    "a cross-correlation: W[f, c, u, v] meets x̃[n, c, s·i + u, s·j + v]",
                    {"y": y, "grad_x": grad_x, "grad_W": grads["W"][:, :, ::-1, ::-1]})]


register(Exercise(
    name="conv2d",
    title="a 2-D convolution with stride and padding, forward and backward",
    statement="""\
A convolution layer as PyTorch's conv2d (a cross-correlation) over images in NCHW order.
With x̃ the input zero-padded by p rows and columns on every side and s the stride:

    y[n, f, i, j] = b[f] + Σ_{c, u, v} W[f, c, u, v] · x̃[n, c, s·i + u, s·j + v]

    x (N, C, H, W),  W (F, C, kh, kw),  b (F,),  y (N, F, H′, W′)
    H′ = (H + 2p − kh) // s + 1,   W′ = (W + 2p − kw) // s + 1

    conv2d_forward(x, W, b, stride, pad) → (y, cache)
    conv2d_backward(grad_y, cache) → (grad_x, grad_W, grad_b)     shapes of x, W, b

Any correct method passes (loops, im2col, einsum); one much slower than chainrule's
Conv2D gets a note with both times. Graded with stride 1 and 2, pad 0 and 1, a batch of 1,
and kernels that are not square.""",
    hints=(
        "Differentiate the forward sum term by term: ∂y[n,f,i,j]/∂W[f,c,u,v] = "
        "x̃[n, c, s·i+u, s·j+v], ∂y/∂x̃[n, c, s·i+u, s·j+v] = W[f,c,u,v], ∂y/∂b[f] = 1.",
        "So dL/dW[f,c,u,v] = Σ_{n,i,j} g[n,f,i,j] x̃[n,c,s·i+u,s·j+v] and dL/db[f] = "
        "Σ_{n,i,j} g[n,f,i,j]. An input pixel read by several windows adds up the gradient "
        "of each (+=, never =).",
        "Loop over the kernel taps (u, v) only: x̃[:, :, u:u+s·H′:s, v:v+s·W′:s] is tap (u, v) "
        "of every window at once, and an einsum with W[:, :, u, v] (or with g) does the rest. "
        "Crop the padding off dL/dx̃ at the end.",
    ),
    entries=("conv2d_forward", "conv2d_backward"),
    outputs=(Output("y"), Output("grad_x", gradient_of="x"), Output("grad_W", gradient_of="W"),
             Output("grad_b", gradient_of="b", reduction=("grad_y", (0, 2, 3)))),
    cases=_conv_cases,
    run=forward_backward("conv2d_forward", "conv2d_backward", CONV_ARGS, "y",
                         ("grad_x", "grad_W", "grad_b")),
    reference=_conv_reference,
    variants=_conv_variants,
    fd_value=upstream_value("conv2d_forward", CONV_ARGS),
))


# ---------------------------------------------------------------------- maxpool2d
POOL_ARGS = ("x", "pool", "stride")


def _ties(x: np.ndarray, pool: int, stride: int) -> np.ndarray:
    """The pixels that share their window's maximum with another pixel of the window."""
    n, c, h, w = x.shape
    mask = np.zeros(x.shape, dtype=bool)
    for i in range(0, h - pool + 1, stride):
        for j in range(0, w - pool + 1, stride):
            window = x[:, :, i:i + pool, j:j + pool]
            top = window == window.max(axis=(2, 3), keepdims=True)
            tied = top & (top.sum(axis=(2, 3), keepdims=True) > 1)
            mask[:, :, i:i + pool, j:j + pool] |= tied
    return mask


def _pool_cases(rng):
    out = []
    for shape, k, s, tie, timing in (((1, 2, 4, 6), 2, 2, False, False),
                                     ((2, 3, 7, 5), 3, 2, False, False),
                                     ((2, 2, 6, 4), 2, 2, True, False),
                                     ((8, 8, 32, 32), 2, 2, False, True)):
        x = rng.integers(0, 3, shape).astype(np.float64) if tie else rng.standard_normal(shape)
        h_out, w_out = (shape[2] - k) // s + 1, (shape[3] - k) // s + 1
        label = f"x {shape}, pool {k}, stride {s}" + (", tied maxima" if tie else "")
        out.append(Case(label, {"x": x, "pool": k, "stride": s,
                                "grad_y": rng.standard_normal((shape[0], shape[1], h_out, w_out))},
                        kinks={"grad_x": _ties(x, k, s)} if tie else {}, timing=timing))
    return out


def _pool_reference(case):
    i = case.inputs
    layer = layers.MaxPool2D(pool_size=i["pool"], strides=i["stride"])
    y, grad_x, _ = layer_pass(layer, i["x"], i["grad_y"])
    return {"y": y, "grad_x": grad_x}


register(Exercise(
    name="maxpool2d",
    title="max pooling, forward and backward",
    statement="""\
Max pooling over k × k windows every s pixels, no padding, NCHW:

    y[n, c, i, j] = max_{u, v < k} x[n, c, s·i + u, s·j + v]
    x (N, C, H, W),  y (N, C, H′, W′),  H′ = (H − k) // s + 1  (W′ likewise)

The max is the identity on its largest input, so dL/dx routes each window's gradient to
the position of its maximum and gives 0 to the rest. Windows overlap when s < k: a pixel
that is the maximum of two windows collects both gradients. On a tie, the first maximum
in row-major order within the window takes it, as PyTorch's and chainrule's MaxPool2D.

    maxpool2d_forward(x, pool, stride) → (y, cache)
    maxpool2d_backward(grad_y, cache) → grad_x       grad_y (N, C, H′, W′), grad_x x's shape""",
    hints=(
        "In the forward remember where each maximum was: argmax over the k·k values of each "
        "window (np.argmax returns the first maximum, which is the convention for ties).",
        "x[:, :, u:u + s·H′:s, v:v + s·W′:s] is offset (u, v) of every window at once: stack "
        "the k·k offsets and take max and argmax over that axis.",
        "Backward: for each offset (u, v), grad_x[:, :, u:u+s·H′:s, v:v+s·W′:s] += grad_y * "
        "(argmax == u·k + v). The += matters where windows overlap.",
    ),
    entries=("maxpool2d_forward", "maxpool2d_backward"),
    outputs=pair_outputs("y", {"grad_x": "x"}),
    cases=_pool_cases,
    run=forward_backward("maxpool2d_forward", "maxpool2d_backward", POOL_ARGS, "y",
                         ("grad_x",)),
    reference=_pool_reference,
    fd_value=upstream_value("maxpool2d_forward", POOL_ARGS),
))
