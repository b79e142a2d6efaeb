"""chainrule: neural networks in NumPy, every gradient derived by hand from the chain rule."""

from . import (
    callbacks,
    functional,
    initializers,
    layers,
    losses,
    metrics,
    optimizers,
    schedules,
)
from .callbacks import (
    Callback,
    EarlyStopping,
    GradientNormLogger,
    History,
    ModelCheckpoint,
)
from .explain import BackwardReport, explain_backward
from .gradcheck import GradcheckReport, gradcheck
from .interop import export_onnx, from_torch, import_onnx, to_torch
from .model import Sequential
from .parameter import Parameter
from .serialization import load_model
from .version import __version__

__all__ = [
    "__version__",
    "Sequential",
    "Parameter",
    "load_model",
    "export_onnx",
    "import_onnx",
    "to_torch",
    "from_torch",
    "gradcheck",
    "GradcheckReport",
    "explain_backward",
    "BackwardReport",
    "Callback",
    "History",
    "EarlyStopping",
    "GradientNormLogger",
    "ModelCheckpoint",
    "callbacks",
    "functional",
    "initializers",
    "layers",
    "losses",
    "metrics",
    "optimizers",
    "schedules",
]
