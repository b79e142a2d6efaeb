"""Preprocessing: one-hot labels, feature scalers, train/test split, and MNIST-style digits."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ..functional import one_hot

__all__ = [
    "MinMaxScaler",
    "StandardScaler",
    "one_hot",
    "preprocess_digit",
    "train_test_split",
]


def _as_float(x, name: str) -> np.ndarray:
    """Float input keeps its dtype; anything else becomes float32 (the library default)."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        if x.dtype.kind not in "biu":
            raise TypeError(f"{name} expected a numeric array, got dtype {x.dtype}")
        x = x.astype(np.float32)
    if x.ndim < 1:
        raise ValueError(f"{name} expected an array of shape (N, ...), got a 0-d array")
    return x


class _Scaler:
    """Shared fit/transform plumbing: statistics over axis 0, one per feature."""

    _fitted_attr = ""

    def _check_fitted(self, method: str) -> None:
        if getattr(self, self._fitted_attr, None) is None:
            name = type(self).__name__
            raise RuntimeError(
                f"{name}.{method} called before fit; call fit(x) or fit_transform(x) first"
            )

    def _check_features(self, x: np.ndarray, method: str) -> None:
        if x.shape[1:] != self.n_features_shape_:
            name = type(self).__name__
            raise ValueError(
                f"{name}.{method} expected input of shape (N, *{self.n_features_shape_}) as in "
                f"fit, got {x.shape}"
            )

    def fit_transform(self, x) -> np.ndarray:
        """Fit to x, then return transform(x)."""
        return self.fit(x).transform(x)


class StandardScaler(_Scaler):
    """Standardize features: z = (x − mean) / std, statistics per feature over axis 0.

    Features with zero variance get scale 1 (they become 0, not NaN). Float inputs keep their
    dtype; integer inputs become float32. Statistics are computed in float64.

    Args:
        with_mean: subtract the mean.
        with_std: divide by the (population, ddof=0) standard deviation.

    Attributes (after fit):
        mean_, var_, scale_: float64 arrays of shape x.shape[1:].
        n_samples_seen_: N used in fit.

    Raises:
        RuntimeError: transform or inverse_transform before fit.
        ValueError: the feature shape differs from the one seen in fit.
    """

    _fitted_attr = "scale_"

    def __init__(self, with_mean: bool = True, with_std: bool = True):
        self.with_mean = with_mean
        self.with_std = with_std
        self.mean_: np.ndarray | None = None
        self.var_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None

    def fit(self, x) -> StandardScaler:
        """Compute per-feature mean and standard deviation of x (N, ...); return self."""
        x64 = _as_float(x, "StandardScaler.fit").astype(np.float64)
        if len(x64) == 0:
            raise ValueError("StandardScaler.fit expected at least one sample, got N=0")
        self.n_features_shape_ = x64.shape[1:]
        self.n_samples_seen_ = len(x64)
        self.mean_ = x64.mean(axis=0)
        self.var_ = x64.var(axis=0)
        # A variance within rounding error of 0 marks a constant feature (scikit-learn's test).
        eps = np.finfo(np.float64).eps
        n = self.n_samples_seen_
        constant = self.var_ <= n * eps * self.var_ + (n * self.mean_ * eps) ** 2
        self.scale_ = np.where(constant, 1.0, np.sqrt(self.var_))
        return self

    def transform(self, x) -> np.ndarray:
        """Return (x − mean_) / scale_, shape and float dtype of x."""
        self._check_fitted("transform")
        x = _as_float(x, "StandardScaler.transform")
        self._check_features(x, "transform")
        out = x.copy()
        if self.with_mean:
            out -= self.mean_.astype(x.dtype)
        if self.with_std:
            out /= self.scale_.astype(x.dtype)
        return out

    def inverse_transform(self, z) -> np.ndarray:
        """Return z · scale_ + mean_, undoing transform."""
        self._check_fitted("inverse_transform")
        z = _as_float(z, "StandardScaler.inverse_transform")
        self._check_features(z, "inverse_transform")
        out = z.copy()
        if self.with_std:
            out *= self.scale_.astype(z.dtype)
        if self.with_mean:
            out += self.mean_.astype(z.dtype)
        return out


