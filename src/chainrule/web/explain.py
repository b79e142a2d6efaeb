"""What the page shows next to a prediction: saliency, hidden units or templates, neighbours.

Pure NumPy, no web code: an :class:`Explainer` wraps a trained Sequential for one 28×28 digit
at a time, and :class:`Neighbours` searches a training set. Both are used by ``web/app.py``.

Saliency, derived. With z(x) the logits of the model *at inference* and c the predicted class,
the saliency map is ∂z_c/∂x (28×28). Sequential.backward with the one-hot upstream gradient
g = e_c computes gᵀ J = ∂z_c/∂x, where J is the Jacobian of the function that the last
``forward(x, training=True)`` computed. That is the inference function only when every layer
computes the same thing in both modes, which holds for Dense, Conv2D, pooling, Flatten and the
element-wise activations, but not for three layers:

- Dropout at inference is y = x (Jacobian I); in training it multiplies by a random mask.
  RandomShift likewise moves the training images and leaves the others alone. The explained
  copy of the model leaves both out, which gives exactly the Jacobian I.
- BatchNorm at inference is y = a·x + c per channel with a = γ/√(running_var + ε) and
  c = β − a·running_mean, so ∂y/∂x = a (diagonal). In training it normalises by the statistics
  of the batch itself: a different function (for a single Dense sample its variance is 0 and
  the layer refuses it), whose backward carries the extra −(Σg + x̂Σgx̂)/M terms, and which
  updates the running statistics. The explained copy freezes each BatchNorm
  (``BatchNorm.frozen``): its training forward is then the inference formula (running
  statistics, never updated) and its backward dL/dx = a·g.

A final Softmax layer is left out as well, so that the upstream gradient is taken with respect
to the logit z_c rather than the probability. The copy is made once (same weights, its own
caches), so explaining never touches the served model's caches, running statistics or
Dropout random state.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from .. import functional
from ..layers import activations
from ..layers.augment import RandomShift
from ..layers.dense import Dense
from ..layers.dropout import Dropout
from ..layers.normalization import BatchNorm
from ..layers.reshape import Flatten
from ..model import Sequential

SIDE = 28
PIXELS = SIDE * SIDE
TOP_UNITS = 8


def inference_copy(model: Sequential) -> Sequential:
    """A copy of ``model`` whose training forward computes the inference logits (see above).

    Same weights and dtype; the layers that are the identity at inference (Dropout,
    RandomShift) and a final Softmax left out; BatchNorm frozen.
    """
    kept = [layer.twin() for i, layer in enumerate(model.layers)
            if not isinstance(layer, Dropout | RandomShift)
            and not (isinstance(layer, activations.Softmax) and i == len(model.layers) - 1)]
    for layer in kept:
        if isinstance(layer, BatchNorm):
            layer.frozen = True
    copy = Sequential(kept, dtype=model.dtype, name=model.name)
    copy.build(model.input_shape)
    state = model.state_dict()
    copy.load_state_dict({name: state[name] for name in copy.state_dict()})
    return copy


def _image(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=np.float64).reshape(SIDE, SIDE)


class Explainer:
    """Predicts and explains one 28×28 digit with a trained Sequential.

    Args:
        model: a built Sequential taking one 28×28 image in any shape of 784 values
            ((28, 28), (784,) or (1, 28, 28)) and giving C scores (logits, or probabilities
            when it ends in Softmax).

    Raises:
        ValueError: if the model is not built or does not take 784 values per sample.
    """

    def __init__(self, model: Sequential):
        if not model.built:
            raise ValueError("the model is not built (it has no weights); train or load one")
        if math.prod(model.input_shape) != PIXELS:
            raise ValueError(
                f"the model expects samples of shape {tuple(model.input_shape)}; the page sends "
                f"28×28 digits ({PIXELS} values)"
            )
        self.model = model
        self.ends_in_softmax = isinstance(model.layers[-1], activations.Softmax)
        self.unit_kind, self._dense, self._unit_layer = self._find_units(model)
        self._copy = inference_copy(model)
        # One computation at a time: the copy's caches are per call, and BLAS already spreads
        # one product over the cores (concurrent ones would only oversubscribe them).
        self._lock = threading.Lock()

    @staticmethod
    def _find_units(model):
        """("templates" | "hidden" | None, the first Dense, the index of the layer to read)."""
        i = 0
        while i < len(model.layers) and isinstance(model.layers[i], Flatten):
            i += 1
        if i == len(model.layers) or not isinstance(model.layers[i], Dense):
            return None, None, None
        dense = model.layers[i]
        if dense.W.value.shape[0] != PIXELS:
            return None, None, None
        if not any(isinstance(layer, Dense) for layer in model.layers[i + 1:]):
            return "templates", dense, i
        after = i + 1
        if after < len(model.layers) and isinstance(model.layers[after], activations.ELEMENTWISE):
            return "hidden", dense, after
        return "hidden", dense, i

    def _batch(self, image: np.ndarray) -> np.ndarray:
        return np.asarray(image, dtype=self.model.dtype).reshape((1, *self.model.input_shape))

    def predict(self, image: np.ndarray) -> dict:
        """Class, probabilities and (templates / hidden units) for one (28, 28) image in [0, 1].

        The probabilities are ``softmax(model.predict(x))`` (or the model's own Softmax output),
        bit for bit what ``chainrule predict`` prints for the same input.

        Returns:
            {"class": int, "probabilities": (C,) float64, "logits": (C,) or None,
            "units_output": (M,) activations of the layer the unit view reads, or None}
        """
        x = self.model.prepare_input(self._batch(image), "predict")
        units_output = None
        with self._lock:
            for k, layer in enumerate(self.model.layers):
                x = layer.apply(x, False)
                if k == self._unit_layer:
                    units_output = x[0]
        scores = x
        probs = scores if self.ends_in_softmax else functional.softmax(scores)
        probs = probs[0].astype(np.float64)
        return {
            "class": int(np.argmax(probs)),
            "probabilities": probs,
            "logits": None if self.ends_in_softmax else scores[0].astype(np.float64),
            "units_output": units_output,
        }

    def saliency(self, image: np.ndarray, cls: int) -> np.ndarray:
        """∂z_cls/∂x as a (28, 28) float64 array, by the model's own backward (see module doc)."""
        x = self._batch(image)
        with self._lock:
            out = self._copy.forward(x, training=True)
            upstream = np.zeros_like(out)
            upstream[0, cls] = 1.0
            grad = self._copy.backward(upstream)
        return _image(grad)

    def units(self, units_output: np.ndarray | None, top: int = TOP_UNITS) -> dict | None:
        """The templates of a softmax regression, or the ``top`` most active first-layer units.

        Returns:
            None when the model has no first Dense on the 784 pixels; else
            {"kind": "templates" | "hidden", "layer": name, "units": [{"unit": j,
            "activation": value, "weights": (28, 28) column j of W}, …]} — for "templates"
            all C classes in order with their logit z_j, for "hidden" the ``top`` units of
            the largest activation, largest first.
        """
        if self.unit_kind is None or units_output is None:
            return None
        W = self._dense.W.value
        values = np.asarray(units_output, dtype=np.float64)
        if self.unit_kind == "templates":
            order = np.arange(W.shape[1])
        else:
            order = np.argsort(-values, kind="stable")[:top]
        return {
            "kind": self.unit_kind,
            "layer": self._dense.name,
            "units": [
                {"unit": int(j), "activation": float(values[j]), "weights": _image(W[:, j])}
                for j in order
            ],
        }


class Neighbours:
    """Nearest training digits by Euclidean distance on the 784 pixel values.

    ‖t − x‖² = ‖t‖² − 2 t·x + ‖x‖²: the squared norms ‖t‖² are computed once, and ‖x‖² is the
    same for every row, so ranking the N training images T (N × 784) for a query x takes one
    matrix-vector product T x. The k + 10 best by this float32 product are then re-ranked by
    their exact float64 distances, so that rounding cannot reorder near-ties.

    The product is bound by memory bandwidth (it reads all N × 784 × 4 bytes, 188 MB for
    MNIST). Queries that arrive while one is running are therefore answered together: the next
    thread to get the lock takes every waiting query and, from 4 of them on, computes
    [x₁ … x_B]ᵀ Tᵀ, one matrix product that reads T once for all of them (on 2 cores: 13 ms
    for 8 queries against 6 ms for one GEMV).

    Args:
        images: (N, 28, 28) or (N, 784), uint8 (0..255) or float in [0, 1].
        labels: (N,) integer classes.
        source: where they came from, for the page.
    """

    RERANK = 10

    def __init__(self, images, labels, source: str = ""):
        images = np.asarray(images)
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / np.float32(255.0)
        self.images = np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.float32)
        if self.images.shape[1] != PIXELS:
            raise ValueError(f"Neighbours expected 28×28 images, got shape {images.shape}")
        self.labels = np.asarray(labels).astype(np.int64)
        if len(self.labels) != len(self.images):
            raise ValueError(
                f"Neighbours got {len(self.images)} images but {len(self.labels)} labels"
            )
        self.sq_norms = np.einsum("ij,ij->i", self.images, self.images, dtype=np.float64)
        self.source = source
        self._product = threading.Lock()
        self._waiting_lock = threading.Lock()
        self._waiting: list[_Query] = []

    def __len__(self) -> int:
        return len(self.images)

    def _scores(self, x: np.ndarray) -> np.ndarray:
        """‖t‖² − 2 t·x for every training image t (N,), batched with concurrent queries."""
        query = _Query(x)
        with self._waiting_lock:
            self._waiting.append(query)
        with self._product:
            if query.scores is None:
                with self._waiting_lock:
                    batch, self._waiting = self._waiting, []
                if len(batch) < 4:  # below 4, separate GEMVs beat OpenBLAS's skinny GEMM
                    products = [self.images @ q.x for q in batch]
                else:
                    products = np.stack([q.x for q in batch]) @ self.images.T  # (B, N)
                for q, product in zip(batch, products, strict=True):
                    q.scores = self.sq_norms - 2.0 * product
        return query.scores

    def query(self, image: np.ndarray, k: int = 5) -> list[dict]:
        """The ``k`` nearest training images, nearest first (ties: lower index first).

        Returns:
            [{"index": i, "label": y_i, "distance": ‖t_i − x‖, "image": (28, 28)}, …]
        """
        x = np.asarray(image, dtype=np.float32).reshape(PIXELS)
        k = min(k, len(self.images))
        scores = self._scores(x)
        m = min(k + self.RERANK, len(self.images))
        candidates = np.argpartition(scores, m - 1)[:m]
        exact = np.linalg.norm(self.images[candidates].astype(np.float64) - x, axis=1)
        order = np.lexsort((candidates, exact))[:k]
        return [
            {
                "index": int(candidates[j]),
                "label": int(self.labels[candidates[j]]),
                "distance": float(exact[j]),
                "image": _image(self.images[candidates[j]]),
            }
            for j in order
        ]


class _Query:
    __slots__ = ("x", "scores")

    def __init__(self, x: np.ndarray):
        self.x = x
        self.scores: np.ndarray | None = None
