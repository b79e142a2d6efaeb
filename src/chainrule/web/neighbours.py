"""The nearest training digits, exactly, through two small indexes of lower bounds.

The distance is Euclidean on the 784 pixel values in [0, 1]: d(t, x) = ‖t − x‖, computed in
float64 from the float32 pixels (``np.linalg.norm`` of the difference). The k nearest come
nearest first; equal distances (bit for bit) go by the lower training index.

Lower bounds, derived. Let μ be the mean training image, P (784 × m) the first m principal
directions of the training images (orthonormal columns), and for any image v: c = v − μ,
z = Pᵀc its m coordinates, r = ‖c − Pz‖ the length of what they leave out, s = ‖c‖² = ‖z‖² + r².
P Pᵀ is an orthogonal projection, so the difference of a training image t and a query x
splits into two orthogonal parts, and the reverse triangle inequality bounds the second:

    d(t, x)² = ‖z_t − z_x‖² + ‖(c_t − P z_t) − (c_x − P z_x)‖²
             ≥ ‖z_t − z_x‖² + (r_t − r_x)²
             = s_t + s_x − 2 [z_t r_t]·[z_x r_x]  =: b_t.

The same holds for the first m′ < m directions alone, with z′ the first m′ coordinates of z
and r′ = √(r² + ‖z_{m′+1…m}‖²) what they leave out: a bound b′_t ≤ b_t (what the m′ directions
leave out is bounded as one length instead of m − m′ + 1 separate ones). For MNIST (m = 64,
m′ = 32) one product of the N × 33 table [Z′ r′] with [z′_x r′_x] gives every b′_t, reading
7.9 MB instead of the 188 MB of float32 pixels. Then ``query``:

1. computes d for the k + EXTRA images of the smallest b′; the k-th smallest of those, D, is
   at least the true k-th distance;
2. computes b_t from the N × 65 table [Z r] only for the images with b′_t ≤ D² (a few hundred
   of MNIST's 60,000 for a typical test digit), and d for every one of them not measured yet
   with b_t ≤ D² (an image with b′_t > D² or b_t > D² is farther than D: it can neither be
   among the k nearest nor tie with the k-th);
3. sorts everything computed by (d, index) and keeps the first k.

That is the brute-force answer, ties included; the bounds' tightness only sets the cost.

Rounding. Both tables are stored in float32 from float64 coordinates, and each product is a
float32 sum of at most 65 terms: with the storage, its error is below
65·2⁻²⁴·√(s_t s_x) ≤ 2·10⁻⁶ (s_t + s_x), and the float32 additions around it add under
10⁻⁶ (s_t + s_x). Each bound is lowered by MARGIN·(s_t + s_x) = 10⁻⁴ (s_t + s_x), 30 times
their sum, so it stays below d(t, x)² (a test checks it for several queries against each of
the 60,000 MNIST training digits).

Queries that arrive while a product runs are answered together: the next thread to get the
lock takes every waiting query and, from 4 of them on, multiplies them as one matrix (one pass
over the table for all of them).
"""

from __future__ import annotations

import threading

import numpy as np

PIXELS = 784
DIMS = 64
COARSE_DIMS = 32
EXTRA = 15
MARGIN = 1e-4
_COVARIANCE_SAMPLE = 10_000  # images the principal directions are computed from
_CHUNK = 4096


