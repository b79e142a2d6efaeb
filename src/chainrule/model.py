"""Sequential: a stack of layers with compile / fit / evaluate / predict / summary / save."""

from __future__ import annotations

import math
import sys

import numpy as np

from . import allocator, functional
from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optimizers as optimizers_mod
from .backend import as_float_dtype, as_weights
from .callbacks import Callback, History, ProgressBar
from .layers import activations
from .layers.base import (
    Layer,
    as_shape,
    check_finite,
    check_weight_budget,
    count_values,
    describe_bytes,
    layer_spec,
    make_layer,
)
from .layers.stack import append_layer
from .parameter import Parameter, ParameterBuffer
from .random_state import check_state_array, set_state
from .serialization import MODELS, save_model
from .validate import seed as seed_arg

# fit stops as diverged once the batch loss stays above DIVERGENCE_FACTOR × its reference for
# DIVERGENCE_STEPS consecutive steps (or a whole shorter epoch). The reference is the larger of
# the first step's loss and the loss of a uniform guess (log C for cross-entropy): in a first
# epoch on MNIST no batch loss of the softmax, mlp or cnn preset (Adam or SGD) rose above it,
# while at `chainrule train --lr 1e6` the mlp's and cnn's pass 1e12 within ten steps.
DIVERGENCE_FACTOR = 100.0
DIVERGENCE_STEPS = 10


