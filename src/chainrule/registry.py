"""Registry: names → classes (or functions) for one kind of object.

Configs and arguments name layers, activations, initializers, losses, optimizers and
schedules; one Registry per kind turns the name back into the object, with one way to fail
("unknown … ; expected one of …"). Only chainrule's own classes are registered automatically.
A class defined elsewhere (a notebook's ``class Tanh(layers.Tanh)``) is never looked up by
accident: it is used only where the caller passes it explicitly (``custom_objects=``) or
registers it under a name no other class holds.
"""

from __future__ import annotations


def qualified_name(cls: type) -> str:
    """``module.QualName`` of a class, e.g. ``chainrule.layers.activations.Tanh``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def is_builtin(cls: type) -> bool:
    """True for classes defined inside the chainrule package."""
    return cls.__module__ == "chainrule" or cls.__module__.startswith("chainrule.")


class Registry:
    """A name → class table that refuses to give one name to two classes.

    Args:
        kind: what the names name ("layer class", "loss", …), for messages.
        expected: the words before the list of known names in an "unknown" message.
        entries: registered at once: a dict name → class, or classes (under their names).
    """

    def __init__(self, kind: str, expected: str = "expected one of", entries=()):
        self.kind = kind
        self.expected = expected
        self._classes: dict[str, type] = {}
        pairs = entries.items() if isinstance(entries, dict) else ((None, c) for c in entries)
        for name, cls in pairs:
            self.register(cls, name)

    def register(self, cls: type, name: str | None = None) -> type:
        """Register ``cls`` under ``name`` (default: its class name); returns ``cls``.

        Registering the same class again is a no-op, so a module can be reloaded.

        Raises:
            ValueError: if another class already holds the name (both are named).
        """
        name = cls.__name__ if name is None else name
        other = self._classes.get(name)
        if other is not None and other is not cls and qualified_name(other) != qualified_name(cls):
            raise ValueError(
                f"{self.kind} {name!r} is already registered for {qualified_name(other)}; "
                f"cannot register {qualified_name(cls)} under it too. Rename the class, or pass "
                "it explicitly where it is needed (custom_objects=)"
            )
        self._classes[name] = cls
        return cls

    def get(self, name: str, what: str | None = None, custom_objects: dict | None = None):
        """The class registered as ``name``; ``custom_objects`` (name → class) are tried first.

        Args:
            what: the argument that named it, to start the message ("Dense: activation").

        Raises:
            ValueError: for an unknown name, listing the known ones.
        """
        if custom_objects and name in custom_objects:
            return custom_objects[name]
        try:
            return self._classes[name]
        except (KeyError, TypeError):
            where = f"{what}: " if what else ""
            raise ValueError(
                f"{where}unknown {self.kind} {name!r}; {self.expected} {self.names()}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._classes)

    def classes(self) -> list:
        """The registered classes (each once, though it may have several names)."""
        return list(dict.fromkeys(self._classes.values()))

    def __contains__(self, name) -> bool:
        return name in self._classes
