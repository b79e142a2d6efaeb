"""Dense: the affine map of the lecture, z = x W + b."""

from __future__ import annotations

import numpy as np

from .. import initializers
from ..parameter import Parameter
from ..validate import boolean, positive_int
from . import activations
from .base import Layer


class Dense(Layer):
    """Fully connected layer ``z = x @ W + b``.

    Forward:   z = x W + b                      x (N, D), W (D, M), b (M,), z (N, M)
    Backward:  dL/dW = xᵀ g,  dL/db = Σₙ gₙ,  dL/dx = g Wᵀ      with g = dL/dz (N, M)

    Each formula is the chain rule on z_nm = Σ_d x_nd W_dm + b_m: ∂z_nm/∂W_dm = x_nd,
    ∂z_nm/∂b_m = 1 and ∂z_nm/∂x_nd = W_dm. Inputs with more axes, (N, …, D), are treated as
    N·… rows of D features.

    Args:
        units: M, the number of outputs.
        activation: optional activation name ("relu", "sigmoid", …). Inside a Sequential this is
            sugar for Dense followed by that activation layer (one derivative per layer).
        use_bias: whether to add b.
        kernel_initializer: "glorot_uniform" (default), "glorot_normal", "he_normal",
            "he_uniform", "normal" or "zeros".
        bias_initializer: initializer name for b ("zeros" by default).

    Raises:
        ValueError: at construction for units that are not a positive integer, an unknown
            activation or initializer, or a use_bias other than True/False; at forward, if the
            last axis of x is not the D the layer was built for.
    """

    def __init__(
        self,
        units: int,
        activation: str | None = None,
        use_bias: bool = True,
        kernel_initializer: str = "glorot_uniform",
        bias_initializer: str = "zeros",
        name: str | None = None,
        input_shape=None,
    ):
        super().__init__(name=name, input_shape=input_shape)
        self.units = positive_int(units, "units", "Dense")
        self.activation = activation
        if activation is not None:
            activations.get(activation, "Dense: activation")
        self.use_bias = boolean(use_bias, "use_bias", "Dense")
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        initializers.get(kernel_initializer, "Dense: kernel_initializer")
        initializers.get(bias_initializer, "Dense: bias_initializer")
        self.W: Parameter | None = None
        self.b: Parameter | None = None

    def _build(self, input_shape, rng):
        fan_in = input_shape[-1]
        W = initializers.get(self.kernel_initializer)((fan_in, self.units), rng, self.dtype)
        self.W = Parameter(W, "W")
        self._params = [self.W]
        if self.use_bias:
            b = initializers.get(self.bias_initializer)((self.units,), rng, self.dtype)
            self.b = Parameter(b, "b")
            self._params.append(self.b)

    def param_shapes(self, input_shape):
        shapes = {"W": (input_shape[-1], self.units)}
        if self.use_bias:
            shapes["b"] = (self.units,)
        return shapes

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def check_sample_shape(self, shape, batch=None):
        if len(shape) == 0:
            raise ValueError(
                f"{self.label} expected input of shape (N, features), got a 1-D batch; "
                "reshape to (N, 1) for one feature"
            )
        if self.built and shape[-1] != self.W.value.shape[0]:
            hint = "; add layers.Flatten() first" if len(shape) > 1 else ""
            raise ValueError(
                f"{self.label} expected {self.W.value.shape[0]} features on the last axis, "
                f"got input of shape ({'N' if batch is None else batch}, "
                f"{', '.join(map(str, shape))}){hint}"
            )

    def _validate_input(self, x):
        if self.activation is not None:
            raise RuntimeError(
                f"{self.label}: Dense(activation={self.activation!r}) is sugar for Dense "
                f"followed by its activation layer inside a Sequential; on its own, use "
                "Dense(units) and the activation layer one after the other"
            )
        return super()._validate_input(x)

    def _forward(self, x, training):
        z = x @ self.W.value
        if self.use_bias:
            z += self.b.value
        if training:
            self.cache = x
        return z

    def _backward(self, grad_y, need_input_grad):
        x = self.cache
        W = self.W.value
        g = grad_y.reshape(-1, self.units)
        # The gradient arrays are written in place after the first step: same values as a
        # fresh assignment, without allocating two parameter-sized arrays per step.
        self.W.grad = np.matmul(x.reshape(-1, W.shape[0]).T, g, out=_buffer(self.W))
        if self.use_bias:
            self.b.grad = np.add.reduce(g, axis=0, out=_buffer(self.b))
        if not need_input_grad:
            return None
        return grad_y @ W.T

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            activation=self.activation,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
        )
        return config


def _buffer(param: Parameter) -> np.ndarray:
    """``param.grad`` if it can be overwritten with the new gradient, else a new array."""
    grad = param.grad
    if grad is None or grad.shape != param.value.shape or grad.dtype != param.value.dtype:
        return np.empty_like(param.value)
    return grad
