"""Residual: y = x + block(x), a skip connection around a stack of layers."""

from __future__ import annotations

import numpy as np

from .arguments import received_shape
from .base import Layer, layer_spec, make_layer, new_generator
from .stack import append_layer


class Residual(Layer):
    """A skip connection around ``block``, one layer or a stack of layers: y = x + block(x).

    It keeps a transformer a plain Sequential: a GPT block is
    ``Residual([LayerNorm(), CausalSelfAttention(heads)])`` then
    ``Residual([LayerNorm(), Dense(4E), GELU(), Dense(E)])``.

    Shapes: x, y (N, …), the same shape: the block must map its input shape to itself.

    Forward:   y = x + f(x),   f = layerₖ ∘ … ∘ layer₁
    Backward:  dL/dx = g + J_fᵀ g,   g = dL/dy

    x reaches y along two paths, the identity (Jacobian I) and the block, and the chain rule
    adds the gradients of both: g itself, plus what the block's own backward passes, layer by
    layer in reverse order, returns for g. The inner layers assign their own parameter
    gradients; nothing is cached here (the inner layers cache what they need).

    Inside the block, as in a Sequential, unnamed layers get unique names (``dense_1``,
    ``dense_2``) and ``Dense(units, activation=a)`` becomes Dense followed by that activation.
    Parameters appear in ``parameters()`` in the block's order under ``<layer>.<name>``
    (``dense_1.W``), so a model's ``state_dict`` names them ``residual_1.dense_1.W`` and every
    name is stable across saves, copies and ``from_config``; buffers (a BatchNorm's running
    statistics) likewise as ``<layer>.<name>``.

    Random numbers: the layers inside that draw (Dropout, attention dropout, a nested Residual)
    share one Generator, the Residual's ``rng``, seeded from ``seed`` (or from the model's seed
    when None, as Dropout is); their own ``seed`` arguments are superseded. One state then
    describes the whole block, which is what saving, ``Sequential.copy`` and ``gradcheck``
    restore to replay exactly the same masks.

    Args:
        block: a Layer, or a list of Layers applied in order.
        seed: seed of the shared Generator of the layers inside that draw random numbers.

    Raises:
        TypeError: for a block that is not a Layer or a list of Layers.
        ValueError: for an empty block, two inner layers with the same name, or (at build) a
            block whose output shape differs from its input shape.
    """

    def __init__(self, block, seed: int | None = None, name=None, input_shape=None):
        self._rng = None
        super().__init__(name=name, input_shape=input_shape)
        if isinstance(block, Layer):
            block = [block]
        if not isinstance(block, list | tuple) or not all(isinstance(b, Layer) for b in block):
            hint = ""
            if hasattr(block, "layers"):
                hint = "; for a Sequential pass its layers, Residual(model.layers)"
            raise TypeError(
                f"Residual expects a Layer or a list of Layers as its block, got "
                f"{type(block).__name__}{hint}"
            )
        if not block:
            raise ValueError("Residual: the block is empty; pass at least one layer")
        self.seed = seed
        self.layers: list[Layer] = []
        for layer in block:
            append_layer(self.layers, layer, "Residual", "the block")

    # ------------------------------------------------------------------ random state
    @property
    def rng(self) -> np.random.Generator | None:
        """The Generator shared by the layers inside that draw (None when none does)."""
        return self._rng

    @rng.setter
    def rng(self, generator: np.random.Generator | None) -> None:
        self._rng = generator
        for layer in self.layers:
            if isinstance(getattr(layer, "rng", None), np.random.Generator):
                layer.rng = generator

    # ------------------------------------------------------------------ build and checks
    def check_sample_shape(self, shape, batch=None):
        if self.built and (len(shape) != len(self.input_shape)
                           or shape[-1] != self.input_shape[-1]):
            raise ValueError(
                f"{self.label} was built for samples of shape {self.input_shape} (its block "
                f"maps them to themselves), got input of shape "
                f"{received_shape(shape, batch)}"
            )
        self.layers[0].check_sample_shape(shape, batch)

    def _build(self, input_shape, rng):
        shape = tuple(input_shape)
        for layer in self.layers:
            layer.build(shape, rng=rng, dtype=self.dtype)
            shape = layer.output_shape
        if shape != tuple(input_shape):
            raise ValueError(
                f"{self.label}: the block maps samples of shape {tuple(input_shape)} to "
                f"{shape}; y = x + block(x) needs the same shape (end the block with a layer "
                f"that maps back to {input_shape[-1]} features)"
            )
        self._params = []
        for layer in self.layers:
            for p in layer.parameters():
                p.name = f"{layer.name}.{p.name}"
                self._params.append(p)
        draws = any(isinstance(getattr(layer, "rng", None), np.random.Generator)
                    for layer in self.layers)
        self._rng = None
        if draws:
            self.rng = new_generator(self.seed, rng)

    def min_training_batch(self) -> int:
        return max(layer.min_training_batch() for layer in self.layers)

    # ------------------------------------------------------------------ forward / backward
    def _forward(self, x, training):
        out = x
        for layer in self.layers:
            out = layer.apply(out, training)
        return x + out

    def _backward(self, grad_y, need_input_grad):
        grad = grad_y
        for i in range(len(self.layers) - 1, -1, -1):
            grad = self.layers[i].backward(grad, need_input_grad=need_input_grad or i > 0)
        if not need_input_grad:
            return None
        return grad_y + grad

    # ------------------------------------------------------------------ state and config
    def buffers(self):
        return {f"{layer.name}.{key}": value
                for layer in self.layers for key, value in layer.buffers().items()}

    def get_config(self):
        return {
            **super().get_config(),
            "block": [layer_spec(layer) for layer in self.layers],
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Residual:
        """Rebuild from ``get_config()``; ``custom_objects`` (name → class) as in load_model."""
        config = dict(config)
        block = [make_layer(spec, custom_objects) for spec in config.pop("block")]
        return cls(block, **config)

    def __repr__(self) -> str:
        inner = ", ".join(f"{type(layer).__name__}({layer.name!r})" for layer in self.layers)
        return f"Residual([{inner}], name={self.name!r})"
