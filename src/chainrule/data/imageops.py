"""Vectorised 2-D image operations for preprocess_digit: filters, Otsu's threshold, components.

NumPy only, no loop over pixels: a min/max filter of width k costs O(log k) whole-array
operations (van Herk's doubling), components are found by hooking and pointer jumping over the
edges between neighbouring pixels.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "box_filter",
    "connected_components",
    "max_filter",
    "min_filter",
    "noise_sigma",
    "opening",
    "otsu_threshold",
]


def _window_along_0(a: np.ndarray, k: int, op) -> np.ndarray:
    """op over the k rows around each row, a[i − k//2 : i − k//2 + k] (edges repeated)."""
    if k <= 1 or a.shape[0] == 0:
        return a
    before = k // 2
    padded = np.concatenate([np.repeat(a[:1], before, axis=0), a,
                             np.repeat(a[-1:], k - 1 - before, axis=0)])
    # After the loop, out[i] = op(padded[i : i + span]); two overlapping spans cover k rows.
    out, span = padded, 1
    while 2 * span <= k:
        out = op(out[:-span], out[span:])
        span *= 2
    n = a.shape[0]
    return op(out[:n], out[k - span: k - span + n])


def min_filter(a: np.ndarray, k: int) -> np.ndarray:
    """Minimum over the k×k window centred on each pixel (grey erosion, edges repeated)."""
    return _window_along_0(_window_along_0(a, k, np.minimum).T, k, np.minimum).T


def max_filter(a: np.ndarray, k: int) -> np.ndarray:
    """Maximum over the k×k window centred on each pixel (grey dilation, edges repeated)."""
    return _window_along_0(_window_along_0(a, k, np.maximum).T, k, np.maximum).T


def opening(a: np.ndarray, k: int) -> np.ndarray:
    """Grey opening max_filter(min_filter(a, k), k): a with every bright structure that no k×k
    square fits inside removed. Flat regions wider than k and linear ramps are kept exactly, so
    this is the background under strokes thinner than k. Result ≤ a everywhere."""
    return max_filter(min_filter(a, k), k)


def box_filter(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over the k×k window centred on each pixel (edges repeated), via cumulative sums."""
    if k <= 1:
        return a
    before = k // 2
    padded = np.pad(a, ((before, k - 1 - before), (before, k - 1 - before)), mode="edge")
    c = np.cumsum(np.cumsum(padded, axis=0, dtype=np.float64), axis=1)
    c = np.pad(c, ((1, 0), (1, 0)))
    h, w = a.shape
    total = c[k:k + h, k:k + w] - c[:h, k:k + w] - c[k:k + h, :w] + c[:h, :w]
    return (total / float(k * k)).astype(a.dtype)


def noise_sigma(a: np.ndarray, block: int = 16) -> float:
    """Standard deviation of white noise on a, from second differences along rows:
    d = a[i, j−1] − 2·a[i, j] + a[i, j+1] has variance 6σ² on white noise and is 0 on flat
    paper and on linear ramps (a lighting gradient, a bilinearly enlarged stroke), so
    σ ≈ 1.4826 · median|d| / √6.

    The median is taken in each block × block tile, then over the tiles: stroke edges are a
    minority of a tile's differences and the curved strokes of a clean drawing a minority of
    the tiles, and flat regions (a clipped highlight, a uniform table) covering less than half
    the picture barely move the median of tiles whose own medians agree closely. A clean
    picture (mostly flat paper) gives 0.
    """
    if a.shape[1] < 3:
        return 0.0
    d = np.abs(a[:, 2:] - 2 * a[:, 1:-1] + a[:, :-2])
    h, w = d.shape
    th, tw = min(block, h), min(block, w)
    tiles = d[: h - h % th, : w - w % tw].reshape(h // th, th, w // tw, tw)
    medians = np.median(tiles.transpose(0, 2, 1, 3).reshape(-1, th * tw), axis=1)
    return float(1.4826 / math.sqrt(6.0) * np.median(medians))


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut t that maximises the between-class variance
    w₀(t) · w₁(t) · (μ₀(t) − μ₁(t))² of the histogram of values; the middle of the cuts that
    share the maximum (an empty gap between two clusters), not its lower end."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return hi
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts, dtype=np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(counts * centres)
    m1 = m0[-1] - m0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (m0 / w0 - m1 / w1) ** 2
    between = np.nan_to_num(between[:-1], nan=-1.0)
    best = np.flatnonzero(between >= between.max() * (1.0 - 1e-9))
    return float((edges[best[0] + 1] + edges[best[-1] + 1]) / 2)


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 8-connected components of a bool mask (H, W).

    Every foreground pixel starts as its own tree; each round hooks the larger root of every
    edge whose two ends still have different roots onto the smaller one, then compresses the
    trees by pointer jumping (parent ← parent[parent]) until each pixel points at its root.

    Returns:
        (labels, n): int32 (H, W) with 0 for background and 1..n for the components, numbered
        in raster order of their first pixel.
    """
    h, w = mask.shape
    flat = np.flatnonzero(mask)
    labels = np.zeros(h * w, np.int32)
    if flat.size == 0:
        return labels.reshape(h, w), 0
    index = np.full((h, w), -1, np.int64)
    index.ravel()[flat] = np.arange(flat.size)
    ends = []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        x0, x1 = max(0, -dx), w - max(0, dx)
        a = index[: h - dy, x0:x1]
        b = index[dy:, x0 + dx: x1 + dx]
        both = (a >= 0) & (b >= 0)
        ends.append((a[both], b[both]))
    first = np.concatenate([a for a, _ in ends])
    second = np.concatenate([b for _, b in ends])
    parent = np.arange(flat.size)
    while first.size:
        ra, rb = parent[first], parent[second]
        apart = ra != rb
        first, second, ra, rb = first[apart], second[apart], ra[apart], rb[apart]
        if not first.size:
            break
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    roots, compact = np.unique(parent, return_inverse=True)
    labels[flat] = compact.astype(np.int32) + 1
    return labels.reshape(h, w), int(roots.size)
