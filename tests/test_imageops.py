"""The vectorised image operations behind preprocess_digit, against scipy.ndimage."""

import numpy as np
import pytest
from scipy import ndimage

from chainrule.data.imageops import (
    box_filter,
    connected_components,
    max_filter,
    min_filter,
    noise_sigma,
    opening,
    otsu_threshold,
)

SHAPES = [(1, 1), (1, 7), (6, 1), (5, 9), (31, 17), (64, 64)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [1, 2, 3, 4, 7, 16, 40])
def test_min_max_box_filters_equal_scipy(shape, k):
    a = np.random.default_rng(k).random(shape).astype(np.float32)
    np.testing.assert_array_equal(min_filter(a, k), ndimage.minimum_filter(a, k, mode="nearest"))
    np.testing.assert_array_equal(max_filter(a, k), ndimage.maximum_filter(a, k, mode="nearest"))
    box = box_filter(a, k)
    assert box.dtype == np.float32
    np.testing.assert_allclose(box, ndimage.uniform_filter(a.astype(np.float64), k,
                                                           mode="nearest"), atol=1e-6)


def test_opening_removes_thin_bright_strokes_and_keeps_a_ramp():
    yy, xx = np.mgrid[0:80, 0:100].astype(np.float32)
    ramp = 0.2 + 0.003 * xx + 0.001 * yy
    picture = ramp.copy()
    picture[30:36, 10:90] += 0.5  # a stroke 6 px thick
    background = opening(picture, 15)
    # Edges repeat, so the ramp is exact away from them; under the stroke the background is
    # the paper beside it, off by at most the gradient across the stroke (6 px × 0.001).
    paper = np.ones(picture.shape, dtype=bool)
    paper[30:36] = False
    paper[:8] = paper[-8:] = paper[:, :8] = paper[:, -8:] = False
    np.testing.assert_allclose(background[paper], ramp[paper], atol=1e-6)
    np.testing.assert_allclose(background[30:36, 8:-8], ramp[30:36, 8:-8], atol=0.0061)
    assert (background <= picture + 1e-7).all()
    np.testing.assert_array_equal(opening(picture, 15),
                                  ndimage.grey_opening(picture, size=15, mode="nearest"))


@pytest.mark.parametrize("seed", range(6))
def test_connected_components_equal_scipy_8_connectivity(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 70, 2)
    mask = rng.random((h, w)) < rng.uniform(0.1, 0.7)
    labels, n = connected_components(mask)
    reference, n_ref = ndimage.label(mask, structure=np.ones((3, 3)))
    assert n == n_ref and labels.dtype == np.int32
    assert (labels > 0).sum() == mask.sum() and not labels[~mask].any()
    # Same partition: each of our labels maps to exactly one of scipy's, and back.
    pairs = set(zip(labels[mask].tolist(), reference[mask].tolist(), strict=True))
    assert len(pairs) == n


def test_connected_components_of_a_long_snake_is_one_component():
    # A serpentine path of 30 rows is the worst case for label propagation (its ends are
    # about 30 × 60 pixels apart along the path); hooking with pointer jumping takes a few rounds.
    mask = np.zeros((60, 64), dtype=bool)
    mask[::2, 1:-1] = True
    mask[1::4, -2] = True
    mask[3::4, 1] = True
    labels, n = connected_components(mask)
    assert n == 1 and (labels[mask] == 1).all()
    assert connected_components(np.zeros((3, 4), dtype=bool))[1] == 0


def test_otsu_splits_two_clusters_and_noise_sigma_reads_white_noise():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.2, 0.03, 5000), rng.normal(0.8, 0.03, 1000)])
    assert 0.35 < otsu_threshold(values) < 0.65
    assert otsu_threshold(np.full(10, 0.5)) == 0.5
    noise = rng.normal(0.5, 0.05, (200, 200))
    noise[50:150, 95:105] = 1.0  # a stroke barely moves the median of differences
    assert noise_sigma(noise) == pytest.approx(0.05, rel=0.08)
    assert noise_sigma(np.zeros((5, 5))) == 0.0