class MinMaxScaler(_Scaler):
    """Rescale each feature linearly so that its fitted min/max map to feature_range.

    x' = x · scale_ + min_, with scale_ = (hi − lo) / (data_max_ − data_min_) and
    min_ = lo − data_min_ · scale_. Constant features get range 1 (no NaN). Float inputs keep
    their dtype; integer inputs become float32.

    Args:
        feature_range: (lo, hi) with lo < hi.

    Attributes (after fit):
        data_min_, data_max_, data_range_, scale_, min_: float64 arrays of shape x.shape[1:].

    Raises:
        ValueError: lo >= hi, or the feature shape differs from the one seen in fit.
        RuntimeError: transform or inverse_transform before fit.
    """

    _fitted_attr = "scale_"

    def __init__(self, feature_range: tuple[float, float] = (0.0, 1.0)):
        lo, hi = feature_range
        if not lo < hi:
            raise ValueError(
                f"MinMaxScaler expected feature_range (lo, hi) with lo < hi, got {feature_range}"
            )
        self.feature_range = (float(lo), float(hi))
        self.scale_: np.ndarray | None = None
        self.min_: np.ndarray | None = None

    def fit(self, x) -> MinMaxScaler:
        """Compute per-feature min and max of x (N, ...); return self."""
        x64 = _as_float(x, "MinMaxScaler.fit").astype(np.float64)
        if len(x64) == 0:
            raise ValueError("MinMaxScaler.fit expected at least one sample, got N=0")
        lo, hi = self.feature_range
        self.n_features_shape_ = x64.shape[1:]
        self.n_samples_seen_ = len(x64)
        self.data_min_ = x64.min(axis=0)
        self.data_max_ = x64.max(axis=0)
        self.data_range_ = self.data_max_ - self.data_min_
        safe_range = np.where(self.data_range_ == 0, 1.0, self.data_range_)
        self.scale_ = (hi - lo) / safe_range
        self.min_ = lo - self.data_min_ * self.scale_
        return self

    def transform(self, x) -> np.ndarray:
        """Return x · scale_ + min_, shape and float dtype of x."""
        self._check_fitted("transform")
        x = _as_float(x, "MinMaxScaler.transform")
        self._check_features(x, "transform")
        out = x * self.scale_.astype(x.dtype)
        out += self.min_.astype(x.dtype)
        return out

    def inverse_transform(self, z) -> np.ndarray:
        """Return (z − min_) / scale_, undoing transform."""
        self._check_fitted("inverse_transform")
        z = _as_float(z, "MinMaxScaler.inverse_transform")
        self._check_features(z, "inverse_transform")
        out = z - self.min_.astype(z.dtype)
        out /= self.scale_.astype(z.dtype)
        return out


def _test_count(test_size: float | int, n: int) -> int:
    if isinstance(test_size, (int, np.integer)) and not isinstance(test_size, bool):
        n_test = int(test_size)
    elif isinstance(test_size, (float, np.floating)) and 0.0 < test_size < 1.0:
        n_test = math.ceil(float(test_size) * n)
    else:
        raise ValueError(
            f"expected test_size as a fraction in (0, 1) or a sample count, got {test_size!r}"
        )
    if not 0 < n_test < n:
        raise ValueError(
            f"test_size={test_size!r} gives {n_test} test and {n - n_test} train samples out "
            f"of {n}; both sets need at least one sample"
        )
    return n_test


