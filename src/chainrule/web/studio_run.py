"""A ``chainrule studio`` run: data, model and a worker thread training it with ``fit``.

The worker calls ``Sequential.fit`` once, for the run's epochs, with one callback, a
``Gate``. The gate is where the worker waits between batches:
before the first batch and after every one it checks the run's state under a condition
variable. Running: it goes on. Paused: it parks until Start or Step (a Step lets exactly one
batch through). Stopped (Reset, a closed tab): it raises ``Stopped``, which ends ``fit``, and
the thread is gone. Learning rate and weight decay changed by PATCH are set on the optimizer
there too, so every batch runs with one rate. Pause answers once the worker is parked, so the
step it reports is the last one.

What the page shows (``studio_views``) is computed by the worker itself, between two batches,
so it always sees one consistent state of the weights: after a batch when its turn has come,
at most UPDATES_PER_S times a second and keeping the views' cost under VIEW_SHARE of the
worker's time, and after every Step and on parking. The metrics are measured on fixed
samples: all the points of a 2-D set, the first TRAIN_VIEW training images and VAL_VIEW test
images. Each update is serialised to JSON once
(``event``); the server sends that text to every page watching the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from pathlib import Path

import numpy as np

from ..callbacks import Callback
from ..fileio import atomic_write
from . import studio_views as views
from .app import APIError
from .studio_data import Data, build_model
from .studio_schemas import RunSettings

UPDATES_PER_S = 10.0
VIEW_SHARE = 0.05
# explain_backward works on a float64 copy of the model (160 ms for the mlp preset on a busy
# core): at most every BACKWARD_EVERY_S seconds, and within BACKWARD_SHARE of the time.
BACKWARD_EVERY_S = 2.0
BACKWARD_SHARE = 0.025
CURVE_POINTS = 2000
CURVE_TAIL = 24
TRAIN_VIEW = {"points": 5000, "images": 200}
VAL_VIEW = {"points": 5000, "images": 300}
PROBE_BATCH = 8
WAIT_S = 30.0

log = logging.getLogger("chainrule.web")

class Stopped(Exception):
    """Raised by the gate inside ``fit`` to end a run's worker (Reset, close)."""


class Gate(Callback):
    """fit's hook into the run: waits for its turn before every batch, records each step."""

    def __init__(self, run: Run):
        self.run = run

    def on_train_begin(self, logs=None):
        self.run._gate()

    def on_batch_end(self, step, logs=None):
        self.run._batch_done(logs or {})
        self.run._gate()

    def on_epoch_end(self, epoch, logs=None):
        self.run.epoch = epoch + 1


