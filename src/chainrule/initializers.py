"""Weight initializers: ``init(shape, rng, dtype) -> array``.

fan_in and fan_out follow the usual convention: for a Dense kernel of shape (D, M) they are
D and M; for a convolution kernel (F, C, kh, kw) they are C·kh·kw and F·kh·kw.
"""

from __future__ import annotations

import math

import numpy as np

from .registry import Registry


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) > 2:
        receptive = math.prod(shape[2:])
        return shape[1] * receptive, shape[0] * receptive
    return shape[0], shape[0]


def _uniform(shape, rng, dtype, limit: float) -> np.ndarray:
    """Uniform on [−limit, limit), drawn directly in ``dtype``."""
    u = rng.random(shape, dtype=dtype)
    u *= 2.0 * limit
    u -= limit
    return u


def _normal(shape, rng, dtype, std: float) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=dtype)
    x *= std
    return x


def he_normal(shape, rng, dtype=np.float32) -> np.ndarray:
    """N(0, 2 / fan_in): keeps the variance of ReLU activations constant with depth (He 2015)."""
    return _normal(shape, rng, dtype, math.sqrt(2.0 / _fans(shape)[0]))


def he_uniform(shape, rng, dtype=np.float32) -> np.ndarray:
    """U(−√(6 / fan_in), √(6 / fan_in)): the uniform law with He's variance 2 / fan_in."""
    return _uniform(shape, rng, dtype, math.sqrt(6.0 / _fans(shape)[0]))


def glorot_uniform(shape, rng, dtype=np.float32) -> np.ndarray:
    """U(−√(6 / (fan_in + fan_out)), +…): Glorot & Bengio 2010, Keras's default."""
    fan_in, fan_out = _fans(shape)
    return _uniform(shape, rng, dtype, math.sqrt(6.0 / (fan_in + fan_out)))


def glorot_normal(shape, rng, dtype=np.float32) -> np.ndarray:
    """N(0, 2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(shape)
    return _normal(shape, rng, dtype, math.sqrt(2.0 / (fan_in + fan_out)))


def normal(shape, rng, dtype=np.float32, std: float = 0.01) -> np.ndarray:
    """N(0, std²) with a small fixed std (0.01), the classic course-notes initialisation."""
    return _normal(shape, rng, dtype, std)


def zeros(shape, rng=None, dtype=np.float32) -> np.ndarray:
    """All zeros (biases; a softmax regression may start here too)."""
    return np.zeros(shape, dtype=dtype)


INITIALIZERS = Registry("initializer", entries=[he_normal, he_uniform, glorot_uniform,
                                                glorot_normal, normal, zeros])


def get(name: str, what: str | None = None):
    """Return the initializer called ``name``.

    Args:
        what: the argument that named it, for the message, e.g. ``"Dense: kernel_initializer"``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    return INITIALIZERS.get(name, what)
