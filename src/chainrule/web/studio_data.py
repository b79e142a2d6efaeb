"""The data and model of a ``chainrule studio`` run, made from its settings.

2-D points come from the toy generators of ``chainrule.data`` (or a parsed CSV) and are split
3 : 1 into training and validation points; image runs draw a seeded subset of an image set's
training split and validate on a quarter as many of its test images. The model is an MLP of
``hidden`` for points (softmax regression without hidden layers) and a ``chainrule.models``
preset for images, always compiled with the fused sparse cross-entropy, the named optimizer at
a constant learning rate (it is changed by hand during the run) and the weight decay.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import losses, models
from ..data import make_blobs, make_circles, make_moons, make_spirals, make_xor
from .app import APIError
from .studio_schemas import IMAGE_DEFAULTS, POINT_DEFAULTS, RunSettings

TOY = {"blobs": lambda n, c, noise, seed: make_blobs(n, centers=c, std=noise, seed=seed),
       "xor": lambda n, c, noise, seed: make_xor(n, noise=noise, seed=seed),
       "circles": lambda n, c, noise, seed: make_circles(n, classes=c, noise=noise, seed=seed),
       "moons": lambda n, c, noise, seed: make_moons(n, classes=c, noise=noise, seed=seed),
       "spirals": lambda n, c, noise, seed: make_spirals(n, classes=c, noise=noise, seed=seed)}
TOY_DEFAULTS = {"blobs": (3, 0.8), "xor": (2, 0.15), "circles": (2, 0.08),
                "moons": (2, 0.12), "spirals": (3, 0.2)}


@dataclass
class Data:
    """What a run trains on: x (N, 2) points or (N, 28, 28) images in [0, 1], labels y (N,),
    the held-out x_val, y_val, the classes C; files (role → path) for image sets."""

    kind: str
    name: str
    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    classes: int
    files: dict = field(default_factory=dict)
    csv: str | None = None


def point_data(settings: RunSettings, points=None) -> tuple[Data, dict]:
    """A toy set (or the parsed CSV ``points``) split 3 : 1 into training and validation
    points, seeded by the run's seed; and the settings it used."""
    used = {}
    if points is None:
        name = settings.dataset or "spirals"
        classes, noise = TOY_DEFAULTS[name]
        classes = settings.classes or classes
        noise = noise if settings.noise is None else settings.noise
        samples = settings.samples or POINT_DEFAULTS["samples"]
        if samples < 8 * classes:
            raise APIError(422, f"samples: {samples} points are too few for {classes} classes "
                          f"(at least 8 per class, {8 * classes})")
        x, y = TOY[name](samples, classes, noise, settings.seed)
        used = {"dataset": name, "classes": classes, "noise": noise, "samples": samples}
    else:
        name, (x, y) = "csv", points
        classes = int(y.max()) + 1
        if len(y) < 4:
            raise APIError(422, f"the CSV holds {len(y)} rows; at least 4 are needed (a quarter "
                          "is held out for validation)")
        used = {"dataset": None, "classes": classes, "samples": len(y)}
    order = np.random.default_rng([settings.seed, 1]).permutation(len(y))
    n_val = max(len(y) // 4, 1)
    val, train = order[:n_val], order[n_val:]
    return Data("points", name, x[train], y[train], x[val], y[val], classes), used


def image_data(settings: RunSettings, loaded) -> tuple[Data, dict]:
    """``samples`` training images drawn (seeded) from an image set's training split, and a
    quarter as many of its test images for validation. ``loaded`` is ((x, y), (x_test,
    y_test), files) as ``Studio.images`` gives it."""
    (x, y), (x_test, y_test), files = loaded
    samples = min(settings.samples or IMAGE_DEFAULTS["samples"], len(y))
    pick = np.sort(np.random.default_rng([settings.seed, 2]).permutation(len(y))[:samples])
    n_val = min(max(samples // 4, 100), len(y_test))
    data = Data("images", settings.dataset, x[pick], y[pick], x_test[:n_val], y_test[:n_val],
                10, files=files)
    return data, {"dataset": settings.dataset, "samples": samples}


def build_model(settings: RunSettings, data: Data, used: dict):
    """The run's compiled model and its complete settings (defaults filled in)."""
    defaults = POINT_DEFAULTS if data.kind == "points" else IMAGE_DEFAULTS
    hidden = defaults["hidden"] if settings.hidden is None else list(settings.hidden)
    activation = settings.activation or defaults["activation"]
    preset = "mlp" if data.kind == "points" else (settings.model or "mlp")
    lr = settings.lr
    if lr is None:
        lr = defaults["lr"] if data.kind == "points" else models.default_lr(preset,
                                                                           settings.optimizer)
    shape = data.x.shape[1:]
    common = dict(num_classes=data.classes, input_shape=shape, seed=settings.seed)
    if preset == "mlp" and hidden:
        model = models.mlp(hidden=hidden, activation=activation, dropout=settings.dropout,
                           **common)
    elif preset == "cnn":
        model = models.cnn(dropout=settings.dropout or None, **common)
    else:
        model = models.softmax_regression(**common)
    optimizer = models.make_optimizer(settings.optimizer, lr, schedule="constant")
    optimizer.weight_decay = settings.weight_decay
    model.compile(optimizer=optimizer,
                  loss=losses.SparseCategoricalCrossEntropy(from_logits=True),
                  metrics=["accuracy"])
    used = {**used, "model": preset, "hidden": hidden if preset == "mlp" else None,
            "activation": activation if preset == "mlp" else None,
            "dropout": settings.dropout, "optimizer": settings.optimizer, "lr": lr,
            "batch_size": settings.batch_size or defaults["batch_size"],
            "weight_decay": settings.weight_decay, "seed": settings.seed,
            "epochs": settings.epochs or defaults["epochs"]}
    return model, used
