"""Preprocessing: one-hot labels, feature scalers, train/test split, and MNIST-style digits."""

from __future__ import annotations

import math
import os
import re
import threading
import warnings
from typing import Any

import numpy as np

from ..functional import one_hot
from .imageops import (
    box_filter,
    connected_components,
    max_filter,
    noise_sigma,
    opening,
    otsu_threshold,
    pad_edge,
)

__all__ = [
    "MAX_IMAGE_PIXELS",
    "ImageTooLargeError",
    "MinMaxScaler",
    "StandardScaler",
    "check_image_size",
    "one_hot",
    "open_image",
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


# ---------------------------------------------------------------------- pictures of one digit
# The most pixels (width × height, as the file declares it) a picture may have: 16.8 million,
# a 4096 × 4096 image or a 12-megapixel phone photo. Checked before any pixel is decoded, by
# preprocess_digit (chainrule predict) and by chainrule serve.
MAX_IMAGE_PIXELS = 4096 * 4096

_WORK_SIDE = 1024      # pictures are reduced while decoding to at most this longer side
_SEG_SIDE = 320        # the ink is found on a copy with at most this longer side
_BACKGROUND_SIDE = 64  # the paper's level is estimated on a copy with at most this shorter side
_DIGIT_BOX = 20
_FRAME = 28
_BLANK_CONTRAST = 0.1  # ink fainter than this (on 0..1) is no ink
_INK_THRESHOLD = 0.1   # the crop's box holds the ink above this fraction of its level
_STRONG_SIGMAS = 6.0   # strong ink stands this many noise σ above the paper
_WEAK_SIGMAS = 3.0     # weak ink (a stroke's anti-aliased edge) this many
_FLOOR_SIGMAS = 2.0    # ink within this many σ of the paper becomes 0
_ROUNDING = 1.5 / 255  # a σ below this is the rounding of 8-bit pictures: no noise floor
_bomb_lock = threading.Lock()


def _require_pil():
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(
            'preprocess_digit needs Pillow; install it with: pip install "chainrule[image]"'
        ) from exc
    return Image


class ImageTooLargeError(ValueError):
    """A picture of more than MAX_IMAGE_PIXELS pixels; the message names its size and the limit."""

    def __init__(self, size: str, source: str | None = None):
        self.size = size
        where = f"{source}: " if source else ""
        super().__init__(
            f"{where}the picture is too large: {size}, more than the limit of "
            f"{MAX_IMAGE_PIXELS:,} pixels (chainrule.data.MAX_IMAGE_PIXELS); scale it down first"
        )


def check_image_size(width: int, height: int) -> None:
    """Refuse a picture of more than MAX_IMAGE_PIXELS pixels.

    Raises:
        ImageTooLargeError (a ValueError): width × height > MAX_IMAGE_PIXELS.
    """
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLargeError(f"{width} × {height} = {width * height:,} pixels")


def open_image(source):
    """Open a picture, check its declared size before decoding, and decode it reduced.

    Only the header is read before the declared width × height is checked against
    MAX_IMAGE_PIXELS (Pillow's own decompression-bomb error becomes the same
    ImageTooLargeError; its warning is not shown). A JPEG is then decoded at 1/2, 1/4 or 1/8
    scale when that still covers the working resolution (``Image.draft``), and every picture
    is reduced (box filter) so its longer side is at most 1024 px. Memory stays proportional
    to the working resolution, plus for formats that cannot decode at a lower scale (PNG,
    GIF, …) one decoded copy at one byte per channel: at most 64 MB.

    Args:
        source: a path or a binary file object (e.g. io.BytesIO of an image file's bytes).

    Returns:
        A loaded PIL image, longer side at most 1024 px.

    Raises:
        ImportError: Pillow is not installed.
        ImageTooLargeError (a ValueError): the picture declares more than MAX_IMAGE_PIXELS
            pixels.
        PIL.UnidentifiedImageError, OSError, …: what Pillow raises for a file that is not a
            readable picture.
    """
    Image = _require_pil()
    picture = _open_header(source, Image)
    try:
        check_image_size(*picture.size)
        target = _shrunk(picture.size, _WORK_SIDE)
        if target != picture.size and picture.format == "JPEG":
            picture.draft(picture.mode, target)
        picture.load()
        return _reduce(picture, Image)
    except BaseException:
        picture.close()
        raise


def declared_size(source) -> tuple[int, int]:
    """The (width, height) that a picture's header declares; no pixel is decoded.

    Raises:
        ImageTooLargeError: beyond Pillow's own decompression-bomb limit (178 million pixels).
        PIL.UnidentifiedImageError, OSError, …: for a file that is not a readable picture.
    """
    with _open_header(source, _require_pil()) as picture:
        return picture.size


def _open_header(source, Image):
    """Image.open: reads the header only, with Pillow's bomb error as ImageTooLargeError."""
    # Pillow warns above its own limit (89 million pixels; ours, far lower, then refuses the
    # picture naming its width and height) and raises above twice that. catch_warnings
    # changes process-wide state: the lock keeps our own threads (serve decodes in a thread
    # pool) from restoring each other's filters out of order.
    with _bomb_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(source)
        except Image.DecompressionBombError as exc:
            # Pillow names the pixel count only: "Image size (N pixels) exceeds limit …".
            declared = re.search(r"\((\d+) pixels\)", str(exc))
            raise ImageTooLargeError(
                f"{int(declared.group(1)):,} pixels declared" if declared
                else f"Pillow refused it as a decompression bomb ({exc})"
            ) from None


def _shrunk(size: tuple[int, int], side: int) -> tuple[int, int]:
    """size (either order) scaled down so its larger entry is at most side."""
    longer = max(size)
    if longer <= side:
        return tuple(size)
    return tuple(max(1, round(n * side / longer)) for n in size)


def _reduce(picture, Image):
    """The PIL picture with its longer side at most _WORK_SIDE (box filter)."""
    target = _shrunk(picture.size, _WORK_SIDE)
    if target == picture.size:
        return picture
    if picture.mode in ("1", "P", "PA") or picture.mode.startswith("I;16"):
        # Pillow resizes these modes by nearest neighbour only.
        picture = picture.convert(_working_mode(picture))
    return picture.resize(target, Image.Resampling.BOX)


def _working_mode(picture) -> str:
    if picture.mode.startswith("I;16"):
        return "I"
    if picture.mode == "1":
        return "L"
    has_alpha = "A" in picture.mode or "transparency" in picture.info
    return "RGBA" if has_alpha else "RGB"


def _load_image(image: Any, Image) -> np.ndarray:
    """Return the image as float32 (H, W) or (H, W, C) with values in [0, 1]; a path or a PIL
    image comes reduced to the working resolution (an array is reduced once it is grey)."""
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"preprocess_digit: no image file at {path}")
        try:
            opened = open_image(path)
        except ImageTooLargeError as exc:
            raise ImageTooLargeError(exc.size, path) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise ValueError(
                f"preprocess_digit could not read {path} as an image ({exc}); "
                "expected a PNG, JPEG or other format Pillow can open"
            ) from exc
        with opened:
            return _load_image(opened, Image)
    if isinstance(image, Image.Image):
        from PIL import ImageOps

        check_image_size(*image.size)
        sixteen_bit = image.mode.startswith("I;16")
        # A phone stores a photo as the sensor saw it, with an EXIF tag saying how to turn it.
        image = ImageOps.exif_transpose(_reduce(image, Image))
        mode = image.mode
        if mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            image = image.convert("F")
            array = np.asarray(image, dtype=np.float32)
            if not np.isfinite(array).all():
                raise ValueError("the image holds NaN or inf values; save it with finite "
                                 "pixel values (e.g. as an 8-bit PNG)")
            top = 65535.0 if sixteen_bit or mode.startswith("I;16") or array.max() > 255 else 255.0
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
    check_image_size(array.shape[1], array.shape[0])
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
    """Luma (ITU-R 601-2, as Pillow's 'L') with any alpha composited on white, or on black
    when most of the picture is transparent and what is drawn on it is light."""
    if pixels.ndim == 2:
        return pixels
    channels = pixels.shape[2]
    alpha = pixels[..., -1] if channels in (2, 4) else None
    if channels >= 3:
        gray = pixels[..., 0] * 0.299 + pixels[..., 1] * 0.587 + pixels[..., 2] * 0.114
    else:
        gray = pixels[..., 0]
    if alpha is None or float(alpha.min()) == 1.0:  # opaque: nothing shows through
        return gray.astype(np.float32)
    drawn = float(alpha.sum())
    light = float((gray * alpha).sum()) > 0.5 * drawn
    backdrop = 0.0 if 0 < drawn < 0.5 * alpha.size and light else 1.0
    return (gray * alpha + backdrop * (1.0 - alpha)).astype(np.float32)


