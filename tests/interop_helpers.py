"""Helpers shared by the interop tests (ONNX, torch, safetensors): the three presets trained
briefly, on MNIST or on random digits, built once per test session."""

from __future__ import annotations

import functools

import numpy as np

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
