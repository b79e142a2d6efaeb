"""Photos of MNIST test digits: how well `preprocess_digit` + a model read real-looking pictures.

Usage:
    CHAINRULE_DATA=../shared/data python benchmarks/photos.py [--model PATH] [--per-condition N]
    CHAINRULE_DATA=../shared/data python benchmarks/photos.py --write-test-photos tests/data/photos

Writes its own photos (seeded, nothing downloaded) from MNIST *test* digits into a temporary
folder: a digit of 15 px up to most of the canvas, canvases up to 1000 px, dark ink on light
paper or light ink on dark paper, sensor noise (σ up to 15 on 0..255) and paper grain, a
lighting gradient of 30% across the page, blur, JPEG down to quality 50, RGB and RGBA, a table
region along one side of the sheet. Each condition varies one of these (the last one all at
once) around a mild base photo. Every photo is read back from its file by
`preprocess_digit(path)`, as `chainrule predict` does.

The model is the MLP preset trained for 3 epochs on the 60,000 training digits (seed 0, about
97–98% on the test digits) unless --model gives a saved one. The table shows, per condition, the
accuracy on the photos next to the accuracy of the same model on the original 28×28 digits of
the same photos. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

# Every knob is a (low, high) range drawn uniformly per photo; BASE is a mild, clean photo.
BASE = {
    "canvas": (120, 400),       # side lengths in px (width and height drawn separately)
    "size": (0.45, 0.8),        # height of the digit's 20-px box, as a fraction of the short side
    "size_px": None,            # or a (low, high) range in px, overriding "size"
    "light_on_dark": 0.0,       # probability of light ink on dark paper
    "noise": (0.0, 3.0),        # sensor noise σ on 0..255
    "grain": (0.0, 2.0),        # paper grain σ (a noise field at 1/4 resolution)
    "gradient": (0.0, 0.0),     # lighting change across the page, as a fraction
    "blur": (0.0, 0.6),         # Gaussian blur radius, in px per 100 px of digit
    "jpeg": None,               # (low, high) JPEG quality; None: PNG
    "rgba": 0.0,                # probability of an RGBA PNG
    "tint": 0.0,                # probability of coloured paper and ink
    "table": 0.0,               # probability of a table region along one side
}

CONDITIONS = {
    "base: 120–400 px canvas, digit 45–80% of it": {},
    "small digit: 15–30 px on a 400–1000 px canvas": {"canvas": (400, 1000), "size_px": (15, 30)},
    "large digit: 80–95% of a 200–1000 px canvas": {"canvas": (200, 1000), "size": (0.8, 0.95)},
    "light ink on dark paper": {"light_on_dark": 1.0},
    "noise σ 8–15 and paper grain": {"noise": (8.0, 15.0), "grain": (2.0, 6.0)},
    "lighting gradient 30% across the page": {"gradient": (0.3, 0.3)},
    "blur (radius 1–2.5 px per 100 px of digit)": {"blur": (1.0, 2.5)},
    "JPEG quality 50–70": {"jpeg": (50, 70)},
    "RGBA PNG, coloured paper and ink": {"rgba": 1.0, "tint": 1.0},
    "sheet edge: a table along one side": {"table": 1.0, "size": (0.35, 0.65)},
    "everything at once": {
        "canvas": (100, 1000), "size": (0.25, 0.9), "light_on_dark": 0.5, "noise": (0.0, 15.0),
        "grain": (0.0, 5.0), "gradient": (0.0, 0.3), "blur": (0.0, 2.0), "jpeg": (50, 95),
        "rgba": 0.25, "tint": 0.5, "table": 0.5,
    },
}


def _draw(rng: np.random.Generator, knob):
    low, high = knob
    return float(rng.uniform(low, high))


def render_photo(digit: np.ndarray, rng: np.random.Generator, spec: dict):
    """One photo of an MNIST digit (28, 28) uint8 (ink bright): (PIL image, save options)."""
    width, height = (round(_draw(rng, spec["canvas"])) for _ in range(2))
    short = min(width, height)
    if spec["size_px"] is not None:
        box = _draw(rng, spec["size_px"])
    else:
        box = _draw(rng, spec["size"]) * short
    # MNIST puts the digit in a 20-px box of the 28-px frame: scale the frame by box / 20.
    side = max(1, round(28 * box / 20))
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC),
                     np.float32) / 255.0
    ink = np.clip(ink, 0.0, 1.0)
    rows = np.flatnonzero((ink > 0.05).any(1))
    cols = np.flatnonzero((ink > 0.05).any(0))
    ink = ink[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    dh, dw = ink.shape
    margin = max(2, round(0.03 * short))
    if dh + 2 * margin > height or dw + 2 * margin > width:
        scale = min((height - 2 * margin) / dh, (width - 2 * margin) / dw)
        ink = np.asarray(Image.fromarray(ink).resize(
            (max(1, int(dw * scale)), max(1, int(dh * scale))), Image.Resampling.BICUBIC))
        ink = np.clip(ink, 0.0, 1.0)
        dh, dw = ink.shape
    top = int(rng.integers(margin, height - dh - margin + 1))
    left = int(rng.integers(margin, width - dw - margin + 1))
    coverage = np.zeros((height, width), np.float32)
    coverage[top: top + dh, left: left + dw] = ink

    light_on_dark = rng.random() < spec["light_on_dark"]
    if light_on_dark:
        paper_level, ink_level = rng.uniform(20, 80), rng.uniform(170, 245)
    else:
        paper_level, ink_level = rng.uniform(165, 245), rng.uniform(10, 80)
    tinted = rng.random() < spec["tint"]
    paper_rgb = paper_level * (rng.uniform(0.88, 1.0, 3) if tinted else np.ones(3))
    ink_rgb = ink_level * (rng.uniform(0.6, 1.4, 3) if tinted else np.ones(3))

    grain_sigma = _draw(rng, spec["grain"])
    paper = np.full((height, width), 1.0, np.float32)
    if grain_sigma > 0:
        coarse = rng.normal(0.0, grain_sigma, (max(1, height // 4), max(1, width // 4)))
        field = Image.fromarray(coarse.astype(np.float32)).resize((width, height),
                                                                  Image.Resampling.BILINEAR)
        paper = paper + np.asarray(field) / paper_level
    scene = (paper[..., None] * paper_rgb * (1.0 - coverage[..., None])
             + coverage[..., None] * ink_rgb)

    if rng.random() < spec["table"]:
        scene = _add_table(scene, rng, (top, left, dh, dw), light_on_dark, paper_level)

    gradient = _draw(rng, spec["gradient"])
    if gradient > 0:
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        along = xx * math.cos(angle) + yy * math.sin(angle)
        along = (along - along.min()) / max(float(along.max() - along.min()), 1.0)
        scene = scene * (1.0 - gradient / 2 + gradient * along)[..., None]

    picture = Image.fromarray(np.clip(scene, 0, 255).round().astype(np.uint8), "RGB")
    radius = _draw(rng, spec["blur"]) * box / 100
    if radius > 0.05:
        picture = picture.filter(ImageFilter.GaussianBlur(radius))
    sigma = _draw(rng, spec["noise"])
    if sigma > 0:
        noisy = np.asarray(picture, np.float32) + rng.normal(0, sigma, (height, width, 3))
        picture = Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8), "RGB")
    if spec["jpeg"] is not None:
        return picture, {"format": "JPEG", "quality": int(round(_draw(rng, spec["jpeg"])))}
    if rng.random() < spec["rgba"]:
        picture = picture.convert("RGBA")
    return picture, {"format": "PNG", "compress_level": 1}


def _add_table(scene, rng, digit_box, light_on_dark: bool, paper_level: float):
    """Replace the part of the picture beyond a (slightly tilted) sheet edge with a table."""
    height, width = scene.shape[:2]
    top, left, dh, dw = digit_box
    gaps = {"top": top, "bottom": height - top - dh, "left": left, "right": width - left - dw}
    side = max(gaps, key=lambda s: gaps[s] * rng.uniform(0.5, 1.0))
    length, across = (width, height) if side in ("top", "bottom") else (height, width)
    # At most 30% of the picture: the sheet stays the larger part of the photo.
    depth_room = min(gaps[side] - max(2, 0.02 * min(height, width)), 0.3 * across)
    depth = max(2.0, depth_room * rng.uniform(0.5, 1.0))
    tilt = rng.uniform(-0.6, 0.6) * min(depth, depth_room - depth + 1) / max(length, 1)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # Distance past the edge line, in px: positive on the table side.
    if side == "top":
        past = depth + tilt * (xx - width / 2) - yy
    elif side == "bottom":
        past = yy - (height - depth) - tilt * (xx - width / 2)
    elif side == "left":
        past = depth + tilt * (yy - height / 2) - xx
    else:
        past = xx - (width - depth) - tilt * (yy - height / 2)
    table = np.clip(past + 0.5, 0.0, 1.0)[..., None]
    # The table differs from the paper in the ink's direction: darker under dark ink.
    level = (paper_level + rng.uniform(60, 140) if light_on_dark
             else paper_level * rng.uniform(0.25, 0.6))
    wood = level * rng.uniform(0.8, 1.0, 3)
    return scene * (1.0 - table) + wood * table


def write_photos(folder: Path, x: np.ndarray, y: np.ndarray, per_condition: int, seed: int):
    """Write the photos into folder: a list of {file, index, label, condition}."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    records = []
    for c, (condition, changes) in enumerate(CONDITIONS.items()):
        spec = {**BASE, **changes}
        for k in range(per_condition):
            index = int(order[c * per_condition + k])
            picture, options = render_photo(x[index], rng, spec)
            suffix = ".jpg" if options["format"] == "JPEG" else ".png"
            path = folder / f"c{c:02d}-{k:03d}-{index}{suffix}"
            picture.save(path, **options)
            records.append({"file": str(path), "index": index, "label": int(y[index]),
                            "condition": condition})
    return records


