"""chainrule: neural networks in NumPy, every gradient derived by hand from the chain rule."""

__version__ = "0.1.0"

from . import (  # noqa: E402
    callbacks,
    functional,
    initializers,
    layers,
    losses,
    metrics,
    optimizers,
    schedules,
)
from .callbacks import (  # noqa: E402
    Callback,
    EarlyStopping,
    GradientNormLogger,
    History,
    ModelCheckpoint,
)
from .explain import BackwardReport, explain_backward  # noqa: E402
from .gradcheck import GradcheckReport, gradcheck  # noqa: E402
from .model import Sequential  # noqa: E402
from .parameter import Parameter  # noqa: E402
from .serialization import load_model  # noqa: E402

__all__ = [
    "__version__",
    "Sequential",
    "Parameter",
    "load_model",
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
