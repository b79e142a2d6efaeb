"""Pictures of a model learning: learning curves, weight images, digits, confusion matrix,
decision regions (still and animated) and gradient norms.

Every function returns a ``matplotlib.figure.Figure`` built with the object API (no pyplot, no
``show``, so it works headless and never opens a window) and saves it when given ``path``. In
Jupyter, run ``%matplotlib inline`` once and a returned Figure displays as the cell's result.

matplotlib is imported on first use: ``import chainrule.plot`` works without it, and a plot
raises an ImportError that says what to install.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from . import metrics as metrics_mod
from . import runs
from .layers import Conv2D, Dense, Sigmoid

__all__ = [
    "animate_decision_regions",
    "figure_to_png",
    "load_history",
    "most_confident_mistakes",
    "plot_confusion_matrix",
    "plot_decision_regions",
    "plot_digits",
    "plot_gradient_norms",
    "plot_learning_curves",
    "plot_mistakes",
    "plot_weights",
]

# Red, green, blue first: the lecture's three classes; then the rest of matplotlib's tab10.
CLASS_COLORS = ("#d62728", "#2ca02c", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf")
RIGHT, WRONG = "#1a7f37", "#cf222e"

_MPL: dict | None = None


def matplotlib_modules() -> dict:
    """matplotlib's Figure, Agg canvas, colors and animation modules, imported once.

    Raises:
        ImportError: without matplotlib, naming the extra to install.
    """
    global _MPL
    if _MPL is None:
        # The first import in a fresh environment logs "building the font cache" as a warning;
        # keep it quiet so that `chainrule train --quiet` prints nothing.
        log = logging.getLogger("matplotlib")
        level = log.level
        log.setLevel(max(level, logging.ERROR))
        try:
            from matplotlib import animation, colormaps, colors, ticker
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise ImportError(
                f"chainrule's plots and reports need matplotlib ({exc}); install it with: "
                'pip install "chainrule[plot]"'
            ) from exc
        finally:
            log.setLevel(level)
        _MPL = {"Figure": Figure, "Canvas": FigureCanvasAgg, "colors": colors,
                "ticker": ticker, "animation": animation, "colormaps": colormaps}
    return _MPL


def _figure(width: float, height: float, layout: str | None = "constrained"):
    mpl = matplotlib_modules()
    fig = mpl["Figure"](figsize=(width, height), layout=layout)
    mpl["Canvas"](fig)
    return fig


def _finish(fig, path, dpi: int = 100):
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def figure_to_png(fig, dpi: int = 100) -> bytes:
    """The Figure rendered as PNG bytes (what the HTML report embeds)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# ---------------------------------------------------------------------- learning curves
def load_history(source) -> dict[str, list[float]]:
    """Per-epoch logs as a dict name → list, from a History (or a model after ``fit``), a dict,
    a history.json or a run folder.

    Raises:
        FileNotFoundError: for a path with no history.json.
        TypeError: for anything else.
    """
    history = getattr(source, "history", source)  # a Sequential → its History → the dict
    history = getattr(history, "history", history)
    if isinstance(history, dict):
        return {str(k): [float(v) for v in vals] for k, vals in history.items()}
    if isinstance(source, str | Path):
        path = Path(source)
        if not (path.is_file() or (path / runs.HISTORY_JSON).is_file()):
            raise FileNotFoundError(
                f"no history.json at {path}; pass a run folder written by chainrule train"
            )
        return load_history(runs.read_history(path))
    raise TypeError(
        "expected a History, a dict of per-epoch lists, or a run folder / history.json path, "
        f"got {type(source).__name__}"
    )