def train_model(seed: int = 0, epochs: int = 3):
    from chainrule import models
    from chainrule.data import load_mnist

    (x_train, y_train), _ = load_mnist(download=False)
    steps = math.ceil(len(x_train) / 128)
    model = models.mlp(epochs=epochs, steps_per_epoch=steps, seed=seed)
    model.fit(x_train, y_train, epochs=epochs, batch_size=128, verbose=0)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a saved model (model.npz); default: train the MLP")
    parser.add_argument("--per-condition", type=int, default=100, help="photos per condition")
    parser.add_argument("--seed", type=int, default=0, help="seed of the photo generator")
    parser.add_argument("--write-test-photos", metavar="DIR",
                        help="write the small set of test photos into DIR and stop")
    args = parser.parse_args()

    from chainrule.data import load_mnist, preprocess_digit

    _, (x_test, y_test) = load_mnist(normalize=False, download=False)
    if args.write_test_photos:
        write_test_photos(Path(args.write_test_photos), x_test, y_test)
        return

    start = time.perf_counter()
    if args.model:
        from chainrule.serialization import load_model

        model = load_model(args.model)
        model_name = args.model
    else:
        model = train_model()
        model_name = "MLP preset 784-256-256-10, 3 epochs, seed 0"
    train_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        records = write_photos(Path(tmp), x_test, y_test, args.per_condition, args.seed)
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        photos = np.stack([preprocess_digit(r["file"]) for r in records])
        preprocess_s = time.perf_counter() - start
    index = np.array([r["index"] for r in records])
    labels = np.array([r["label"] for r in records])
    originals = x_test[index].astype(np.float32) / 255.0
    on_photos = np.argmax(model.predict(photos), axis=1) == labels
    on_originals = np.argmax(model.predict(originals), axis=1) == labels
    all_test = float(np.mean(np.argmax(model.predict(x_test.astype(np.float32) / 255.0), 1)
                             == y_test))

    print(f"\nmodel: {model_name}; {100 * all_test:.2f}% on the 10,000 test digits")
    print(f"{len(records):,} photos ({args.per_condition} per condition, seed {args.seed}) "
          f"of MNIST test digits; written in {write_s:.1f} s, preprocessed in "
          f"{preprocess_s:.1f} s ({1000 * preprocess_s / len(records):.0f} ms per photo); "
          f"model trained in {train_s:.1f} s\n")
    print("| condition | photos | original 28×28 digits | difference |")
    print("|---|---|---|---|")
    conditions = np.array([r["condition"] for r in records])
    for condition in CONDITIONS:
        chosen = conditions == condition
        photo, original = on_photos[chosen].mean(), on_originals[chosen].mean()
        print(f"| {condition} | {100 * photo:.1f}% | {100 * original:.1f}% | "
              f"{100 * (photo - original):+.1f} |")
    photo, original = on_photos.mean(), on_originals.mean()
    print(f"| **all {len(records):,} photos** | **{100 * photo:.1f}%** | "
          f"**{100 * original:.1f}%** | **{100 * (photo - original):+.1f}** |")