def _stratified_test_indices(
    classes: np.ndarray, n_test: int, rng: np.random.Generator
) -> np.ndarray:
    """Pick n_test indices so that each class's share matches its share of the whole."""
    values, inverse, counts = np.unique(classes, return_inverse=True, return_counts=True)
    exact = counts * (n_test / len(classes))
    take = np.floor(exact).astype(np.int64)
    short = n_test - int(take.sum())
    if short:
        remainder = exact - take
        order = np.lexsort((rng.random(len(values)), -remainder))
        take[order[:short]] += 1
    picked = []
    for k in range(len(values)):
        members = np.flatnonzero(inverse == k)
        picked.append(rng.permutation(members)[: take[k]])
    return np.concatenate(picked)


def train_test_split(
    *arrays,
    test_size: float | int = 0.2,
    seed: int | None = None,
    shuffle: bool = True,
    stratify=None,
) -> list[np.ndarray]:
    """Split arrays along axis 0 into train and test parts (same rows for every array).

    Args:
        *arrays: one or more arrays with the same length N.
        test_size: fraction of N in (0, 1) (rounded up) or an absolute count.
        seed: seed for np.random.default_rng; same seed, same split.
        shuffle: shuffle before splitting; if False the last rows are the test set.
        stratify: labels (N,); the test set then keeps each class's proportion (±1 sample).

    Returns:
        [a_train, a_test, b_train, b_test, ...] in the order of `arrays`.

    Raises:
        ValueError: no arrays, lengths differ, test_size leaves a set empty, or stratify
            with shuffle=False.
    """
    if not arrays:
        raise ValueError("train_test_split expected at least one array")
    arrays = [np.asarray(a) for a in arrays]
    n = len(arrays[0])
    lengths = [len(a) for a in arrays]
    if any(length != n for length in lengths):
        raise ValueError(f"train_test_split expected arrays of equal length, got {lengths}")
    n_test = _test_count(test_size, n)
    if not shuffle:
        if stratify is not None:
            raise ValueError("stratify needs shuffle=True; stratified splits are random")
        train_idx, test_idx = np.arange(n - n_test), np.arange(n - n_test, n)
    else:
        rng = np.random.default_rng(seed)
        if stratify is None:
            order = rng.permutation(n)
            test_idx, train_idx = order[:n_test], order[n_test:]
        else:
            classes = np.asarray(stratify)
            if len(classes) != n:
                raise ValueError(
                    f"stratify expected {n} labels (one per sample), got {len(classes)}"
                )
            test_idx = rng.permutation(_stratified_test_indices(classes, n_test, rng))
            mask = np.ones(n, dtype=bool)
            mask[test_idx] = False
            train_idx = rng.permutation(np.flatnonzero(mask))
    out: list[np.ndarray] = []
    for a in arrays:
        out.extend((a[train_idx], a[test_idx]))
    return out


_DIGIT_BOX = 20
_FRAME = 28
_BLANK_CONTRAST = 0.1
_INK_THRESHOLD = 0.1


def _require_pil():
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(
            'preprocess_digit needs Pillow; install it with: pip install "chainrule[image]"'
        ) from exc
    return Image


