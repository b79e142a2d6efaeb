"""RandomShift: per-sample random translations in training, the identity at inference. (Its
gradcheck, torch reference, replayed draws and empty inference cache: the table, tests/cases.py.)"""

import numpy as np
import pytest

import chainrule as cr
from chainrule import layers, losses
from chainrule.layers import RandomShift


def shifted_by_hand(image, di, dj):
    """Reference: move every pixel by (di, dj), zeros where nothing moved in."""
    out = np.zeros_like(image)
    h, w = image.shape[-2:]
    for i in range(h):
        for j in range(w):
            if 0 <= i - di < h and 0 <= j - dj < w:
                out[..., i, j] = image[..., i - di, j - dj]
    return out


@pytest.mark.parametrize("shape", [(6, 5, 7), (4, 3, 6, 6)])
def test_each_sample_is_shifted_by_its_own_offsets(shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    layer = RandomShift(2, seed=1)
    y = layer.forward(x, training=True)
    offsets = layer.cache
    assert offsets.shape == (shape[0], 2) and np.abs(offsets).max() <= 2
    assert len({tuple(o) for o in offsets}) > 1
    for n in range(shape[0]):
        np.testing.assert_array_equal(y[n], shifted_by_hand(x[n], *offsets[n]))
    assert y.dtype == np.float32


def test_batches_of_changing_size_are_each_shifted_alone():
    """The zero-bordered scratch array is reused: nothing of an earlier batch leaks in."""
    rng = np.random.default_rng(0)
    layer = RandomShift(2, seed=3)
    for shape in [(6, 5, 7), (3, 5, 7), (8, 5, 7), (2, 5, 7)]:
        x = rng.standard_normal(shape).astype(np.float32) + 10.0
        y = layer.forward(x, training=True)
        assert y.dtype == np.float32 and y.shape == shape
        for n in range(shape[0]):
            np.testing.assert_array_equal(y[n], shifted_by_hand(x[n], *layer.cache[n]))


def test_backward_is_the_adjoint_shift():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 6, 7))
    layer = RandomShift(3, seed=0)
    y = layer.forward(x, training=True)
    g = rng.standard_normal(y.shape)
    # ⟨shift(x), g⟩ = ⟨x, shift⁻¹(g)⟩ for the zero-filled shift and its adjoint.
    assert np.sum(y * g) == pytest.approx(np.sum(x * layer.backward(g)), rel=1e-12)


def test_identity_at_inference():
    x = np.ones((2, 4, 4), np.float32)
    layer = RandomShift(2, seed=0)
    layer.forward(x, training=True)
    assert layer.forward(x) is x


def test_seeded_shifts_repeat_and_models_save_the_layer(tmp_path):
    x = np.random.default_rng(0).random((8, 12, 12)).astype(np.float32)
    a, b = RandomShift(2, seed=5), RandomShift(2, seed=5)
    np.testing.assert_array_equal(a.forward(x, training=True), b.forward(x, training=True))
    model = cr.Sequential([RandomShift(1, input_shape=(12, 12)), layers.Flatten(),
                           layers.Dense(3)], seed=0)
    model.compile("adam", losses.SparseCategoricalCrossEntropy(from_logits=True))
    model.fit(x, np.arange(8) % 3, epochs=1, batch_size=4, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = cr.load_model(tmp_path / "m.npz")
    assert isinstance(loaded.layers[0], RandomShift) and loaded.layers[0].max_shift == 1
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_errors():
    with pytest.raises(ValueError, match="max_shift must be an integer >= 0"):
        RandomShift(-1)
    with pytest.raises(ValueError, match=r"expected images of shape \(N, H, W\).*\(4, 784\)"):
        RandomShift(2).forward(np.zeros((4, 784), np.float32), training=True)
