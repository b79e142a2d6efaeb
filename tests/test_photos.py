"""preprocess_digit on photos: each step, the committed photos through `chainrule predict`, and
the image-size limits shared with `chainrule serve`."""

import base64
import io
import json
import os
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from chainrule import cli, models
from chainrule.data import (
    MAX_IMAGE_PIXELS,
    ImageTooLargeError,
    check_image_size,
    load_mnist,
    open_image,
    preprocess_digit,
)

DATA_ROOT = Path(
    os.environ.get("CHAINRULE_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
PHOTOS = Path(__file__).resolve().parent / "data" / "photos"


@pytest.fixture(scope="module")
def mnist():
    (x_train, y_train), (x_test, y_test) = load_mnist(DATA_ROOT, normalize=False,
                                                      download=False)
    return x_train, y_train, x_test, y_test


def photo(digit, canvas=(300, 300), box=120, at=(50, 40), paper=205.0, ink=45.0, sigma=0.0,
          gradient=0.0, seed=0) -> np.ndarray:
    """An MNIST digit (28, 28) uint8 as a grey photo (H, W) uint8: its 20-px box scaled to
    `box` px with its top-left corner at `at`, paper and ink levels, a lighting gradient
    (fraction across the page, left to right) and Gaussian noise σ."""
    side = round(28 * box / 20)
    coverage = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC),
                          np.float32) / 255.0
    h, w = canvas
    full = np.zeros(canvas, np.float32)
    top, left = at
    part = coverage[: h - top, : w - left]
    full[top: top + part.shape[0], left: left + part.shape[1]] = np.clip(part, 0.0, 1.0)
    scene = paper * (1.0 - full) + ink * full
    scene *= 1.0 - gradient / 2 + gradient * np.linspace(0.0, 1.0, w, dtype=np.float32)
    scene += np.random.default_rng(seed).normal(0.0, sigma, canvas) if sigma else 0.0
    return np.clip(scene, 0, 255).round().astype(np.uint8)


