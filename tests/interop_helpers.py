"""Helpers shared by the interop tests (ONNX, torch, safetensors): a table of layer
configurations, and the three presets trained briefly, on MNIST or on random digits, built once
per test session."""

from __future__ import annotations

import copy
import functools
import zlib
from dataclasses import dataclass

import numpy as np

import chainrule as cr
from chainrule import layers as L
from chainrule import models

PRESETS = ("softmax", "mlp", "cnn")


@functools.cache
def mnist_subset(n_train: int = 1024, n_test: int = 64):
    """The first ``n_train`` MNIST training digits and ``n_test`` test digits, as float32."""
    from chainrule.data import load_mnist

    (x, y), (x_test, y_test) = load_mnist(progress=False)
    return (x[:n_train], y[:n_train]), (x_test[:n_test], y_test[:n_test])


def random_digits(n: int = 64, seed: int = 0):
    """(n, 28, 28) float32 images in [0, 1) and labels 0 … 9: quick stand-ins for MNIST."""
    rng = np.random.default_rng(seed)
    return rng.random((n, 28, 28), dtype=np.float32), np.arange(n) % 10


@functools.cache
def trained_preset(name: str, mnist: bool = False):
    """The preset ``name`` after one short epoch (1,024 MNIST digits with ``mnist``, else 64
    random images), so that BatchNorm's running statistics and every weight have moved off
    their initial values. Returns (model, x_test); callers must not train it further."""
    if mnist:
        (x, y), (x_test, _) = mnist_subset()
    else:
        x, y = random_digits(64)
        x_test, _ = random_digits(32, seed=1)
    model = models.build(name, seed=0)
    model.fit(x, y, epochs=1, batch_size=128 if mnist else 16, seed=0, verbose=0)
    return model, x_test


def images(*shape):
    return lambda rng, n: rng.standard_normal((n, *shape))


def ids(vocab, length):
    return lambda rng, n: rng.integers(0, vocab, (n, length))


@dataclass(frozen=True)
class Row:
    """A layer configuration: its layers (deep-copied for each model), a batch generator, and
    whether the model converts back from ONNX (import) and to torch."""

    layers: list
    inputs: object
    onnx_import: bool = True
    torch: bool = True


# One row per layer configuration. A row's model is built for the generator's sample shape;
# every weight and running statistic is randomized.
NO_ONNX_IMPORT = dict(onnx_import=False)
SEQUENCE = dict(onnx_import=False, torch=False)
ROWS = {
    "dense_relu": Row([L.Dense(5), L.ReLU()], images(7)),
    "dense_no_bias_sigmoid": Row([L.Dense(4, use_bias=False), L.Sigmoid()], images(6)),
    "dense_on_sequences_tanh": Row([L.Dense(5), L.Tanh()], images(3, 6)),
    "leaky_relu_softmax": Row([L.Dense(6), L.LeakyReLU(0.2), L.Softmax()], images(5)),
    "identity_dropout_flatten": Row([L.Flatten(), L.Identity(), L.Dropout(0.3), L.Dense(3)],
                                    images(2, 3, 4)),
    "gelu": Row([L.Dense(6), L.GELU()], images(5), **NO_ONNX_IMPORT),
    "gelu_tanh": Row([L.Dense(6), L.GELU(approximate="tanh")], images(5), **NO_ONNX_IMPORT),
    "conv_valid": Row([L.Conv2D(3, 3)], images(2, 7, 8)),
    "conv_same_odd": Row([L.Conv2D(4, 3, padding="same")], images(2, 6, 7)),
    "conv_same_even_kernel": Row([L.Conv2D(3, 4, padding="same")], images(1, 7, 6)),
    "conv_same_stride_2": Row([L.Conv2D(3, 3, strides=2, padding="same")], images(2, 8, 7)),
    "conv_same_stride_dilation": Row([L.Conv2D(2, (2, 3), strides=(2, 3), dilation=2,
                                               padding="same")], images(2, 9, 11)),
    "conv_explicit_padding_no_bias": Row([L.Conv2D(3, 3, strides=(2, 1), padding=(1, 2),
                                                   use_bias=False)], images(2, 7, 6)),
    "conv_dilation_valid": Row([L.Conv2D(2, 3, dilation=(2, 1))], images(1, 9, 8)),
    "conv_on_hw_images": Row([L.Conv2D(3, 3), L.ReLU()], images(8, 8)),
    "maxpool": Row([L.MaxPool2D(2)], images(2, 6, 7)),
    "maxpool_same_stride": Row([L.MaxPool2D(3, strides=2, padding="same")], images(2, 7, 8)),
    "maxpool_padding": Row([L.MaxPool2D(3, strides=1, padding=1)], images(2, 5, 5)),
    "avgpool": Row([L.AvgPool2D(2, strides=1)], images(2, 5, 6)),
    "avgpool_same_stride": Row([L.AvgPool2D(2, strides=2, padding="same")], images(2, 7, 5)),
    "avgpool_padding": Row([L.AvgPool2D((3, 2), padding=(1, 1))], images(1, 6, 6)),
    "pools_on_hw_images": Row([L.MaxPool2D(2), L.AvgPool2D(2, strides=1), L.Flatten()],
                              images(8, 9)),
    "global_average_pool": Row([L.Conv2D(4, 3), L.GlobalAveragePool2D(), L.Dense(2)],
                               images(2, 6, 6)),
    "batchnorm_features": Row([L.Dense(5), L.BatchNorm(), L.ReLU()], images(4)),
    "batchnorm_images": Row([L.Conv2D(3, 3), L.BatchNorm(momentum=0.05, eps=1e-3)],
                            images(2, 6, 6)),
    "batchnorm_frozen": Row([L.BatchNorm(frozen=True)], images(3, 4, 4)),
    "random_shift": Row([L.RandomShift(2), L.Conv2D(2, 3)], images(1, 8, 8)),
    "embedding": Row([L.Embedding(11, 4), L.Flatten(), L.Dense(3)], ids(11, 5)),
    "layernorm": Row([L.LayerNorm(), L.Dense(3)], images(4, 6)),
    "positional_attention": Row([L.Embedding(13, 8), L.PositionalEmbedding(9),
                                 L.CausalSelfAttention(2)], ids(13, 6), **SEQUENCE),
    "gpt_block": Row([L.Residual([L.LayerNorm(), L.CausalSelfAttention(4)]),
                      L.Residual([L.LayerNorm(), L.Dense(16), L.GELU(), L.Dense(8)])],
                     images(5, 8), **SEQUENCE),
    "rnn": Row([L.RNN(4)], images(5, 3), **SEQUENCE),
    "lstm_sequences_learned_state": Row([L.LSTM(4, return_sequences=True,
                                                learn_initial_state=True)], images(5, 3),
                                        **SEQUENCE),
    "gru_learned_state": Row([L.GRU(5, learn_initial_state=True)], images(4, 3), **SEQUENCE),
    "gru_sequences": Row([L.GRU(3, return_sequences=True)], images(4, 2), **SEQUENCE),
}


def row_model(name: str, dtype="float32"):
    """The row's model, built, with random weights and statistics, and a batch for it."""
    row = ROWS[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = row.inputs(rng, 5)
    model = cr.Sequential(copy.deepcopy(row.layers), seed=0, name=name, dtype=dtype)
    model.build(x.shape[1:])
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith(".rng"):
            continue
        if key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 1.5, value.shape)
        else:
            state[key] = rng.standard_normal(value.shape) * 0.5
    model.load_state_dict(state, strict=False)
    return model, x if x.dtype.kind == "i" else x.astype(dtype)
