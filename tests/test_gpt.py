"""The whole GPT against PyTorch, llm.c's check tightened.

A small GPT is built as a chainrule Sequential (Embedding + PositionalEmbedding, blocks of
Residual(LayerNorm → CausalSelfAttention) and Residual(LayerNorm → Dense → GELU → Dense), a final
LayerNorm, Dense to the vocabulary) next to an independent torch module written the usual
way (nanoGPT's layout: wte, wpe, per block ln_1, c_attn, attention c_proj, ln_2, c_fc, MLP
c_proj, then ln_f and lm_head, F.scaled_dot_product_attention with is_causal=True). With the
same weights:

- logits and the loss (cross-entropy with ignore_index=−100 on padded positions) equal torch's;
- the gradient of *every* parameter tensor equals torch autograd's (float64: 1e-9, float32:
  1e-4, relative to the tensor's largest entry);
- ten AdamW steps (weight decay on every parameter, as torch applies it to all it is given)
  give the same ten losses as torch.optim.AdamW to 1e-5 relative, and the same weights.

"Relative" for a tensor is max|ours − torch| / max|torch|: gradients are sums over the batch
and the positions whose entries can cancel to 0, where entry-wise relative error measures
rounding, not the formula (see helpers.assert_close_to_scale).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torch import nn

import chainrule as cr
from chainrule import layers
from helpers import assert_close, assert_close_to_scale, to_numpy, to_torch

VOCAB, WIDTH, HEADS, BLOCKS, CONTEXT = 48, 64, 4, 2, 16
BATCH = 4
TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64}
GRAD_RTOL = {"float32": 1e-4, "float64": 1e-9}
STEPS, LR, WEIGHT_DECAY = 10, 1e-2, 0.1


def chainrule_gpt(dtype="float32", context=CONTEXT, max_length=CONTEXT, vocab=VOCAB,
                  width=WIDTH, heads=HEADS, blocks=BLOCKS, approximate="tanh", seed=0):
    stack = [layers.Embedding(vocab, width, input_shape=(context,)),
             layers.PositionalEmbedding(max_length)]
    for _ in range(blocks):
        stack += [
            layers.Residual([layers.LayerNorm(), layers.CausalSelfAttention(heads)]),
            layers.Residual([layers.LayerNorm(), layers.Dense(4 * width),
                             layers.GELU(approximate), layers.Dense(width)]),
        ]
    stack += [layers.LayerNorm(), layers.Dense(vocab)]
    return cr.Sequential(stack, dtype=dtype, seed=seed, name="gpt")


class TorchBlock(nn.Module):
    def __init__(self, width, heads, approximate):
        super().__init__()
        self.heads, self.approximate = heads, approximate
        self.ln_1 = nn.LayerNorm(width)
        self.c_attn = nn.Linear(width, 3 * width)
        self.attn_proj = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        self.c_fc = nn.Linear(width, 4 * width)
        self.mlp_proj = nn.Linear(4 * width, width)

    def forward(self, x):
        n, t, e = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(e, dim=2)
        q, k, v = (a.view(n, t, self.heads, e // self.heads).transpose(1, 2) for a in (q, k, v))
        o = TF.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(o.transpose(1, 2).reshape(n, t, e))
        return x + self.mlp_proj(TF.gelu(self.c_fc(self.ln_2(x)), approximate=self.approximate))


class TorchGPT(nn.Module):
    def __init__(self, vocab, width, heads, blocks, max_length, approximate):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(max_length, width)
        self.blocks = nn.ModuleList(TorchBlock(width, heads, approximate) for _ in range(blocks))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab)

    def forward(self, ids):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def in_chainrule_order(self):
        """torch's parameters in the order of the chainrule model's parameters()."""
        order = [self.wte.weight, self.wpe.weight]
        for b in self.blocks:
            order += [b.ln_1.weight, b.ln_1.bias, b.c_attn.weight, b.c_attn.bias,
                      b.attn_proj.weight, b.attn_proj.bias, b.ln_2.weight, b.ln_2.bias,
                      b.c_fc.weight, b.c_fc.bias, b.mlp_proj.weight, b.mlp_proj.bias]
        return order + [self.ln_f.weight, self.ln_f.bias, self.lm_head.weight, self.lm_head.bias]


def randomize(model, rng):
    """Move every parameter off its initial value (LayerNorm γ = 1, β = 0, zero biases, tiny
    embeddings) so that each gradient is exercised."""
    for layer in model.layers:
        for p in layer.parameters():
            short = p.name.rsplit("/", 1)[-1]
            if short == "gamma":
                value = 1.0 + 0.2 * rng.standard_normal(p.shape)
            elif p.value.ndim == 1:
                value = 0.1 * rng.standard_normal(p.shape)
            elif isinstance(layer, layers.Embedding | layers.PositionalEmbedding):
                value = 0.5 * rng.standard_normal(p.shape)
            else:
                value = rng.standard_normal(p.shape) / np.sqrt(p.shape[0])
            p.value[...] = value


def twins(dtype, context=CONTEXT, max_length=CONTEXT, approximate="tanh", seed=0):
    """The chainrule GPT, the torch GPT with identical weights, and pairs (our Parameter, its
    label, torch's parameter, whether torch's layout is ours transposed)."""
    model = chainrule_gpt(dtype, context, max_length, approximate=approximate, seed=seed)
    randomize(model, np.random.default_rng(seed))
    ref = TorchGPT(VOCAB, WIDTH, HEADS, BLOCKS, max_length, approximate).to(TORCH_DTYPE[dtype])
    ours = [(p, f"{layer.name}/{p.name}") for layer in model.layers for p in layer.parameters()]
    theirs = ref.in_chainrule_order()
    assert len(ours) == len(theirs)
    pairs = []
    with torch.no_grad():
        for (p, label), t in zip(ours, theirs, strict=True):
            transposed = t.ndim == 2 and not any(t is e for e in (ref.wte.weight, ref.wpe.weight))
            value = p.value.T if transposed else p.value
            assert tuple(t.shape) == value.shape, label
            t.copy_(to_torch(np.ascontiguousarray(value)))
            pairs.append((p, label, t, transposed))
    return model, ref, pairs


def batch(rng, context=CONTEXT, pad_share=0.25):
    """Ids (N, T) and next-token labels (N, T) with about ``pad_share`` of the labels −100."""
    ids = rng.integers(0, VOCAB, (BATCH, context))
    labels = rng.integers(0, VOCAB, (BATCH, context))
    labels[rng.random(labels.shape) < pad_share] = -100
    labels[0, 0] = 1
    return ids, labels


def loss_fn():
    return cr.losses.SparseCategoricalCrossEntropy(from_logits=True, ignore_index=-100)


def relative(ours, theirs) -> float:
    """max|ours − torch| / max|torch| of one tensor."""
    theirs = to_numpy(theirs).astype(np.float64)
    return float(np.max(np.abs(ours.astype(np.float64) - theirs)) / np.max(np.abs(theirs)))


def grad_differences(dtype, context):
    """Logits, loss and every parameter gradient of both GPTs on one batch."""
    model, ref, pairs = twins(dtype, context, max_length=CONTEXT)
    ids, labels = batch(np.random.default_rng(1), context)
    loss = loss_fn()
    logits = model.forward(ids, training=True)
    value = loss(logits, labels)
    model.backward(loss.backward())

    logits_t = ref(to_torch(ids))
    value_t = TF.cross_entropy(logits_t.reshape(-1, VOCAB), to_torch(labels).reshape(-1),
                               ignore_index=-100)
    value_t.backward()
    grads = {label: relative(p.grad, t.grad.T if transposed else t.grad)
             for p, label, t, transposed in pairs}
    return logits, logits_t, value, value_t.item(), grads, pairs


@pytest.mark.parametrize("context", [CONTEXT, 11], ids=["T16_of_16", "T11_of_16"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_gradient_equals_torch(dtype, context):
    logits, logits_t, value, value_t, grads, pairs = grad_differences(dtype, context)
    rtol = GRAD_RTOL[dtype]
    assert_close_to_scale(logits, logits_t, 1e-10 if dtype == "float64" else 1e-5, "logits")
    assert abs(value - value_t) <= (1e-12 if dtype == "float64" else 1e-6) * abs(value_t)
    assert len(grads) == len(pairs) == 2 + 12 * BLOCKS + 4
    worst = max(grads, key=grads.get)
    print(f"\nGPT {dtype} T={context}: loss {value:.10g} (torch {value_t:.10g}); max relative "
          f"gradient difference {grads[worst]:.2e} ({worst}) over {len(grads)} tensors")
    for label, rel in grads.items():
        assert rel <= rtol, f"{label}: gradient differs from torch's by {rel:.2e} > {rtol:g}"
    # Rows of the position table past the context take no part: gradient exactly 0, as torch.
    wpe = next(p for p, label, _, _ in pairs if label.startswith("positionalembedding"))
    assert np.all(wpe.grad[context:] == 0.0)


@pytest.mark.parametrize("context", [CONTEXT, 12], ids=["T16_of_16", "T12_of_16"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_ten_adamw_steps_equal_torch(dtype, context):
    model, ref, pairs = twins(dtype, context, max_length=CONTEXT, seed=2)
    model.compile(cr.optimizers.AdamW(LR, weight_decay=WEIGHT_DECAY), loss_fn())
    optimizer = torch.optim.AdamW(ref.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    assert all(group["weight_decay"] == WEIGHT_DECAY for group in optimizer.param_groups)
    assert len(optimizer.param_groups[0]["params"]) == len(model.parameters())
    rng = np.random.default_rng(3)
    ours, theirs = [], []
    for _ in range(STEPS):
        ids, labels = batch(rng, context)
        loss, _ = model.train_step(model.prepare_input(ids, "test"), labels)
        ours.append(loss)
        optimizer.zero_grad()
        value = TF.cross_entropy(ref(to_torch(ids)).reshape(-1, VOCAB),
                                 to_torch(labels).reshape(-1), ignore_index=-100)
        value.backward()
        optimizer.step()
        theirs.append(value.item())
    ours, theirs = np.array(ours), np.array(theirs)
    diffs = np.abs(ours - theirs) / np.abs(theirs)
    print(f"\nGPT {dtype} T={context}: {STEPS} AdamW losses {ours[0]:.6f} → {ours[-1]:.6f}; max "
          f"relative difference from torch's {diffs.max():.2e}")
    assert ours[-1] < ours[0]
    assert_close(ours, theirs, 1e-5, f"{dtype} losses over {STEPS} AdamW steps")
    if dtype == "float64":
        # The weights after the steps, decay included: every tensor, rows past the context too.
        # Only in float64: Adam divides each gradient by its own root-mean-square, so an entry
        # whose gradient is rounding noise (the key bias, whose true gradient is exactly 0, see
        # test_key_bias_gradient_is_zero; an embedding row whose contributions cancel) moves by
        # up to ±lr per step in a direction set by that noise, which differs between torch and
        # chainrule. In float32 the noise (≈ 1e-9) is comparable to Adam's ε = 1e-8 and such
        # entries drift apart by O(lr) while the losses agree; in float64 (≈ 1e-17) it is far
        # below ε and every entry agrees.
        for p, label, t, transposed in pairs:
            assert_close_to_scale(p.value, t.T if transposed else t, 1e-9,
                                  f"{label} after {STEPS} steps")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_key_bias_gradient_is_zero(dtype):
    """Adding b to every key adds q_i·b to every score of row i: softmax does not change, so
    dL/db_k = 0. Ours is 0 up to rounding, as torch's."""
    _, _, _, _, _, pairs = grad_differences(dtype, CONTEXT)
    eps = float(np.finfo(dtype).eps)
    for p, label, t, _ in pairs:
        if label.endswith("/b_qkv"):
            query_and_value = np.abs(np.r_[p.grad[:WIDTH], p.grad[2 * WIDTH:]]).max()
            assert np.abs(p.grad[WIDTH:2 * WIDTH]).max() <= 1e3 * eps * query_and_value
            assert np.abs(to_numpy(t.grad)[WIDTH:2 * WIDTH]).max() <= 1e3 * eps * query_and_value