class Sequential:
    """A linear stack of layers, trained by back-propagating through them in reverse order.

    Forward:  x → layer₁ → layer₂ → … → output
    Backward: dL/doutput → layerₖ.backward → … → layer₁.backward (each assigns its params' grads)

    Args:
        layers: the layers, in order. ``Dense(units, activation="relu")`` is expanded into Dense
            followed by ReLU, so ``model.layers`` shows one derivative per layer.
        dtype: the floating dtype of weights, activations and gradients ("float32" default, or
            "float64"); inputs are cast to it once, at the model boundary.
        seed: seed for weight initialisation (and Dropout masks). ``fit(seed=…)`` seeds an
            unbuilt model too; the same seed gives bit-identical weights and History.
        name: the model's name in ``summary()``.

    Raises:
        TypeError: if an element of ``layers`` is not a Layer, or ``name`` is not a string.
        ValueError: for a seed that is not None or an integer >= 0; and as ``build`` when the
            first layer has an ``input_shape``.
    """

    def __init__(self, layers=None, dtype="float32", seed: int | None = None,
                 name: str = "sequential"):
        if not isinstance(name, str):
            raise TypeError(f"Sequential: name must be a string, got {name!r}")
        self.dtype = as_float_dtype(dtype)
        self.seed = seed_arg(seed, "seed", "Sequential")
        self.name = name
        self.layers: list[Layer] = []
        self.built = False
        self.input_shape: tuple[int, ...] | None = None
        self.output_shape: tuple[int, ...] | None = None
        self.loss: losses_mod.Loss | None = None
        self.optimizer: optimizers_mod.Optimizer | None = None
        self.metrics: list = []
        self.stop_training = False
        self.history: History | None = None
        self._params: list[Parameter] = []
        self.metadata: dict = {}
        self._rng: np.random.Generator | None = None
        for layer in layers or []:
            self.add(layer)
        if self.layers and self.layers[0].input_shape is not None:
            self.build(self.layers[0].input_shape)

    # ------------------------------------------------------------------ structure
    def add(self, layer: Layer) -> None:
        """Append a layer (and its activation layer, for ``Dense(…, activation=…)``).

        Raises:
            TypeError: if ``layer`` is not a Layer.
            ValueError: if the layer is already in the model, its name is taken, or the model
                is already built.
        """
        append_layer(self.layers, layer, "Sequential", "the model")
        if self.built:
            self._build_tail()

    def build(self, input_shape, seed: int | None = None) -> None:
        """Create every layer's weights for samples of shape ``input_shape`` (no batch axis).

        Nothing is allocated before the weights the whole model needs are counted (see
        ``weight_shapes``) and found within ``chainrule.layers.base.MAX_WEIGHT_BYTES``.

        Args:
            input_shape: e.g. ``(784,)`` or ``(28, 28)``.
            seed: overrides the model's seed for this build.

        Raises:
            ValueError: for an empty model, a shape a layer cannot take, or weights beyond
                the limit ("this model needs 4.0 TB of weights (1.0e12 parameters, float32);
                the limit is …").
        """
        if not self.layers:
            raise ValueError("cannot build an empty Sequential; add layers first")
        seed = self.seed if seed is None else seed
        shape = tuple(np.atleast_1d(input_shape).tolist())
        built = [layer.built for layer in self.layers]
        for layer in self.layers:
            layer.built = False
        try:
            self.weight_shapes(shape)
        except (ValueError, TypeError):
            for layer, was_built in zip(self.layers, built, strict=True):
                layer.built = was_built
            raise
        self._rng = np.random.default_rng(seed)
        self.input_shape = shape
        self.output_shape = self.input_shape
        self._build_tail()
        self.built = True

    def weight_shapes(self, input_shape=None) -> list[tuple[Layer, tuple[int, ...], dict | None,
                                                           dict | None]]:
        """What building for ``input_shape`` creates, layer by layer, without creating it.

        Built layers report the shapes they have; unbuilt ones their ``param_shapes`` and
        ``buffer_shapes`` (None for a user's layer that cannot say before it is built, whose
        weights are counted once built). Checks each layer's input shape on the way, and the
        total against ``MAX_WEIGHT_BYTES``.

        Args:
            input_shape: one sample's shape; default the model's own (it must be built).

        Returns:
            ``[(layer, layer input shape, {param name: shape} | None,
            {buffer name: shape} | None), …]`` in layer order.

        Raises:
            ValueError: as ``build``.
        """
        shape = self.input_shape if input_shape is None else tuple(input_shape)
        plan = []
        for layer in self.layers:
            shape = as_shape(shape, layer)
            if layer.built:
                params = {p.name: p.shape for p in layer.parameters()}
                buffers = {k: v.shape for k, v in layer.buffers().items()}
                out = layer.output_shape
            else:
                layer.check_sample_shape(shape)
                params, buffers = layer.param_shapes(shape), layer.buffer_shapes(shape)
                out = layer.compute_output_shape(shape)
            plan.append((layer, shape, params, buffers))
            shape = tuple(out)
        self._check_budget(plan)
        return plan

    def _check_budget(self, plan) -> None:
        """Refuse a model whose known weights exceed ``MAX_WEIGHT_BYTES``, naming the largest."""
        counts = [(count_values(p or {}) + count_values(b or {}), layer)
                  for layer, _, p, b in plan]
        total = sum(count for count, _ in counts)
        count, largest = max(counts, key=lambda c: c[0])
        detail = "" if len(counts) == 1 else (
            f"; {largest.label} alone needs "
            f"{describe_bytes(count * self.dtype.itemsize)}")
        check_weight_budget(total, self.dtype, f"this model ({self.name!r})", detail)

    def _build_tail(self) -> None:
        """Build the layers that are not built yet, from the current output shape on.

        The weights of the whole model are counted first; a user's layer that cannot count its
        own before building is counted, with everything before it, right after it is built.
        """
        self.weight_shapes(self.input_shape)
        shape = self.input_shape
        for layer in self.layers:
            # Between layers arrays keep the memory layout they were made in (channels-last
            # after a Conv2D, see layers.layout); forward and backward return C-contiguous ones.
            layer.contiguous_output = False
            if not layer.built:
                known = layer.param_shapes(shape) is not None and \
                    layer.buffer_shapes(shape) is not None
                layer.build(shape, rng=self._rng, dtype=self.dtype)
                if not known:
                    self.weight_shapes(self.input_shape)
            shape = layer.output_shape
        self.output_shape = shape
        self._params = [p for layer in self.layers for p in layer.parameters()]
        if self._params and len({p.dtype for p in self._params}) == 1 and \
                len({id(p) for p in self._params}) == len(self._params):
            # Every value becomes a view of one flat array: the optimizer updates them all at once.
            ParameterBuffer(self._params)
        if self.optimizer is not None:
            self.optimizer.bind(self.named_parameters())

    def parameters(self) -> list[Parameter]:
        """All trainable Parameters, layer by layer, in a stable order."""
        return list(self._params)

    def count_params(self) -> int:
        return sum(p.size for p in self._params)

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """(``<layer>.<name>``, Parameter) for every trainable parameter, in ``parameters()``
        order: the names ``state_dict``, ``optimizer.state_dict`` and gradcheck reports use."""
        return [(f"{layer.name}.{p.name}", p) for layer in self.layers
                for p in layer.parameters()]

    def state_entries(self) -> list[tuple[str, Layer, str, str, np.ndarray]]:
        """(model name, layer, layer name, kind, array) of every entry of ``state_dict``."""
        return [(f"{layer.name}.{key}", layer, key, kind, array)
                for layer in self.layers for key, kind, array in layer.state_entries()]

    def state_dict(self) -> dict[str, np.ndarray]:
        """All of the model's state by stable name: every parameter and buffer, and the random
        state of the layers that draw, layer by layer (``Layer.state_entries`` order).

        Names are ``<layer>.<name>``: ``dense_1.W``, ``dense_1.b``,
        ``batchnorm_1.running_mean``, ``dropout_1.rng`` (six uint64 words, see
        ``chainrule.random_state``). The arrays are the model's own (not copies), except the
        random states; ``load_state_dict`` puts a dict like this back.
        """
        return {name: array for name, _, _, _, array in self.state_entries()}

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy ``state`` (as ``state_dict`` returns) into the model, in place.

        Every array is checked before anything changes: its shape must be the model's; weights
        must cast safely to the model's dtype and be finite (``backend.as_weights``); random
        states must be (6,) uint64 arrays.

        Args:
            state: name → array.
            strict: refuse names the model lacks and require every name it has. With False,
                only the names both have are loaded (and still checked).

        Raises:
            ValueError: naming the missing or unexpected names, or the array and what was
                expected vs got.
            TypeError: for a weight array whose dtype does not cast safely.
        """
        if not isinstance(state, dict):
            raise TypeError(f"load_state_dict expects a dict of name → array, got "
                            f"{type(state).__name__}")
        entries = self.state_entries()
        own = {name for name, *_ in entries}
        if strict:
            missing = [name for name, *_ in entries if name not in state]
            unexpected = [name for name in state if name not in own]
            if missing or unexpected:
                parts = []
                if missing:
                    parts.append(f"missing {_listed(missing)}")
                if unexpected:
                    parts.append(f"unexpected {_listed(unexpected)}")
                raise ValueError(f"load_state_dict: {'; '.join(parts)} (the model has "
                                 f"{_listed([name for name, *_ in entries])})")
        checked = []
        for name, layer, key, kind, target in entries:
            if name not in state:
                continue
            value = np.asarray(state[name])
            what = f"load_state_dict: {name}"
            if kind == "rng":
                checked.append((layer, key, kind, target, check_state_array(value, what)))
                continue
            if value.shape != target.shape:
                raise ValueError(f"{what} expected shape {target.shape}, got {value.shape}")
            checked.append((layer, key, kind, target, as_weights(value, target.dtype, what)))
        for layer, key, kind, target, value in checked:
            if kind == "rng":
                set_state(layer.rng, value, f"load_state_dict: {layer.name}.{key}")
            else:
                np.copyto(target, value)

    def get_weights(self) -> list[np.ndarray]:
        """Copies of every weight, in ``state_dict`` order without the random states: each
        layer's parameter values, then its buffers (BatchNorm's running statistics)."""
        return [array.copy() for _, _, _, kind, array in self.state_entries() if kind != "rng"]

    def set_weights(self, weights) -> None:
        """Overwrite every weight in place (same order, shapes and count as ``get_weights``).

        All arrays are checked before any weight changes, as in ``load_state_dict``.

        Raises:
            ValueError: for a wrong count or shape, NaN/inf values, or integers the model
                dtype cannot hold exactly, naming the array.
            TypeError: for an array whose dtype does not cast safely (complex, strings, …).
        """
        weights = list(weights)
        names = [name for name, _, _, kind, _ in self.state_entries() if kind != "rng"]
        if len(weights) != len(names):
            raise ValueError(f"set_weights expected {len(names)} arrays, got {len(weights)}")
        try:
            self.load_state_dict(dict(zip(names, weights, strict=True)), strict=False)
        except (ValueError, TypeError) as exc:
            raise type(exc)(str(exc).replace("load_state_dict:", "set_weights:", 1)) from None

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer="adam", loss=None, metrics=None) -> None:
        """Choose the optimizer, the loss and the metrics reported by fit/evaluate.

        A compiled model is about to train: glibc's malloc is then asked to keep the memory a
        training step frees for the next one (``chainrule.allocator``).

        Args:
            optimizer: an Optimizer or a name ("adam", "sgd", "adamw", "rmsprop").
            loss: a Loss or a name ("sparse_categorical_crossentropy", "mse", …).
            metrics: list of metric names, e.g. ["accuracy"].

        Raises:
            ValueError: for a missing/unknown loss, or a final Softmax (Sigmoid) layer combined
                with a ``from_logits=True`` loss (it would be applied twice).
        """
        if loss is None:
            raise ValueError("compile needs a loss, e.g. losses.SparseCategoricalCrossEntropy()")
        self.optimizer = optimizers_mod.get(optimizer)
        self.optimizer.bind(self.named_parameters())
        self.loss = losses_mod.get(loss)
        last = self.layers[-1] if self.layers else None
        if isinstance(last, activations.Softmax | activations.Sigmoid) and getattr(
            self.loss, "from_logits", False
        ):
            kind = type(last).__name__
            raise ValueError(
                f"the last layer is {kind} but the loss {self.loss!r} expects logits "
                f"(from_logits=True): {kind.lower()} would be applied twice. Remove the {kind} "
                "layer (recommended: the fused loss is exact and stable) or use "
                "from_logits=False"
            )
        self.metrics = [metrics_mod.get_metric(m) for m in (metrics or [])]
        allocator.retain_freed_memory()

    def _require_compiled(self, what: str) -> None:
        if self.loss is None or self.optimizer is None:
            raise RuntimeError(
                f"{what} needs a compiled model: call model.compile(optimizer=..., loss=...) first"
            )

    # ------------------------------------------------------------------ forward / backward
    def prepare_input(self, x, what: str) -> np.ndarray:
        """Validate a whole input array and cast it to the model dtype once."""
        x = np.asarray(x)
        if not self.layers:
            raise ValueError(f"{what}: the model has no layers")
        first = self.layers[0]
        if first.integer_input:
            if not np.issubdtype(x.dtype, np.integer):
                raise TypeError(
                    f"{what}: the first layer {first.label} takes integer ids, got dtype "
                    f"{x.dtype}"
                )
        else:
            if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.issubdtype(
                x.dtype, np.complexfloating
            ):
                raise TypeError(f"{what}: expected a numeric input array, got dtype {x.dtype}")
            x = x.astype(self.dtype, copy=False)
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"{what}: expected a non-empty batch of shape (N, ...), got {x.shape}")
        if not first.integer_input:
            check_finite(x, f"{what}: the model")
        if self.built:
            first.check_sample_shape(x.shape[1:], batch=x.shape[0])
            if x.shape[1:] != self.input_shape:
                raise ValueError(
                    f"{what}: the model was built for input of shape (N, "
                    f"{', '.join(map(str, self.input_shape))}), got {x.shape}"
                )
        try:
            first.check_values(x)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
        return x

    def forward(self, x, training: bool = False) -> np.ndarray:
        """Run the batch ``x`` through every layer; the output has shape (N, *output_shape)."""
        x = self.prepare_input(x, "forward")
        if not self.built:
            self.build(x.shape[1:])
        return np.ascontiguousarray(self._forward(x, training))

    __call__ = forward

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        for layer in self.layers:
            x = layer.apply(x, training)
        return x

    def backward(self, grad_y, need_input_grad: bool = True):
        """Back-propagate dL/doutput through every layer (reverse order), assigning param grads.

        Without ``need_input_grad``, the pass stops at the first layer that has parameters:
        what lies before it (a RandomShift, a Flatten) has no gradient to assign, so dL/dx of
        that layer's input is never computed.

        Returns:
            dL/dx for the last training forward's input (None if ``need_input_grad`` is False).
        """
        grad = grad_y
        first = 0 if need_input_grad else next(
            (i for i, layer in enumerate(self.layers) if layer.parameters()), 0)
        for i in range(len(self.layers) - 1, first - 1, -1):
            grad = self.layers[i].backward(grad, need_input_grad=need_input_grad or i > first)
        return None if grad is None or not need_input_grad else np.ascontiguousarray(grad)

    def _min_training_batch(self) -> tuple[int, Layer | None]:
        """(k, layer): the fewest samples a training batch needs and the layer that needs them
        ((1, None) when any batch trains).

        Each layer says so through ``Layer.min_training_batch()`` (BatchNorm: 2 on (N, C)
        input, whose channels hold one value per sample).
        """
        fewest, needy = 1, None
        for layer in self.layers:
            k = int(layer.min_training_batch())
            if k > fewest:
                fewest, needy = k, layer
        return fewest, needy

    def steps_per_epoch(self, n_samples: int, batch_size: int) -> int:
        """Optimizer steps ``fit`` takes per epoch on ``n_samples``: ⌈n / batch_size⌉, one fewer
        when the last batch is too small for a layer to train on (see ``fit``).

        Raises:
            ValueError: if ``batch_size`` (or ``n_samples``) is smaller than a layer needs,
                naming that layer.
        """
        batch_size = _check_batch_size(batch_size, "fit")
        steps, last = divmod(n_samples, batch_size)
        fewest, needy = self._min_training_batch()
        if fewest > 1:
            where = "" if needy.input_shape is None else (
                f" on input of shape (N, {', '.join(map(str, needy.input_shape))})")
            if batch_size < fewest:
                raise ValueError(
                    f"fit: batch_size={batch_size} is too small for {needy.label}, which "
                    f"needs at least {fewest} samples per training batch{where}; use "
                    f"batch_size={fewest} or more"
                )
            if n_samples < fewest:
                raise ValueError(
                    f"fit: x has {n_samples} sample{'s' if n_samples != 1 else ''}, but "
                    f"{needy.label} needs at least {fewest} per training batch{where}"
                )
        return steps + (1 if last >= fewest else 0)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """One step of gradient descent on a prepared batch; returns (loss, output)."""
        output = self._forward(x, training=True)
        loss = self.loss(output, y)
        self.backward(self.loss.backward(), need_input_grad=False)
        self.optimizer.step(self._params)
        return loss, output

    # ------------------------------------------------------------------ fit / evaluate / predict
    def fit(self, x, y, epochs: int = 1, batch_size: int = 32, shuffle: bool = True,
            seed: int | None = None, validation_data=None, validation_split: float = 0.0,
            callbacks=None, verbose: int = 1, initial_epoch: int = 0) -> History:
        """Train for ``epochs`` passes over (x, y) in mini-batches.

        Args:
            x: inputs (N, …); cast once to the model dtype.
            y: targets (N,) integer labels or (N, …) arrays, as the loss expects.
            epochs: one more than the index of the last epoch: epochs ``initial_epoch`` …
                ``epochs`` − 1 run, so it must be at least ``initial_epoch`` + 1.
            batch_size: samples per gradient step. The last batch of an epoch holds the rest,
                n mod batch_size, unless a layer cannot train on that few (a BatchNorm after a
                Dense needs 2, see ``BatchNorm.min_training_batch``): then it is left out of
                every epoch, said once when verbose and recorded in ``history.params``.
            shuffle: reshuffle the training samples every epoch.
            seed: seeds shuffling (per epoch, so a resumed run shuffles like an uninterrupted
                one) and weight init if the model is not built yet.
            validation_data: (x_val, y_val) evaluated after every epoch.
            validation_split: fraction of the *last* samples of (x, y) held out for validation
                (taken before shuffling), used when validation_data is None.
            callbacks: list of Callback (EarlyStopping, ModelCheckpoint, …).
            verbose: 0 silent, 1 a progress bar per epoch, 2 one line per epoch.
            initial_epoch: epoch to start at (to resume a run).

        Returns:
            History with one value per epoch for "loss", each metric and their "val_" versions.

        Raises:
            RuntimeError: if the model is not compiled.
            ValueError / TypeError: for inconsistent or invalid data (see messages), a
                ``batch_size`` smaller than a layer needs to train on, or ``epochs`` not above
                ``initial_epoch``; all before the first step.
            FloatingPointError: when training diverges: the loss becomes NaN or inf, or stays
                ``DIVERGENCE_FACTOR`` times above the first step's loss (and the loss of a
                uniform guess) for ``DIVERGENCE_STEPS`` consecutive steps; names epoch and step.
        """
        self._require_compiled("fit")
        batch_size = _check_batch_size(batch_size, "fit")
        if not _is_int(initial_epoch) or initial_epoch < 0:
            raise ValueError(
                f"fit: initial_epoch must be a non-negative integer, got {initial_epoch!r}"
            )
        if not _is_int(epochs) or epochs < initial_epoch + 1:
            raise ValueError(
                f"fit: epochs must be an integer of at least initial_epoch + 1 = "
                f"{initial_epoch + 1} (epochs initial_epoch … epochs − 1 run), got {epochs!r}"
            )
        x = self.prepare_input(x, "fit")
        y = np.asarray(y)
        if y.ndim == 0 or len(y) != len(x):
            raise ValueError(
                f"fit: x has {len(x)} samples but y has {len(y) if y.ndim else 0}; they must match"
            )
        if validation_data is None and validation_split:
            if not 0.0 < validation_split < 1.0:
                raise ValueError(
                    f"fit: validation_split must lie in (0, 1), got {validation_split}"
                )
            n_val = int(len(x) * validation_split)
            if n_val == 0 or n_val == len(x):
                raise ValueError(
                    f"fit: validation_split={validation_split} of {len(x)} samples leaves an "
                    "empty training or validation set"
                )
            x, x_val = x[:-n_val], x[-n_val:]
            y, y_val = y[:-n_val], y[-n_val:]
            validation_data = (x_val, y_val)
        if not self.built:
            self.build(x.shape[1:], seed=seed)
        self._check_targets(x, y, "fit")
        if validation_data is not None:
            x_val, y_val = validation_data
            x_val = self.prepare_input(x_val, "fit (validation data)")
            self._check_targets(x_val, np.asarray(y_val), "fit (validation data)")
        shuffle_seed = self.seed if seed is None else seed

        n = len(x)
        steps = self.steps_per_epoch(n, batch_size)
        left_out = max(n - steps * batch_size, 0)
        history = History()
        cbs: list[Callback] = [history] + list(callbacks or [])
        if verbose:
            cbs.append(ProgressBar(verbose))
        history.params = {"epochs": epochs, "batch_size": batch_size, "steps": steps,
                          "samples": n, "left_out_per_epoch": left_out}
        if left_out:
            fewest, needy = self._min_training_batch()
            which = "shuffled, so not the same ones" if shuffle else "always the last ones"
            history.params["note"] = (
                f"fit: the last batch of each epoch ({left_out} of {n} samples, {which}) is left "
                f"out: {needy.label} needs at least {fewest} samples per training batch"
            )
            if verbose:
                print(history.params["note"], file=sys.stderr)
        self.history = history
        self.stop_training = False
        for cb in cbs:
            cb.set_model(self)
        for cb in cbs:
            cb.on_train_begin()
        threshold = 0.0 if getattr(self.loss, "from_logits", False) else 0.5
        watch = _DivergenceWatch(self, steps)
        for epoch in range(initial_epoch, epochs):
            self.optimizer.epoch = epoch
            for cb in cbs:
                cb.on_epoch_begin(epoch)
            order = None
            if shuffle:
                # One Generator per (seed, epoch): a run resumed at any epoch shuffles exactly
                # as the uninterrupted run would have.
                epoch_seed = None if shuffle_seed is None else [shuffle_seed, epoch]
                order = np.random.default_rng(epoch_seed).permutation(n)
            loss_sum, loss_count = 0.0, 0
            correct = [0] * len(self.metrics)
            seen = 0
            for step in range(steps):
                if order is None:
                    xb, yb = x[step * batch_size:(step + 1) * batch_size], \
                        y[step * batch_size:(step + 1) * batch_size]
                else:
                    idx = order[step * batch_size:(step + 1) * batch_size]
                    xb, yb = x[idx], y[idx]
                loss, output = self.train_step(xb, yb)
                watch.check(loss, epoch, step)
                nb = len(xb)
                seen += nb
                if self.loss.reduction == "mean":
                    loss_sum += loss * self.loss.last_count
                    loss_count += self.loss.last_count
                else:
                    loss_sum += loss
                    loss_count += nb
                for i, metric in enumerate(self.metrics):
                    correct[i] += metric.count(output, yb, threshold)
                logs = {"loss": loss_sum / loss_count}
                for i, metric in enumerate(self.metrics):
                    logs[metric.name] = correct[i] / seen
                for cb in cbs:
                    cb.on_batch_end(step, logs)
            if validation_data is not None:
                val = self.evaluate(x_val, y_val, batch_size=max(batch_size, 256))
                logs.update({f"val_{k}": v for k, v in val.items()})
            for cb in cbs:
                cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        for cb in cbs:
            cb.on_train_end()
        return history

    def _check_targets(self, x: np.ndarray, y: np.ndarray, what: str) -> None:
        """Validate all targets once, as the loss will see them batch by batch."""
        shape = (len(x),) + tuple(self.output_shape)
        try:
            self.loss.check_target(np.broadcast_to(np.zeros((), self.dtype), shape), y)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{what}: {exc}") from None

    def evaluate(self, x, y, batch_size: int = 256, verbose: int = 0) -> dict[str, float]:
        """Mean loss and metrics over (x, y) at inference (Dropout off).

        The loss is the mean over every term the loss averages, whatever the batch size: every
        sample, or every kept position of a sequence loss with ``ignore_index`` (nats per
        character for a language model).

        Returns:
            {"loss": float, "accuracy": float, …} for the compiled metrics.
        """
        self._require_compiled("evaluate")
        batch_size = _check_batch_size(batch_size, "evaluate")
        x = self.prepare_input(x, "evaluate")
        y = np.asarray(y)
        if len(y) != len(x):
            raise ValueError(f"evaluate: x has {len(x)} samples but y has {len(y)}")
        if not self.built:
            self.build(x.shape[1:])
        self._check_targets(x, y, "evaluate")
        threshold = 0.0 if getattr(self.loss, "from_logits", False) else 0.5
        total, count, correct = 0.0, 0, [0] * len(self.metrics)
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            output = self._forward(xb, training=False)
            loss = self.loss(output, yb)
            if self.loss.reduction == "mean":
                # Each batch's mean weighted by the terms it averaged (samples, or the kept
                # positions of a sequence loss with ignore_index): the mean over all of them.
                total += loss * self.loss.last_count
                count += self.loss.last_count
            else:
                total += loss
            for i, metric in enumerate(self.metrics):
                correct[i] += metric.count(output, yb, threshold)
        result = {"loss": total / count if self.loss.reduction == "mean" else total}
        for i, metric in enumerate(self.metrics):
            result[metric.name] = correct[i] / len(x)
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in result.items()))
        return result

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Model outputs for ``x`` at inference, computed in batches: shape (N, *output_shape)."""
        batch_size = _check_batch_size(batch_size, "predict")
        x = self.prepare_input(x, "predict")
        if not self.built:
            self.build(x.shape[1:])
        out = None
        for start in range(0, len(x), batch_size):
            yb = self._forward(x[start:start + batch_size], training=False)
            if out is None:
                out = np.empty((len(x),) + yb.shape[1:], dtype=yb.dtype)
            out[start:start + len(yb)] = yb
        return out

    @property
    def outputs_probabilities(self) -> bool:
        """True when the model ends in a Softmax layer (its outputs are probabilities), False
        when it outputs logits (the fused loss applies the softmax)."""
        return bool(self.layers) and isinstance(self.layers[-1], activations.Softmax)

    def predict_proba(self, x, batch_size: int = 1000) -> np.ndarray:
        """Class probabilities (N, C) at inference: the outputs of a model that ends in Softmax,
        softmax(logits) for one that outputs logits."""
        out = self.predict(x, batch_size=batch_size)
        return out if self.outputs_probabilities else functional.softmax(out)

    def reshape_input(self, x) -> np.ndarray:
        """``x`` (N, …) reshaped to the samples the model was built for, when only the shape
        differs: (N, 28, 28) images for a model built on (784,) vectors, or the reverse.

        Raises:
            ValueError: if the model is not built, or a sample holds another number of values.
        """
        x = np.asarray(x)
        if not self.built:
            raise ValueError("reshape_input: the model is not built yet (no input shape)")
        shape = tuple(self.input_shape)
        if x.shape[1:] == shape:
            return x
        if x.ndim < 1 or math.prod(x.shape[1:]) != math.prod(shape):
            raise ValueError(
                f"the model expects samples of shape {shape}, the data has {x.shape[1:]}"
            )
        return x.reshape((len(x),) + shape)

    # ------------------------------------------------------------------ summary / config / io
    def summary(self, print_fn=print) -> str:
        """Print (and return) a table of layers, output shapes and parameter counts."""
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for layer in self.layers:
            shape = "?" if layer.output_shape is None else str((None, *layer.output_shape))
            params = f"{layer.count_params():,}" if layer.built else "?"
            rows.append((f"{layer.name} ({type(layer).__name__})", shape, params))
        widths = [max(len(r[i]) for r in rows) + 2 for i in range(3)]
        line = "─" * sum(widths)
        out = [f'Model: "{self.name}"  dtype={self.dtype}', line]
        out.append("".join(c.ljust(w) for c, w in zip(rows[0], widths, strict=True)))
        out.append(line)
        out += ["".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows[1:]]
        out.append(line)
        if self.built:
            out.append(f"Total params: {self.count_params():,}")
        else:
            out.append("Total params: ? (not built: call build(input_shape) or fit first)")
        text = "\n".join(out)
        if print_fn is not None:
            print_fn(text)
        return text

    def copy(self, dtype=None, input_shape=None) -> Sequential:
        """An independent copy: every layer rebuilt through its own class, with this model's
        weights, buffers (BatchNorm's running statistics) and random states, in ``dtype``
        (default: this model's). Nothing is shared; the copy is not compiled.

        Args:
            dtype: the copy's dtype.
            input_shape: for a model that is not built yet: the copy is built for it, with
                weights drawn from the model's seed (the model itself stays unbuilt).

        Raises:
            ValueError: for an unbuilt model without ``input_shape``.
        """
        if not self.built and input_shape is None:
            raise ValueError("copy: the model is not built yet (no weights); fit or build it, "
                             "or pass input_shape")
        clone = Sequential([layer.twin() for layer in self.layers],
                           dtype=self.dtype if dtype is None else dtype, seed=self.seed,
                           name=self.name)
        clone.build(self.input_shape if self.built else input_shape)
        if self.built:
            clone.load_state_dict(self.state_dict())
        return clone

    def get_config(self) -> dict:
        """JSON-able description of the architecture (not the weights)."""
        return {
            "name": self.name,
            "dtype": self.dtype.name,
            "seed": self.seed,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "layers": [layer_spec(layer) for layer in self.layers],
        }

    @classmethod
    def from_config(cls, config: dict, dtype=None, custom_objects: dict | None = None
                    ) -> Sequential:
        """Rebuild an (unbuilt unless input_shape is known) model from ``get_config()``.

        Args:
            config: as returned by ``get_config``.
            dtype: overrides the saved dtype.
            custom_objects: name → class for layer classes defined outside chainrule.
        """
        layers = [make_layer(spec, custom_objects) for spec in config["layers"]]
        model = cls(layers, dtype=dtype or config["dtype"], seed=config.get("seed"),
                    name=config.get("name", "sequential"))
        if config.get("input_shape") is not None and not model.built:
            model.build(config["input_shape"])
        return model

    def save(self, path, include_optimizer: bool = True, metadata: dict | None = None) -> None:
        """Write architecture, weights (and optimizer state) to ``path``, atomically: a
        ``.safetensors`` path in that format, any other path as an .npz archive.

        See :func:`chainrule.serialization.save_model`.
        """
        save_model(self, path, include_optimizer=include_optimizer, metadata=metadata)

    def __repr__(self) -> str:
        return f"Sequential(name={self.name!r}, layers={len(self.layers)}, dtype={self.dtype})"


