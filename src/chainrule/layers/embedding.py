"""Embedding (integer ids → learned vectors) and PositionalEmbedding (learned positions)."""

from __future__ import annotations

import numpy as np

from .. import initializers
from ..parameter import Parameter
from ..validate import positive_int
from .arguments import received_shape
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

    def check_values(self, x):
        # A negative id would index from the end of W (NumPy wraps it) instead of failing.
        low, high = x.min(), x.max()
        if low < 0 or high >= self.input_dim:
            raise ValueError(
                f"{self.label} expected ids in [0, {self.input_dim}), got values in "
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


class PositionalEmbedding(Layer):
    """Learned absolute positions, GPT-2's ``wpe``: adds row t of a table W (T_max, E) to every
    sequence's position t.

    Shapes: x, y (N, T, E) with T ≤ T_max; W (T_max, E).

    Forward:   y[n, t] = x[n, t] + W[t]                    t = 0 … T − 1
    Backward:  dL/dW[t] = Σₙ g[n, t] for t < T, 0 for the rows T … T_max − 1;   dL/dx = g

    W[t] is added to every sequence of the batch, so its gradient sums over the batch axis; the
    rows past the context length take no part in the forward and get gradient 0 (an optimizer
    with weight decay still decays them, as torch's would). Nothing is cached: backward needs
    only the shape of g.

    Typically follows an Embedding: ``Embedding(V, E)`` then ``PositionalEmbedding(T_max)``
    turns ids (N, T) into token + position vectors (N, T, E).

    Args:
        max_length: T_max, the longest context the layer can take.
        embeddings_initializer: initializer name for W ("normal" by default, std 0.01, GPT-2's).

    Raises:
        ValueError: at construction for a non-positive max_length; at build or forward for an
            input that is not (N, T, E), a context T longer than T_max, or another E than the
            layer was built for.
    """

    def __init__(self, max_length: int, embeddings_initializer: str = "normal", name=None,
                 input_shape=None):
        super().__init__(name=name, input_shape=input_shape)
        if not isinstance(max_length, int | np.integer) or isinstance(max_length, bool) or (
                max_length <= 0):
            raise ValueError(
                f"PositionalEmbedding: max_length must be a positive integer, got {max_length!r}"
            )
        self.max_length = int(max_length)
        self.embeddings_initializer = embeddings_initializer
        initializers.get(embeddings_initializer)
        self.W: Parameter | None = None

    def check_sample_shape(self, shape, batch=None):
        received = received_shape(shape, batch)
        if len(shape) != 2:
            hint = ("; token ids (N, T) go through an Embedding first" if len(shape) == 1
                    else "")
            raise ValueError(
                f"{self.label} expected input of shape (N, T, E), got input of shape "
                f"{received}{hint}"
            )
        if shape[0] > self.max_length:
            raise ValueError(
                f"{self.label} holds positions for contexts of up to max_length = "
                f"{self.max_length}, got input of shape {received} (T = {shape[0]}); shorten "
                f"the context to {self.max_length} or build the layer with max_length >= "
                f"{shape[0]}"
            )
        if self.built:
            self.check_size(shape, 1, self.W.value.shape[1], "features on the last axis",
                            received)

    def _build(self, input_shape, rng):
        init = initializers.get(self.embeddings_initializer)
        self.W = Parameter(init((self.max_length, input_shape[-1]), rng, self.dtype), "W")
        self._params = [self.W]

    def _forward(self, x, training):
        return x + self.W.value[:x.shape[1]]

    def _backward(self, grad_y, need_input_grad):
        grad_W = np.zeros_like(self.W.value)
        np.sum(grad_y, axis=0, out=grad_W[:grad_y.shape[1]])
        self.W.grad = grad_W
        return grad_y if need_input_grad else None

    def get_config(self):
        return {
            **super().get_config(),
            "max_length": self.max_length,
            "embeddings_initializer": self.embeddings_initializer,
        }
