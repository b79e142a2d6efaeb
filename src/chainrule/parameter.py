"""Parameter: a trainable array and the gradient of the loss with respect to it;
ParameterBuffer: many Parameters' values and gradients packed into two flat arrays."""

from __future__ import annotations

import numpy as np


class Parameter:
    """A trainable array ``value`` with its gradient ``grad`` (same shape and dtype).

    ``grad`` is *assigned* by the owning layer's backward pass (never accumulated across
    calls), so there is no ``zero_grad`` to forget. It is ``None`` until the first backward.

    Args:
        value: the initial array; kept as given (no copy, no cast).
        name: short name inside its layer, e.g. ``"W"`` or ``"b"``.

    Attributes:
        buffer: the :class:`ParameterBuffer` whose segments ``value`` and ``grad`` are, once a
            model has packed its parameters (None before).
    """

    __slots__ = ("value", "grad", "name", "buffer")

    def __init__(self, value: np.ndarray, name: str = "param"):
        self.value = value
        self.grad: np.ndarray | None = None
        self.name = name
        self.buffer: ParameterBuffer | None = None

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


class ParameterBuffer:
    """The values and gradients of Parameters of one dtype, end to end in two flat arrays.

    Packing copies each parameter's value into its segment of ``value`` and re-points
    ``p.value`` to that segment, a view of the parameter's shape: the arrays users see as
    ``layer.W.value`` are the buffer. ``gather`` does the same for the gradients, so that an
    optimizer updates every parameter with a few operations on whole (P,) arrays instead of a
    dozen per parameter, and ``views`` cuts any (P,) array (an optimizer's moments) the same way.

        value = [W₁.ravel(), b₁, W₂.ravel(), b₂, …]      (P,) with P = Σ sizes

    Args:
        parameters: Parameters of one dtype, each at most once, in a stable order.

    Raises:
        ValueError: for no parameters, mixed dtypes or a parameter given twice.
    """

    def __init__(self, parameters):
        parameters = list(parameters)
        if not parameters:
            raise ValueError("ParameterBuffer needs at least one Parameter")
        dtypes = {p.dtype for p in parameters}
        if len(dtypes) != 1:
            raise ValueError(f"ParameterBuffer: parameters of one dtype expected, got "
                             f"{sorted(str(d) for d in dtypes)}")
        if len({id(p) for p in parameters}) != len(parameters):
            raise ValueError("ParameterBuffer: a parameter is listed twice")
        self.parameters = parameters
        self.dtype = parameters[0].dtype
        self.shapes = [p.shape for p in parameters]
        stops = np.cumsum([p.size for p in parameters]).tolist()
        self.bounds = list(zip([0] + stops[:-1], stops, strict=True))
        self.size = stops[-1]
        self.value = np.empty(self.size, dtype=self.dtype)
        self.grad = np.zeros(self.size, dtype=self.dtype)
        self.values = self.views(self.value)
        self.grads = self.views(self.grad)
        for p, view in zip(parameters, self.values, strict=True):
            view[...] = p.value
            p.value = view
            p.buffer = self

    def views(self, flat: np.ndarray) -> list[np.ndarray]:
        """Each parameter's segment of the (P,) array ``flat``, in the parameter's shape."""
        return [flat[start:stop].reshape(shape)
                for (start, stop), shape in zip(self.bounds, self.shapes, strict=True)]

    def gather(self) -> bool:
        """Make every ``p.grad`` its segment of ``grad``, copying a gradient that a backward
        assigned as a new array (Dense writes into the segment directly from its second step).

        Returns:
            True when ``value`` and ``grad`` now hold every parameter's value and gradient;
            False when a parameter has no gradient (yet), one of another shape or dtype, or a value
            re-pointed to another array since packing: the buffer does not hold them, and the
            parameters are to be updated one by one.
        """
        for p, value, grad in zip(self.parameters, self.values, self.grads, strict=True):
            if p.value is not value:
                return False
            if p.grad is not grad:
                if p.grad is None or p.grad.shape != grad.shape or p.grad.dtype != grad.dtype:
                    return False
                np.copyto(grad, p.grad)
                p.grad = grad
        return True

    def holds(self, parameters) -> bool:
        """Whether ``parameters`` are exactly this buffer's, in its order."""
        own = self.parameters
        return len(parameters) == len(own) and all(
            p is q for p, q in zip(parameters, own, strict=True))

    def __repr__(self) -> str:
        return (f"ParameterBuffer({len(self.parameters)} parameters, {self.size:,} values, "
                f"{self.dtype})")