def plot_learning_curves(history, path=None, title: str | None = None):
    """Training and validation loss and accuracy per epoch, one panel per quantity.

    Args:
        history: a History (``model.fit``'s return value), its ``.history`` dict, the model
            itself after ``fit``, or a run folder (or its history.json).
        path: where to save the figure (PNG, SVG, PDF by extension), or None.
        title: a title above the panels.

    Returns:
        The Figure.

    Raises:
        ValueError: for an empty history.
    """
    logs = load_history(history)
    names = [k for k in logs if not k.startswith("val_")]
    names += [k[4:] for k in logs if k.startswith("val_") and k[4:] not in logs]
    names.sort(key=lambda k: (k != "loss", k))
    if not names or not any(logs.values()):
        raise ValueError("plot_learning_curves: the history is empty (no epoch has run)")
    mpl = matplotlib_modules()
    fig = _figure(5.0 * len(names), 3.6)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        for key, label, style in ((name, "train", "-"), (f"val_{name}", "validation", "--")):
            values = logs.get(key)
            if not values:
                continue
            epochs = np.arange(1, len(values) + 1)
            ax.plot(epochs, values, style, marker="o", markersize=4,
                    label=f"{label}  (last {values[-1]:.4f})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        epochs_run = max(len(v) for v in logs.values())
        if epochs_run <= 20:
            ax.set_xticks(range(1, epochs_run + 1))
        else:
            ax.xaxis.set_major_locator(mpl["ticker"].MaxNLocator(integer=True))
        ax.set_xlim(0.5 if epochs_run <= 20 else 0, epochs_run + 0.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


# ---------------------------------------------------------------------- weight images
def _first_weight_layer(model):
    for layer in model.layers:
        if isinstance(layer, Dense | Conv2D) and layer.built:
            return layer
    return None


def _image_shape(model, features: int, image_shape) -> tuple[int, int]:
    if image_shape is not None:
        shape = tuple(int(s) for s in image_shape)
    else:
        sample = tuple(s for s in (model.input_shape or ()) if s != 1)
        if len(sample) == 2 and math.prod(sample) == features:
            shape = sample
        else:
            side = math.isqrt(features)
            shape = (side, side)
    if len(shape) != 2 or math.prod(shape) != features:
        raise ValueError(
            f"plot_weights: the first Dense layer has {features} inputs, which do not form an "
            f"image of shape {shape}; pass image_shape=(H, W) with H·W = {features}"
        )
    return shape


def _grid(n: int) -> tuple[int, int]:
    ncols = 5 if n == 10 else min(n, 8 if n > 16 else math.ceil(math.sqrt(n)))
    return math.ceil(n / ncols), ncols


def plot_weights(model, path=None, max_images: int = 64, image_shape=None, channel: int = 0,
                 title: str | None = None):
    """The first layer's weights as images, on a diverging colormap centred on 0.

    - Softmax regression (the first Dense is the output layer): its C weight vectors
      W[:, c] as 28×28 templates, one per class, on one shared colour scale (the lecture's
      closing picture: red where ink raises the class score, blue where it lowers it).
    - MLP: the first Dense layer's columns W[:, m], the input pattern each hidden unit
      responds to (each image on its own symmetric scale).
    - CNN: the first Conv2D's filters W[f, channel] of shape (kh, kw).

    Args:
        model: a built Sequential with a Dense or Conv2D layer.
        path: where to save, or None.
        max_images: show at most this many units or filters (the first ones).
        image_shape: (H, W) of the input image when the model's input shape does not say.
        channel: which input channel of a Conv2D filter to show.
        title: overrides the default title.

    Returns:
        The Figure.

    Raises:
        ValueError: if the model has no Dense/Conv2D layer, or the weights are not image-shaped.
    """
    layer = _first_weight_layer(model)
    if layer is None:
        raise ValueError("plot_weights: the model has no built Dense or Conv2D layer")
    W = np.asarray(layer.W.value, dtype=np.float64)
    dense_layers = [lyr for lyr in model.layers if isinstance(lyr, Dense | Conv2D)]
    if isinstance(layer, Conv2D):
        images = W[:, channel]
        labels = [f"{f}" for f in range(len(images))]
        shared = False
        default_title = (f"{layer.name}: the first {min(len(images), max_images)} of "
                         f"{len(images)} filters {W.shape[2]}×{W.shape[3]}")
    else:
        shape = _image_shape(model, W.shape[0], image_shape)
        images = W.T.reshape(-1, *shape)
        if layer is dense_layers[-1]:
            labels = [f"class {c}" for c in range(len(images))]
            shared = True
            default_title = f"{layer.name}: one weight template per class, W[:, c] as an image"
        else:
            labels = [f"unit {m}" for m in range(len(images))]
            shared = False
            default_title = (f"{layer.name}: the first {min(len(images), max_images)} of "
                             f"{len(images)} hidden units, W[:, m] as an image")
    images = images[:max_images]
    n = len(images)
    rows, cols = _grid(n)
    if shared or n <= 16:
        fig = _figure(cols * 1.6 + (0.8 if shared else 0.2), rows * 1.6 + 0.6)
        axes = fig.subplots(rows, cols, squeeze=False)
        vmax_all = float(np.percentile(np.abs(images), 99.5)) or 1.0
        mappable = None
        for i, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if i >= n:
                continue
            vmax = vmax_all if shared else (float(np.abs(images[i]).max()) or 1.0)
            mappable = ax.imshow(images[i], cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                                 interpolation="nearest")
            ax.set_title(labels[i], fontsize=9, pad=2)
        if shared and mappable is not None:
            fig.colorbar(mappable, ax=axes, shrink=0.8, label="weight")
    else:
        # Many units: one mosaic image (row-major, unit 0 top left), each tile scaled to its
        # own max |w|, tiles separated by a blank line; far faster than one Axes per unit.
        h, w = images.shape[1:]
        mosaic = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
        for i, image in enumerate(images):
            r, c = divmod(i, cols)
            scale = float(np.abs(image).max()) or 1.0
            mosaic[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = image / scale
        cmap = matplotlib_modules()["colormaps"]["RdBu_r"].with_extremes(bad="white")
        cell = 1.1 if h >= 10 else 0.6
        fig = _figure(min(9.0, cols * cell) + 0.2, min(9.0, cols * cell) * rows / cols + 0.6)
        ax = fig.subplots()
        ax.imshow(mosaic, cmap=cmap, vmin=-1.0, vmax=1.0, interpolation="nearest")
        ax.set_axis_off()
        what = "filters" if isinstance(layer, Conv2D) else "units"
        ax.set_title(f"{what} 0–{n - 1} row by row, each on its own scale ±max|w|",
                     fontsize=9)
    fig.suptitle(title or default_title, fontsize=11)
    return _finish(fig, path)


# ---------------------------------------------------------------------- digits
def _as_images(images) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim == 2:
        side = math.isqrt(x.shape[1])
        if side * side != x.shape[1]:
            raise ValueError(f"expected square images, got rows of {x.shape[1]} pixels")
        x = x.reshape(len(x), side, side)
    if x.ndim != 3:
        raise ValueError(f"expected images of shape (N, H, W) or (N, H·W), got {x.shape}")
    return x


def plot_digits(images, labels=None, probabilities=None, path=None, ncols: int = 10,
                max_images: int = 50, title: str | None = None):
    """A grid of digits, each titled with its true label, predicted label and probability.

    Args:
        images: (N, 28, 28), (N, 784) or (N, 1, 28, 28).
        labels: true labels (N,), or None.
        probabilities: model probabilities (N, C), or None; the prediction is their argmax.
        path: where to save, or None.
        ncols: images per row.
        max_images: show the first this many.
        title: a title above the grid.

    Returns:
        The Figure. Titles are green where the prediction is right, red where it is wrong.
    """
    x = _as_images(images)[:max_images]
    n = len(x)
    if n == 0:
        raise ValueError("plot_digits: no images to show")
    probs = None if probabilities is None else np.asarray(probabilities)[:n]
    truth = None if labels is None else np.asarray(labels)[:n]
    ncols = max(1, min(ncols, n))
    rows = math.ceil(n / ncols)
    # A fixed grid in inches (no layout engine, which is slow for many small Axes): each
    # digit 0.95 in square under a two-line title, 0.05 in apart.
    side, caption, gap, edge = 0.95, 0.38, 0.05, 0.03
    head = 0.4 if title else 0.0
    width = ncols * side + (ncols - 1) * gap + 2 * edge
    height = head + rows * (caption + side) + (rows - 1) * gap + edge
    fig = _figure(width, height, layout=None)
    axes = fig.subplots(rows, ncols, squeeze=False, gridspec_kw={
        "left": edge / width, "right": 1 - edge / width, "bottom": edge / height,
        "top": 1 - (head + caption) / height, "wspace": gap / side,
        "hspace": (gap + caption) / side})
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(x[i], cmap="gray_r", interpolation="nearest")
        lines, color = [], "black"
        if truth is not None:
            lines.append(f"true {int(truth[i])}")
        if probs is not None:
            pred = int(np.argmax(probs[i]))
            lines.append(f"pred {pred} ({probs[i, pred]:.2f})")
            if truth is not None:
                color = RIGHT if pred == int(truth[i]) else WRONG
        ax.set_title("\n".join(lines), fontsize=8, color=color, pad=2)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.08 / height, va="top")
    return _finish(fig, path)


def most_confident_mistakes(labels, probabilities, n: int = 20) -> np.ndarray:
    """Indices of the wrongly classified samples, most confident (highest max probability) first.

    Returns:
        int64 array of at most ``n`` indices.
    """
    probs = np.asarray(probabilities)
    labels = np.asarray(labels)
    pred = np.argmax(probs, axis=1)
    wrong = np.flatnonzero(pred != labels)
    order = np.argsort(-probs[wrong, pred[wrong]], kind="stable")
    return wrong[order[:n]].astype(np.int64)


def plot_mistakes(images, labels, probabilities, n: int = 20, path=None, ncols: int = 10):
    """The ``n`` most confidently wrong digits: true label, predicted label, its probability.

    Args:
        images, labels, probabilities: as in :func:`plot_digits`, for the whole test set.
        n: how many mistakes to show.
        path: where to save, or None.
        ncols: images per row.

    Returns:
        The Figure (a note instead of a grid when nothing is misclassified).
    """
    labels = np.asarray(labels)
    probs = np.asarray(probabilities)
    idx = most_confident_mistakes(labels, probs, n)
    total = int(np.count_nonzero(np.argmax(probs, axis=1) != labels))
    if len(idx) == 0:
        fig = _figure(6, 1.2)
        fig.text(0.5, 0.5, f"no mistakes on these {len(labels)} samples", ha="center",
                 va="center", fontsize=12)
        return _finish(fig, path)
    x = _as_images(images)[idx]
    title = (f"The {len(idx)} most confidently wrong of {total} mistakes "
             f"({len(labels)} samples)")
    return plot_digits(x, labels[idx], probs[idx], path=path, ncols=ncols, max_images=n,
                       title=title)


# ---------------------------------------------------------------------- confusion matrix
def plot_confusion_matrix(y_true, y_pred, path=None, class_names=None, title: str | None = None):
    """Confusion-matrix heatmap with the count in every cell.

    Cell (i, j) counts samples of true class i predicted as j. The colour is the fraction of
    true class i (a row-normalised matrix) on a square-root-like scale, so that the few
    mistakes off the diagonal stay visible next to the large diagonal counts.

    Args:
        y_true, y_pred: integer labels (N,).
        path: where to save, or None.
        class_names: C names for the axes (default 0 … C−1).
        title: overrides the default title.

    Returns:
        The Figure.
    """
    c = None if class_names is None else len(class_names)
    cm = metrics_mod.confusion_matrix(y_true, y_pred, num_classes=c)
    c = cm.shape[0]
    names = [str(k) for k in range(c)] if class_names is None else [str(k) for k in class_names]
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    mpl = matplotlib_modules()
    size = max(4.5, 0.45 * c + 1.8)
    fig = _figure(size + 0.9, size)
    ax = fig.subplots()
    image = ax.imshow(frac, cmap="Blues", norm=mpl["colors"].PowerNorm(0.4, vmin=0.0, vmax=1.0))
    fontsize = 9 if c <= 10 else 7 if c <= 20 else 5
    for i in range(c):
        for j in range(c):
            if cm[i, j] == 0:
                continue
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=fontsize,
                    color="white" if frac[i, j] > 0.45 else "black")
    ax.set_xticks(range(c), names)
    ax.set_yticks(range(c), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(cm) / max(int(cm.sum()), 1)
    ax.set_title(title or f"Confusion matrix: {int(cm.sum())} samples, accuracy {accuracy:.4f}")
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    return _finish(fig, path)


# ---------------------------------------------------------------------- decision regions
def _predict_classes(model, x: np.ndarray) -> np.ndarray:
    out = model.predict(x, batch_size=4096)
    if out.ndim == 2 and out.shape[1] > 1:
        return np.argmax(out, axis=1)
    from_logits = getattr(model.loss, "from_logits", None)
    probabilities = isinstance(model.layers[-1], Sigmoid) or from_logits is False
    return (out.reshape(len(x)) > (0.5 if probabilities else 0.0)).astype(np.int64)


def _region_grid(x: np.ndarray, resolution: int, margin: float):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"decision regions need 2-D points of shape (N, 2), got {x.shape}")
    lo, hi = x.min(axis=0), x.max(axis=0)
    pad = margin * np.maximum(hi - lo, 1e-6)
    lo, hi = lo - pad, hi + pad
    xs = np.linspace(lo[0], hi[0], resolution)
    ys = np.linspace(lo[1], hi[1], resolution)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2).astype(np.float32)
    return grid, (lo[0], hi[0], lo[1], hi[1])


