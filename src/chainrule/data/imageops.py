"""Vectorised 2-D image operations for preprocess_digit: filters, Otsu's threshold, components.

NumPy only, no loop over pixels: a min/max filter of width k costs O(log k) whole-array
operations (van Herk's doubling), components are found by hooking and pointer jumping over the
runs of each row that touch a run of the next.
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
    "pad_edge",
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


def pad_edge(a: np.ndarray, before: int, after: int, out: np.ndarray | None = None
             ) -> np.ndarray:
    """a (H, W) extended by ``before`` rows and columns of its edge values on the top and left
    and ``after`` on the bottom and right: ``np.pad(a, ((before, after),) * 2, mode="edge")``,
    written into ``out`` (H + before + after, W + before + after) when given."""
    h, w = a.shape
    if out is None:
        out = np.empty((h + before + after, w + before + after), dtype=a.dtype)
    out[before:before + h, before:before + w] = a
    out[before:before + h, :before] = a[:, :1]
    out[before:before + h, before + w:] = a[:, -1:]
    out[:before] = out[before]
    out[before + h:] = out[before + h - 1]
    return out


def box_filter(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over the k×k window centred on each pixel (edges repeated), via cumulative sums."""
    if k <= 1:
        return a
    before = k // 2
    h, w = a.shape
    # c[i, j] = the sum of padded[:i, :j] (a with its edges repeated, in float64): a row and a
    # column of zeros come first.
    c = np.empty((h + k, w + k))
    c[0] = 0.0
    c[:, 0] = 0.0
    pad_edge(a, before, k - 1 - before, out=c[1:, 1:])
    np.cumsum(c, axis=0, out=c)
    np.cumsum(c, axis=1, out=c)
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

    The foreground is cut into runs (maximal horizontal segments of one row). Run i of row r,
    columns [s_i, e_i], touches run j of row r + 1 (8-connectivity) when s_j ≤ e_i + 1 and
    e_j ≥ s_i − 1; the runs of a row are sorted and disjoint, so the j that touch i are one
    consecutive range, found by binary search. Every run starts as its own tree; each round
    hooks the larger root of every touching pair whose roots still differ onto the smaller
    one, then compresses the trees by pointer jumping (parent ← parent[parent]) until each run
    points at its root. A drawing has a few hundred runs where it has thousands of pixels.

    Returns:
        (labels, n): int32 (H, W) with 0 for background and 1..n for the components, numbered
        in raster order of their first pixel.
    """
    h, w = mask.shape
    flat = np.flatnonzero(mask)
    labels = np.zeros(h * w, np.int32)
    if flat.size == 0:
        return labels.reshape(h, w), 0
    new_run = np.ones(flat.size, dtype=bool)
    new_run[1:] = (flat[1:] != flat[:-1] + 1) | (flat[1:] % w == 0)
    first = np.flatnonzero(new_run)                       # run i: flat[first[i] : last[i] + 1]
    last = np.append(first[1:] - 1, flat.size - 1)
    row, start = np.divmod(flat[first], w)
    end = flat[last] % w
    # Keys that sort runs in raster order with a gap of two columns between rows, so that
    # s_j ≤ e_i + 1 and e_j ≥ s_i − 1 only ever match runs of the row asked for.
    pitch = w + 2
    lo = np.searchsorted(row * pitch + end, (row + 1) * pitch + start - 1, side="left")
    hi = np.searchsorted(row * pitch + start, (row + 1) * pitch + end + 1, side="right")
    touching = np.maximum(hi - lo, 0)
    upper = np.repeat(np.arange(first.size), touching)
    lower = np.arange(upper.size) - np.repeat(np.cumsum(touching) - touching - lo, touching)
    parent = np.arange(first.size)
    while upper.size:
        ra, rb = parent[upper], parent[lower]
        apart = ra != rb
        upper, lower, ra, rb = upper[apart], lower[apart], ra[apart], rb[apart]
        if not upper.size:
            break
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    roots, compact = np.unique(parent, return_inverse=True)
    labels[flat] = np.repeat(compact.astype(np.int32) + 1, last - first + 1)
    return labels.reshape(h, w), int(roots.size)
