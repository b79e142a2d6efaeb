"""The exercises, registered in course order as these modules are imported."""

from . import basics, activations, losses, networks, images, embedding, adam  # noqa: F401, I001