# The committed test photos (tests/data/photos): name, MNIST test index, changes to BASE.
TEST_PHOTOS = [
    ("small-digit", 3, {"canvas": (420, 480), "size_px": (24, 26), "noise": (4, 5)}),
    ("large-digit", 2, {"canvas": (200, 220), "size": (0.9, 0.92), "noise": (3, 4)}),
    ("light-on-dark", 1, {"light_on_dark": 1.0, "noise": (6, 7), "grain": (3, 4)}),
    ("noisy", 18, {"canvas": (160, 180), "noise": (14, 15), "grain": (4, 5)}),
    ("gradient", 4, {"gradient": (0.3, 0.3), "noise": (3, 4)}),
    ("jpeg50-blur", 15, {"jpeg": (50, 50), "noise": (4, 5), "blur": (1.0, 1.5)}),
    ("rgba-tinted", 11, {"canvas": (140, 160), "rgba": 1.0, "tint": 1.0, "noise": (0, 0),
                         "grain": (0, 0)}),
    ("table-edge", 0, {"table": 1.0, "size": (0.4, 0.5), "noise": (4, 5)}),
    ("chalk-by-table", 61, {"light_on_dark": 1.0, "table": 1.0, "size": (0.4, 0.5),
                            "noise": (5, 6)}),
    ("everything", 7, {**CONDITIONS["everything at once"], "canvas": (300, 340),
                       "jpeg": (60, 65), "table": 1.0, "noise": (8, 9)}),
]


def write_test_photos(folder: Path, x_test: np.ndarray, y_test: np.ndarray) -> None:
    """The small set of photos committed under tests/: NAME-CLASS.EXT and photos.json."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    manifest = {}
    for name, index, changes in TEST_PHOTOS:
        picture, options = render_photo(x_test[index], rng, {**BASE, **changes})
        # A few kB each: JPEG unless the photo is about RGBA.
        if options["format"] == "PNG" and picture.mode != "RGBA":
            options = {"format": "JPEG", "quality": 75}
        suffix = ".jpg" if options["format"] == "JPEG" else ".png"
        path = folder / f"{name}-{int(y_test[index])}{suffix}"
        buffer = io.BytesIO()
        picture.save(buffer, **{**options, "optimize": True})
        path.write_bytes(buffer.getvalue())
        manifest[path.name] = {"class": int(y_test[index]), "mnist_test_index": index,
                               "size": list(picture.size), "mode": picture.mode}
    lines = [f"  {json.dumps(name)}: {json.dumps(entry)}" for name, entry in manifest.items()]
    (folder / "photos.json").write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"wrote {len(manifest)} photos into {folder}")


if __name__ == "__main__":
    main()
