"""Callbacks: hooks into ``fit`` — History, EarlyStopping, ModelCheckpoint, GradientNormLogger,
the progress bar."""

from __future__ import annotations

import math
import sys
import time

import numpy as np


class Callback:
    """Base class; override the hooks you need. ``self.model`` is set by ``fit``."""

    model = None

    def set_model(self, model) -> None:
        self.model = model

    def on_train_begin(self, logs=None) -> None: ...

    def on_epoch_begin(self, epoch: int, logs=None) -> None: ...

    def on_batch_end(self, step: int, logs=None) -> None: ...

    def on_epoch_end(self, epoch: int, logs=None) -> None: ...

    def on_train_end(self, logs=None) -> None: ...


class History(Callback):
    """Per-epoch logs of a ``fit`` call: ``history.history["loss"]``, ``["val_accuracy"]``, ….

    Attributes:
        history: dict name → list of floats, one per epoch.
        epoch: the epoch indices that ran (0-based).
        params: fit's settings: epochs, batch_size, steps (per epoch), samples and
            left_out_per_epoch (a last batch too small for a layer to train on, see
            ``Sequential.fit``), with a "note" saying so when it is not 0.
    """

    def __init__(self):
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.params: dict = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


def _resolve_mode(mode: str, monitor: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    return mode


def _monitored(logs, monitor: str, who: str) -> float:
    if not logs or monitor not in logs:
        raise ValueError(
            f"{who}: monitored quantity {monitor!r} is not in the epoch logs "
            f"{sorted(logs or {})}; pass validation data for 'val_*' or pick another monitor"
        )
    return float(logs[monitor])


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has not improved for ``patience`` epochs.

    Args:
        monitor: a key of the epoch logs, e.g. "val_loss" (default) or "val_accuracy".
        min_delta: the smallest change that counts as an improvement.
        patience: epochs without improvement before stopping.
        mode: "min", "max" or "auto" (max for accuracies, min otherwise).
        restore_best_weights: at the end of training, put back the weights of the best epoch.
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto",
                 restore_best_weights=False):
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = int(patience)
        self.mode = _resolve_mode(mode, monitor)
        self.restore_best_weights = bool(restore_best_weights)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = None
        self.best_weights = None
        self.stopped_epoch = None
        self.wait = 0

    def on_train_begin(self, logs=None):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = None
        self.best_weights = None
        self.stopped_epoch = None
        self.wait = 0

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        value = _monitored(logs, self.monitor, "EarlyStopping")
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (with optimizer state) after each epoch, or only when ``monitor`` improves.

    Args:
        filepath: target .npz path; may hold ``{epoch}`` (1-based) and log keys, e.g.
            ``"ckpt/epoch{epoch:02d}-{val_loss:.3f}.npz"``.
        monitor: log key compared when ``save_best_only``.
        save_best_only: keep writing the same file only when the monitored value improves.
        mode: "min", "max" or "auto".
    """

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto"):
        self.filepath = str(filepath)
        self.monitor = monitor
        self.save_best_only = bool(save_best_only)
        self.mode = _resolve_mode(mode, monitor)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.last_saved = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = _monitored(logs, self.monitor, "ModelCheckpoint")
            better = value < self.best if self.mode == "min" else value > self.best
            if not better:
                return
            self.best = value
        path = self.filepath.format(epoch=epoch + 1, **logs)
        self.model.save(path)
        self.last_saved = path


class GradientNormLogger(Callback):
    """Record the L2 norm ‖∂L/∂θ‖ of every parameter's gradient during ``fit``.

    Read right after each step's backward, so every value is the gradient that step applied.
    Norms that shrink by decades from the last layer to the first are vanishing gradients
    (sigmoid: σ′ ≤ ¼ per layer); norms that grow are exploding ones. Plot with
    ``chainrule.plot.plot_gradient_norms(logger)``.

    Args:
        every: "batch" (one value per optimizer step) or "epoch" (the mean of the epoch's
            per-step norms).

    Attributes:
        norms: dict of parameter names (``model.named_parameters()``, e.g. "dense_1.W") → list
            of floats, in layer order.
        steps: the x axis of ``norms``: 1-based global step numbers ("batch") or epoch numbers
            ("epoch"). Successive ``fit`` calls append, so a model trained in slices keeps one
            series.

    Raises:
        ValueError: for ``every`` other than "batch" or "epoch".
    """

    def __init__(self, every: str = "batch"):
        if every not in ("batch", "epoch"):
            raise ValueError(f"GradientNormLogger: every must be 'batch' or 'epoch', got {every!r}")
        self.every = every
        self.norms: dict[str, list[float]] = {}
        self.steps: list[int] = []
        self._step = 0
        self._sums: dict[str, float] = {}
        self._count = 0

    def on_train_begin(self, logs=None):
        self._named = self.model.named_parameters()
        for name, _ in self._named:
            self.norms.setdefault(name, [])

    def on_epoch_begin(self, epoch, logs=None):
        self._sums = {name: 0.0 for name, _ in self._named}
        self._count = 0

    def on_batch_end(self, step, logs=None):
        self._step += 1
        for name, p in self._named:
            if p.grad is None:
                value = math.nan
            else:
                g = p.grad.reshape(-1)
                value = math.sqrt(float(np.dot(g, g)))
            if self.every == "batch":
                self.norms[name].append(value)
            else:
                self._sums[name] += value
        if self.every == "batch":
            self.steps.append(self._step)
        self._count += 1

    def on_epoch_end(self, epoch, logs=None):
        if self.every == "epoch" and self._count:
            for name, _ in self._named:
                self.norms[name].append(self._sums[name] / self._count)
            self.steps.append(epoch + 1)

    def __repr__(self) -> str:
        return f"GradientNormLogger(every={self.every!r}, params={len(self.norms)})"


class ProgressBar(Callback):
    """Progress display used by ``fit``: a tqdm bar per epoch (verbose=1) or a line per epoch.

    Falls back to one printed line per epoch when tqdm is not installed.
    """

    def __init__(self, verbose: int = 1, refresh_seconds: float = 0.25):
        self.verbose = verbose
        self.refresh_seconds = refresh_seconds
        self._bar = None
        self._tqdm = None
        if verbose == 1:
            try:
                from tqdm.auto import tqdm

                self._tqdm = tqdm
            except ImportError:
                self._tqdm = None

    def on_train_begin(self, logs=None):
        self.epochs = self.model.history.params["epochs"]
        self.steps = self.model.history.params["steps"]

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._last = 0.0
        if self._tqdm is not None:
            self._bar = self._tqdm(
                total=self.steps,
                desc=f"Epoch {epoch + 1}/{self.epochs}",
                unit="batch",
                leave=True,
                file=sys.stderr,
            )

    def on_batch_end(self, step, logs=None):
        if self._bar is None:
            return
        self._bar.update(1)
        now = time.perf_counter()
        if now - self._last >= self.refresh_seconds:
            self._last = now
            self._bar.set_postfix_str(_format_logs(logs), refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.perf_counter() - self._start
        if self._bar is not None:
            self._bar.set_postfix_str(_format_logs(logs), refresh=False)
            self._bar.close()
            self._bar = None
        else:
            print(
                f"Epoch {epoch + 1}/{self.epochs} - {elapsed:.1f}s - {_format_logs(logs)}",
                file=sys.stderr,
            )


def _format_logs(logs) -> str:
    return " - ".join(f"{k}: {v:.4f}" for k, v in (logs or {}).items())
