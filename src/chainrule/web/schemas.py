"""The JSON shapes of ``chainrule serve``'s API (pydantic models, hence its OpenAPI schema),
and the validation of ``pixels``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np

from . import WEB_HINT
from .explain import PIXELS, SIDE

try:
    from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
except ImportError as exc:  # pragma: no cover - exercised without the web extra
    raise ImportError(f"{WEB_HINT} ({exc})") from exc

Pixel = Annotated[float, Field(ge=0.0, le=1.0)]
Image28 = Annotated[
    list[Annotated[list[float], Field(min_length=SIDE, max_length=SIDE)]],
    Field(min_length=SIDE, max_length=SIDE, description="28 rows of 28 values"),
]
Explanation = Literal["saliency", "units", "neighbours"]


class PredictRequest(BaseModel):
    """One digit: a picture (``image``) or the 784 pixel values (``pixels``), not both."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [{"required": ["image"]}, {"required": ["pixels"]}],
            "examples": [
                {"image": "data:image/png;base64,iVBORw0KGgo…", "explain": ["saliency"]},
                {"pixels": [0.0] * PIXELS},
            ],
        },
    )

    # Both default to None but are not nullable in the schema: send one, leave out the other.
    image: str = Field(
        None,
        description="A picture of one digit, any size: a data URL "
        "('data:image/png;base64,…') or plain base64 of a PNG, JPEG, GIF, BMP or WebP file. "
        "It goes through preprocess_digit, as in `chainrule predict`.",
    )
    pixels: (
        Annotated[list[Pixel], Field(min_length=PIXELS, max_length=PIXELS)]
        | Annotated[
            list[Annotated[list[Pixel], Field(min_length=SIDE, max_length=SIDE)]],
            Field(min_length=SIDE, max_length=SIDE),
        ]
    ) = Field(
        None,
        description="An already MNIST-style digit: 784 numbers, or 28 rows of 28, in [0, 1] "
        "with the ink bright (1) on a black (0) background. Used as given, not preprocessed.",
    )
    explain: list[Explanation] = Field(
        default_factory=list,
        description="Extras to compute: 'saliency' (∂logit/∂input of the predicted class), "
        "'units' (softmax templates or the most active first-layer units), 'neighbours' (the "
        "5 nearest training digits).",
    )

    @field_validator("pixels", mode="before")
    @classmethod
    def _check_pixels(cls, value: Any) -> Any:
        return pixels_array(value).ravel().tolist()

    @model_validator(mode="after")
    def _one_input(self) -> PredictRequest:
        if (self.image is None) == (self.pixels is None):
            raise ValueError(
                'give exactly one of "image" (a data URL or base64 picture) and "pixels" '
                "(784 numbers in [0, 1])"
            )
        return self


class Unit(BaseModel):
    unit: int = Field(description="column j of the first Dense layer's W; its image is unit j "
                      "of GET /api/model/units")
    activation: float = Field(description="its value for this input (a logit for templates)")


UnitKind = Literal["templates", "hidden"]


class Units(BaseModel):
    kind: UnitKind = Field(
        description="'templates': the C columns of a softmax regression's W with their logits; "
        "'hidden': the first hidden layer's most active units, largest first",
    )
    layer: str
    units: list[Unit]


class UnitImage(BaseModel):
    unit: int = Field(description="column j of the first Dense layer's W")
    weights: Image28 = Field(description="column j as a 28×28 image")


class UnitWeights(BaseModel):
    kind: UnitKind
    layer: str
    units: list[UnitImage] = Field(description="every unit, in order j = 0, 1, …")


class Neighbour(BaseModel):
    index: int = Field(description="index in the training set")
    label: int
    distance: float = Field(description="Euclidean distance on the 784 values in [0, 1]")
    image: Image28


