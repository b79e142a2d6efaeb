"""The JSON shapes of ``chainrule studio``'s API (pydantic models, hence its OpenAPI schema):
the settings of a run, the changes allowed while it trains, and what the API answers."""

from __future__ import annotations

from typing import Any, Literal

from . import WEB_HINT

try:
    from pydantic import BaseModel, ConfigDict, Field, model_validator
except ImportError as exc:  # pragma: no cover - exercised without the web extra
    raise ImportError(f"{WEB_HINT} ({exc})") from exc

POINT_SETS = ("blobs", "xor", "circles", "moons", "spirals")
IMAGE_SETS = ("mnist", "fashion-mnist")
DATASETS = POINT_SETS + IMAGE_SETS
ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu")

# Settings for 2-D points (toy sets and CSV files) and for images, where they differ.
POINT_DEFAULTS = {"hidden": [8, 8], "activation": "tanh", "lr": 0.03, "batch_size": 32,
                  "samples": 400, "epochs": 2000}
IMAGE_DEFAULTS = {"model": "mlp", "hidden": [128], "activation": "relu", "batch_size": 64,
                  "samples": 2000, "epochs": 50}
MAX_POINTS = 5000
MAX_IMAGES = 60000
MAX_POINT_UNITS = 256
MAX_LAYERS = 6


class RunSettings(BaseModel):
    """A run: its data, model and optimizer. Unset fields take the defaults for the data
    (``POINT_DEFAULTS`` or ``IMAGE_DEFAULTS``); the answer to ``GET /api/runs/{id}`` shows
    every setting as used."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"dataset": "spirals", "hidden": [8, 8], "activation": "tanh", "optimizer": "adam",
         "lr": 0.03, "batch_size": 32, "seed": 0},
        {"csv": "x1,x2,label\n0.1,0.2,0\n0.9,0.8,1\n"},
        {"dataset": "mnist", "model": "mlp", "samples": 2000},
    ]})

    dataset: Literal[DATASETS] | None = Field(
        None, description="A 2-D toy set or an image set (default spirals, unless csv is "
        "given).")
    csv: str | None = Field(
        None, description="CSV text of x1,x2,label rows (a header line is allowed) to train "
        "on instead of a dataset; labels 0 … C − 1, at most limits.STUDIO_CSV_ROWS rows.")
    classes: int | None = Field(None, ge=2, le=5,
                                description="Classes of a toy set (2 … 5; xor has 2).")
    noise: float | None = Field(None, ge=0.0, le=2.0, description="Noise of a toy set.")
    samples: int | None = Field(
        None, ge=20, description=f"Points of a toy set (20 … {MAX_POINTS}) or training images "
        f"of an image set (… {MAX_IMAGES}); a quarter as many more are held out for "
        "validation.")
    model: Literal["softmax", "mlp", "cnn"] | None = Field(
        None, description="For image sets: the preset (default mlp). 2-D points always train "
        "an MLP of `hidden` (softmax regression when `hidden` is empty).")
    hidden: list[int] | None = Field(None, max_length=MAX_LAYERS,
                                     description="Units of each hidden layer.")
    activation: Literal[ACTIVATIONS] | None = None
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout after each hidden layer.")
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    lr: float | None = Field(None, gt=0.0, le=10.0, description="Learning rate (constant; "
                             "PATCH changes it while training).")
    batch_size: int | None = Field(None, ge=1, le=1024)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="L2 penalty λ (decoupled "
                                "for adamw); PATCH changes it while training.")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    epochs: int | None = Field(None, ge=1, le=100_000, description="The run is done after "
                               "this many passes over the training data.")

    @model_validator(mode="after")
    def _consistent(self) -> RunSettings:
        if self.csv is not None and self.dataset is not None:
            raise ValueError("send either dataset or csv, not both")
        images = self.dataset in IMAGE_SETS
        if not images and self.model not in (None, "mlp"):
            raise ValueError(f"model {self.model!r} is an image preset; 2-D points train an "
                             "MLP of `hidden` (leave model out)")
        if self.dataset == "xor" and self.classes not in (None, 2):
            raise ValueError(f"xor has 2 classes, got classes={self.classes}")
        if self.csv is not None and (self.classes, self.noise, self.samples) != (None,) * 3:
            raise ValueError("classes, noise and samples describe a toy set; a CSV file "
                             "brings its own points")
        if images and (self.classes is not None or self.noise is not None):
            raise ValueError("classes and noise describe a toy set, not an image set")
        most = MAX_IMAGES if images else MAX_POINTS
        if self.samples is not None and self.samples > most:
            raise ValueError(f"samples must be at most {most:,} for "
                             f"{'an image set' if images else 'a toy set'}, got {self.samples:,}")
        widest = 1024 if images else MAX_POINT_UNITS
        if self.hidden is not None and any(not 1 <= h <= widest for h in self.hidden):
            raise ValueError(f"hidden: every layer needs 1 … {widest} units, got {self.hidden}")
        if images and self.hidden == []:
            raise ValueError("hidden: the mlp preset needs at least one hidden layer "
                             "(model softmax has none)")
        return self


class RunPatch(BaseModel):
    """What may change while a run trains; it applies between two batches."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"lr": 0.01}]})

    lr: float | None = Field(None, gt=0.0, le=10.0)
    weight_decay: float | None = Field(None, ge=0.0, le=1.0)


class RunCreated(BaseModel):
    id: str


class Metrics(BaseModel):
    loss: float | None = Field(None, description="Loss on the fixed training sample.")
    accuracy: float | None = Field(None, description="Accuracy on the fixed training sample.")
    val_loss: float | None = None
    val_accuracy: float | None = Field(None, description="Accuracy on the held-out samples.")


class RunState(BaseModel):
    """Where a run stands. ``step`` counts optimizer steps (batches) since the start."""

    id: str
    state: Literal["paused", "running", "done", "error"]
    step: int
    epoch: int = Field(description="Completed passes over the training data.")
    steps_per_epoch: int
    lr: float = Field(description="The learning rate the optimizer uses now.")
    weight_decay: float
    metrics: Metrics
    settings: dict[str, Any] = Field(description="Every setting as used.")
    data: dict[str, Any] = Field(description="What the run trains on: kind ('points' or "
                                 "'images'), classes, sample counts, and for points the "
                                 "points themselves.")
    model_summary: str
    error: str | None = None
    curve: list[dict[str, Any]] = Field(
        description="The updates so far: step, loss, accuracy, val_loss, val_accuracy and the "
        "gradient norm of every weight matrix (thinned to every other point past 2,000).")


class Saved(BaseModel):
    folder: str = Field(description="The run folder written, under the studio's --runs-dir.")
    files: list[str]
