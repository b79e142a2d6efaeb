"""scikit-learn estimators: ``NeuralNetClassifier`` and ``NeuralNetRegressor`` train a chainrule
MLP, so that Pipelines, ``cross_val_score`` and ``GridSearchCV`` (joblib's process and Dask
backends included) use it like any estimator.

    from chainrule.sklearn import NeuralNetClassifier
    clf = make_pipeline(StandardScaler(), NeuralNetClassifier(hidden=(64,), epochs=20))
    GridSearchCV(clf, {"neuralnetclassifier__lr": [1e-3, 1e-2]}, n_jobs=2).fit(X, y)

The network is Flatten-free: Dense(h) → activation (→ Dropout) for each hidden size, then
Dense(outputs): logits trained with the fused softmax cross-entropy (classifier) or the outputs
with the mean squared error (regressor), in float32, by ``Sequential.fit``. Hidden layers start
He-normal for the ReLU family, Glorot-uniform otherwise, as ``chainrule.models.mlp``.

Both follow scikit-learn's conventions: parameters are stored as given and checked in ``fit``;
what fit learns ends in an underscore (``model_``, the chainrule Sequential; ``classes_``;
``n_features_in_``; ``loss_curve_``); the same integer ``random_state`` gives the same weights
and predictions; ``partial_fit`` trains one epoch more on the batch it is given, keeping the
optimizer's state (the classifier needs ``classes=`` on the first call).
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from . import layers, losses, models, optimizers
from .model import Sequential

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6
    def validate_data(estimator, X="no_validation", y="no_validation", **kwargs):
        return estimator._validate_data(X, y, **kwargs)

__all__ = ["NeuralNetClassifier", "NeuralNetRegressor"]

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu")
#: The model's dtype is the training data's: float32 stays float32, anything else is float64,
#: as in scikit-learn's own MLP.
FLOATS = (np.float64, np.float32)


class _NeuralNet(BaseEstimator):
    """What the classifier and the regressor share: parameters, the network, the training."""

    def __init__(self, hidden=(256, 256), activation="relu", epochs=20, batch_size=128,
                 lr=1e-3, optimizer="adam", dropout=0.0, random_state=None):
        self.hidden = hidden
        self.activation = activation
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.dropout = dropout
        self.random_state = random_state

    # ------------------------------------------------------------------ checks
    def _hidden(self) -> tuple[int, ...]:
        hidden = (self.hidden,) if isinstance(self.hidden, numbers.Integral) else self.hidden
        try:
            sizes = tuple(hidden)
        except TypeError:
            sizes = None
        if sizes is None or not all(isinstance(h, numbers.Integral) and not isinstance(h, bool)
                                    and h > 0 for h in sizes):
            raise ValueError(f"hidden must be a tuple of positive layer sizes (() for none), got "
                             f"{self.hidden!r}")
        return tuple(int(h) for h in sizes)

    def _check_params(self) -> None:
        name = type(self).__name__
        checks = [
            (self.activation in ACTIVATIONS, f"activation must be one of {ACTIVATIONS}"),
            (_positive_int(self.epochs), "epochs must be a positive integer"),
            (_positive_int(self.batch_size), "batch_size must be a positive integer"),
            (isinstance(self.lr, numbers.Real) and np.isfinite(self.lr) and self.lr > 0,
             "lr must be a finite number > 0"),
            (self.optimizer in models.OPTIMIZERS,
             f"optimizer must be one of {models.OPTIMIZERS}"),
            (isinstance(self.dropout, numbers.Real) and 0 <= self.dropout < 1,
             "dropout must be a number in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                value = message.split(" must")[0]
                raise ValueError(f"{name}: {message}, got {getattr(self, value)!r}")
        self._hidden()

    # ------------------------------------------------------------------ the network
    def _new_model(self, n_features: int, n_outputs: int, seed: int, dtype) -> Sequential:
        init = "he_normal" if self.activation in ("relu", "leaky_relu", "gelu") else \
            "glorot_uniform"
        stack: list[layers.Layer] = []
        for units in self._hidden():
            stack += [layers.Dense(units, kernel_initializer=init),
                      layers.activations.get(self.activation)()]
            if self.dropout:
                stack.append(layers.Dropout(float(self.dropout)))
        stack.append(layers.Dense(n_outputs))
        model = Sequential(stack, dtype=dtype, seed=seed, name=type(self).__name__)
        model.build((n_features,))
        model.compile(optimizer=models.make_optimizer(self.optimizer, float(self.lr)),
                      loss=self._loss())
        return model

    def _loss(self):
        raise NotImplementedError

    def _train(self, X, y, epochs: int) -> None:
        X = X.astype(self.model_.dtype, copy=False)
        seed = self._fit_seed
        history = self.model_.fit(X, y, epochs=epochs, batch_size=min(self.batch_size, len(X)),
                                  seed=seed, verbose=0)
        self.loss_curve_ = list(getattr(self, "loss_curve_", [])) + history.history["loss"]
        self._fit_seed = (seed + 1) % 2**31

    def _start(self, X, n_outputs: int) -> None:
        self._check_params()
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        self.model_ = self._new_model(X.shape[1], n_outputs, seed, X.dtype)
        self._fit_seed = seed
        self.loss_curve_ = []

    def __getstate__(self):
        """The estimator's state with the network as its config, state_dict and optimizer
        state (arrays and numbers: the loss's cached closure and the layers' caches stay out)."""
        state = dict(self.__dict__)
        model = state.pop("model_", None)
        if model is not None:
            opt = model.optimizer
            state["_network"] = {"config": model.get_config(), "state": model.state_dict(),
                                 "optimizer": (type(opt).__name__, opt.get_config(),
                                               opt.state_dict())}
        return state

    def __setstate__(self, state):
        network = state.pop("_network", None)
        self.__dict__.update(state)
        if network is not None:
            model = Sequential.from_config(network["config"])
            model.load_state_dict(network["state"])
            name, config, opt_state = network["optimizer"]
            model.compile(optimizer=optimizers.from_config(name, config), loss=self._loss())
            model.optimizer.load_state_dict(opt_state)
            self.model_ = model

    def _outputs(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype=FLOATS, reset=False)
        return self.model_.predict(X.astype(self.model_.dtype, copy=False))


class NeuralNetClassifier(ClassifierMixin, _NeuralNet):
    """A chainrule MLP classifier with scikit-learn's interface; any label values.

    Args:
        hidden: the hidden layers' sizes, e.g. (256, 256); () for softmax regression.
        activation: "relu", "leaky_relu", "tanh", "sigmoid" or "gelu".
        epochs: passes over the data in ``fit``.
        batch_size: samples per step (at most the number of samples).
        lr: the learning rate. optimizer: "adam", "adamw", "sgd" (Nesterov momentum 0.9) or
            "rmsprop", at a constant rate.
        dropout: the rate of a Dropout after each hidden activation (0: none).
        random_state: None, an int or a RandomState: seeds the weights and the shuffling.

    Attributes:
        classes_: the labels, sorted. model_: the trained ``chainrule.Sequential`` (it outputs
        logits). n_features_in_. loss_curve_: the training loss of every epoch.
    """

    def _loss(self):
        return losses.SparseCategoricalCrossEntropy(from_logits=True)

    def fit(self, X, y):
        """Train a new network on (X, y) for ``epochs`` epochs; returns self."""
        X, y = validate_data(self, X, y, dtype=FLOATS)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        self._start(X, len(self.classes_))
        self._train(X, codes, self.epochs)
        return self

    def partial_fit(self, X, y, classes=None):
        """One epoch on (X, y); the first call builds the network for ``classes``."""
        first = not hasattr(self, "model_")
        X, y = validate_data(self, X, y, dtype=FLOATS, reset=first)
        check_classification_targets(y)
        if first:
            if classes is None:
                raise ValueError("NeuralNetClassifier: classes must be passed on the first call "
                                 "to partial_fit (all the labels the data will hold)")
            self.classes_ = np.unique(classes)
            self._start(X, len(self.classes_))
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if unknown.size:
            raise ValueError(f"NeuralNetClassifier: y holds labels {unknown.tolist()} that are "
                             f"not in classes {self.classes_.tolist()}")
        self._train(X, np.searchsorted(self.classes_, y), 1)
        return self

    def predict_proba(self, X) -> np.ndarray:
        """(N, classes) probabilities: the softmax of the logits, in ``classes_`` order."""
        logits = self._outputs(X)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True)).astype(np.float64)
        return shifted / shifted.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        """The most probable label of each sample."""
        logits = self._outputs(X)
        return self.classes_[np.argmax(logits, axis=1)]


class NeuralNetRegressor(RegressorMixin, _NeuralNet):
    """A chainrule MLP regressor (mean squared error) with scikit-learn's interface; y of
    shape (N,) or (N, outputs). The arguments are NeuralNetClassifier's.

    Attributes:
        model_: the trained ``chainrule.Sequential``. n_features_in_. loss_curve_.
    """

    def _loss(self):
        return losses.MeanSquaredError()

    def _targets(self, y) -> np.ndarray:
        y = np.asarray(y, dtype=self.model_.dtype if hasattr(self, "model_") else np.float64)
        return y.reshape(-1, 1) if y.ndim == 1 else y

    def fit(self, X, y):
        """Train a new network on (X, y) for ``epochs`` epochs; returns self."""
        X, y = validate_data(self, X, y, dtype=FLOATS, multi_output=True, y_numeric=True)
        self._one_output = np.ndim(y) == 1
        y = self._targets(y)
        self._start(X, y.shape[1])
        self._train(X, y, self.epochs)
        return self

    def partial_fit(self, X, y):
        """One epoch on (X, y); the first call builds the network."""
        first = not hasattr(self, "model_")
        X, y = validate_data(self, X, y, dtype=FLOATS, multi_output=True, y_numeric=True,
                             reset=first)
        if first:
            self._one_output = np.ndim(y) == 1
            self._start(X, self._targets(y).shape[1])
        y = self._targets(y)
        if y.shape[1] != self.model_.output_shape[0]:
            raise ValueError(f"NeuralNetRegressor: y has {y.shape[1]} outputs, the network was "
                             f"built for {self.model_.output_shape[0]}")
        self._train(X, y, 1)
        return self

    def predict(self, X) -> np.ndarray:
        """(N,) predictions, or (N, outputs) for a model fitted on 2-D y; float64."""
        out = self._outputs(X).astype(np.float64)
        return out[:, 0] if self._one_output else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


def _positive_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0