def _load_image(image: Any, Image) -> np.ndarray:
    """Return the image as float32 (H, W) or (H, W, C) with values in [0, 1]."""
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"preprocess_digit: no image file at {path}")
        try:
            with Image.open(path) as opened:
                opened.load()
                return _load_image(opened, Image)
        except (OSError, ValueError, SyntaxError) as exc:
            raise ValueError(
                f"preprocess_digit could not read {path} as an image ({exc}); "
                "expected a PNG, JPEG or other format Pillow can open"
            ) from exc
    if isinstance(image, Image.Image):
        mode = image.mode
        if mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            image = image.convert("F")
            array = np.asarray(image, dtype=np.float32)
            top = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
            return array / np.float32(top)
        has_alpha = "A" in mode or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        return np.asarray(image, dtype=np.float32) / np.float32(255.0)
    array = np.asarray(image)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 2, 3, 4)):
        raise ValueError(
            "preprocess_digit expected a path, a PIL image or an array of shape (H, W) or "
            f"(H, W, 1|2|3|4), got shape {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"preprocess_digit got an empty image of shape {array.shape}")
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype.kind in "iu":
        top = 255.0 if array.dtype.itemsize == 1 or array.max() <= 255 else 65535.0
        return array.astype(np.float32) / np.float32(top)
    if array.dtype.kind == "f":
        array = np.nan_to_num(array.astype(np.float32))
        if array.max() > 1.0:
            array = array / np.float32(255.0)
        return np.clip(array, 0.0, 1.0)
    raise TypeError(f"preprocess_digit expected a numeric image, got dtype {array.dtype}")


def _to_gray(pixels: np.ndarray) -> np.ndarray:
    """Luma (ITU-R 601-2, as Pillow's 'L') with any alpha composited on white."""
    if pixels.ndim == 2:
        return pixels
    channels = pixels.shape[2]
    alpha = pixels[..., -1] if channels in (2, 4) else None
    if channels >= 3:
        gray = pixels[..., 0] * 0.299 + pixels[..., 1] * 0.587 + pixels[..., 2] * 0.114
    else:
        gray = pixels[..., 0]
    if alpha is not None:
        gray = gray * alpha + (1.0 - alpha)
    return gray.astype(np.float32)


def _border(gray: np.ndarray) -> np.ndarray:
    width = max(1, min(gray.shape) // 20)
    return np.concatenate(
        [
            gray[:width].ravel(),
            gray[-width:].ravel(),
            gray[:, :width].ravel(),
            gray[:, -width:].ravel(),
        ]
    )


def preprocess_digit(image: Any, invert: bool | None = None) -> np.ndarray:
    """Turn a picture of one handwritten digit into an MNIST-style 28×28 input.

    Follows MNIST's own normalization: grayscale (alpha composited on white); ink made bright
    on a dark background (inverted when the border is light); background level subtracted
    and contrast stretched so the darkest ink is 1; cropped to the ink's bounding box;
    resized (Lanczos, antialiased) so the longer side is 20 px, keeping the aspect ratio;
    pasted into a black 28×28 frame so the ink's centre of mass lands on pixel (14, 14)
    (integer shift, clipped to stay inside the frame).

    Args:
        image: a file path, a PIL image, or an array (H, W) / (H, W, 3) / (H, W, 4) of any
            size; uint8 (0..255), bool, or float (0..1, or 0..255 when the max exceeds 1).
        invert: True/False to force the ink polarity decision (True: dark ink on a light
            background); None decides from the median of the border pixels.

    Returns:
        (28, 28) float32 in [0, 1], ink bright. An image with no ink gives all zeros.

    Raises:
        ImportError: Pillow is not installed.
        FileNotFoundError: the path does not exist.
        ValueError: the file is not a readable image, or the array has an unsupported shape.
    """
    Image = _require_pil()
    gray = _to_gray(_load_image(image, Image))
    if invert is None:
        invert = bool(np.median(_border(gray)) > 0.5)
    ink = 1.0 - gray if invert else gray
    background = float(np.median(_border(ink)))
    ink = np.clip(ink - background, 0.0, None)
    peak = float(ink.max())
    frame = np.zeros((_FRAME, _FRAME), dtype=np.float32)
    if peak < _BLANK_CONTRAST:
        return frame
    ink = (ink / peak).astype(np.float32)

    rows = np.flatnonzero((ink > _INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink > _INK_THRESHOLD).any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    factor = _DIGIT_BOX / max(h, w)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    resized = Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS)
    digit = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)

    mass = float(digit.sum())
    if mass <= 0.0:
        return frame
    dh, dw = digit.shape
    cy = float((digit.sum(axis=1) * np.arange(dh)).sum()) / mass
    cx = float((digit.sum(axis=0) * np.arange(dw)).sum()) / mass
    top = min(max(math.floor(_FRAME / 2 - cy + 0.5), 0), _FRAME - dh)
    left = min(max(math.floor(_FRAME / 2 - cx + 0.5), 0), _FRAME - dw)
    frame[top : top + dh, left : left + dw] = digit
    return frame