class Neighbours:
    """Nearest training digits by Euclidean distance on the 784 pixel values (see module doc).

    Args:
        images: (N, 28, 28) or (N, 784), uint8 (0..255, kept as bytes and read as
            float32 x / 255 like ``load_mnist``) or float in [0, 1] (kept as float32).
        labels: (N,) integer classes.
        dataset: a name for the page, e.g. "mnist" (never a path).
        sha256: the SHA-256 of the file the images came from, when known.
        dims: m, the number of principal directions.

    Raises:
        ValueError: for images that are not 784 values each, no images, or a label count
            other than the image count.
    """

    def __init__(self, images, labels, dataset: str = "", sha256: str | None = None,
                 dims: int = DIMS):
        images = np.asarray(images)
        if images.ndim < 2 or images.size != len(images) * PIXELS or len(images) == 0:
            raise ValueError(f"Neighbours expected N ≥ 1 images of 28×28, got shape "
                             f"{images.shape}")
        dtype = np.uint8 if images.dtype == np.uint8 else np.float32
        self.pixels = np.ascontiguousarray(images.reshape(len(images), PIXELS), dtype=dtype)
        self.labels = np.asarray(labels).astype(np.int64)
        if len(self.labels) != len(self.pixels):
            raise ValueError(
                f"Neighbours got {len(self.pixels)} images but {len(self.labels)} labels"
            )
        self.dataset = dataset
        self.sha256 = sha256
        self._index(min(dims, PIXELS))
        self._product = threading.Lock()
        self._waiting_lock = threading.Lock()
        self._waiting: list[_Query] = []

    def __len__(self) -> int:
        return len(self.pixels)

    def rows(self, index) -> np.ndarray:
        """The training images ``index`` as float32 (len, 784), the values distances use."""
        rows = self.pixels[index]
        if rows.dtype == np.uint8:
            return rows.astype(np.float32) / np.float32(255.0)
        return rows

    def _index(self, m: int) -> None:
        """μ, P (784, m), the tables [Z r] (N, m + 1) and [Z′ r′] (N, m′ + 1) float32, and
        s·(1 − MARGIN)."""
        n = len(self.pixels)
        self.mean = np.zeros(PIXELS)
        for start in range(0, n, _CHUNK):
            self.mean += self.rows(slice(start, start + _CHUNK)).sum(axis=0, dtype=np.float64)
        self.mean /= float(n)
        sample = self.rows(np.linspace(0, n - 1, min(n, _COVARIANCE_SAMPLE)).astype(np.int64))
        centred = sample.astype(np.float64) - self.mean
        _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
        self.directions = np.ascontiguousarray(vectors[:, ::-1][:, :m])
        self.coarse_dims = min(COARSE_DIMS, m)
        self.table = np.empty((n, m + 1), dtype=np.float32)
        self.coarse = np.empty((n, self.coarse_dims + 1), dtype=np.float32)
        self.lowered = np.empty(n, dtype=np.float32)
        for start in range(0, n, _CHUNK):
            part = slice(start, start + _CHUNK)
            self.table[part], self.coarse[part], self.lowered[part] = self._coordinates(
                self.rows(part).astype(np.float64))

    def _coordinates(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """([z r], [z′ r′], s·(1 − MARGIN)) of float64 images (B, 784)."""
        c = images - self.mean
        z = c @ self.directions
        s = np.einsum("ij,ij->i", c, c)
        r = np.sqrt(np.maximum(s - np.einsum("ij,ij->i", z, z), 0.0))
        m = self.coarse_dims
        left_out = np.sqrt(r * r + np.einsum("ij,ij->i", z[:, m:], z[:, m:]))
        return (np.hstack([z, r[:, None]]), np.hstack([z[:, :m], left_out[:, None]]),
                s * (1.0 - MARGIN))

    def bounds(self, x: np.ndarray) -> np.ndarray:
        """b′_t − MARGIN·(s_t + s_x) ≤ d(t, x)² for every training image t, float32 (N,):
        the bounds of the first m′ directions; batched with concurrent queries."""
        _, coarse, lowered = self._coordinates(np.asarray(x, dtype=np.float64).reshape(1, -1))
        return self._coarse_bounds(coarse[0].astype(np.float32), float(lowered[0]))

    def _coarse_bounds(self, zr: np.ndarray, lowered: float) -> np.ndarray:
        query = _Query(zr, lowered)
        with self._waiting_lock:
            self._waiting.append(query)
        with self._product:
            if query.bounds is None:
                with self._waiting_lock:
                    batch, self._waiting = self._waiting, []
                if len(batch) < 4:  # below 4, separate GEMVs beat OpenBLAS's skinny GEMM
                    products = [self.coarse @ q.zr for q in batch]
                else:
                    products = np.stack([q.zr for q in batch]) @ self.coarse.T  # (B, N)
                for q, product in zip(batch, products, strict=True):
                    q.bounds = (self.lowered + q.lowered) - 2.0 * product
        return query.bounds

    def query(self, image: np.ndarray, k: int = 5) -> list[dict]:
        """The ``k`` nearest training images, nearest first (ties: lower index first).

        Returns:
            [{"index": i, "label": y_i, "distance": ‖t_i − x‖, "image": (28, 28) float64}, …]
        """
        x = np.asarray(image, dtype=np.float32).reshape(PIXELS)
        k = min(k, len(self))
        if k <= 0:
            return []
        zr, coarse, lowered = self._coordinates(x.astype(np.float64)[None])
        bounds = self._coarse_bounds(coarse[0].astype(np.float32), float(lowered[0]))
        first = min(k + EXTRA, len(self))
        seen = np.argpartition(bounds, first - 1)[:first]
        distance = self.distances(seen, x)
        limit = np.float64(np.partition(distance, k - 1)[k - 1]) ** 2
        near = np.flatnonzero(bounds <= limit)
        fine = ((self.lowered[near] + np.float32(lowered[0]))
                - 2.0 * (self.table[near] @ zr[0].astype(np.float32)))
        more = np.setdiff1d(near[fine <= limit], seen, assume_unique=True)
        if len(more):
            seen = np.concatenate([seen, more])
            distance = np.concatenate([distance, self.distances(more, x)])
        order = np.lexsort((seen, distance))[:k]
        images = self.rows(seen[order]).astype(np.float64).reshape(-1, 28, 28)
        return [
            {"index": int(seen[j]), "label": int(self.labels[seen[j]]),
             "distance": float(distance[j]), "image": image}
            for j, image in zip(order, images, strict=True)
        ]

    def distances(self, index, x: np.ndarray) -> np.ndarray:
        """d(t, x) in float64 for the training images ``index``; x float32 (784,)."""
        return np.linalg.norm(self.rows(index).astype(np.float64) - x.astype(np.float64),
                              axis=1)


class _Query:
    __slots__ = ("zr", "lowered", "bounds")

    def __init__(self, zr: np.ndarray, lowered: float):
        self.zr = zr
        self.lowered = lowered
        self.bounds: np.ndarray | None = None