def test_gradcheck_whole_gpt_float64():
    """The hand-written backward of the whole model against finite differences (a smaller GPT,
    sampled entries of every parameter tensor)."""
    model = chainrule_gpt("float64", context=5, max_length=6, vocab=11, width=8, heads=2,
                          blocks=2, approximate="none", seed=4)
    randomize(model, np.random.default_rng(4))
    model.compile("adamw", loss_fn())
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 11, (3, 5))
    labels = rng.integers(0, 11, (3, 5))
    labels[1, 2] = labels[2, 4] = -100
    report = cr.gradcheck(model, ids, labels, max_entries=12)
    assert len(report.entries) == 2 + 12 * 2 + 4
    assert report.ok and report.max_rel_error < 1e-6, str(report)


def test_gpt_saves_and_loads(tmp_path):
    model, _, _ = twins("float32")
    model.compile(cr.optimizers.AdamW(LR), loss_fn())
    rng = np.random.default_rng(6)
    ids, labels = batch(rng)
    model.train_step(model.prepare_input(ids, "test"), labels)
    model.save(tmp_path / "gpt.npz")
    loaded = cr.load_model(tmp_path / "gpt.npz")
    np.testing.assert_array_equal(loaded.predict(ids), model.predict(ids))
    assert loaded.loss.ignore_index == -100
    ids, labels = batch(rng)
    first, _ = model.train_step(model.prepare_input(ids, "test"), labels)
    second, _ = loaded.train_step(loaded.prepare_input(ids, "test"), labels)
    assert first == second


