"""What ``chainrule studio`` shows of a model while it trains: plain NumPy, no web code.

Every view is computed from the model as it stands between two optimizer steps (the weights
after step k, each parameter's ``grad`` from step k), on fixed samples chosen when the run is
made, with Dropout off (``Layer.apply(x, training=False)``):

- ``scores``: loss and accuracy of logits (N, C) against labels.
- ``regions``: for 2-D points, the class and its probability at every point of a side × side
  grid over the data (the decision regions), sent as bytes for the page to paint.
- ``first_layer``: the first Dense or Conv2D layer's weights and their gradients as images,
  each scaled symmetrically around 0 (byte 128 is 0).
- ``health``: per weight matrix the gradient norm ‖∂L/∂W‖, the weight norm and the
  update/weight ratio ‖ΔW‖ / ‖W‖ of the last step (about 1e-3 is the usual healthy range;
  1e-1 means the learning rate is too high, 1e-5 that it is too low); per ReLU the fraction
  of dead units, those that output 0 for every sample of the training sample.
- ``backward_summary``: ``explain_backward`` on a small fixed batch, reduced to the shape and
  norm of every factor (dL/dz, dL/dW, …), layer by layer from the loss back.

Images travel as base64 of uint8 arrays: ``pack``.
"""

from __future__ import annotations

import base64
import math

import numpy as np

from .. import functional
from ..explain import explain_backward
from ..layers import activations
from ..layers.conv import Conv2D
from ..layers.dense import Dense
from ..metrics import confusion_matrix
from ..plot import most_confident_mistakes

REGION_SIDE = 64
MAX_TILES = 24
MISTAKES = 8


def pack(a: np.ndarray) -> str:
    """The bytes of a uint8 array as base64 text (row-major)."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).decode("ascii")


def layer_outputs(model, x: np.ndarray) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """The model's inference output on a prepared batch ``x`` and each ReLU layer's output.

    Returns:
        (logits (N, C), [(ReLU layer name, its output (N, …)), …]).
    """
    relus = []
    for layer in model.layers:
        x = layer.apply(x, training=False)
        if isinstance(layer, activations.ReLU):
            relus.append((layer.name, x))
    return x, relus


def scores(logits: np.ndarray, y: np.ndarray) -> dict:
    """Mean cross-entropy and accuracy of logits (N, C) for labels y (N,), with the
    probabilities (N, C) and predictions (N,)."""
    logp = functional.log_softmax(logits)
    n = len(y)
    loss = -float(logp[np.arange(n), y].sum()) / float(n)
    pred = np.argmax(logits, axis=1)
    return {"loss": loss, "accuracy": float(np.count_nonzero(pred == y)) / float(n),
            "probabilities": np.exp(logp), "pred": pred}


def region_grid(x: np.ndarray, side: int = REGION_SIDE, margin: float = 0.1
                ) -> tuple[np.ndarray, list[float]]:
    """A side × side grid of points over the data's extent plus ``margin`` of it on each side.

    Returns:
        (points (side², 2) float32, row-major with y decreasing down the rows, as an image;
        extent [x_min, x_max, y_min, y_max]).
    """
    low, high = x.min(axis=0).astype(np.float64), x.max(axis=0).astype(np.float64)
    pad = np.maximum((high - low) * margin, 1e-3)
    low, high = low - pad, high + pad
    # Cell centres, so the painted image lines up with the extent.
    u = low[0] + (np.arange(side) + 0.5) * (high[0] - low[0]) / side
    v = high[1] - (np.arange(side) + 0.5) * (high[1] - low[1]) / side
    gx, gy = np.meshgrid(u, v)
    points = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    return points, [float(low[0]), float(high[0]), float(low[1]), float(high[1])]


def regions(logits: np.ndarray, side: int = REGION_SIDE) -> dict:
    """The grid's predicted class and its probability (as 0 … 255) for the page to paint."""
    probs = functional.softmax(logits)
    cls = np.argmax(probs, axis=1)
    confidence = np.round(probs[np.arange(len(cls)), cls] * 255.0)
    return {"side": side, "classes": pack(cls), "confidence": pack(confidence)}


def _tiles(a: np.ndarray) -> dict:
    """(n, h, w) values as bytes scaled symmetrically: 128 + 127·a / max|a|."""
    top = float(np.abs(a).max()) if a.size else 0.0
    scaled = np.full(a.shape, 128.0) if top == 0.0 or not math.isfinite(top) \
        else 128.0 + 127.0 * a / top
    n, h, w = a.shape
    return {"n": n, "h": h, "w": w, "max_abs": top, "data": pack(np.round(scaled))}


def first_weight_layer(model):
    """The first Dense or Conv2D layer of the model (None if it has none)."""
    for layer in model.layers:
        if isinstance(layer, Dense | Conv2D):
            return layer
    return None


