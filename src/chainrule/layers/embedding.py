"""Embedding: integer ids → learned vectors."""

from __future__ import annotations

import numpy as np

from .. import initializers
from ..parameter import Parameter
from ..validate import positive_int
from .base import Layer


class Embedding(Layer):
    """Look up row ``ids`` of a table W (V, E): y[n, …] = W[ids[n, …]].

    Backward: y is a copy of selected rows, so dL/dW[v] = Σ over positions with id v of g at that
    position: repeated ids accumulate (``np.add.at``, which does not lose repeated indices the
    way ``W[ids] += g`` would). The ids are integers, so there is no input gradient (None).

    Args:
        input_dim: V, the vocabulary size; ids must lie in [0, V).
        output_dim: E, the vector size.
        embeddings_initializer: initializer name for W ("normal" by default, std 0.01).

    Raises:
        ValueError: at construction for a non-positive input_dim or output_dim or an unknown
            initializer; at forward (on its own or as a model's first layer) for ids outside
            [0, V).
    """

    integer_input = True

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        embeddings_initializer: str = "normal",
        name=None,
        input_shape=None,
    ):
        super().__init__(name=name, input_shape=input_shape)
        self.input_dim = positive_int(input_dim, "input_dim", "Embedding")
        self.output_dim = positive_int(output_dim, "output_dim", "Embedding")
        self.embeddings_initializer = embeddings_initializer
        initializers.get(embeddings_initializer, "Embedding: embeddings_initializer")
        self.W: Parameter | None = None

    def _build(self, input_shape, rng):
        init = initializers.get(self.embeddings_initializer)
        self.W = Parameter(init((self.input_dim, self.output_dim), rng, self.dtype), "W")
        self._params = [self.W]

    def param_shapes(self, input_shape):
        return {"W": (self.input_dim, self.output_dim)}

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def _check_values(self, x):
        # A negative id would index from the end of W (NumPy wraps it) instead of failing.
        low, high = x.min(), x.max()
        if low < 0 or high >= self.input_dim:
            raise ValueError(
                f"{self._label()} expected ids in [0, {self.input_dim}), got values in "
                f"[{low}, {high}]"
            )

    def _forward(self, x, training):
        if training:
            self.cache = x
        return self.W.value[x]

    def _backward(self, grad_y, need_input_grad):
        ids = self.cache
        grad_W = np.zeros_like(self.W.value)
        np.add.at(grad_W, ids.reshape(-1), grad_y.reshape(-1, self.output_dim))
        self.W.grad = grad_W
        return None

    def get_config(self):
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "embeddings_initializer": self.embeddings_initializer,
        }