def _resize(a: np.ndarray, shape: tuple[int, int], Image, resample) -> np.ndarray:
    """A float32 (H, W) array resized to shape (rows, cols) by Pillow ('F' mode)."""
    if a.shape == tuple(shape):
        return a
    out = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32)).resize(
        (shape[1], shape[0]), resample)
    return np.asarray(out, dtype=np.float32)


def _ink_is_dark(gray: np.ndarray) -> bool:
    """Dark ink on light paper? The paper's level is the median of the four sides' medians
    (strips 1/20 of the shorter side wide: a table along one side is outvoted); the ink is the
    extreme farther from it, darker or lighter, among regions that do not lie along a side
    (see ``_lies_along``): a white table beside a grey sheet is not light ink."""
    width = max(1, min(gray.shape) // 20)
    sides = [gray[:width], gray[-width:], gray[:, :width], gray[:, -width:]]
    paper = float(np.median([np.median(side) for side in sides]))
    smooth = box_filter(gray, 3) if min(gray.shape) >= 3 else gray
    darker, lighter = paper - smooth, smooth - paper
    if float(darker.max()) <= 0 or float(lighter.max()) <= 0:
        # Nothing on one side of the paper (a drawing on white): that side's _extreme is
        # (0, its max ≤ 0), and the comparison below is the two maxima's whatever the other's
        # regions are, so they need not be found.
        return float(darker.max()) > float(lighter.max())
    dark, bright = _extreme(darker), _extreme(lighter)
    if dark[0] == bright[0]:  # e.g. both 0: every stroke lies along a side
        return dark[1] > bright[1]
    return dark[0] > bright[0]


def _extreme(deviation: np.ndarray) -> tuple[float, float]:
    """(largest deviation outside the regions above a quarter of the largest one that lie
    along a side, largest deviation)."""
    top = float(deviation.max())
    if top <= 0:
        return 0.0, top
    labels, n = connected_components(deviation > 0.25 * top)
    keep = ~_lies_along(labels, n)
    keep[0] = False
    inside = keep[labels]
    return (float(deviation[inside].max()) if inside.any() else 0.0), top


def _lies_along(labels: np.ndarray, n: int) -> np.ndarray:
    """Bool (n + 1,): the components that cover 25% of a side of the picture (a table, a
    shadow, a lighting gradient's dark end: not a stroke)."""
    h, w = labels.shape
    along = [np.bincount(edge.ravel(), minlength=n + 1)
             for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1])]
    return ((along[0] >= 0.25 * w) | (along[1] >= 0.25 * w)
            | (along[2] >= 0.25 * h) | (along[3] >= 0.25 * h))


