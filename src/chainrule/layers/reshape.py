"""Shape-only layers: Flatten."""

from __future__ import annotations

import math

from .base import Layer


class Flatten(Layer):
    """Flatten every axis after the batch axis: (N, d1, d2, …) → (N, d1·d2·…).

    Backward: reshape dL/dy back to the input's shape (a reshape has Jacobian = identity).
    """

    def compute_output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def _forward(self, x, training):
        if training:
            self.cache = x.shape
        return x.reshape(x.shape[0], -1)

    def _backward(self, grad_y, need_input_grad):
        return grad_y.reshape(self.cache) if need_input_grad else None
