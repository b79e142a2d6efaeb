"""Dropout: inverted dropout, identity at inference."""

from __future__ import annotations

from ..validate import number
from .base import RandomLayer


class Dropout(RandomLayer):
    """Zero each entry with probability ``rate`` during training and scale the rest by 1/(1 − rate).

    Forward (training):  y = x ⊙ m,  m_i = [u_i ≥ rate] / (1 − rate),  u_i ~ U[0, 1)
    Forward (inference): y = x  (the scaling during training keeps E[y] = x, so nothing changes)
    Backward:            dL/dx = g ⊙ m. Cache: the scaled mask m.

    Args:
        rate: probability of dropping an entry, in [0, 1).
        seed: seed of this layer's own Generator; by default a Sequential derives one from its
            seed, so training is reproducible either way.

    Raises:
        ValueError: for a rate outside [0, 1) or a seed that is not None or an integer >= 0.
    """

    def __init__(self, rate: float, seed: int | None = None, name=None, input_shape=None):
        super().__init__(seed=seed, name=name, input_shape=input_shape)
        self.rate = number(rate, "rate", "Dropout", "[0, 1)")

    def _forward(self, x, training):
        if not training or self.rate == 0.0:
            if training:
                self.cache = None
            return x
        keep = self.rng.random(x.shape, dtype=self.dtype) >= self.rate
        mask = keep * self.dtype.type(1.0 / (1.0 - self.rate))
        self.cache = mask
        return x * mask

    def _backward(self, grad_y, need_input_grad):
        if not need_input_grad:
            return None
        return grad_y if self.cache is None else grad_y * self.cache

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
