"""What the page shows next to a prediction: saliency, hidden units or templates.

Pure NumPy, no web code: an :class:`Explainer` wraps a trained Sequential for one 28×28 digit
at a time, for ``web/app.py``; the nearest training digits are in ``web/neighbours.py``.

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

The backward pass is the layers' own, except that a Dense layer's dL/dx = g·Wᵀ is taken
directly: its ``backward`` also assigns the weight gradient, which a saliency map never reads.
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
from ..layers.conv import Conv2D
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
        self.multiply_adds = multiply_adds(model)
        # One computation at a time: the copy's caches are per call.
        self._lock = threading.Lock()

    @staticmethod
    def _find_units(model):
        """("templates" | "hidden" | None, the first Dense, the index of the layer to read)."""
        i = 0
        while i < len(model.layers) and isinstance(model.layers[i], Flatten | RandomShift):
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
            grad = np.zeros_like(out)
            grad[0, cls] = 1.0
            for layer in reversed(self._copy.layers):
                # Dense's dL/dx is g·Wᵀ; its backward would also assign ∂L/∂W = xᵀg (784 × 256
                # for the first layer, seven times the cost of the rest), never read here.
                grad = grad @ layer.W.value.T if type(layer) is Dense else layer.backward(grad)
        return _image(grad)

    def units(self, units_output: np.ndarray | None, top: int = TOP_UNITS) -> dict | None:
        """The templates of a softmax regression, or the ``top`` most active first-layer units.

        Returns:
            None when the model has no first Dense on the 784 pixels; else
            {"kind": "templates" | "hidden", "layer": name, "units": [{"unit": j,
            "activation": value}, …]} — for "templates" all C classes in order with their
            logit z_j, for "hidden" the ``top`` units of the largest activation, largest
            first. Their images (column j of W) are in :meth:`unit_weights`.
        """
        if self.unit_kind is None or units_output is None:
            return None
        values = np.asarray(units_output, dtype=np.float64)
        if self.unit_kind == "templates":
            order = np.arange(len(values))
        else:
            order = np.argsort(-values, kind="stable")[:top]
        return {
            "kind": self.unit_kind,
            "layer": self._dense.name,
            "units": [{"unit": int(j), "activation": float(values[j])} for j in order],
        }

    def unit_weights(self) -> dict | None:
        """Every unit's 784 input weights as an image: column j of the first Dense's W.

        Returns:
            None when the model has no first Dense on the 784 pixels; else
            {"kind": …, "layer": name, "units": [{"unit": j, "weights": (28, 28)}, …]}
            for j = 0 … M − 1.
        """
        if self.unit_kind is None:
            return None
        W = self._dense.W.value
        return {
            "kind": self.unit_kind,
            "layer": self._dense.name,
            "units": [{"unit": j, "weights": _image(W[:, j])} for j in range(W.shape[1])],
        }


def multiply_adds(model: Sequential) -> int | None:
    """Multiply-adds of one forward pass for one sample, or None when a layer's cost is unknown.

    Dense: D·M per position; Conv2D: C_out·C_in·k_h·k_w per output position; layers without
    parameters and BatchNorm: one per output value (element-wise: activations, pooling,
    reshapes, Dropout). Any other layer with parameters (recurrent, attention, containers)
    makes it None.
    """
    total = 0
    for layer in model.layers:
        out = math.prod(layer.output_shape)
        if isinstance(layer, Dense):
            total += layer.W.value.size * (out // layer.W.value.shape[1])
        elif isinstance(layer, Conv2D):
            total += layer.W.value.size * (out // layer.W.value.shape[0])
        elif isinstance(layer, BatchNorm) or not layer.parameters():
            total += out
        else:
            return None
    return total
