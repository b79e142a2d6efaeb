"""Toy datasets: shapes, dtypes, per-seed determinism, balance, separability."""

import numpy as np
import pytest

from chainrule.data import make_blobs, make_circles, make_moons, make_spirals, make_xor

GENERATORS = {
    "blobs": (make_blobs, 300, 3),
    "spirals": (make_spirals, 300, 3),
    "xor": (make_xor, 200, 2),
    "circles": (make_circles, 300, 2),
    "moons": (make_moons, 300, 2),
}


@pytest.mark.parametrize("name", list(GENERATORS))
def test_shapes_dtypes_balance(name):
    make, n, classes = GENERATORS[name]
    x, y = make()
    assert x.shape == (n, 2) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int64
    assert np.isfinite(x).all()
    np.testing.assert_array_equal(np.bincount(y), [n // classes] * classes)


@pytest.mark.parametrize("name", list(GENERATORS))
def test_seed_determinism(name):
    make = GENERATORS[name][0]
    x1, y1 = make(seed=7)
    x2, y2 = make(seed=7)
    assert x1.tobytes() == x2.tobytes() and y1.tobytes() == y2.tobytes()
    x3, _ = make(seed=8)
    assert not np.array_equal(x1, x3)


@pytest.mark.parametrize("name", list(GENERATORS))
def test_uneven_sizes_differ_by_at_most_one(name):
    make = GENERATORS[name][0]
    _, y = make(n_samples=103)
    counts = np.bincount(y)
    assert counts.sum() == 103 and counts.max() - counts.min() <= 1


def test_shuffle_false_is_sorted_by_class():
    _, y = make_blobs(n_samples=30, shuffle=False)
    assert (np.diff(y) >= 0).all()
    _, y = make_blobs(n_samples=30)
    assert (np.diff(y) < 0).any()


def nearest_centroid_accuracy(x, y):
    centroids = np.stack([x[y == c].mean(axis=0) for c in np.unique(y)])
    distances = ((x[:, None, :] - centroids[None]) ** 2).sum(-1)
    return float((distances.argmin(1) == y).mean())


def test_blobs_well_separated():
    x, y = make_blobs()
    assert nearest_centroid_accuracy(x, y) > 0.95
    x, y = make_blobs(n_samples=500, centers=5, seed=3)
    assert nearest_centroid_accuracy(x, y) > 0.95


def test_blobs_explicit_centers():
    centers = np.array([[-5.0, 0.0], [5.0, 0.0]])
    x, y = make_blobs(n_samples=200, centers=centers, std=0.1)
    np.testing.assert_allclose(x[y == 0].mean(0), centers[0], atol=0.05)
    np.testing.assert_allclose(x[y == 1].mean(0), centers[1], atol=0.05)
    with pytest.raises(ValueError, match=r"shape \(C, 2\), got shape \(3,\)"):
        make_blobs(centers=np.zeros(3))


def test_spirals_not_linearly_separable_but_bounded():
    x, y = make_spirals()
    assert np.abs(x).max() <= 1.0
    assert nearest_centroid_accuracy(x, y) < 0.8


def test_xor_labels_match_corners():
    x, y = make_xor(noise=0.0)
    corner = np.rint(x).astype(int)
    np.testing.assert_array_equal(y, corner[:, 0] ^ corner[:, 1])
    assert {tuple(c) for c in corner} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    x, y = make_xor(noise=0.1)
    np.testing.assert_array_equal(y, np.rint(x[:, 0]).astype(int) ^ np.rint(x[:, 1]).astype(int))


def test_too_few_samples():
    with pytest.raises(ValueError, match="n_samples >= number of classes"):
        make_spirals(n_samples=2, classes=3)


def test_circles_rings_at_their_radii():
    x, y = make_circles(n_samples=400, classes=4, noise=0.0)
    radius = np.hypot(x[:, 0], x[:, 1])
    np.testing.assert_allclose(radius, (y + 1) / 4, atol=1e-6)
    x, y = make_circles(n_samples=400, classes=2, noise=0.05)
    # Rings share their centre: the class means coincide, so no centroid rule separates them.
    assert nearest_centroid_accuracy(x, y) < 0.7
    radius = np.hypot(x[:, 0], x[:, 1])
    assert ((radius > 0.75) == (y == 1)).mean() > 0.97


def test_moons_on_their_half_circles():
    x, y = make_moons(n_samples=300, classes=3, noise=0.0)
    centre = np.stack([y, 0.5 * (y % 2)], axis=1)
    np.testing.assert_allclose(np.hypot(*(x - centre).T), 1.0, atol=1e-6)
    upper = (x[:, 1] - centre[:, 1]) >= -1e-6
    np.testing.assert_array_equal(upper[y % 2 == 0], True)
    np.testing.assert_array_equal((x[:, 1] - centre[:, 1] <= 1e-6)[y % 2 == 1], True)
    x, y = make_moons(n_samples=300, noise=0.1)
    assert nearest_centroid_accuracy(x, y) < 0.9