def first_layer(model, image_shape: tuple[int, int], tiles: int = MAX_TILES) -> dict | None:
    """The first weight layer's first ``tiles`` units (a Dense's columns as images of
    ``image_shape``) or filters (a Conv2D's first input channel), weights and gradients.

    Returns:
        {"layer", "kind", "weights": tiles, "gradients": tiles} (gradients all 0 before the
        first step), or None when there is no such layer or its inputs are not the image.
    """
    layer = first_weight_layer(model)
    if layer is None:
        return None
    W = layer.W.value
    G = layer.W.grad if layer.W.grad is not None else np.zeros_like(W)
    if isinstance(layer, Dense):
        if W.shape[0] != math.prod(image_shape):
            return None
        k = min(tiles, W.shape[1])
        weights = W[:, :k].T.reshape(k, *image_shape)
        grads = G[:, :k].T.reshape(k, *image_shape)
        kind = "unit"
    else:
        k = min(tiles, W.shape[0])
        weights, grads = W[:k, 0], G[:k, 0]
        kind = "filter"
    return {"layer": layer.name, "kind": kind, "weights": _tiles(weights),
            "gradients": _tiles(grads)}


def confusion(y: np.ndarray, pred: np.ndarray, classes: int) -> list[list[int]]:
    """C × C counts: row = true class, column = predicted class."""
    return confusion_matrix(y, pred, classes).tolist()


def mistakes(images: np.ndarray, y: np.ndarray, probs: np.ndarray, n: int = MISTAKES) -> dict:
    """The ``n`` most confidently wrong samples: their images (k, h, w) as bytes of 0 … 255
    (the images are in [0, 1]), true labels, predictions and the predicted probability."""
    idx = most_confident_mistakes(y, probs, n)
    pred = np.argmax(probs[idx], axis=1) if len(idx) else np.zeros(0, np.int64)
    h, w = images.shape[-2:]
    pixels = np.clip(np.round(images[idx].reshape(len(idx), h, w) * 255.0), 0, 255)
    return {"n": len(idx), "h": h, "w": w, "data": pack(pixels),
            "labels": y[idx].tolist(), "pred": pred.tolist(),
            "probability": [round(float(probs[i, p]), 4) for i, p in zip(idx, pred, strict=True)]}


def weight_params(model) -> list[tuple[str, object]]:
    """(name, Parameter) of every weight matrix or kernel: the W of Dense and Conv2D layers."""
    return [(f"{layer.name}.W", layer.W) for layer in model.layers
            if isinstance(layer, Dense | Conv2D)]


def health(model, before: dict[str, np.ndarray] | None,
           relus: list[tuple[str, np.ndarray]]) -> dict:
    """Per weight matrix: ‖∂L/∂W‖ of the last step, ‖W‖ and ‖ΔW‖ / ‖W‖ (None without the
    weights before the step); per ReLU: the fraction of units dead on the sample.

    Args:
        model: the model right after a step.
        before: parameter name → a copy of its value before that step.
        relus: each ReLU's output on the training sample (``layer_outputs``).
    """
    layers = []
    for name, p in weight_params(model):
        w = p.value.reshape(-1)
        weight_norm = math.sqrt(float(np.dot(w, w)))
        grad_norm = None
        if p.grad is not None:
            g = p.grad.reshape(-1)
            grad_norm = math.sqrt(float(np.dot(g, g)))
        ratio = None
        if before is not None and name in before and weight_norm > 0:
            d = w - before[name].reshape(-1)
            ratio = math.sqrt(float(np.dot(d, d))) / weight_norm
        layers.append({"name": name, "shape": list(p.value.shape), "grad_norm": grad_norm,
                       "weight_norm": weight_norm, "update_ratio": ratio})
    dead = []
    for name, a in relus:
        alive = (a.reshape(len(a), -1) > 0).any(axis=0)
        dead.append({"name": name, "units": int(alive.size),
                     "dead_fraction": 1.0 - float(np.count_nonzero(alive)) / float(alive.size)})
    return {"layers": layers, "relu": dead}


def backward_summary(model, x: np.ndarray, y: np.ndarray) -> dict:
    """``explain_backward(model, x, y)`` as shapes and norms: for the loss and each layer from
    the last to the first, every factor's name, how it is computed and its norm (on a
    float64 copy: the model is not touched)."""
    report = explain_backward(model, x, y)
    steps = [{"title": step.title,
              "factors": [{"name": f.name, "formula": f.formula, "shape": list(f.value.shape),
                           "norm": f.norm} for f in step.factors]}
             for step in report.steps]
    return {"samples": report.samples, "loss": report.loss, "steps": steps}