def _draw_regions(ax, classes, extent, x, y, num_classes):
    mpl = matplotlib_modules()
    cmap = mpl["colors"].ListedColormap(
        [CLASS_COLORS[k % len(CLASS_COLORS)] for k in range(num_classes)]
    )
    image = ax.imshow(classes, origin="lower", extent=extent, cmap=cmap, vmin=-0.5,
                      vmax=num_classes - 0.5, alpha=0.3, interpolation="nearest", aspect="auto")
    colors = [CLASS_COLORS[int(k) % len(CLASS_COLORS)] for k in y]
    ax.scatter(x[:, 0], x[:, 1], c=colors, s=18, edgecolors="black", linewidths=0.5)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    return image


def plot_decision_regions(model, x, y, path=None, resolution: int = 200, margin: float = 0.15,
                          title: str | None = None, ax=None):
    """The class a 2-D classifier predicts at every point of the plane, with the data on top.

    Args:
        model: a built Sequential taking 2 features (e.g. trained on ``make_blobs``,
            ``make_spirals`` or ``make_xor``); multi-class outputs are argmax-ed, single outputs
            thresholded (0 for logits, 0.5 for probabilities).
        x: points (N, 2); y: their labels (N,).
        path: where to save, or None.
        resolution: grid points per axis.
        margin: blank border around the data, as a fraction of its range.
        title: a title (default: the training accuracy on these points).
        ax: draw into this Axes instead of a new Figure.

    Returns:
        The Figure.
    """
    x = np.asarray(x)
    y = np.asarray(y).astype(np.int64)
    grid, extent = _region_grid(x, resolution, margin)
    classes = _predict_classes(model, grid).reshape(resolution, resolution)
    num_classes = int(max(classes.max(), y.max())) + 1
    if ax is None:
        fig = _figure(5.2, 4.6)
        ax = fig.subplots()
    else:
        fig = ax.figure
    _draw_regions(ax, classes, extent, x, y, num_classes)
    accuracy = float(np.mean(_predict_classes(model, x.astype(np.float32)) == y))
    ax.set_title(title or f"decision regions (accuracy on these points {accuracy:.3f})")
    return _finish(fig, path)


