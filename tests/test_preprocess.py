"""one_hot, scalers (against scikit-learn), train_test_split and preprocess_digit."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from sklearn import preprocessing as skp

from chainrule.data import (
    MinMaxScaler,
    StandardScaler,
    one_hot,
    preprocess_digit,
    read_idx_images,
    train_test_split,
)

DATA_DIR = Path(
    os.environ.get("CHAINRULE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def test_one_hot_values_shape_dtype():
    out = one_hot(np.array([2, 0, 1]))
    np.testing.assert_array_equal(out, [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    assert out.dtype == np.float32
    out = one_hot(np.array([[1], [3]], dtype=np.uint8), num_classes=5, dtype=np.float64)
    assert out.shape == (2, 1, 5) and out.dtype == np.float64
    np.testing.assert_array_equal(out.argmax(-1), [[1], [3]])
    np.testing.assert_array_equal(out.sum(-1), 1.0)
    np.testing.assert_array_equal(one_hot(2, num_classes=4), [0, 0, 1, 0])


def test_one_hot_errors():
    with pytest.raises(ValueError, match=r"expected labels in \[0, 3\), got 3 at index 1"):
        one_hot([0, 3, 1], num_classes=3)
    with pytest.raises(ValueError, match=r"got -1 at index 2"):
        one_hot([0, 1, -1])
    with pytest.raises(ValueError, match=r"got 4 at index \(1, 0\)"):
        one_hot([[0, 1], [4, 2]], num_classes=3)
    with pytest.raises(TypeError, match="expected integer labels, got dtype float64"):
        one_hot(np.array([0.0, 1.5]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_standard_scaler_matches_sklearn(dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((50, 4)) * [1.0, 10.0, 0.1, 3.0] + [5.0, -2.0, 0.0, 1e3]).astype(dtype)
    x[:, 2] = 7.0
    ours = StandardScaler().fit(x)
    ref = skp.StandardScaler().fit(x)
    z = ours.transform(x)
    assert z.dtype == dtype and np.isfinite(z).all()
    np.testing.assert_allclose(ours.mean_, ref.mean_, rtol=1e-6)
    np.testing.assert_allclose(ours.scale_, ref.scale_, rtol=1e-5)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(z, ref.transform(x), rtol=tol, atol=tol)
    np.testing.assert_array_equal(z[:, 2], 0.0)
    np.testing.assert_allclose(ours.inverse_transform(z), x, rtol=tol * 10)
    assert ours.inverse_transform(z).dtype == dtype


@pytest.mark.parametrize("feature_range", [(0.0, 1.0), (-1.0, 1.0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_minmax_scaler_matches_sklearn(dtype, feature_range):
    rng = np.random.default_rng(1)
    x = (rng.uniform(-3, 8, (40, 3)) * [1.0, 100.0, 1.0]).astype(dtype)
    x[:, 2] = -4.0
    ours = MinMaxScaler(feature_range).fit(x)
    ref = skp.MinMaxScaler(feature_range=feature_range).fit(x)
    z = ours.fit_transform(x)
    assert z.dtype == dtype and np.isfinite(z).all()
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(z, ref.transform(x), rtol=tol, atol=tol)
    assert z[:, :2].min() == pytest.approx(feature_range[0], abs=tol)
    assert z[:, :2].max() == pytest.approx(feature_range[1], abs=tol)
    np.testing.assert_allclose(ours.inverse_transform(z), x, rtol=tol * 10, atol=tol * 100)


@pytest.mark.parametrize("scaler", [StandardScaler, MinMaxScaler])
def test_scaler_errors(scaler):
    with pytest.raises(RuntimeError, match=r"transform called before fit; call fit\(x\)"):
        scaler().transform(np.ones((2, 2)))
    with pytest.raises(RuntimeError, match="before fit"):
        scaler().inverse_transform(np.ones((2, 2)))
    fitted = scaler().fit(np.arange(6.0).reshape(3, 2))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, \*\(2,\)\).*got \(3, 3\)"):
        fitted.transform(np.ones((3, 3)))


def test_scaler_integer_input_becomes_float32():
    z = StandardScaler().fit_transform(np.arange(12).reshape(6, 2))
    assert z.dtype == np.float32
    with pytest.raises(ValueError, match="lo < hi"):
        MinMaxScaler((1, 0))


def test_train_test_split_sizes_and_alignment():
    x = np.arange(100).reshape(50, 2)
    y = np.arange(50)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, seed=0)
    assert len(x_tr) == 40 and len(x_te) == 10
    np.testing.assert_array_equal(x_tr[:, 0] // 2, y_tr)
    np.testing.assert_array_equal(x_te[:, 0] // 2, y_te)
    assert sorted(np.concatenate([y_tr, y_te])) == list(range(50))
    _, y_te = train_test_split(y, test_size=7, seed=0)
    assert len(y_te) == 7
    _, _, _, y_te = train_test_split(x, y, test_size=0.21)
    assert len(y_te) == 11


def test_train_test_split_determinism_and_no_shuffle():
    y = np.arange(30)
    a = train_test_split(y, seed=3)
    b = train_test_split(y, seed=3)
    c = train_test_split(y, seed=4)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    tr, te = train_test_split(y, test_size=0.1, shuffle=False)
    np.testing.assert_array_equal(tr, np.arange(27))
    np.testing.assert_array_equal(te, [27, 28, 29])


def test_train_test_split_stratify_keeps_proportions():
    y = np.repeat([0, 1, 2], [500, 300, 200])
    x = np.arange(1000)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, seed=0, stratify=y)
    np.testing.assert_array_equal(np.bincount(y_te), [125, 75, 50])
    np.testing.assert_array_equal(np.bincount(y_tr), [375, 225, 150])
    np.testing.assert_array_equal(y[x_te], y_te)
    y = np.repeat([0, 1, 2], [7, 5, 3])
    _, y_te = train_test_split(y, test_size=0.4, seed=1, stratify=y)
    assert len(y_te) == 6
    expected = np.bincount(y) * 0.4
    assert (np.abs(np.bincount(y_te, minlength=3) - expected) < 1).all()


def test_train_test_split_errors():
    with pytest.raises(ValueError, match=r"equal length, got \[3, 4\]"):
        train_test_split(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="both sets need at least one sample"):
        train_test_split(np.ones(3), test_size=3)
    with pytest.raises(ValueError, match="stratify needs shuffle=True"):
        train_test_split(np.ones(4), shuffle=False, stratify=np.ones(4))


def draw_digit(size=200, offset=(10, 10)) -> Image.Image:
    """A dark '7' with a crossbar on a white canvas, in the top-left corner."""
    canvas = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(canvas)
    ox, oy = offset
    draw.line([(ox, oy), (ox + 55, oy), (ox + 20, oy + 90)], fill=0, width=9)
    draw.line([(ox + 15, oy + 45), (ox + 50, oy + 45)], fill=30, width=7)
    return canvas


def center_of_mass(image):
    rows, cols = np.indices(image.shape)
    mass = image.sum()
    return (rows * image).sum() / mass, (cols * image).sum() / mass


def ink_box(image, threshold=0.0):
    rows = np.flatnonzero((image > threshold).any(1))
    cols = np.flatnonzero((image > threshold).any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_digit_in_corner_is_centred_and_scaled():
    out = preprocess_digit(draw_digit())
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0 and out.max() > 0.9
    cy, cx = center_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    assert 19 <= max(ink_box(out)) <= 21
    assert out[0].sum() == 0 and out[:, 0].sum() == 0


def test_light_on_dark_equals_dark_on_light():
    canvas = np.asarray(draw_digit())
    dark_on_light = preprocess_digit(canvas)
    light_on_dark = preprocess_digit(255 - canvas)
    np.testing.assert_allclose(light_on_dark, dark_on_light, atol=1e-5)
    forced = preprocess_digit(canvas, invert=False)
    assert not np.allclose(forced, dark_on_light)


def test_input_kinds_agree(tmp_path):
    canvas = draw_digit()
    reference = preprocess_digit(canvas)
    gray = np.asarray(canvas)
    np.testing.assert_allclose(preprocess_digit(gray / 255.0), reference, atol=1e-5)
    rgb = np.stack([gray] * 3, axis=-1)
    np.testing.assert_allclose(preprocess_digit(rgb), reference, atol=1e-5)
    path = tmp_path / "digit.png"
    canvas.save(path)
    np.testing.assert_allclose(preprocess_digit(path), reference, atol=1e-6)
    np.testing.assert_allclose(preprocess_digit(str(path)), reference, atol=1e-6)


def test_rgba_transparent_background():
    gray = np.asarray(draw_digit())
    rgba = np.zeros(gray.shape + (4,), dtype=np.uint8)
    rgba[..., 3] = 255 - gray
    out = preprocess_digit(rgba)
    np.testing.assert_allclose(out, preprocess_digit(gray), atol=1e-5)
    out_pil = preprocess_digit(Image.fromarray(rgba))
    np.testing.assert_allclose(out_pil, out, atol=1e-6)


def test_mnist_digit_round_trip():
    images = read_idx_images(DATA_DIR / "mnist" / "t10k-images-idx3-ubyte.gz")[:20]
    correlations = []
    for original in images:
        big = np.asarray(Image.fromarray(original).resize((280, 280), Image.Resampling.BILINEAR))
        out = preprocess_digit(255 - big)
        correlations.append(np.corrcoef(out.ravel(), original.ravel())[0, 1])
    assert min(correlations) > 0.9, correlations
    assert np.mean(correlations) > 0.95


@pytest.mark.parametrize("value", [255, 0, 128])
def test_blank_image_gives_zeros(value):
    out = preprocess_digit(np.full((64, 48), value, dtype=np.uint8))
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert not out.any()


def test_faint_noise_is_blank():
    rng = np.random.default_rng(0)
    paper = (250 - rng.integers(0, 10, (100, 100))).astype(np.uint8)
    assert not preprocess_digit(paper).any()


def test_bad_inputs(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match="nope.png"):
        preprocess_digit(missing)
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    with pytest.raises(ValueError, match="could not read .*notes.png as an image"):
        preprocess_digit(not_image)
    with pytest.raises(ValueError, match=r"got shape \(4, 4, 5\)"):
        preprocess_digit(np.zeros((4, 4, 5)))


def test_optional_dependencies_are_lazy():
    code = (
        "import sys, chainrule.data; "
        "assert 'PIL' not in sys.modules and 'tqdm' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_pillow_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r'pip install "chainrule\[image\]"'):
        preprocess_digit(np.zeros((28, 28), np.uint8))