class Run:
    """One run of the studio: settings, data, model, the worker and the latest update.

    Args:
        id: the run's id. settings: as validated. data: from ``point_data`` or
            ``image_data``; used: the data settings those returned.
    """

    def __init__(self, id: str, settings: RunSettings, data: Data, used: dict):
        self.id = id
        self.request = settings
        self.data = data
        self.used_data = used
        self._cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.subscribers = 0
        self.watched = False
        self.closed = False
        self.last_seen = time.monotonic()
        self._prepare_views()
        self._fresh()

    # ------------------------------------------------------------------ set-up
    def _prepare_views(self) -> None:
        d = self.data
        n = min(TRAIN_VIEW[d.kind], len(d.y))
        self.train_view = (d.x[:n], d.y[:n])
        n = min(VAL_VIEW[d.kind], len(d.y_val))
        self.val_view = (d.x_val[:n], d.y_val[:n])
        self.grid = None
        if d.kind == "points":
            self.grid, self.extent = views.region_grid(np.concatenate([d.x, d.x_val]))
        self.probe = (d.x[:PROBE_BATCH], d.y[:PROBE_BATCH])

    def _fresh(self) -> None:
        """A new model from the settings, step 0, paused (what Reset returns to)."""
        self.model, self.settings = build_model(self.request, self.data, self.used_data)
        self.state, self.error, self.step, self.epoch = "paused", None, 0, 0
        self.allowance = self.hold = 0
        self.parked, self.stop = False, False
        self.pending: dict = {}
        self.before: dict | None = None
        self.ratios: dict = {}
        self.capture = False
        self.next_view = self.next_backward = 0.0
        self.view_seconds = self.train_started = 0.0
        self.curve: list[dict] = []
        self.points = 0
        self.published_step = -1
        self.published_state: str | None = None
        self.metrics: dict = {}
        self.version = 0
        self.event = ""
        self.steps_per_epoch = self.model.steps_per_epoch(len(self.data.y),
                                                          self.settings["batch_size"])
        self._publish(backward=True)

    # ------------------------------------------------------------------ the worker's side
    def _work(self) -> None:
        try:
            self.model.fit(self.data.x, self.data.y, epochs=self.settings["epochs"],
                           batch_size=self.settings["batch_size"], seed=self.settings["seed"],
                           validation_data=(self.data.x_val, self.data.y_val),
                           callbacks=[Gate(self)], verbose=0)
            outcome, error = "done", None
        except Stopped:
            return
        except Exception as exc:  # divergence, or a bug: shown on the page, not lost
            if not isinstance(exc, FloatingPointError | ValueError | MemoryError):
                log.exception("chainrule studio: run %s failed", self.id)
            outcome, error = "error", f"{type(exc).__name__}: {exc}"
        with self._cond:
            self.state, self.error, self.parked = outcome, error, True
            self._publish(backward=True)
            self._cond.notify_all()

    def _gate(self) -> None:
        """Before a batch: wait for its turn, apply changes, decide whether to capture it."""
        with self._cond:
            self.parked = True
            self._cond.notify_all()
            while True:
                if self.stop:
                    raise Stopped
                if self.hold == 0 and (self.state == "running" or self.allowance > 0):
                    break
                if self.published_step != self.step or self.published_state != self.state:
                    # The last batch, or only the new state: an update made while running
                    # must not be a paused page's last word.
                    self._publish(backward=True)
                self._cond.wait()
            stepping = self.state != "running"
            if stepping:
                self.allowance -= 1
            self.parked = False
            self._apply_pending()
        self.capture = stepping or time.monotonic() >= self.next_view
        if self.capture:
            self.before = {name: p.value.copy() for name, p in views.weight_params(self.model)}

    def _apply_pending(self) -> None:
        optimizer = self.model.optimizer
        if "lr" in self.pending:
            optimizer.lr = self.settings["lr"] = self.pending["lr"]
        if "weight_decay" in self.pending:
            optimizer.weight_decay = self.settings["weight_decay"] = \
                self.pending["weight_decay"]
        self.pending = {}

    def _batch_done(self, logs: dict) -> None:
        self.step += 1
        self.batch_logs = logs
        if self.capture:
            now = time.monotonic()
            self._publish(backward=now >= self.next_backward or self.state != "running")

    def _publish(self, backward: bool) -> None:
        """Compute the views and serialise the update (in the worker, or while it is parked
        or not started). Weights that hold NaN or inf (a diverged run) get no views."""
        start = time.monotonic()
        if all(np.isfinite(p.value).all() for p in self.model.parameters()):
            with np.errstate(all="ignore"):
                event = self._views(backward)
        else:
            event = self._event_head()
            event["metrics"] = self.metrics = {key: None for key in self.metrics}
        self.before = None
        self.event = json.dumps(_json_safe(event), allow_nan=False)
        self.version += 1
        self.published_step = self.step
        self.published_state = event["state"]  # a pause may have come while it was made
        done = time.monotonic()
        cost = done - start
        self.view_seconds += cost
        self.next_view = done + max(1.0 / UPDATES_PER_S, cost * (1.0 - VIEW_SHARE) / VIEW_SHARE)

    def _event_head(self) -> dict:
        return {"id": self.id, "version": self.version + 1, "state": self.state,
                "step": self.step, "epoch": self.epoch, "lr": self.settings["lr"],
                "weight_decay": self.settings["weight_decay"], "metrics": self.metrics,
                "error": self.error, "curve": self.curve[-CURVE_TAIL:]}

    def _views(self, backward: bool) -> dict:
        model, d = self.model, self.data
        logits, relus = views.layer_outputs(model, self.train_view[0])
        train = views.scores(logits, self.train_view[1])
        val_logits, _ = views.layer_outputs(model, self.val_view[0])
        val = views.scores(val_logits, self.val_view[1])
        self.metrics = {"loss": train["loss"], "accuracy": train["accuracy"],
                        "val_loss": val["loss"], "val_accuracy": val["accuracy"]}
        health = views.health(model, self.before, relus)
        # ‖∂L/∂W‖ of the last step, read from the gradients it applied (still in the model)
        # when the update is made, rather than logged after every batch.
        grad_norms = {layer["name"]: layer["grad_norm"] for layer in health["layers"]
                      if layer["grad_norm"] is not None}
        self.curve.append({"i": self.points, "step": self.step, **self.metrics,
                           "grad_norm": grad_norms})
        self.points += 1
        if len(self.curve) > CURVE_POINTS:
            self.curve = self.curve[::2]
        for layer in health["layers"]:  # no step since the last update: its ratio still holds
            if layer["update_ratio"] is None:
                layer["update_ratio"] = self.ratios.get(layer["name"])
            self.ratios[layer["name"]] = layer["update_ratio"]
        event = {**self._event_head(), "health": health,
                 "confusion": views.confusion(self.val_view[1], val["pred"], d.classes)}
        if d.kind == "points":
            grid_logits, _ = views.layer_outputs(model, self.grid)
            event["regions"] = {**views.regions(grid_logits), "extent": self.extent}
        else:
            event["first_layer"] = views.first_layer(model, d.x.shape[-2:])
            event["mistakes"] = views.mistakes(d.x_val[:len(self.val_view[1])],
                                               self.val_view[1], val["probabilities"])
        if backward:
            start = time.monotonic()
            event["backward"] = views.backward_summary(model, *self.probe)
            done = time.monotonic()
            self.next_backward = done + max(BACKWARD_EVERY_S, (done - start) / BACKWARD_SHARE)
        return event

    # ------------------------------------------------------------------ the server's side
    def _wait(self, until, what: str) -> None:
        """Wait (holding the condition) until ``until()``; a 503 APIError after WAIT_S."""
        if not self._cond.wait_for(until, timeout=WAIT_S):
            raise APIError(503, f"the run did not {what} within {WAIT_S:g} s; the server is "
                          "busy, try again")

    def _launch(self) -> None:
        if self.thread is None:
            self.train_started = time.monotonic()
            self.thread = threading.Thread(target=self._work, name=f"studio-{self.id}",
                                           daemon=True)
            self.thread.start()

    def _check_can_train(self, what: str) -> None:
        if self.state in ("done", "error"):
            raise APIError(409, f"cannot {what}: the run is {self.state}"
                          f"{' (' + self.error + ')' if self.error else ''}; reset it to "
                          "train again")

    def start(self) -> None:
        """Train on until paused or done (a run already training goes on)."""
        with self._cond:
            self._check_can_train("start")
            self.state = "running"
            self._launch()
            self._cond.notify_all()

    def pause(self) -> None:
        """Stop before the next batch; returns once the worker is parked."""
        with self._cond:
            if self.state == "running":
                self.state = "paused"
                self._cond.notify_all()
                self._wait(lambda: self.parked or self.state != "paused", "pause")

    def step_once(self) -> None:
        """Train exactly one batch; only while paused. Returns once it is done."""
        with self._cond:
            if self.state == "running":
                raise APIError(409, "cannot step: the run is training; pause it first "
                              f"(POST /api/runs/{self.id}/pause)")
            self._check_can_train("step")
            target = self.step + 1
            self.allowance += 1
            self._launch()
            self._cond.notify_all()
            self._wait(lambda: (self.step >= target and self.parked)
                       or self.state in ("done", "error"), "take its step")

    def change(self, lr: float | None, weight_decay: float | None) -> None:
        """New learning rate and/or weight decay, for every batch from the next on."""
        with self._cond:
            if lr is not None:
                self.pending["lr"] = float(lr)
            if weight_decay is not None:
                self.pending["weight_decay"] = float(weight_decay)
            if self.thread is None or self.parked or not self.thread.is_alive():
                self._apply_pending()
            else:
                self._wait(lambda: not self.pending or self.parked, "apply the change")
                self._apply_pending()

    def close(self) -> None:
        """Stop the worker (within one batch) and wait for it to end."""
        with self._cond:
            self.stop = True
            self._cond.notify_all()
        if self.thread is not None:
            self.thread.join(timeout=WAIT_S)

    def reset(self) -> None:
        """Stop the worker and start over: new weights from the seed, step 0, paused."""
        self.close()
        with self._cond:
            self.thread = None
            self._fresh()

    @contextlib.contextmanager
    def frozen(self):
        """Hold the worker parked (or not started) while the body reads the model."""
        with self._cond:
            self.hold += 1
            try:
                self._wait(lambda: self.thread is None or self.parked
                           or not self.thread.is_alive(), "pause for saving")
            except APIError:
                self.hold -= 1
                raise
        try:
            yield self.model
        finally:
            with self._cond:
                self.hold -= 1
                self._cond.notify_all()

    def describe(self) -> dict:
        """The answer to GET /api/runs/{id} (``RunState``)."""
        d = self.data
        data = {"kind": d.kind, "name": d.name, "classes": d.classes,
                "train_samples": len(d.y), "val_samples": len(d.y_val)}
        if d.kind == "points":
            data["points"] = {"x": np.round(d.x, 4).tolist(), "y": d.y.tolist(),
                              "x_val": np.round(d.x_val, 4).tolist(), "y_val": d.y_val.tolist(),
                              "extent": self.extent}
        return {"id": self.id, "state": self.state, "step": self.step, "epoch": self.epoch,
                "steps_per_epoch": self.steps_per_epoch, "lr": self.model.optimizer.lr,
                "weight_decay": self.model.optimizer.weight_decay, "metrics": self.metrics,
                "settings": dict(self.settings), "data": data,
                "model_summary": self.model.summary(print_fn=None), "error": self.error,
                "curve": self.curve}

    def history(self) -> dict:
        """The per-epoch history of fit so far ({} before the first epoch)."""
        history = self.model.history
        return {k: list(v) for k, v in history.history.items()} if history else {}

    def training_seconds(self) -> float:
        return time.monotonic() - self.train_started if self.train_started else 0.0


def _json_safe(value):
    """``value`` with NaN and ±inf floats (a diverged loss) as None, which JSON can carry."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def save_points_csv(path: Path, data: Data) -> None:
    """The run's points (training then validation) as x1,x2,label rows."""
    x = np.concatenate([data.x, data.x_val])
    y = np.concatenate([data.y, data.y_val])
    lines = ["x1,x2,label", *(f"{a!r},{b!r},{c}" for (a, b), c in
                              zip(x.astype(float).tolist(), y.tolist(), strict=True))]
    text = "\n".join(lines) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