def animate_decision_regions(model, x, y, path=None, epochs: int = 100, frames: int = 20,
                             batch_size: int = 32, seed: int = 0, fps: int = 4,
                             resolution: int = 120, margin: float = 0.15):
    """Train ``model`` on (x, y) in ``frames`` steps and animate its decision regions.

    The model is trained in place: ``fit`` runs epochs 0 … ``epochs`` − 1 in ``frames`` slices
    (each slice continues the last, shuffling exactly as one uninterrupted ``fit`` would), and
    the regions are snapshot before training and after every slice.

    Args:
        model: a compiled Sequential with 2 inputs.
        x, y: the 2-D points (N, 2) and labels (N,).
        path: a .gif to write with matplotlib's Pillow writer, or None.
        epochs: total epochs of training.
        frames: number of training slices (the GIF has ``frames`` + 1 images).
        batch_size, seed: passed to ``fit``.
        fps: frames per second of the GIF.
        resolution, margin: as in :func:`plot_decision_regions`.

    Returns:
        The Figure, showing the last frame; ``figure.animation`` is the
        ``matplotlib.animation.FuncAnimation`` (``figure.animation.to_jshtml()`` plays it in
        a notebook) and ``figure.snapshots`` the list of (epoch, loss, accuracy).

    Raises:
        ValueError: for frames < 1 or epochs < frames.
    """
    if frames < 1 or epochs < frames:
        raise ValueError(f"need 1 <= frames <= epochs, got frames={frames}, epochs={epochs}")
    mpl = matplotlib_modules()
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y).astype(np.int64)
    grid, extent = _region_grid(x, resolution, margin)
    bounds = np.linspace(0, epochs, frames + 1).round().astype(int)

    def snapshot(epoch):
        classes = _predict_classes(model, grid).reshape(resolution, resolution)
        scores = model.evaluate(x, y) if model.loss is not None else {}
        accuracy = float(np.mean(_predict_classes(model, x) == y))
        return classes, (int(epoch), scores.get("loss", math.nan), accuracy)

    shots = [snapshot(0)]
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        model.fit(x, y, epochs=int(end), initial_epoch=int(start), batch_size=batch_size,
                  seed=seed, verbose=0)
        shots.append(snapshot(end))

    num_classes = int(max(max(int(c.max()) for c, _ in shots), y.max())) + 1
    fig = _figure(5.2, 4.6)
    ax = fig.subplots()
    image = _draw_regions(ax, shots[0][0], extent, x, y, num_classes)
    heading = ax.set_title("")

    def show(i):
        classes, (epoch, loss, accuracy) = shots[i]
        image.set_data(classes)
        heading.set_text(f"epoch {epoch}/{epochs}   loss {loss:.3f}   accuracy {accuracy:.3f}")
        return image, heading

    anim = mpl["animation"].FuncAnimation(fig, show, frames=len(shots), interval=1000 / fps,
                                          blit=False, repeat=True)
    if path is not None:
        anim.save(path, writer=mpl["animation"].PillowWriter(fps=fps), dpi=80)
    else:
        # Every frame is precomputed, so an animation that is never played loses nothing:
        # silence matplotlib's "Animation was deleted without rendering anything" warning.
        anim._draw_was_started = True
    show(len(shots) - 1)
    fig.animation = anim
    fig.snapshots = [meta for _, meta in shots]
    return fig