def test_gpt_bad_input_names_the_layer():
    model = chainrule_gpt(context=CONTEXT)
    ids = np.zeros((2, CONTEXT), np.int64)
    ids[1, 3] = VOCAB
    with pytest.raises(ValueError, match=rf"Embedding 'embedding_1' expected ids in \[0, "
                                         rf"{VOCAB}\), got values in \[0, {VOCAB}\]"):
        model.predict(ids)
    with pytest.raises(ValueError, match=r"the model was built for input of shape \(N, 16\), "
                                         r"got \(2, 20\)"):
        model.predict(np.zeros((2, 20), np.int64))
    with pytest.raises(ValueError, match=r"built for input of shape \(N, 16\), got \(2, 16, 1\)"):
        model.predict(np.zeros((2, CONTEXT, 1), np.int64))
    with pytest.raises(TypeError, match="the first layer Embedding 'embedding_1' takes integer "
                                        "ids, got dtype float32"):
        model.predict(np.zeros((2, CONTEXT), np.float32))
    with pytest.raises(ValueError, match=r"PositionalEmbedding 'positionalembedding_1' holds "
                                         r"positions for contexts of up to max_length = 16, got "
                                         r"input of shape \(N, 20, 64\) \(T = 20\)"):
        chainrule_gpt(context=20, max_length=CONTEXT)


def test_explain_backward_walks_a_gpt():
    """explain_backward steps through the sequence model too: the loss's plain gradient for
    (N, T, V) logits, then every layer, Residuals with their inner parameters' gradients."""
    model = chainrule_gpt(context=3, max_length=4, vocab=5, width=4, heads=2, blocks=1)
    model.compile("adamw", loss_fn())
    ids = np.random.default_rng(0).integers(0, 5, (2, 3))
    labels = ids.copy()
    labels[0, 0] = -100
    report = cr.explain_backward(model, ids, labels)
    titles = [step.title for step in report.steps]
    assert titles[0] == "loss: SparseCategoricalCrossEntropy"
    assert "Residual 'residual_1'" in titles and titles[-1] == "Embedding 'embedding_1'"
    assert "dL/dx = g + J_fᵀ g" in report["Residual 'residual_1'"].formula
