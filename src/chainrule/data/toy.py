"""Seeded 2-D toy datasets: blobs, spirals, XOR, circles and moons.

Every generator draws from `np.random.default_rng(seed)`, so a given seed gives bit-identical
arrays. Inputs x are float32 (N, 2), labels y are int64 (N,); classes get N // C samples each,
the remainder going one each to the first classes.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["make_blobs", "make_circles", "make_moons", "make_spirals", "make_xor"]


def _class_sizes(n_samples: int, classes: int) -> np.ndarray:
    if classes < 1:
        raise ValueError(f"expected at least 1 class, got {classes}")
    if n_samples < classes:
        raise ValueError(
            f"expected n_samples >= number of classes ({classes}) so every class gets a "
            f"sample, got n_samples={n_samples}"
        )
    sizes = np.full(classes, n_samples // classes, dtype=np.int64)
    sizes[: n_samples % classes] += 1
    return sizes


def _grouped_labels(n_samples: int, classes: int) -> np.ndarray:
    """(N,) class indices 0, 0, …, 1, 1, …: ``_class_sizes`` of each, in class order."""
    return np.repeat(np.arange(classes), _class_sizes(n_samples, classes))


def _finish(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, shuffle: bool):
    if shuffle:
        order = rng.permutation(len(y))
        x, y = x[order], y[order]
    return x.astype(np.float32), y.astype(np.int64)


def make_blobs(
    n_samples: int = 300,
    centers: int | np.ndarray = 3,
    std: float = 0.5,
    seed: int | None = 0,
    shuffle: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters in 2-D; the default is the lecture's red/green/blue three classes.

    With an int `centers = C`, the centres sit evenly on a circle whose radius puts
    neighbouring centres 4 units apart (8 standard deviations at the default std=0.5), so the
    classes are well separated.

    Args:
        n_samples: total number of points N.
        centers: number of clusters C, or an array (C, 2) of centre coordinates.
        std: standard deviation of every cluster along each axis.
        seed: seed for np.random.default_rng.
        shuffle: shuffle the points; otherwise they come sorted by class.

    Returns:
        x: (N, 2) float32; y: (N,) int64 cluster index in [0, C).

    Raises:
        ValueError: centers is not an int >= 1 or a (C, 2) array, or N < C.
    """
    if isinstance(centers, (int, np.integer)):
        k = int(centers)
        if k < 1:
            raise ValueError(f"expected centers >= 1, got {k}")
        if k == 1:
            means = np.zeros((1, 2))
        else:
            radius = 2.0 / math.sin(math.pi / k)
            angles = math.pi / 2 + 2 * math.pi * np.arange(k) / k
            means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    else:
        means = np.asarray(centers, dtype=np.float64)
        if means.ndim != 2 or means.shape[1] != 2 or len(means) == 0:
            raise ValueError(
                f"expected centers as an int or an array of shape (C, 2), got shape {means.shape}"
            )
    y = _grouped_labels(n_samples, len(means))
    rng = np.random.default_rng(seed)
    x = means[y] + std * rng.standard_normal((n_samples, 2))
    return _finish(x, y, rng, shuffle)


def make_spirals(
    n_samples: int = 300,
    classes: int = 3,
    noise: float = 0.2,
    seed: int | None = 0,
    shuffle: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved spiral arms, one per class (the CS231n spiral data); not linearly separable.

    Arm c has radius r = linspace(0, 1) and angle t = linspace(4c, 4c + 4) + noise·N(0, 1);
    the point is (r·sin t, r·cos t).

    Args:
        n_samples: total number of points N.
        classes: number of arms C.
        noise: standard deviation of the angle noise, in radians.
        seed: seed for np.random.default_rng.
        shuffle: shuffle the points; otherwise they come sorted by class.

    Returns:
        x: (N, 2) float32 in [-1, 1]; y: (N,) int64 arm index in [0, C).
    """
    sizes = _class_sizes(n_samples, classes)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c, n in enumerate(sizes):
        r = np.linspace(0.0, 1.0, n)
        t = np.linspace(4.0 * c, 4.0 * (c + 1), n) + noise * rng.standard_normal(n)
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
        ys.append(np.full(n, c))
    return _finish(np.concatenate(xs), np.concatenate(ys), rng, shuffle)


def make_xor(
    n_samples: int = 200,
    noise: float = 0.1,
    seed: int | None = 0,
    shuffle: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy copies of the four XOR inputs (0,0), (0,1), (1,0), (1,1), labelled x₁ XOR x₂.

    Args:
        n_samples: total number of points N, spread evenly over the four corners.
        noise: standard deviation of the Gaussian noise added to each coordinate.
        seed: seed for np.random.default_rng.
        shuffle: shuffle the points; otherwise they come grouped by corner.

    Returns:
        x: (N, 2) float32; y: (N,) int64 in {0, 1}.
    """
    corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    corner = _grouped_labels(n_samples, 4)
    rng = np.random.default_rng(seed)
    x = corners[corner] + noise * rng.standard_normal((n_samples, 2))
    y = (corners[corner, 0] != corners[corner, 1]).astype(np.int64)
    return _finish(x, y, rng, shuffle)


def make_circles(
    n_samples: int = 300,
    classes: int = 2,
    noise: float = 0.1,
    seed: int | None = 0,
    shuffle: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Concentric rings, one per class: ring c has radius (c + 1) / C; not linearly separable.

    A point of ring c is (r cos t, r sin t) with t uniform in [0, 2π), plus noise·N(0, 1) on
    each coordinate.

    Args:
        n_samples: total number of points N.
        classes: number of rings C.
        noise: standard deviation of the Gaussian noise added to each coordinate.
        seed: seed for np.random.default_rng.
        shuffle: shuffle the points; otherwise they come sorted by class.

    Returns:
        x: (N, 2) float32, within about [-1, 1]; y: (N,) int64 ring index in [0, C).
    """
    y = _grouped_labels(n_samples, classes)
    rng = np.random.default_rng(seed)
    radius = (y + 1.0) / classes
    t = rng.uniform(0.0, 2.0 * math.pi, n_samples)
    x = radius[:, None] * np.stack([np.cos(t), np.sin(t)], axis=1)
    x += noise * rng.standard_normal((n_samples, 2))
    return _finish(x, y, rng, shuffle)


def make_moons(
    n_samples: int = 300,
    classes: int = 2,
    noise: float = 0.1,
    seed: int | None = 0,
    shuffle: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Interlocking half circles, one per class (two of them: the classic two moons).

    Moon c is the half circle of radius 1 around (c, ½·(c mod 2)), opening downwards for odd
    c: the point at angle t ∈ [0, π] is (c + s cos t, s sin t + ½·(c mod 2)) with s = (−1)^c,
    plus noise·N(0, 1) on each coordinate. Each moon reaches into the hollow of the next.

    Args:
        n_samples: total number of points N.
        classes: number of moons C.
        noise: standard deviation of the Gaussian noise added to each coordinate.
        seed: seed for np.random.default_rng.
        shuffle: shuffle the points; otherwise they come sorted by class.

    Returns:
        x: (N, 2) float32; y: (N,) int64 moon index in [0, C).
    """
    y = _grouped_labels(n_samples, classes)
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.0, math.pi, n_samples)
    sign = np.where(y % 2 == 0, 1.0, -1.0)
    x = np.stack([y + sign * np.cos(t), sign * np.sin(t) + 0.5 * (y % 2)], axis=1)
    x += noise * rng.standard_normal((n_samples, 2))
    return _finish(x, y, rng, shuffle)
