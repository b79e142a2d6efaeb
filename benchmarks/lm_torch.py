"""The language-model presets written again in PyTorch, for benchmarks/lm.py and speed.py.

Each torch module is the architecture of the chainrule preset of the same name (``LM_ARCH`` in
chainrule.models), written the usual torch way; ``from_chainrule`` builds it with the chainrule
model's weights (so both start from the same initialisation) and ``train_steps`` trains it with
the preset's recipe: AdamW, the same cosine decay per step, the same batches in the same order
as ``Sequential.fit`` (one permutation per (seed, epoch)), cross-entropy with ignore_index=−100.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chainrule import layers
from chainrule.data.text import IGNORE_INDEX


class CharMLP(nn.Module):
    def __init__(self, vocab, context, embed, hidden):
        super().__init__()
        self.emb = nn.Embedding(vocab, embed)
        self.hidden = nn.Linear(context * embed, hidden)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, ids):
        return self.out(torch.tanh(self.hidden(self.emb(ids).flatten(1))))

    def in_chainrule_order(self):
        return [self.emb.weight, self.hidden.weight, self.hidden.bias, self.out.weight,
                self.out.bias]


class CharLSTM(nn.Module):
    def __init__(self, vocab, context, embed, units):
        super().__init__()
        self.emb = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, units, batch_first=True)
        self.out = nn.Linear(units, vocab)

    def forward(self, ids):
        return self.out(self.lstm(self.emb(ids))[0])

    def in_chainrule_order(self):
        lstm = self.lstm
        return [self.emb.weight, lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0,
                lstm.bias_hh_l0, self.out.weight, self.out.bias]


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
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
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(o.transpose(1, 2).reshape(n, t, e))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, context, width, heads, blocks):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(blocks))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab)

    def forward(self, ids):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def in_chainrule_order(self):
        order = [self.wte.weight, self.wpe.weight]
        for b in self.blocks:
            order += [b.ln_1.weight, b.ln_1.bias, b.c_attn.weight, b.c_attn.bias,
                      b.attn_proj.weight, b.attn_proj.bias, b.ln_2.weight, b.ln_2.bias,
                      b.c_fc.weight, b.c_fc.bias, b.mlp_proj.weight, b.mlp_proj.bias]
        return order + [self.ln_f.weight, self.ln_f.bias, self.lm_head.weight, self.lm_head.bias]


TORCH_MODELS = {"mlp": CharMLP, "lstm": CharLSTM, "gpt": GPT}


def from_chainrule(preset: str, model, arch: dict) -> nn.Module:
    """The torch twin of the chainrule ``model`` (preset ``preset`` built with ``arch``), with a
    copy of its weights: torch's Linear and LSTM weights are chainrule's transposed, embedding
    tables and vectors are the same."""
    vocab = model.output_shape[-1]
    twin = TORCH_MODELS[preset](vocab, **arch)
    ours = [(p, isinstance(layer, layers.Embedding | layers.PositionalEmbedding))
            for layer in model.layers for p in layer.parameters()]
    theirs = twin.in_chainrule_order()
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    with torch.no_grad():
        for (p, table), t in zip(ours, theirs, strict=True):
            value = p.value if table or p.value.ndim == 1 else p.value.T
            assert tuple(t.shape) == value.shape, (p.name, t.shape, value.shape)
            t.copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return twin


def make_optimizer(twin, lr, weight_decay, total_steps):
    """torch.optim.AdamW with chainrule's CosineDecay(lr, T_max=total_steps, per="step")."""
    opt = torch.optim.AdamW(twin.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: (1.0 + math.cos(math.pi * min(k, total_steps) / total_steps)) / 2.0)
    return opt, sched


def loss_of(twin, xb, yb):
    logits = twin(xb)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def train_epochs(twin, x, y, epochs, batch_size, lr, weight_decay, seed):
    """Train ``twin`` as ``Sequential.fit(x, y, epochs, batch_size, seed=seed)`` trains the
    chainrule preset: the same batches, in the same order, with the same schedule."""
    n = len(x)
    steps = -(-n // batch_size)
    opt, sched = make_optimizer(twin, lr, weight_decay, epochs * steps)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    twin.train()
    for epoch in range(epochs):
        order = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(n))
        for step in range(steps):
            idx = order[step * batch_size:(step + 1) * batch_size]
            loss = loss_of(twin, tx[idx], ty[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return twin


@torch.no_grad()
def nats_per_char(twin, x, y, batch_size=512) -> float:
    """Mean −log p(target) over the targets that are not padding, as chainrule.generate's."""
    twin.eval()
    total, count = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[start:start + batch_size])
        yb = torch.from_numpy(y[start:start + batch_size]).reshape(-1)
        logits = twin(xb)
        total += float(F.cross_entropy(logits.reshape(len(yb), -1), yb,
                                       ignore_index=IGNORE_INDEX, reduction="sum"))
        count += int((yb != IGNORE_INDEX).sum())
    return total / count