# ---------------------------------------------------------------------- gradient norms
def _norm_series(source):
    norms = getattr(source, "norms", source)
    if not isinstance(norms, dict):
        raise TypeError(
            f"expected a GradientNormLogger or a dict name → list of norms, got "
            f"{type(source).__name__}"
        )
    x = getattr(source, "steps", None)
    unit = "epoch" if getattr(source, "every", "batch") == "epoch" else "step"
    return norms, x, unit


def plot_gradient_norms(source, path=None, params: str | None = "W", title: str | None = None):
    """‖∂L/∂W‖ of each layer over training (log scale), coloured from the first layer to the last.

    Args:
        source: a ``GradientNormLogger`` after ``fit``, a dict "layer/param" → list of norms, or a
            dict label → GradientNormLogger to compare runs side by side on a shared y axis
            (e.g. ``{"sigmoid": a, "relu": b}``).
        path: where to save, or None.
        params: plot only parameters with this name ("W" default; None for all).
        title: a title above the panels.

    Returns:
        The Figure. Vanishing gradients show as the first layers' curves lying decades below
        the last layer's.
    """
    if isinstance(source, dict) and source and all(
        hasattr(v, "norms") for v in source.values()
    ):
        runs = list(source.items())
    else:
        runs = [(None, source)]
    mpl = matplotlib_modules()
    fig = _figure(5.2 * len(runs), 4.3)
    axes = fig.subplots(1, len(runs), squeeze=False, sharey=True)[0]
    viridis = mpl["colormaps"]["viridis"]
    handles = []
    for k, (ax, (label, run)) in enumerate(zip(axes, runs, strict=True)):
        norms, steps, unit = _norm_series(run)
        names = [n for n in norms if params is None or n.rsplit(".", 1)[-1] == params]
        if not names:
            raise ValueError(
                f"plot_gradient_norms: no parameter named {params!r} among {list(norms)}"
            )
        shades = np.linspace(0.0, 0.85, len(names)) if len(names) > 1 else [0.0]
        lines = []
        for name, shade in zip(names, shades, strict=True):
            values = np.asarray(norms[name], dtype=np.float64)
            xs = np.arange(1, len(values) + 1) if steps is None else np.asarray(steps)
            lines += ax.plot(xs, np.maximum(values, 1e-30), color=viridis(shade),
                             linewidth=1.2, label=name)
        if len(lines) > len(handles):
            handles = lines
        ax.set_yscale("log")
        ax.set_xlabel(unit)
        if k == 0:
            ax.set_ylabel("‖∂L/∂W‖ (L2 norm)")
        if label is not None:
            ax.set_title(str(label))
        ax.grid(alpha=0.3, which="both")
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6),
               fontsize=8, frameon=False)
    fig.suptitle(title or "gradient norm per layer, first layer dark → last layer light",
                 fontsize=11)
    return _finish(fig, path)

