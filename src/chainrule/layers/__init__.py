"""Layers: each one a forward formula and its hand-derived backward."""

from .activations import Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .base import Layer
from .dense import Dense
from .dropout import Dropout
from .embedding import Embedding
from .reshape import Flatten

__all__ = [
    "Layer",
    "Dense",
    "Identity",
    "ReLU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "Flatten",
    "Dropout",
    "Embedding",
]
