"""The table of cases: every chainrule layer and loss, each row with a torch reference.

A row is (id, factory, input generator, torch reference) plus a few options; the harness in
test_cases.py runs every row through the same checks (float64 gradcheck, equality with torch
in float32 and float64, dtype kept, nothing cached at inference, …). Adding a layer is adding
a row here. This is a helper module, not a test module: it holds the rows and their input
generators, no tests.

Input generators take (rng, N) and return float64 base arrays (integer ids for Embedding,
integer labels for the sparse losses): the harness casts the floating ones to the dtype under
test, so float32 and float64 see the same values. A layer's generator returns x; a loss's
returns (pred, target).

The torch references live in tests/torch_refs.py: for a layer ``ref(layer) -> TorchRef``,
made before our training forward, for a loss ``ref(loss, pred_t, target_t) -> scalar``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from chainrule import layers, losses
from chainrule.layers import Layer
from chainrule.losses import Loss
from helpers import DTYPES
from torch_refs import (
    torch_attention,
    torch_batch_norm,
    torch_bce_logits,
    torch_bce_probs,
    torch_cce_probs,
    torch_conv,
    torch_cross_entropy,
    torch_dense,
    torch_dropout,
    torch_embedding,
    torch_flatten,
    torch_gelu,
    torch_global_average,
    torch_identity,
    torch_layernorm,
    torch_leaky_relu,
    torch_mse,
    torch_nll,
    torch_pool,
    torch_positional,
    torch_random_shift,
    torch_recurrent,
    torch_relu,
    torch_residual,
    torch_scce_probs,
    torch_sigmoid,
    torch_softmax,
    torch_tanh,
)


# ---------------------------------------------------------------------- the row
@dataclass(frozen=True)
class Case:
    """One row of the table.

    Attributes:
        id: the row's name in test ids.
        factory: makes a fresh, unbuilt chainrule layer or loss.
        make_input: (rng, N) → x, or (pred, target) for a loss; float64 base arrays.
        torch_ref: the torch reference (see the module docstring).
        seeds: seeds of the torch comparisons (seed 0 draws a batch of one, see ``batch``).
        gradcheck_seeds: seeds of the float64 gradcheck (``seeds`` when None).
        batch: a fixed batch size N, or the range [low, high) that N is drawn from (with the
            row's rng) for seeds other than 0; seed 0 then draws a batch of one.
        setup: (layer, rng) → None, run after build: moves parameters (and buffers) off their
            initial values so that every gradient and statistic is exercised.
        forward_tol / grad_tol: "entry" compares entry-wise (rtol of each entry); "scale"
            relative to the array's largest entry, for entries that are sums of larger terms
            which can cancel to near 0 (then float32 rounding is a fraction of the terms, not
            of the entry).
        training: False for an inference row (BatchNorm in eval mode): forward-only checks.
        random: the layer draws random numbers in training (Dropout, RandomShift, attention
            dropout); its torch reference replays our draw from ``layer.cache``.
        kinks: None, "zero" (inputs moved at least 0.05 away from 0, ReLU's kink) or "ties"
            (entries made distinct, 0.01 apart: no max-pool window near a tie), so that
            gradcheck sees a smooth function at every checked entry.
        max_entries: entries gradcheck checks per array.
        torch_dtypes: dtypes of the torch comparison (both unless a row says why not).
    """

    id: str
    factory: Callable[[], Layer | Loss]
    make_input: Callable
    torch_ref: Callable
    seeds: tuple[int, ...] = (0, 1, 2)
    gradcheck_seeds: tuple[int, ...] | None = None
    batch: int | tuple[int, int] = (2, 6)
    setup: Callable[[Layer, np.random.Generator], None] | None = None
    forward_tol: str = "entry"
    grad_tol: str = "entry"
    training: bool = True
    random: bool = False
    kinks: str | None = None
    max_entries: int | None = 200
    torch_dtypes: tuple = DTYPES
    #: The class the factory makes, and "layer" or "loss" (set once, when the table is built).
    cls: type = field(init=False, default=None)
    kind: str = field(init=False, default="")

    def __post_init__(self):
        assert self.forward_tol in ("entry", "scale") and self.grad_tol in ("entry", "scale")
        assert self.kinks in (None, "zero", "ties")
        cls = type(self.factory())
        object.__setattr__(self, "cls", cls)
        object.__setattr__(self, "kind", "loss" if issubclass(cls, Loss) else "layer")

    @property
    def grad_seeds(self) -> tuple[int, ...]:
        return self.seeds if self.gradcheck_seeds is None else self.gradcheck_seeds


def make(case: Case, dtype, seed: int):
    """(subject, data) for a row: the layer built in ``dtype`` (after ``setup``) and x, or the
    loss and (pred, target); floating arrays in ``dtype``, ids and labels as integers."""
    rng = np.random.default_rng(seed)
    if isinstance(case.batch, int):
        n = case.batch
    else:
        n = 1 if seed == 0 else int(rng.integers(*case.batch))
    data = case.make_input(rng, n)
    if case.kinks is not None:
        data = away_from_kinks(data, case.kinks, rng)
    data = tuple(cast(a, dtype) for a in data) if isinstance(data, tuple) else cast(data, dtype)
    subject = case.factory()
    if case.kind == "layer":
        subject.build(data.shape[1:], rng=rng, dtype=dtype)
        if case.setup is not None:
            case.setup(subject, rng)
    return subject, data


def cast(a: np.ndarray, dtype) -> np.ndarray:
    return a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a


def away_from_kinks(x: np.ndarray, kinks: str, rng) -> np.ndarray:
    if kinks == "zero":
        return np.where(x >= 0, x + 0.05, x - 0.05)
    # "ties": the entries of x replaced by a random permutation of a grid 0.01 apart.
    grid = 0.01 * (np.arange(x.size) - x.size / 2)
    return rng.permutation(grid).reshape(x.shape)


# ---------------------------------------------------------------------- setups
def randomize(layer, rng):
    """Every parameter standard normal (Conv2D: a non-zero b, so the forward check sees it)."""
    for p in layer.parameters():
        p.value[...] = rng.standard_normal(p.shape)


def nudge(layer, rng):
    """Every parameter moved by 0.1·N(0, 1) (LayerNorm's γ = 1 and β = 0, zero biases)."""
    for p in layer.parameters():
        p.value[...] = p.value + 0.1 * rng.standard_normal(p.shape)


def batchnorm_state(layer, rng):
    """Random γ (both signs), β and running statistics."""
    c = layer.gamma.shape[0]
    layer.gamma.value[...] = rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c)
    layer.beta.value[...] = rng.standard_normal(c)
    layer.running_mean[...] = rng.standard_normal(c)
    layer.running_var[...] = rng.uniform(0.5, 2.0, c)


# ---------------------------------------------------------------------- input generators
def features(rng, n):
    return rng.standard_normal((n, int(rng.integers(1, 7))))


def sequence(rng, n):
    return rng.standard_normal((n, int(rng.integers(1, 4)), int(rng.integers(1, 5))))


def extreme(rng, n):
    """Normal values with ±1e4, ±1e3 and ±50 planted: the saturated ends of sigmoid/softmax."""
    x = rng.standard_normal((n, 8))
    x[:, :6] = [1e4, -1e4, 1e3, -1e3, 50.0, -50.0]
    return rng.permuted(x, axis=1)


def large_logits(rng, n):
    """Logits spread over ±1e3 with ±1e4 planted; the differences overflow a naive exp."""
    x = 1e3 * rng.standard_normal((n, 5))
    x[:, 0] = 1e4
    x[:, 1] = -1e4
    return rng.permuted(x, axis=1)


def images(rng, n):
    return rng.standard_normal((n, 3, 4, 5))


def normal(*shape, scale: float = 1.0):
    """(N, *shape) normal values times ``scale``."""
    def make_input(rng, n):
        return scale * rng.standard_normal((n, *shape))
    make_input.__name__ = "normal_" + "x".join(map(str, shape))
    return make_input


def shifted_normal(*shape):
    """(N, *shape) normal values with a random scale in [0.5, 3] and a random offset."""
    def make_input(rng, n):
        return rng.uniform(0.5, 3.0) * rng.standard_normal((n, *shape)) + rng.standard_normal()
    return make_input


def wide_range(rng, n):
    """(N, 4, 6) values over ±12 with ±1e-3 and ±6 planted: GELU's tails and its middle."""
    x = 4.0 * rng.standard_normal((n, 4, 6))
    x[:, 0, :4] = [1e-3, -1e-3, 6.0, -6.0]
    x[:, 1, :2] = [12.0, -12.0]
    return x


VOCAB = 5


def token_ids(rng, n):
    """Ids (N, 7) from a vocabulary of 5: every sample repeats an id (7 > 5)."""
    return rng.integers(0, VOCAB, size=(n, 7), dtype=np.int64)


# ---------------------------------------------------------------------- loss data
# Probabilities stay away from the clip at eps (where the loss has a kink) for the gradcheck.
def np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_one_hot(y, c, dtype=np.float64):
    out = np.zeros((len(y), c), dtype)
    out[np.arange(len(y)), y] = 1
    return out


def regression(rng, n):
    d = int(rng.integers(1, 5))
    return rng.standard_normal((n, d)), rng.standard_normal((n, d))


def regression_rank3(rng, n):
    shape = (n, 2, int(rng.integers(1, 4)))
    return rng.standard_normal(shape), rng.standard_normal(shape)


def binary_probs(rng, n):
    d = int(rng.integers(1, 4))
    return rng.uniform(0.05, 0.95, (n, d)), (rng.random((n, d)) < 0.5).astype(np.float64)


def binary_probs_soft(rng, n):
    p, _ = binary_probs(rng, n)
    return p, rng.random(p.shape)


def binary_logits(rng, n):
    d = int(rng.integers(1, 4))
    return 3 * rng.standard_normal((n, d)), (rng.random((n, d)) < 0.5).astype(np.float64)


def _classes(rng, n):
    c = int(rng.integers(2, 6))
    return c, 2 * rng.standard_normal((n, c)), rng.integers(0, c, size=n)


def onehot_probs(rng, n):
    c, z, y = _classes(rng, n)
    return np_softmax(z), np_one_hot(y, c)


def onehot_logits(rng, n):
    c, z, y = _classes(rng, n)
    return z, np_one_hot(y, c)


def soft_logits(rng, n):
    c, z, _ = _classes(rng, n)
    return z, np_softmax(rng.standard_normal((n, c)))


def unnormalised_logits(rng, n):
    """Non-negative targets whose rows do not sum to 1: dL/dz = softmax(z) Σ_c t_c − t."""
    c, z, _ = _classes(rng, n)
    return z, rng.uniform(0.0, 1.0, (n, c))


def label_probs(rng, n):
    _, z, y = _classes(rng, n)
    return np_softmax(z), y


def label_logits(rng, n):
    _, z, y = _classes(rng, n)
    return z, y


def logits_and_labels(steps, classes, ignore=None, share=0.3):
    """Logits (N, T, C) and labels (N, T); with ``ignore`` set, about ``share`` of the labels
    are that value (never all of them)."""
    def make_input(rng, n):
        z = 2.0 * rng.standard_normal((n, steps, classes))
        labels = rng.integers(0, classes, (n, steps))
        if ignore is not None:
            labels[rng.random((n, steps)) < share] = ignore
            labels[0, 0] = 1 if ignore == 0 else 0
        return z, labels
    return make_input


def probabilities_and_labels(steps, classes, ignore):
    def make_input(rng, n):
        z, labels = logits_and_labels(steps, classes, ignore)(rng, n)
        return np_softmax(z), labels
    return make_input


def rows_with_ignored_labels(rng, n):
    """(N + 2, C) logits and (N + 2,) labels with about 30 % ignored (-100)."""
    z, labels = logits_and_labels(1, 4, ignore=-100)(rng, n + 2)
    return z[:, 0], labels[:, 0]


# ---------------------------------------------------------------------- the rows
def _dense_rows():
    D = layers.Dense
    return [
        Case("dense", lambda: D(3), features, torch_dense),
        Case("dense_no_bias", lambda: D(4, use_bias=False), features, torch_dense),
        Case("dense_he_normal", lambda: D(3, kernel_initializer="he_normal",
                                          bias_initializer="normal"), features, torch_dense),
        Case("dense_he_uniform", lambda: D(2, kernel_initializer="he_uniform"), features,
             torch_dense),
        Case("dense_glorot_normal", lambda: D(5, kernel_initializer="glorot_normal",
                                              bias_initializer="normal"), features, torch_dense),
        Case("dense_normal", lambda: D(1, kernel_initializer="normal"), features, torch_dense),
        Case("dense_rank3", lambda: D(3, bias_initializer="normal"), sequence, torch_dense),
        Case("dense_rank3_no_bias", lambda: D(2, use_bias=False), sequence, torch_dense),
    ]


def _activation_rows():
    seq = dict(gradcheck_seeds=(0, 1), max_entries=60, grad_tol="scale", batch=(2, 5))
    return [
        Case("identity", layers.Identity, features, torch_identity),
        Case("relu", layers.ReLU, features, torch_relu, kinks="zero"),
        Case("relu_rank3", layers.ReLU, sequence, torch_relu, kinks="zero"),
        Case("leaky_relu", lambda: layers.LeakyReLU(alpha=0.2), features, torch_leaky_relu,
             kinks="zero"),
        Case("sigmoid", layers.Sigmoid, features, torch_sigmoid),
        Case("sigmoid_extreme", layers.Sigmoid, extreme, torch_sigmoid),
        Case("tanh", layers.Tanh, features, torch_tanh),
        Case("tanh_extreme", layers.Tanh, extreme, torch_tanh),
        Case("softmax", layers.Softmax, features, torch_softmax),
        Case("softmax_rank3", layers.Softmax, sequence, torch_softmax),
        Case("softmax_large_logits", layers.Softmax, large_logits, torch_softmax),
        # GELU, as the sequence rows: seeds 0–2 compared with torch, 0–1 gradchecked; in the
        # tails the output is a product with 1 + erf(x/√2) (1 + tanh u), which cancels.
        Case("gelu", layers.GELU, normal(4, 5), torch_gelu, **seq),
        Case("gelu_tanh", lambda: layers.GELU("tanh"), normal(4, 5), torch_gelu, **seq),
        Case("gelu_wide_range", layers.GELU, wide_range, torch_gelu, forward_tol="scale", **seq),
        Case("gelu_tanh_wide_range", lambda: layers.GELU("tanh"), wide_range, torch_gelu,
             forward_tol="scale", **seq),
    ]


def _reshape_dropout_embedding_rows():
    seq = dict(gradcheck_seeds=(0, 1), max_entries=60, setup=nudge, grad_tol="scale",
               batch=(2, 5))
    return [
        Case("flatten", layers.Flatten, images, torch_flatten),
        Case("dropout", lambda: layers.Dropout(0.3, seed=7), features, torch_dropout, random=True),
        Case("dropout_images", lambda: layers.Dropout(0.5, seed=3), images, torch_dropout,
             random=True),
        Case("dropout_seq", lambda: layers.Dropout(0.3, seed=5), normal(4, 5), torch_dropout,
             random=True, gradcheck_seeds=(0, 1), max_entries=60, grad_tol="scale",
             batch=(2, 5)),
        Case("embedding", lambda: layers.Embedding(VOCAB, 3), token_ids, torch_embedding),
        Case("embedding_glorot",
             lambda: layers.Embedding(VOCAB, 2, embeddings_initializer="glorot_uniform"),
             token_ids, torch_embedding),
        Case("positional_T_below_max", lambda: layers.PositionalEmbedding(8), normal(5, 3),
             torch_positional, **seq),
        Case("positional_T_at_max", lambda: layers.PositionalEmbedding(6), normal(6, 4),
             torch_positional, **seq),
        Case("positional_T1", lambda: layers.PositionalEmbedding(4), normal(1, 3),
             torch_positional, **seq),
    ]


#: Conv2D: (id, constructor arguments, sample shape, batch). Stride 1 and 2, padding valid /
#: same / 2 / (1, 2), "same" with strides (Keras's rule, the reference pads explicitly and
#: asymmetrically by it), dilation 2, kernels 1, 2, 3, 4, 5, (3, 2) and (2, 3), odd and even
#: image sizes, batch 1, several input and output channels, rank-3 (N, H, W) input; the rows
#: "fourier_…" take the frequency-domain path, the others "auto" (im2col at these sizes).
CONV_ROWS = [
    ("k3_valid", dict(filters=2, kernel_size=3), (3, 7, 9), 2),
    ("k1", dict(filters=3, kernel_size=1), (2, 5, 3), 2),
    ("k1_stride2", dict(filters=2, kernel_size=1, strides=2), (2, 5, 4), 2),
    ("k3_same_batch1", dict(filters=3, kernel_size=3, padding="same"), (2, 7, 9), 1),
    ("k5_same", dict(filters=2, kernel_size=5, padding="same"), (2, 7, 9), 2),
    ("k5_valid_whole_image", dict(filters=2, kernel_size=5), (2, 5, 5), 2),
    ("k32_same", dict(filters=2, kernel_size=(3, 2), padding="same"), (3, 7, 9), 2),
    ("k2_same_even", dict(filters=2, kernel_size=2, padding="same"), (2, 5, 7), 2),
    ("k3_pad2", dict(filters=2, kernel_size=3, padding=2), (2, 5, 3), 2),
    ("k32_pad12", dict(filters=3, kernel_size=(3, 2), padding=(1, 2)), (2, 7, 5), 2),
    ("k3_stride2", dict(filters=2, kernel_size=3, strides=2), (2, 7, 9), 2),
    ("k3_stride2_pad1", dict(filters=2, kernel_size=3, strides=2, padding=1), (3, 7, 9), 1),
    ("k5_stride2_pad2", dict(filters=2, kernel_size=5, strides=2, padding=2), (2, 9, 7), 2),
    ("k32_stride21_pad12", dict(filters=2, kernel_size=(3, 2), strides=(2, 1), padding=(1, 2)),
     (2, 7, 9), 2),
    ("k2_stride3_unread_edges", dict(filters=2, kernel_size=2, strides=3), (2, 7, 9), 2),
    ("k3_dilation2", dict(filters=2, kernel_size=3, dilation=2), (2, 7, 9), 2),
    ("k3_dilation2_same", dict(filters=2, kernel_size=3, dilation=2, padding="same"),
     (2, 7, 9), 1),
    ("k23_dilation21_stride2_pad1",
     dict(filters=3, kernel_size=(2, 3), dilation=(2, 1), strides=2, padding=1), (2, 7, 9), 2),
    ("no_bias", dict(filters=3, kernel_size=3, padding=1, use_bias=False), (2, 5, 5), 2),
    ("rank3_same", dict(filters=3, kernel_size=3, padding="same"), (7, 9), 2),
    ("rank3_stride2", dict(filters=2, kernel_size=(3, 2), strides=2), (7, 9), 1),
    # "same" with strides: pads (top, bottom) per axis in the comments, from Keras's rule.
    ("k3_same_stride2_odd",  # 7: (1, 1); 9: (1, 1)
     dict(filters=2, kernel_size=3, strides=2, padding="same"), (2, 7, 9), 2),
    ("k3_same_stride2_even",  # 8: (0, 1); 6: (0, 1)
     dict(filters=2, kernel_size=3, strides=2, padding="same"), (3, 8, 6), 2),
    ("k2_same_stride2_even_kernel",  # 7: (0, 1); 8: (0, 0)
     dict(filters=2, kernel_size=2, strides=2, padding="same"), (2, 7, 8), 2),
    ("k4_same_stride2_batch1",  # 9: (1, 2); 6: (1, 1)
     dict(filters=3, kernel_size=4, strides=2, padding="same"), (2, 9, 6), 1),
    ("k5_same_stride3",  # 8: (1, 2); 10: (2, 2)
     dict(filters=2, kernel_size=5, strides=3, padding="same"), (2, 8, 10), 2),
    ("k3_dilation2_same_stride2",  # span 5; 9: (2, 2); 8: (1, 2)
     dict(filters=2, kernel_size=3, dilation=2, strides=2, padding="same"), (2, 9, 8), 2),
    ("k23_dilation12_same_stride21",  # 7: (0, 1); span 5, stride 1: (2, 2)
     dict(filters=2, kernel_size=(2, 3), dilation=(1, 2), strides=(2, 1), padding="same"),
     (2, 7, 7), 2),
    ("k1_same_stride2_no_padding",  # a 1×1 kernel never needs any: 5 → 3, 4 → 2
     dict(filters=2, kernel_size=1, strides=2, padding="same"), (2, 5, 4), 2),
    ("rank3_k3_same_stride2", dict(filters=2, kernel_size=3, strides=2, padding="same"),
     (8, 7), 2),
    # The Fourier path (layers.fourier), forced: odd and even padded sizes (the Nyquist column
    # of an even width counts once), padding, non-square kernels, a kernel as wide as the image,
    # a batch of one, rank-3 input.
    ("fourier_k5_valid", dict(filters=3, kernel_size=5, algorithm="fourier"), (4, 12, 12), 2),
    ("fourier_k3_same_odd", dict(filters=2, kernel_size=3, padding="same", algorithm="fourier"),
     (3, 7, 9), 1),
    ("fourier_k32_pad12_even", dict(filters=3, kernel_size=(3, 2), padding=(1, 2),
                                    algorithm="fourier"), (2, 6, 8), 2),
    ("fourier_k23_same_even_kernel", dict(filters=2, kernel_size=(2, 3), padding="same",
                                          algorithm="fourier"), (2, 8, 7), 2),
    ("fourier_whole_image", dict(filters=2, kernel_size=5, algorithm="fourier"), (2, 5, 5), 2),
    ("fourier_no_bias_rank3", dict(filters=3, kernel_size=3, use_bias=False,
                                   algorithm="fourier"), (7, 6), 2),
]


def _conv_rows():
    # Each entry is a sum of up to C·kh·kw (or N·H′·W′) products that can cancel: compared to
    # the array's scale. Conv2D is linear in x, W and b: no kinks anywhere.
    return [Case(f"conv2d-{name}", lambda kwargs=kwargs: layers.Conv2D(**kwargs), normal(*shape),
                 torch_conv, seeds=(0,), batch=batch, setup=randomize, max_entries=40,
                 forward_tol="scale", grad_tol="scale")
            for name, kwargs, shape, batch in CONV_ROWS]


def odd_batch_of_one_or_even_batch_of_three(rng, n):
    """(1, 2, 7, 9): a batch of one with odd sizes (seed 0), or (3, 3, 6, 8): a batch of three
    with three channels and even sizes (seed 1)."""
    return rng.standard_normal((n, 2, 7, 9) if n == 1 else (n, 3, 6, 8))


def _pool_rows():
    """Pool 2/3 (and 2×3), strides 1/2/None (overlapping and not), padding valid/same/1, odd
    and even image sizes, batch 1 and the rank-3 (N, H, W) form; windows summed by the average
    and overlapping windows accumulating: compared to the array's scale."""
    rows = []

    def row(name, factory, make_input, batch, seeds=(0,)):
        kinks = "ties" if isinstance(factory(), layers.MaxPool2D) else None
        rows.append(Case(name, factory, make_input, torch_pool, seeds=seeds, batch=batch,
                         kinks=kinks, forward_tol="scale", grad_tol="scale"))

    for cls in (layers.MaxPool2D, layers.AvgPool2D):
        c = cls.__name__
        for pool in (2, 3):
            for strides in (1, 2, None):
                for padding in ("valid", "same", 1):
                    # Seed 0: a batch of one with odd sizes; seed 1: a batch of three, even sizes.
                    row(f"{c}-k{pool}-s{strides}-p{padding}",
                        lambda cls=cls, p=pool, s=strides, pad=padding: cls(p, s, pad),
                        odd_batch_of_one_or_even_batch_of_three, batch=(3, 4), seeds=(0, 1))
        row(f"{c}-rank3", lambda cls=cls: cls(3, 2, "same"), normal(7, 9), 2)
        row(f"{c}-rank3-batch1", lambda cls=cls: cls(2), normal(5, 5), 1)
        row(f"{c}-k2x3-s1x2", lambda cls=cls: cls((2, 3), (1, 2)), normal(2, 7, 9), 2)
        row(f"{c}-k3x2-s2x1-same", lambda cls=cls: cls((3, 2), (2, 1), "same"), normal(2, 7, 9), 2)
        # An even pool with a stride apart from its size, odd pads on both axes: 7 → (1, 2)
        # rows, 10 → (1, 2) columns (the rule Conv2D shares, arguments.pad_amounts).
        row(f"{c}-k4-s3-same", lambda cls=cls: cls(4, 3, "same"), normal(2, 7, 10), 2)
        row(f"{c}-k3-p1x0", lambda cls=cls: cls(3, 1, (1, 0)), normal(1, 5, 6), 1)
        row(f"{c}-whole-image", lambda cls=cls: cls((7, 9)), normal(3, 7, 9), 2)
        row(f"{c}-s3-gaps", lambda cls=cls: cls(2, 3), normal(2, 8, 7), 2)
    for name, shape in (("GlobalAveragePool2D", (3, 4, 7, 9)),
                        ("GlobalAveragePool2D-batch1-1x1", (1, 2, 1, 1))):
        rows.append(Case(name, layers.GlobalAveragePool2D, normal(*shape[1:]),
                         torch_global_average, seeds=(0,), batch=shape[0],
                         forward_tol="scale", grad_tol="scale"))
    return rows


#: BatchNorm: (N, C) with N ≥ 2 and (N, C, H, W), batch 1 included for images (M = H·W values
#: per channel). γ x̂ + β and dL/dx are sums that cancel: compared to their scale.
BATCHNORM_SHAPES = [(2, 3), (5, 4), (16, 1), (1, 3, 4, 5), (2, 3, 7, 9), (4, 2, 1, 1),
                    (3, 5, 2, 3)]


def _batchnorm_rows():
    rows = []
    for shape in BATCHNORM_SHAPES:
        # (2, C) in float32: with two values per channel x̂ = ±(1 − O(ε/σ²)), so the true
        # dL/dx is O(ε/σ²) and both results are rounding noise (float64 is compared).
        dtypes = (np.float64,) if shape[0] == 2 and len(shape) == 2 else DTYPES
        rows.append(Case(f"batchnorm-train-{'x'.join(map(str, shape))}", layers.BatchNorm,
                         shifted_normal(*shape[1:]), torch_batch_norm(training=True),
                         seeds=(0,), batch=shape[0], setup=batchnorm_state,
                         forward_tol="scale", grad_tol="scale", torch_dtypes=dtypes))
    for shape in [(4, 3), (1, 3), (2, 3, 4, 5)]:
        rows.append(Case(f"batchnorm-eval-{'x'.join(map(str, shape))}",
                         lambda: layers.BatchNorm(momentum=0.3), shifted_normal(*shape[1:]),
                         torch_batch_norm(training=False), seeds=(0, 1), batch=shape[0],
                         setup=batchnorm_state, forward_tol="scale", training=False))
    return rows


def _sequence_rows():
    """RNN/LSTM/GRU (return_sequences on and off, T = 1 and T > 1, learned initial state),
    LayerNorm, attention, Residual; every parameter nudged off its initial value. Gradients
    are sums over the batch, the steps and the features of terms that cancel (LayerNorm's
    dL/dx sums to 0 over a row; a key bias's gradient is 0 up to rounding): compared to their
    scale; outputs entry-wise unless they cancel too (projections, x + f(x))."""
    seq = dict(gradcheck_seeds=(0, 1), max_entries=60, setup=nudge, grad_tol="scale",
               batch=(2, 5))
    cancels = dict(seq, forward_tol="scale")
    rows = []
    for cls, name in ((layers.RNN, "rnn"), (layers.LSTM, "lstm"), (layers.GRU, "gru")):
        rows += [
            Case(f"{name}_seq_T5", lambda cls=cls: cls(4, return_sequences=True), normal(5, 3),
                 torch_recurrent, **seq),
            Case(f"{name}_last_T5", lambda cls=cls: cls(4), normal(5, 3), torch_recurrent, **seq),
            Case(f"{name}_seq_T1", lambda cls=cls: cls(3, return_sequences=True), normal(1, 2),
                 torch_recurrent, **seq),
            Case(f"{name}_last_T1", lambda cls=cls: cls(5), normal(1, 3), torch_recurrent, **seq),
            Case(f"{name}_learned_state",
                 lambda cls=cls: cls(4, return_sequences=True, learn_initial_state=True),
                 normal(4, 3), torch_recurrent, **seq),
        ]
    rows += [
        Case("layernorm_seq", layers.LayerNorm, normal(4, 6), torch_layernorm, **seq),
        Case("layernorm_rows", layers.LayerNorm, normal(5), torch_layernorm, **seq),
        Case("layernorm_eps", lambda: layers.LayerNorm(eps=1e-2), normal(3, 4, scale=0.1),
             torch_layernorm, **seq),
        Case("attention_1head_T1", lambda: layers.CausalSelfAttention(1), normal(1, 4),
             torch_attention, **cancels),
        Case("attention_2heads_T5", lambda: layers.CausalSelfAttention(2), normal(5, 6),
             torch_attention, **cancels),
        Case("attention_4heads_T7", lambda: layers.CausalSelfAttention(4), normal(7, 8),
             torch_attention, **cancels),
        Case("attention_dropout", lambda: layers.CausalSelfAttention(2, dropout=0.3, seed=3),
             normal(6, 4), torch_attention, random=True, **cancels),
        Case("residual_attention",
             lambda: layers.Residual([layers.LayerNorm(), layers.CausalSelfAttention(2)]),
             normal(5, 6), torch_residual, **cancels),
        Case("residual_mlp",
             lambda: layers.Residual([layers.LayerNorm(), layers.Dense(12),
                                      layers.GELU("tanh"), layers.Dense(4)]),
             normal(3, 4), torch_residual, **cancels),
        Case("residual_mlp_dropout",
             lambda: layers.Residual([layers.Dense(8), layers.GELU(), layers.Dropout(0.25),
                                      layers.Dense(5)], seed=11),
             normal(3, 5), torch_residual, random=True, **cancels),
        Case("residual_single_layer", lambda: layers.Residual(layers.Dense(3)), normal(2, 3),
             torch_residual, **cancels),
        Case("residual_lstm",
             lambda: layers.Residual(layers.LSTM(3, return_sequences=True)), normal(4, 3),
             torch_residual, **cancels),
        Case("residual_nested",
             lambda: layers.Residual([layers.Residual([layers.LayerNorm(), layers.Dense(4)]),
                                      layers.GELU()]),
             normal(2, 4), torch_residual, **cancels),
    ]
    return rows


def _augment_rows():
    # A shift is linear in x: one gradcheck seed per row (a batch of 2 to 5), three for torch;
    # (N, C, H, W) with gradcheck's default 200 entries, the others with 60.
    once = dict(gradcheck_seeds=(1,))
    return [
        Case("randomshift_rank3", lambda: layers.RandomShift(2, seed=1), normal(6, 7),
             torch_random_shift, random=True, max_entries=60, **once),
        Case("randomshift_channels", lambda: layers.RandomShift(3, seed=2), normal(2, 6, 7),
             torch_random_shift, random=True, **once),
        Case("randomshift_max_shift_0", lambda: layers.RandomShift(0), normal(5, 4),
             torch_random_shift, max_entries=60, **once),
    ]


MSE = losses.MeanSquaredError
BCE = losses.BinaryCrossEntropy
CCE = losses.CategoricalCrossEntropy
SCCE = losses.SparseCategoricalCrossEntropy


def _loss_rows():
    # Gradient entries s_c Σt − t_c with Σt ≠ 1 are differences of terms as large as the
    # array's largest entry: compared to its scale ("unnormalised"). The sequence rows' mean
    # runs over the kept positions, their gradients are compared to their scale too; they are
    # gradchecked on one seed (a batch of 2 to 4), compared with torch on three.
    seq = dict(grad_tol="scale", batch=(2, 5), gradcheck_seeds=(1,))

    def row(*args, **kwargs):
        return Case(*args, batch=(2, 7), **kwargs)

    return [
        row("mse", MSE, regression, torch_mse),
        row("mse_sum", lambda: MSE(reduction="sum"), regression, torch_mse),
        row("mse_half", lambda: MSE(half=True), regression, torch_mse),
        row("mse_half_sum", lambda: MSE(half=True, reduction="sum"), regression, torch_mse),
        row("mse_rank3", MSE, regression_rank3, torch_mse),
        row("bce_probs", BCE, binary_probs, torch_bce_probs),
        row("bce_probs_soft_targets", BCE, binary_probs_soft, torch_bce_probs),
        row("bce_probs_sum", lambda: BCE(reduction="sum"), binary_probs, torch_bce_probs),
        row("bce_logits", lambda: BCE(from_logits=True), binary_logits, torch_bce_logits),
        row("bce_logits_sum", lambda: BCE(from_logits=True, reduction="sum"), binary_logits,
             torch_bce_logits),
        row("cce_probs", CCE, onehot_probs, torch_cce_probs),
        row("cce_probs_sum", lambda: CCE(reduction="sum"), onehot_probs, torch_cce_probs),
        row("cce_logits", lambda: CCE(from_logits=True), onehot_logits, torch_cross_entropy),
        row("cce_logits_soft_targets", lambda: CCE(from_logits=True), soft_logits,
             torch_cross_entropy),
        row("cce_logits_unnormalised_targets", lambda: CCE(from_logits=True),
             unnormalised_logits, torch_cross_entropy, grad_tol="scale"),
        row("scce_probs", SCCE, label_probs, torch_scce_probs),
        row("scce_logits", lambda: SCCE(from_logits=True), label_logits, torch_cross_entropy),
        row("scce_logits_sum", lambda: SCCE(from_logits=True, reduction="sum"), label_logits,
             torch_cross_entropy),
        Case("scce_seq_logits", lambda: SCCE(from_logits=True), logits_and_labels(5, 4),
             torch_nll, **seq),
        Case("scce_seq_logits_T1", lambda: SCCE(from_logits=True), logits_and_labels(1, 3),
             torch_nll, **seq),
        Case("scce_seq_ignore_-100", lambda: SCCE(from_logits=True, ignore_index=-100),
             logits_and_labels(6, 5, ignore=-100), torch_nll, **seq),
        Case("scce_seq_ignore_pad_id_0", lambda: SCCE(from_logits=True, ignore_index=0),
             logits_and_labels(6, 5, ignore=0), torch_nll, **seq),
        Case("scce_seq_ignore_sum",
             lambda: SCCE(from_logits=True, reduction="sum", ignore_index=-100),
             logits_and_labels(4, 3, ignore=-100), torch_nll, **seq),
        Case("scce_seq_probabilities_ignore", lambda: SCCE(ignore_index=-1),
             probabilities_and_labels(5, 4, ignore=-1), torch_nll, **seq),
        Case("scce_rows_ignore_-100", lambda: SCCE(from_logits=True, ignore_index=-100),
             rows_with_ignored_labels, torch_nll, **seq),
    ]


CASES: list[Case] = [
    *_dense_rows(),
    *_activation_rows(),
    *_reshape_dropout_embedding_rows(),
    *_conv_rows(),
    *_pool_rows(),
    *_batchnorm_rows(),
    *_sequence_rows(),
    *_augment_rows(),
    *_loss_rows(),
]