def corr(a, b) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def ink_box(image, threshold=0.1):
    rows = np.flatnonzero((image > threshold).any(1))
    cols = np.flatnonzero((image > threshold).any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


# ---------------------------------------------------------------------- the committed photos
@pytest.fixture(scope="module")
def small_model(mnist, tmp_path_factory):
    """The MLP preset with one hidden layer of 128, 2 epochs on MNIST (about 97%), saved."""
    x_train, y_train, _, _ = mnist
    model = models.mlp(hidden=(128,), epochs=2, steps_per_epoch=469, seed=0)
    model.fit(x_train.astype(np.float32) / 255.0, y_train, epochs=2, batch_size=128,
              verbose=0, seed=0)
    path = tmp_path_factory.mktemp("photos") / "model.npz"
    model.save(path)
    return model, path


def test_committed_photos_are_small_and_listed():
    listed = json.loads((PHOTOS / "photos.json").read_text())
    files = sorted(p.name for p in PHOTOS.iterdir() if p.suffix in (".jpg", ".png"))
    assert files == sorted(listed) and 5 <= len(files) <= 10
    for name, entry in listed.items():
        assert name.rsplit(".", 1)[0].endswith(f"-{entry['class']}")
        assert (PHOTOS / name).stat().st_size < 16_000, "a few kB each"


def test_chainrule_predict_reads_the_committed_photos(small_model, mnist, capsys):
    """Photos written by benchmarks/photos.py --write-test-photos from MNIST test digits."""
    model, path = small_model
    listed = json.loads((PHOTOS / "photos.json").read_text())
    x_test = mnist[2]
    for name, entry in listed.items():
        original = preprocess_digit(x_test[entry["mnist_test_index"]])
        assert corr(preprocess_digit(PHOTOS / name), original) > 0.8, name
    files = [str(PHOTOS / name) for name in listed]
    assert cli.main(["predict", str(path), *files, "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    got = {Path(a["file"]).name: a["class"] for a in answers}
    assert got == {name: entry["class"] for name, entry in listed.items()}


# ---------------------------------------------------------------------- each step
def test_polarity_light_ink_on_dark_paper_with_a_table_equals_its_negative(mnist):
    digit = mnist[2][0]
    dark_on_light = photo(digit, sigma=4.0)
    dark_on_light[:, -60:] = 90  # a darker table along the right side, a third of the border
    out = preprocess_digit(dark_on_light)
    np.testing.assert_allclose(preprocess_digit(255 - dark_on_light), out, atol=1e-5)
    assert corr(out, preprocess_digit(digit)) > 0.95
    assert corr(preprocess_digit(dark_on_light, invert=False), out) < 0.5


def test_polarity_is_not_fooled_by_a_white_table_beside_a_grey_sheet(mnist):
    digit = mnist[2][0]
    picture = photo(digit, paper=120.0, ink=30.0, sigma=5.0)
    picture[:, :30] = 235  # brighter than the sheet by more than the ink is darker
    assert corr(preprocess_digit(picture), preprocess_digit(digit)) > 0.95
    np.testing.assert_allclose(preprocess_digit(255 - picture), preprocess_digit(picture),
                               atol=1e-5)


def test_lighting_gradient_and_shadow_are_removed(mnist):
    digit = mnist[2][1]
    clean = preprocess_digit(photo(digit))
    lit = photo(digit, gradient=0.3, sigma=3.0).astype(np.float32)
    # The soft shadow of a hand over the upper right: 30% darker, a 60-px penumbra that
    # crosses the digit.
    yy, xx = np.mgrid[0:300, 0:300]
    inside = np.clip((xx - yy - 40) / 60.0, 0.0, 1.0)
    lit *= 1.0 - 0.3 * inside
    out = preprocess_digit(lit.round().astype(np.uint8))
    assert corr(out, clean) > 0.97
    assert out.max() == 1.0 and (out > 0.05).sum() < 1.3 * (clean > 0.05).sum()


def test_specks_a_sheet_edge_and_a_ruled_line_are_dropped(mnist):
    digit = mnist[2][2]
    clean = preprocess_digit(photo(digit))
    busy = photo(digit, sigma=3.0)
    busy[-35:, :] = 70          # the table beyond the sheet's lower edge
    busy[20:23, :] = 120        # a ruled line across the page, above the digit
    rng = np.random.default_rng(1)
    for y, x in zip(rng.integers(30, 255, 12), rng.integers(0, 295, 12), strict=True):
        if not (45 <= y <= 225 and 35 <= x <= 215):  # specks of 2-3 px off the digit
            busy[y: y + 3, x: x + 2] = 60
    out = preprocess_digit(busy)
    assert corr(out, clean) > 0.97
    assert max(ink_box(out)) == max(ink_box(clean)) == 20


def test_a_30_px_digit_on_a_600_px_noisy_canvas_fills_the_20_px_box(mnist):
    digit = mnist[2][3]
    out = preprocess_digit(photo(digit, canvas=(600, 600), box=30, at=(400, 120), sigma=12.0))
    assert 19 <= max(ink_box(out)) <= 21
    rows, cols = np.indices(out.shape)
    assert abs((rows * out).sum() / out.sum() - 14) <= 1
    assert abs((cols * out).sum() / out.sum() - 14) <= 1
    assert corr(out, preprocess_digit(digit)) > 0.85


def test_clean_drawings_that_fill_or_cross_the_canvas_are_kept():
    ring = Image.new("L", (140, 140), 255)
    ImageDraw.Draw(ring).ellipse([5, 5, 135, 135], outline=21, width=40)  # ink on 58%
    out = preprocess_digit(ring)
    assert max(ink_box(out)) == 20 and out[14, 14] < 0.05 and out[14, 6] > 0.9
    one = Image.new("L", (140, 140), 255)
    ImageDraw.Draw(one).line([(70, 0), (70, 139)], fill=21, width=11)  # edge to edge
    assert ink_box(preprocess_digit(one))[0] == 20


def test_light_strokes_on_a_transparent_canvas_equal_dark_ones():
    canvas = Image.new("L", (200, 200), 0)
    ImageDraw.Draw(canvas).line([(60, 40), (120, 40), (80, 160)], fill=255, width=12)
    alpha = np.asarray(canvas)
    dark, light = (np.dstack([np.full((200, 200, 3), value, np.uint8), alpha])
                   for value in (20, 255))
    out = preprocess_digit(light)
    np.testing.assert_array_equal(out, preprocess_digit(dark))
    assert max(ink_box(out)) == 20


def test_a_phone_photo_is_turned_upright_by_its_exif_orientation(mnist, tmp_path):
    upright = photo(mnist[2][5], canvas=(300, 200), box=100, at=(60, 30), sigma=3.0)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90° anticlockwise: show it turned 90° clockwise
    Image.fromarray(np.rot90(upright).copy()).save(tmp_path / "phone.png", exif=exif)
    expected = preprocess_digit(upright)
    np.testing.assert_allclose(preprocess_digit(tmp_path / "phone.png"), expected, atol=1e-5)
    np.testing.assert_allclose(preprocess_digit(Image.open(tmp_path / "phone.png")), expected,
                               atol=1e-5)


def test_photos_without_a_digit_are_blank():
    rng = np.random.default_rng(0)
    noise = rng.normal(200, 15, (400, 500))
    sheet_on_table = noise.copy()
    sheet_on_table[:, :120] = 80
    lit = noise * np.linspace(0.85, 1.15, 500)
    for picture in (noise, sheet_on_table, lit, rng.integers(0, 256, (300, 300))):
        assert not preprocess_digit(np.clip(picture, 0, 255).astype(np.uint8)).any()


def test_a_1000_px_photo_preprocesses_in_well_under_a_second(mnist):
    picture = photo(mnist[2][4], canvas=(1000, 1000), box=400, at=(200, 300), sigma=10.0,
                    gradient=0.3)
    preprocess_digit(picture[:100, :100])
    start = time.perf_counter()
    out = preprocess_digit(picture)
    assert time.perf_counter() - start < 1.0  # about 30 ms on a quiet core
    assert out.any()


# ---------------------------------------------------------------------- size limits
def png_rows(path: Path, width: int, height: int, rows, mode: str = "L") -> Path:
    """A valid PNG written row by row (rows: a function y -> bytes), never whole in memory."""
    channels, color = {"L": (1, 0), "RGB": (3, 2)}[mode]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(6)
    data = bytearray()
    for y in range(height):
        row = rows(y)
        assert len(row) == width * channels
        data += packer.compress(b"\0" + row)
    data += packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", bytes(data))
                     + chunk(b"IEND", b""))
    return path


def gif_declaring(path: Path, width: int, height: int) -> Path:
    """A 1×1 GIF whose screen and image descriptors claim width × height."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1), 255).save(buffer, "GIF")
    data = bytearray(buffer.getvalue())
    data[6:10] = struct.pack("<HH", width, height)
    image = data.index(0x2C, 13)
    data[image + 5: image + 9] = struct.pack("<HH", width, height)
    path.write_bytes(bytes(data))
    return path


def test_check_image_size_names_the_size_and_the_limit():
    assert MAX_IMAGE_PIXELS == 4096 * 4096
    check_image_size(4096, 4096)
    with pytest.raises(ImageTooLargeError, match=r"4097 × 4096 = 16,781,312 pixels, more than "
                       r"the limit of 16,777,216 pixels \(chainrule.data.MAX_IMAGE_PIXELS\)"):
        check_image_size(4097, 4096)
    assert issubclass(ImageTooLargeError, ValueError)


def test_huge_pictures_are_refused_before_decoding(tmp_path):
    white = bytes([255]) * 20000
    cases = [
        (png_rows(tmp_path / "20k.png", 20000, 20000, lambda y: white),
         r"too large: 400,000,000 pixels declared"),
        (gif_declaring(tmp_path / "65535.gif", 65535, 65535),
         r"too large: 4,294,836,225 pixels declared"),
        (png_rows(tmp_path / "10k.png", 10000, 10000, lambda y: white[:10000]),
         r"too large: 10000 × 10000 = 100,000,000 pixels"),
    ]
    for path, message in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Pillow's DecompressionBombWarning stays inside
            with pytest.raises(ImageTooLargeError, match=message + ".*16,777,216"):
                preprocess_digit(path)
            with pytest.raises(ImageTooLargeError, match=message):
                open_image(io.BytesIO(path.read_bytes()))
    with pytest.raises(ImageTooLargeError, match="5000 × 4000"):
        preprocess_digit(Image.new("1", (5000, 4000)))
    with pytest.raises(ImageTooLargeError, match="4000 × 5000"):
        preprocess_digit(np.zeros((5000, 4000), np.uint8))


def test_chainrule_predict_on_a_huge_picture_is_a_clear_error(tmp_path, capsys):
    model = tmp_path / "model.npz"
    models.softmax_regression(seed=0).save(model)
    gif = gif_declaring(tmp_path / "bomb.gif", 65535, 65535)
    assert cli.main(["predict", str(model), str(gif)]) == 1
    err = capsys.readouterr().err
    assert "too large: 4,294,836,225 pixels declared" in err and "Traceback" not in err


def test_serve_and_preprocess_share_the_one_limit(monkeypatch):
    pytest.importorskip("fastapi")
    from chainrule.data import preprocess
    from chainrule.web import app

    assert not hasattr(app, "MAX_IMAGE_PIXELS")
    monkeypatch.setattr(preprocess, "MAX_IMAGE_PIXELS", 30 * 30)
    buffer = io.BytesIO()
    Image.new("L", (40, 30), 255).save(buffer, "PNG")
    with pytest.raises(app.APIError, match="40 × 30 = 1,200 pixels, more than the limit of 900"):
        app.decode_image(base64.b64encode(buffer.getvalue()).decode())
    with pytest.raises(ImageTooLargeError, match="limit of 900"):
        preprocess_digit(np.zeros((30, 40), np.uint8))
    preprocess_digit(np.zeros((30, 30), np.uint8))


def test_a_big_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    picture = Image.new("RGB", (4000, 3000), "white")
    ImageDraw.Draw(picture).line([(2000, 600), (2100, 2400)], fill="black", width=160)
    path = tmp_path / "big.jpg"
    picture.save(path, quality=80)
    opened = open_image(path)
    assert opened.size == (1024, 768)
    out = preprocess_digit(path)
    assert max(ink_box(out)) == 20


# Run by a small launcher process: a child forked straight from pytest would count pytest's own
# memory in its peak (Linux carries the high-water mark across exec).
LAUNCHER = """
import json, os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
out = child.stdout.read()
_, status, usage = os.wait4(child.pid, 0)
print(json.dumps({"status": os.waitstatus_to_exitcode(status), "out": out,
                  "peak_kb": usage.ru_maxrss}))
"""


def peak_rss_mb(code: str) -> tuple[float, str]:
    """Run python -c code in a fresh process: its peak resident memory (MB) and output."""
    launched = subprocess.run([sys.executable, "-c", LAUNCHER, code], capture_output=True,
                              text=True, timeout=120, check=True)
    result = json.loads(launched.stdout)
    assert result["status"] == 0, result["out"]
    return result["peak_kb"] / 1024, result["out"]  # ru_maxrss is in kB on Linux


@pytest.mark.skipif(not hasattr(os, "wait4"), reason="os.wait4 is POSIX-only")
def test_memory_stays_proportional_to_the_working_resolution(tmp_path):
    width = 10000
    ten_k = png_rows(tmp_path / "10k.png", width, width, lambda y: bytes([255]) * width)
    white, black = bytes([255]) * 4096 * 3, bytes([0]) * 4096 * 3
    bar = white[: 1900 * 3] + black[: 300 * 3] + white[: 1896 * 3]
    at_limit = png_rows(tmp_path / "4096.png", 4096, 4096,
                        lambda y: bar if 600 <= y < 3500 else white, mode="RGB")
    code = ("import sys; from chainrule.data import preprocess_digit\n"
            "try:\n    print(preprocess_digit(sys.argv[1]).sum())\n"
            "except ValueError as exc:\n    print(exc)\n")
    peak, out = peak_rss_mb(code.replace("sys.argv[1]", repr(str(ten_k))))
    assert "too large" in out and peak < 600, (peak, out)  # before: 2.0 GB
    peak, out = peak_rss_mb(code.replace("sys.argv[1]", repr(str(at_limit))))
    # The decoded 4096² RGB picture is 50 MB; before, its float copies took 390 MB.
    assert float(out) > 10 and peak < 300, (peak, out)