class PredictResponse(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_: int = Field(alias="class", ge=0, description="the predicted class (argmax)")
    probabilities: list[float] = Field(description="one per class, summing to 1")
    input: Image28 = Field(description="the 28×28 image the model received, ink 1")
    empty: bool = Field(description="true when the picture had no ink (the input is all 0)")
    saliency: Image28 | None = Field(
        None, description="∂z_c/∂x: the predicted class's logit w.r.t. each input pixel",
    )
    units: Units | None = None
    neighbours: list[Neighbour] | None = None
    notes: list[str] = Field(default_factory=list, description="why an extra is missing")


class LayerInfo(BaseModel):
    name: str
    type: str
    output_shape: list[int]
    parameters: int


class NeighboursInfo(BaseModel):
    available: bool
    count: int
    dataset: str | None = Field(None, description="e.g. 'mnist' (its training images)")
    sha256: str | None = Field(None, description="of the images file searched, when known")
    reason: str | None = None


class DataFile(BaseModel):
    split: str = Field(description="e.g. 'train_images'")
    file: str | None = Field(description="the file's name, without its folder")
    sha256: str | None


class TrainingData(BaseModel):
    dataset: str | None = Field(description="e.g. 'mnist', or the name of a dataset folder")
    files: list[DataFile]


class ModelInfo(BaseModel):
    name: str
    dtype: str
    input_shape: list[int]
    classes: int
    parameters: int
    layers: list[LayerInfo]
    summary: str
    units: UnitKind | None = Field(
        description="what 'explain': ['units'] returns for this model (None: not available)",
    )
    test_accuracy: float | None = Field(description="from manifest.json next to the model")
    training_data: TrainingData | None = Field(
        description="what the run was trained on, from manifest.json: names and hashes only",
    )
    neighbours: NeighboursInfo
    version: str


class Health(BaseModel):
    status: Literal["ok"]


class ErrorBody(BaseModel):
    detail: str


ERRORS = {
    400: {"model": ErrorBody, "description": "Host header naming another server"},
    408: {"model": ErrorBody, "description": "body not received in time"},
    413: {"model": ErrorBody, "description": "body larger than the limit (1 MB)"},
    415: {"model": ErrorBody, "description": "body not sent as application/json"},
    422: {"model": ErrorBody, "description": "malformed JSON, wrong fields or values, "
          "unreadable image"},
    503: {"model": ErrorBody, "description": "the worker process reading the picture died"},
}


def pixels_array(value: Any) -> np.ndarray:
    """Validate ``pixels`` as sent (784 numbers or 28 rows of 28) and return a (28, 28) float32.

    Raises:
        ValueError: with the first problem found (shape, a non-number, NaN/inf, range).
    """
    if not isinstance(value, list):
        raise ValueError(
            f"expected a list of {PIXELS} numbers or {SIDE} lists of {SIDE} numbers, "
            f"got {_kind(value)}"
        )
    if value and all(isinstance(row, list) for row in value):
        lengths = sorted({len(row) for row in value})
        if len(value) != SIDE or lengths != [SIDE]:
            raise ValueError(
                f"expected {SIDE} rows of {SIDE} numbers, got {len(value)} rows "
                f"of length{'s' if len(lengths) > 1 else ''} {', '.join(map(str, lengths))}"
            )
        flat = [v for row in value for v in row]
    else:
        flat = value
        if len(flat) != PIXELS:
            raise ValueError(
                f"expected {PIXELS} numbers (28×28, row by row), got {len(flat)}"
            )
    for i, v in enumerate(flat):
        if type(v) not in (int, float):
            raise ValueError(f"expected numbers only, value {i} is {_kind(v)}")
    array = np.asarray(flat, dtype=np.float64)
    finite = np.isfinite(array)
    if not finite.all():
        raise ValueError(
            f"expected finite numbers, {int((~finite).sum())} of {PIXELS} values are "
            "NaN or infinite"
        )
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        hint = " (divide 0..255 bytes by 255)" if high <= 255.0 and low >= 0.0 else ""
        raise ValueError(
            f"expected values in [0, 1] (ink 1, background 0), got values from {low:g} to "
            f"{high:g}{hint}"
        )
    return array.astype(np.float32).reshape(SIDE, SIDE)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", str: "a string", dict: "an object", list: "a list"}
    return names.get(type(value), f"a {type(value).__name__}")
