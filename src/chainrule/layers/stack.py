"""Building a stack of layers: what a Sequential and a Residual's block share."""

from __future__ import annotations

from . import activations
from .base import Layer


def append_layer(stack: list[Layer], layer: Layer, owner: str, container: str) -> None:
    """Append ``layer`` to a stack of layers (a Sequential's, a Residual's block), and its
    activation after it for ``Dense(…, activation=…)``: that argument is sugar, the activation
    becomes a layer of its own, so that every layer has one derivative.

    An unnamed layer gets the first free ``<type>_k`` name in the stack (``dense_1``,
    ``dense_2``); a named one must be unique there.

    Raises:
        TypeError: if ``layer`` is not a Layer.
        ValueError: if the layer is already in the stack or its name is taken; ``owner``
            ("Sequential") and ``container`` ("the model") word the messages.
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"{owner} expects Layer instances, got {type(layer).__name__}: {layer!r}")
    if any(layer is other for other in stack):
        raise ValueError(f"layer {layer.name!r} is already in {container}")
    taken = {other.name for other in stack}
    if layer.auto_named:
        base = layer.name.rsplit("_", 1)[0] if layer.name[-1].isdigit() else layer.name
        k = 1
        while f"{base}_{k}" in taken:
            k += 1
        layer.name = f"{base}_{k}"
    elif layer.name in taken:
        raise ValueError(f"a layer named {layer.name!r} is already in {container}")
    stack.append(layer)
    activation = getattr(layer, "activation", None)
    if activation is not None:
        layer.activation = None
        append_layer(stack, activations.get(activation)(), owner, container)
