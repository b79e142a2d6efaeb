"""The structure that keeps serve's requests cheap: saliency without weight gradients, the
neighbours' coarse bounds below the fine ones, connected components over runs, and the
picture workers' pipes."""

import asyncio
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from chainrule import Sequential, layers, models
from chainrule.data.imageops import connected_components
from chainrule.web.explain import Explainer, inference_copy
from chainrule.web.neighbours import Neighbours
from chainrule.web.pictures import PictureError, Readers, read_digit


@pytest.mark.parametrize("make", [
    lambda: models.mlp(seed=0),
    lambda: Sequential([layers.Flatten(), layers.Dense(32, activation="tanh"),
                        layers.BatchNorm(), layers.Dropout(0.3), layers.Dense(10)]),
])
def test_saliency_equals_the_full_backward_and_assigns_no_weight_gradient(make):
    model = make()
    model.build((28, 28))
    explainer = Explainer(model)
    x = np.random.default_rng(0).random((28, 28)).astype(np.float32)
    cls = explainer.predict(x)["class"]
    saliency = explainer.saliency(x, cls)
    reference = inference_copy(model)
    out = reference.forward(x[None], training=True)
    upstream = np.zeros_like(out)
    upstream[0, cls] = 1.0
    expected = reference.backward(upstream).reshape(28, 28)
    np.testing.assert_array_equal(saliency, expected.astype(np.float64))
    dense = [layer for layer in explainer._copy.layers if isinstance(layer, layers.Dense)]
    assert dense and all(layer.W.grad is None for layer in dense)


def test_coarse_neighbour_bounds_are_below_the_fine_ones_and_the_distances():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (500, 28, 28), dtype=np.uint8)
    index = Neighbours(images, rng.integers(0, 10, 500))
    assert index.coarse.shape == (500, 33) and index.table.shape == (500, 65)
    assert index.coarse.dtype == index.table.dtype == np.float32
    t = images.reshape(500, 784).astype(np.float64) / 255.0
    for _ in range(5):
        x = rng.random(784).astype(np.float32)
        zr, _, lowered = index._coordinates(x.astype(np.float64)[None])
        fine = (index.lowered + np.float32(lowered[0])) - 2.0 * (index.table @ zr[0].astype(
            np.float32))
        coarse = index.bounds(x).astype(np.float64)
        squared = ((t - x.astype(np.float64)) ** 2).sum(1)
        assert np.all(coarse <= fine.astype(np.float64) + 1e-4) and np.all(fine <= squared)
        assert np.all(coarse <= squared)


def test_connected_components_of_runs_number_components_in_raster_order():
    mask = np.zeros((6, 9), dtype=bool)
    mask[0, 6:9] = True      # first pixel (0, 6): component 1
    mask[1, 0:2] = True      # (1, 0): component 2
    mask[2, 2] = True        # touches (1, 1) diagonally: still component 2
    mask[4, 4:7] = True      # component 3
    mask[5, 7] = True        # diagonal to (4, 6): component 3
    mask[5, 0] = True        # component 4
    labels, n = connected_components(mask)
    assert n == 4
    assert labels[0, 6] == 1 and labels[1, 0] == labels[2, 2] == 2
    assert labels[4, 4] == labels[5, 7] == 3 and labels[5, 0] == 4


def test_a_picture_worker_answers_through_its_pipe_like_read_digit():
    canvas = Image.new("RGBA", (140, 140), (255, 255, 255, 255))
    ImageDraw.Draw(canvas).line([(35, 30), (105, 30), (60, 115)], fill=(0, 0, 0, 255), width=11)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    raw = buffer.getvalue()
    readers = Readers(1)

    async def both():
        digit = await readers.read(raw)
        with pytest.raises(PictureError, match="corrupt or truncated"):
            await readers.read(raw[:200])
        return digit, await readers.read(raw, large=True)

    readers.start()
    try:
        digit, again = asyncio.run(both())
    finally:
        readers.close()
    np.testing.assert_array_equal(digit, read_digit(raw))
    np.testing.assert_array_equal(again, digit)
    assert digit.dtype == np.float32 and digit.shape == (28, 28)
    assert readers._pool is None
