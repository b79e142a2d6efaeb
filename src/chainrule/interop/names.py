"""Layer names for models converted from other frameworks."""

from __future__ import annotations

import re

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def name_layers(layers: list, hints: list[str]) -> list:
    """Give every layer a unique name: its hint (an ONNX node's or a torch module's name) where
    that is an identifier no other layer hints at, else ``<type>_<k>`` as a Sequential numbers
    layers. The layers are returned, named and no longer ``auto_named``."""
    counts: dict[str, int] = {}
    for hint in hints:
        counts[hint] = counts.get(hint, 0) + 1
    chosen = {hint for hint in hints if hint and _IDENTIFIER.fullmatch(hint) and counts[hint] == 1}
    taken = set(chosen)
    for layer, hint in zip(layers, hints, strict=True):
        if hint in chosen:
            name = hint
        else:
            base, k = type(layer).__name__.lower(), 1
            while f"{base}_{k}" in taken:
                k += 1
            name = f"{base}_{k}"
            taken.add(name)
        layer.name, layer.auto_named = name, False
    return layers