class _DivergenceWatch:
    """Decides, step by step, whether ``fit`` has diverged (see ``DIVERGENCE_FACTOR``)."""

    def __init__(self, model: Sequential, steps: int):
        self.model = model
        self.steps = steps
        self.needed = min(DIVERGENCE_STEPS, steps)
        self.reference: float | None = None
        self.what = ""
        self.above = 0

    def _uniform_guess(self) -> float:
        """The per-sample loss of predicting every class equally likely (0 when unknown)."""
        loss = self.model.loss
        if getattr(loss, "reduction", None) != "mean":
            return 0.0
        if isinstance(loss, losses_mod.SparseCategoricalCrossEntropy
                      | losses_mod.CategoricalCrossEntropy):
            classes = self.model.output_shape[-1]
            return math.log(classes) if classes > 1 else 0.0
        if isinstance(loss, losses_mod.BinaryCrossEntropy):
            return math.log(2.0)
        return 0.0

    def _where(self, epoch: int, step: int) -> tuple[str, str]:
        """The step and the advice that a divergence message names."""
        return (f"at epoch {epoch + 1}, step {step + 1} of {self.steps}",
                f"Try a lower learning rate (it was {self.model.optimizer.last_lr:g}), "
                "normalise the inputs, or check the data for extreme values")

    def check(self, loss: float, epoch: int, step: int) -> None:
        """Raise FloatingPointError if ``loss`` (0-based ``epoch``, ``step``) shows divergence."""
        if not math.isfinite(loss):
            where, advice = self._where(epoch, step)
            raise FloatingPointError(f"training diverged: the loss became {loss} {where}. {advice}")
        if self.reference is None:
            guess = self._uniform_guess()
            self.reference = max(loss, guess)
            self.what = "the loss of a uniform guess" if guess >= loss else "the first step's loss"
        limit = DIVERGENCE_FACTOR * self.reference
        self.above = self.above + 1 if self.reference > 0 and loss > limit else 0
        if self.above >= self.needed:
            where, advice = self._where(epoch, step)
            raise FloatingPointError(
                f"training diverged: the loss stayed above {limit:.3g} ({DIVERGENCE_FACTOR:g} × "
                f"{self.reference:.3g}, {self.what}) for {self.above} consecutive steps and "
                f"reached {loss:.3g} {where}. {advice}"
            )


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _check_batch_size(batch_size, what: str) -> int:
    if not _is_int(batch_size) or batch_size <= 0:
        raise ValueError(f"{what}: batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def _listed(names: list[str], most: int = 6) -> str:
    """'a', 'b' and 3 more: a list of names, short enough for one message."""
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


MODELS.register(Sequential)
