"""Layers: each one a forward formula and its hand-derived backward."""

from .activations import GELU, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .attention import CausalSelfAttention
from .augment import RandomShift
from .base import Layer, register
from .containers import Residual
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .embedding import Embedding, PositionalEmbedding
from .normalization import BatchNorm, LayerNorm
from .pooling import AvgPool2D, GlobalAveragePool2D, MaxPool2D
from .recurrent import GRU, LSTM, RNN
from .reshape import Flatten

__all__ = [
    "Layer",
    "Dense",
    "Conv2D",
    "Identity",
    "ReLU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "GELU",
    "Flatten",
    "Dropout",
    "Embedding",
    "PositionalEmbedding",
    "RNN",
    "LSTM",
    "GRU",
    "CausalSelfAttention",
    "Residual",
    "MaxPool2D",
    "AvgPool2D",
    "GlobalAveragePool2D",
    "BatchNorm",
    "LayerNorm",
    "RandomShift",
    "register",
]