def _background(seg: np.ndarray, Image) -> np.ndarray:
    """The paper under the ink: a grey opening with a square of half the shorter side.

    The paper varies slowly, so the opening runs on a copy with block means down to at most
    _BACKGROUND_SIDE px on the shorter side (then enlarged bilinearly), smoothed by a box of
    1/16 of the shorter side (noise and grain would pull the opening's minima down) and
    extended past its edges by a square's width of the edge values: the erosion of a lighting
    gradient then reaches the padding's plateau and the dilation restores the gradient up to
    the border (with each filter padding on its own, the background would sag there by half a
    square's worth of gradient).
    """
    longer_side = _BACKGROUND_SIDE * max(seg.shape) // min(seg.shape)
    coarse = _resize(seg, _shrunk(seg.shape, longer_side), Image, Image.Resampling.BOX)
    k = max(1, min(coarse.shape) // 2)
    smooth = box_filter(coarse, max(1, k // 8))
    background = opening(pad_edge(smooth, k, k), k)[k:-k, k:-k]
    return _resize(background, seg.shape, Image, Image.Resampling.BILINEAR)


def _find_digit(seg: np.ndarray, Image):
    """Steps 5–7 of preprocess_digit on the segmentation copy (ink bright).

    Returns:
        None for a blank picture, else (background, support, strong, sigma): the paper's
        level (H, W) float32, the digit's pixels grown by one (H, W) bool, its strong pixels,
        and the noise σ of seg − background.
    """
    background = _background(seg, Image)
    residual = seg - background
    peak = float(residual.max())
    sigma = noise_sigma(residual)
    otsu = otsu_threshold(residual)
    # The paper's residual level: the median, or the median below Otsu's cut when that cut
    # separates two classes (not noise) and the upper one, the ink, covers most of the
    # picture (a bold digit drawn to the canvas's edges).
    paper = float(np.median(residual))
    if paper > otsu:
        below, above = residual[residual <= otsu], residual[residual > otsu]
        if float(above.mean() - below.mean()) > _STRONG_SIGMAS * sigma:
            paper = float(np.median(below))
    if peak < _BLANK_CONTRAST or peak - paper < _STRONG_SIGMAS * sigma:
        return None
    # Otsu's cut falls into the noise when the ink is a tiny fraction of the picture: the
    # noise level and a fifth of the peak bound it from below.
    strong = residual > max(otsu, paper + _STRONG_SIGMAS * sigma, 0.2 * peak)
    level = float(np.percentile(residual[strong], 99)) if strong.any() else peak
    weak = residual > max(paper + _WEAK_SIGMAS * sigma, _INK_THRESHOLD * level)
    labels, n = connected_components(weak | strong)
    support = _select_components(labels, n, residual, strong, clean=sigma == 0)[labels]
    if not support.any():
        return None
    support = max_filter(support, 3)
    return background, support, strong & support, sigma


def _select_components(labels: np.ndarray, n: int, residual: np.ndarray,
                       strong: np.ndarray, clean: bool) -> np.ndarray:
    """Bool (n + 1,): the components that make up the digit (index 0, the background: False).

    A component counts only if it holds a strong pixel (the rest are specks). One that lies
    along 25% of a side of the picture is a table or a shadow, and one that touches the edge
    and spans 90% of the picture's width or height is a sheet edge or a ruled line, unless
    nothing else is left in a clean (noise-free) picture: a stroke drawn from edge to edge of
    a canvas. In a photo that leaves a blank sheet blank. The digit is the heaviest (most
    ink mass) remaining component plus every component whose box comes within a quarter of the
    digit's size of the digit's box and holds at least 1% of its mass (a 5's detached bar, a
    4's open top); those may touch the edge only if the digit does.
    """
    h, w = labels.shape
    flat = labels.ravel()
    count = n + 1
    inside = np.flatnonzero(flat)
    mass = np.bincount(flat[inside], weights=residual.ravel()[inside], minlength=count)
    has_strong = np.zeros(count, dtype=bool)
    has_strong[flat[strong.ravel()]] = True
    ys, xs = np.divmod(inside, w)
    top, left = np.full(count, h), np.full(count, w)
    bottom, right = np.full(count, -1), np.full(count, -1)
    np.minimum.at(top, flat[inside], ys)
    np.minimum.at(left, flat[inside], xs)
    np.maximum.at(bottom, flat[inside], ys)
    np.maximum.at(right, flat[inside], xs)
    touches = (top == 0) | (left == 0) | (bottom == h - 1) | (right == w - 1)
    spans = (bottom - top + 1 >= 0.9 * h) | (right - left + 1 >= 0.9 * w)
    candidate = has_strong & ~_lies_along(labels, n)
    candidate[0] = False
    if not clean or (candidate & ~(touches & spans)).any():
        candidate &= ~(touches & spans)
    chosen = np.zeros(count, dtype=bool)
    if not candidate.any():
        return chosen
    main = int(np.argmax(np.where(candidate, mass, -1.0)))
    chosen[main] = True
    heavy = candidate & (mass >= 0.01 * mass[main])
    if not touches[main]:
        heavy &= ~touches
    box = [top[main], left[main], bottom[main], right[main]]
    for _ in range(3):  # the box grows with each neighbour taken in
        reach = 0.25 * max(box[2] - box[0] + 1, box[3] - box[1] + 1)
        near = (heavy & ~chosen & (top <= box[2] + reach) & (bottom >= box[0] - reach)
                & (left <= box[3] + reach) & (right >= box[1] - reach))
        if not near.any():
            break
        chosen |= near
        box = [top[chosen].min(), left[chosen].min(), bottom[chosen].max(), right[chosen].max()]
    return chosen


def _normalized_ink(gray: np.ndarray, background: np.ndarray, support: np.ndarray,
                    strong: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Step 8 of preprocess_digit at the working resolution: (H, W) float32 in [0, 1].
    ``sigma``: noise_sigma(gray − background) when the caller has it."""
    ink = gray - background
    sigma = noise_sigma(ink) if sigma is None else sigma
    sigma = sigma if sigma > _ROUNDING else 0.0
    paper = ink[~support]
    floor = (float(np.median(paper)) if paper.size else 0.0) + _FLOOR_SIGMAS * sigma
    core = ink[strong]
    if core.size:
        # The 99th percentile of the strong ink less the 99th percentile of its noise (2.33σ):
        # the level of the strokes' cores, which MNIST saturates at 1.
        level = max(float(np.percentile(core, 99)) - 2.33 * sigma, float(np.median(core)))
    else:
        level = float(ink[support].max())
    if level <= floor:
        return np.zeros_like(ink)
    ink = np.clip((ink - floor) / (level - floor), 0.0, 1.0)
    return np.where(support, ink, 0.0).astype(np.float32)


def _mnist_frame(ink: np.ndarray, Image) -> np.ndarray:
    """Step 9 of preprocess_digit: crop, resize into the 20-px box, centre of mass at (14, 14)."""
    frame = np.zeros((_FRAME, _FRAME), dtype=np.float32)
    rows = np.flatnonzero((ink > _INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink > _INK_THRESHOLD).any(axis=0))
    if rows.size == 0:
        return frame
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


def preprocess_digit(image: Any, invert: bool | None = None) -> np.ndarray:
    """Turn a picture of one handwritten digit into an MNIST-style 28×28 input.

    A photo (a digit of any size anywhere on a larger page, either polarity, paper grain and
    sensor noise, uneven light, blur, JPEG, a table beyond the sheet's edge) has its ink
    separated from the paper first; a clean picture (a drawing, an MNIST digit) comes out as
    MNIST's own normalization alone would make it.

    1. Decoding: the declared size is checked (at most MAX_IMAGE_PIXELS pixels) before any
       pixel is decoded, and the picture is decoded reduced to a longer side of at most
       1024 px (see ``open_image``) and turned upright as its EXIF orientation says; an array
       is reduced the same way once it is grey.
    2. Grey: luma; alpha composited on white (on black for light strokes on a mostly
       transparent picture).
    3. Segmentation copy: block means down to a longer side of at most 320 px (noise averages
       out: a 1000-px photo is segmented at 1/3 scale).
    4. Polarity: the paper's level is the median of the four sides' medians (a table along
       one side is outvoted); the ink is the extreme of the picture farther from it, among
       regions that do not lie along a side. A picture with dark ink is inverted, so the ink
       is bright from here on.
    5. Background: a grey opening (a min then a max filter) with a square of half the shorter
       side, on a box-smoothed copy of at most 64 px on the shorter side extended past its
       edges (then enlarged bilinearly): the strokes, thinner than the square, vanish; flat
       paper, a lighting gradient, a table along a side and shadows wider than the square
       stay. The residual (copy − background) is the ink.
    6. Thresholds: the noise σ from the median second difference of neighbouring pixels;
       strong ink above Otsu's threshold of the residual (and 6σ above the paper, and a
       fifth of the peak), weak ink above 3σ (and 10% of the strong ink's level). No ink
       10% brighter than the paper and 6σ above its noise: a blank picture, all zeros.
    7. Components: the 8-connected components of weak ink that hold strong ink (hysteresis);
       specks and border structures (a table's edge, a ruled line clear of the digit)
       dropped; the digit is the heaviest component with its near neighbours (see
       ``_select_components``).
    8. Ink at the working resolution: the picture minus the background (bilinearly
       enlarged), kept on the digit's components (grown by a segmentation pixel), scaled so
       the strokes' cores (99th percentile of the strong ink, less the noise's) are 1 and the
       paper around them (median) plus 2σ is 0, clipped to [0, 1]. The anti-aliased grey
       levels in between stay.
    9. MNIST's normalization: cropped to the box of the ink above 10%; resized (Lanczos,
       antialiased) so the longer side is 20 px, keeping the aspect ratio; pasted into a black
       28×28 frame so the ink's centre of mass lands on pixel (14, 14) (integer shift, clipped
       to stay inside the frame).

    All whole-array NumPy and Pillow work, no loop over pixels: a 1000×1000 photo takes
    tens of milliseconds.

    Args:
        image: a file path, a PIL image, or an array (H, W) / (H, W, 3) / (H, W, 4) of at most
            MAX_IMAGE_PIXELS pixels; uint8 (0..255), bool, or float (0..1, or 0..255 when the
            max exceeds 1).
        invert: True/False to force the polarity (True: dark ink on a light background);
            None decides as in step 4.

    Returns:
        (28, 28) float32 in [0, 1], ink bright. A picture with no ink (blank, uniform noise,
        an empty sheet on a table) gives all zeros.

    Raises:
        ImportError: Pillow is not installed.
        FileNotFoundError: the path does not exist.
        ImageTooLargeError (a ValueError): more than MAX_IMAGE_PIXELS pixels.
        ValueError: the file is not a readable image, or the array has an unsupported shape.
    """
    Image = _require_pil()
    gray = _to_gray(_load_image(image, Image))
    gray = _resize(gray, _shrunk(gray.shape, _WORK_SIDE), Image, Image.Resampling.BOX)
    seg = _resize(gray, _shrunk(gray.shape, _SEG_SIDE), Image, Image.Resampling.BOX)
    if invert is None:
        invert = _ink_is_dark(seg)
    if invert:
        gray, seg = 1.0 - gray, 1.0 - seg
    found = _find_digit(seg, Image)
    if found is None:
        return np.zeros((_FRAME, _FRAME), dtype=np.float32)
    background, support, strong, sigma = found
    if seg.shape != gray.shape:
        background = _resize(background, gray.shape, Image, Image.Resampling.BILINEAR)
        support, strong = (_resize(m.astype(np.float32), gray.shape, Image,
                                   Image.Resampling.NEAREST) > 0.5 for m in (support, strong))
        sigma = None  # the picture's own noise, not the segmentation copy's
    return _mnist_frame(_normalized_ink(gray, background, support, strong, sigma), Image)
