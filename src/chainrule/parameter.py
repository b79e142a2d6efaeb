"""Parameter: a trainable array and the gradient of the loss with respect to it."""

from __future__ import annotations

import numpy as np


class Parameter:
    """A trainable array ``value`` with its gradient ``grad`` (same shape and dtype).

    ``grad`` is *assigned* by the owning layer's backward pass (never accumulated across
    calls), so there is no ``zero_grad`` to forget. It is ``None`` until the first backward.

    Args:
        value: the initial array; kept as given (no copy, no cast).
        name: short name inside its layer, e.g. ``"W"`` or ``"b"``.
    """

    __slots__ = ("value", "grad", "name")

    def __init__(self, value: np.ndarray, name: str = "param"):
        self.value = value
        self.grad: np.ndarray | None = None
        self.name = name

    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.shape

    @property
    def dtype(self) -> np.dtype:
        return self.value.dtype

    @property
    def size(self) -> int:
        return int(self.value.size)

    def __repr__(self) -> str:
        return f"Parameter(name={self.name!r}, shape={self.value.shape}, dtype={self.value.dtype})"

