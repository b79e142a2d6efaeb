"""Every plot rendered headless to PNG from real (tiny) trainings, and GradientNormLogger.

A PNG passes when it has the expected size and is not blank: the standard deviation of its
grey levels is above a threshold that a white or single-colour image cannot reach.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import chainrule as cr
from chainrule import layers, losses, models, optimizers, plot
from chainrule.data import load_mnist, make_blobs, make_spirals, make_xor

DATA_ROOT = Path(
    os.environ.get("CHAINRULE_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
MIN_STD = 12.0


def assert_png(path: Path, min_size=(300, 200)) -> np.ndarray:
    """Open a PNG, check its size and that it is not blank; return it as grey levels."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        grey = np.asarray(image.convert("L"), dtype=np.float64)
    assert width >= min_size[0] and height >= min_size[1], f"{path.name}: {image.size}"
    assert grey.std() > MIN_STD, f"{path.name} looks blank (grey std {grey.std():.1f})"
    return grey


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


@pytest.fixture(scope="module")
def mnist():
    (x_train, y_train), (x_test, y_test) = load_mnist(DATA_ROOT, progress=False)
    return x_train[:4000], y_train[:4000], x_test[:1000], y_test[:1000]


@pytest.fixture(scope="module")
def softmax_run(mnist):
    x, y, x_test, y_test = mnist
    model = models.softmax_regression(seed=0)
    history = model.fit(x, y, epochs=3, batch_size=128, validation_split=0.25, seed=0,
                        verbose=0)
    return model, history, model.predict_proba(x_test)


# ---------------------------------------------------------------------- learning curves
def test_learning_curves_from_history_dict_and_run_folder(softmax_run, tmp_path):
    model, history, _ = softmax_run
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "history.json").write_text(json.dumps(history.history))
    sources = {"history": history, "model": model, "dict": history.history,
               "folder": tmp_path / "run",
               "file": str(tmp_path / "run" / "history.json")}
    for name, source in sources.items():
        path = tmp_path / f"curves-{name}.png"
        fig = plot.plot_learning_curves(source, path)
        assert_png(path, (900, 300))
        loss_ax, acc_ax = fig.axes
        assert loss_ax.get_title() == "loss" and acc_ax.get_title() == "accuracy"
        train, val = loss_ax.get_lines()
        assert list(train.get_ydata()) == history.history["loss"]
        assert list(val.get_ydata()) == history.history["val_loss"]
        assert list(acc_ax.get_lines()[1].get_ydata()) == history.history["val_accuracy"]
        assert list(train.get_xdata()) == [1, 2, 3]


def test_learning_curves_refuse_an_empty_history_and_a_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        plot.plot_learning_curves({})
    with pytest.raises(FileNotFoundError, match="history.json"):
        plot.plot_learning_curves(tmp_path)


def test_missing_matplotlib_says_what_to_install(monkeypatch):
    monkeypatch.setattr(plot, "_MPL", None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'pip install "chainrule\[plot\]"'):
        plot.plot_learning_curves({"loss": [1.0]})


# ---------------------------------------------------------------------- weights
def test_softmax_weights_are_ten_templates_on_one_scale_centred_on_zero(softmax_run, tmp_path):
    model, _, _ = softmax_run
    fig = plot.plot_weights(model, tmp_path / "weights.png")
    assert_png(tmp_path / "weights.png", (700, 300))
    panels = image_axes(fig)
    assert len(panels) == 10
    assert [ax.get_title() for ax in panels] == [f"class {c}" for c in range(10)]
    W = model.layers[1].W.value
    limits = set()
    for c, ax in enumerate(panels):
        image = ax.images[0]
        np.testing.assert_array_equal(image.get_array(), W[:, c].reshape(28, 28))
        vmin, vmax = image.get_clim()
        assert vmin == -vmax > -np.inf, "the colour scale must be centred on 0"
        assert image.get_cmap().name == "RdBu_r"
        limits.add(vmax)
    assert len(limits) == 1, "the ten templates share one colour scale"


def test_mlp_first_layer_units_and_cnn_filters_as_images(mnist, tmp_path):
    x, y, _, _ = mnist
    mlp = models.mlp(hidden=(32,), seed=0)
    mlp.fit(x[:2000], y[:2000], epochs=1, verbose=0, seed=0)
    fig = plot.plot_weights(mlp, tmp_path / "mlp.png")
    assert_png(tmp_path / "mlp.png", (500, 400))
    mosaic = fig.axes[0].images[0].get_array()
    # 32 units of 28×28 in an 8-column mosaic with one blank line between tiles.
    assert mosaic.shape == (4 * 29 - 1, 8 * 29 - 1)
    first_dense = mlp.layers[2]  # after the preset's RandomShift and Flatten
    assert isinstance(first_dense, layers.Dense)
    unit = first_dense.W.value[:, 9].reshape(28, 28)
    tile = mosaic[29:57, 29:57]  # unit 9: row 1, column 1
    np.testing.assert_allclose(tile, unit / np.abs(unit).max(), rtol=1e-6)

    cnn = models.cnn(seed=0)
    cnn.fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=0, seed=0)
    fig = plot.plot_weights(cnn, tmp_path / "cnn.png")
    assert_png(tmp_path / "cnn.png", (450, 250))
    W = cnn.layers[1].W.value  # (32, 1, 5, 5), after the RandomShift
    mosaic = fig.axes[0].images[0].get_array()
    # 32 filters of 5×5 in an 8-column mosaic with one blank line between tiles.
    assert mosaic.shape == (4 * 6 - 1, 8 * 6 - 1)
    # filter 10: row 1, column 2
    np.testing.assert_allclose(mosaic[6:11, 12:17], W[10, 0] / np.abs(W[10, 0]).max(),
                               rtol=1e-6)
    assert fig.get_suptitle().startswith("conv2d_1: the first 32 of 32 filters 5×5")


def test_weights_need_an_image_shaped_first_layer():
    model = cr.Sequential([layers.Dense(4, input_shape=(10,))], seed=0)
    with pytest.raises(ValueError, match="image_shape"):
        plot.plot_weights(model)
    with pytest.raises(ValueError, match="no built Dense or Conv2D"):
        plot.plot_weights(cr.Sequential([layers.ReLU(input_shape=(4,))]))


# ---------------------------------------------------------------------- digits
def test_digit_grid_titles_true_and_predicted_labels(softmax_run, mnist, tmp_path):
    _, _, probs = softmax_run
    _, _, x_test, y_test = mnist
    fig = plot.plot_digits(x_test[:20], y_test[:20], probs[:20], tmp_path / "digits.png")
    assert_png(tmp_path / "digits.png", (900, 250))
    panels = image_axes(fig)
    assert len(panels) == 20
    for i, ax in enumerate(panels):
        pred = int(np.argmax(probs[i]))
        assert ax.get_title() == f"true {y_test[i]}\npred {pred} ({probs[i, pred]:.2f})"
        assert ax.title.get_color() == (plot.RIGHT if pred == y_test[i] else plot.WRONG)


def test_most_confidently_wrong_digits(softmax_run, mnist, tmp_path):
    _, _, probs = softmax_run
    _, _, x_test, y_test = mnist
    idx = plot.most_confident_mistakes(y_test, probs, n=12)
    pred = probs.argmax(axis=1)
    assert len(idx) == 12 and np.all(pred[idx] != y_test[idx])
    confidence = probs[idx, pred[idx]]
    assert np.all(np.diff(confidence) <= 0), "most confident first"
    others = np.setdiff1d(np.flatnonzero(pred != y_test), idx)
    assert confidence[-1] >= probs[others, pred[others]].max()

    fig = plot.plot_mistakes(x_test, y_test, probs, n=12, path=tmp_path / "mistakes.png")
    assert_png(tmp_path / "mistakes.png", (900, 250))
    panels = image_axes(fig)
    assert len(panels) == 12
    assert all(ax.title.get_color() == plot.WRONG for ax in panels)
    np.testing.assert_array_equal(panels[0].images[0].get_array(), x_test[idx[0]])

    perfect = np.eye(10)[y_test[:5]]
    fig = plot.plot_mistakes(x_test[:5], y_test[:5], perfect, path=tmp_path / "none.png")
    assert "no mistakes" in fig.texts[0].get_text()


# ---------------------------------------------------------------------- confusion matrix
def test_confusion_matrix_heatmap_shows_every_count(softmax_run, mnist, tmp_path):
    _, _, probs = softmax_run
    _, _, _, y_test = mnist
    pred = probs.argmax(axis=1)
    fig = plot.plot_confusion_matrix(y_test, pred, tmp_path / "cm.png")
    assert_png(tmp_path / "cm.png", (500, 450))
    ax = fig.axes[0]
    cm = cr.metrics.confusion_matrix(y_test, pred, num_classes=10)
    cells = {}
    for text in ax.texts:
        j, i = text.get_position()
        cells[(int(i), int(j))] = int(text.get_text())
    assert cells == {(i, j): int(cm[i, j]) for i in range(10) for j in range(10) if cm[i, j]}
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"


# ---------------------------------------------------------------------- decision regions
def test_decision_regions_on_blobs_spirals_and_xor(tmp_path):
    x, y = make_blobs(300, centers=3, seed=0)
    blobs = models.softmax_regression(num_classes=3, input_shape=(2,), lr=0.1, seed=0)
    blobs.fit(x, y, epochs=20, verbose=0, seed=0)
    fig = plot.plot_decision_regions(blobs, x, y, tmp_path / "blobs.png", resolution=100)
    grey = assert_png(tmp_path / "blobs.png", (450, 400))
    regions = fig.axes[0].images[0].get_array()
    assert regions.shape == (100, 100) and set(np.unique(regions)) == {0, 1, 2}
    assert "1.000" in fig.axes[0].get_title()

    x, y = make_spirals(300, seed=0)
    spirals = models.mlp(hidden=(64, 64), num_classes=3, input_shape=(2,), lr=1e-2, seed=0)
    spirals.fit(x, y, epochs=40, verbose=0, seed=0)
    plot.plot_decision_regions(spirals, x, y, tmp_path / "spirals.png", resolution=100)
    assert not np.array_equal(assert_png(tmp_path / "spirals.png", (450, 400)), grey)

    x, y = make_xor(200, seed=0)
    xor = cr.Sequential([layers.Dense(8, activation="tanh", input_shape=(2,)), layers.Dense(1)],
                        seed=0)
    xor.compile(optimizers.Adam(0.05), losses.BinaryCrossEntropy(from_logits=True))
    xor.fit(x, y[:, None].astype(np.float32), epochs=60, verbose=0, seed=0)
    fig = plot.plot_decision_regions(xor, x, y, tmp_path / "xor.png", resolution=100)
    assert_png(tmp_path / "xor.png", (450, 400))
    regions = fig.axes[0].images[0].get_array()
    # XOR: the corners (0,0) and (1,1) are class 0, (0,1) and (1,0) class 1.
    lo, hi = 10, 89
    assert regions[lo, lo] == regions[hi, hi] == 0 and regions[hi, lo] == regions[lo, hi] == 1


def test_animation_gif_shows_regions_changing_over_training(tmp_path):
    x, y = make_spirals(150, seed=1)
    model = models.mlp(hidden=(32, 32), num_classes=3, input_shape=(2,), lr=1e-2, seed=0)
    path = tmp_path / "spirals.gif"
    fig = plot.animate_decision_regions(model, x, y, path, epochs=20, frames=4, resolution=60)
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 5
        assert gif.size[0] >= 350 and gif.size[1] >= 300
        frames = []
        for k in (0, 4):
            gif.seek(k)
            frames.append(np.asarray(gif.convert("L"), dtype=np.float64))
    assert all(frame.std() > MIN_STD for frame in frames)
    assert np.mean(frames[0] != frames[1]) > 0.05, "the regions must change during training"
    epochs = [epoch for epoch, _, _ in fig.snapshots]
    accuracies = [accuracy for _, _, accuracy in fig.snapshots]
    assert epochs == [0, 5, 10, 15, 20]
    assert accuracies[-1] > accuracies[0] + 0.2
    assert fig.axes[0].get_title().startswith("epoch 20/20")
    with pytest.raises(ValueError, match="frames"):
        plot.animate_decision_regions(model, x, y, epochs=2, frames=3)


# ---------------------------------------------------------------------- gradient norms
def test_gradient_norm_logger_records_the_norm_of_each_applied_gradient(mnist):
    x, y, _, _ = mnist
    model = models.mlp(hidden=(16,), seed=0)
    logger = cr.GradientNormLogger()
    model.fit(x[:256], y[:256], epochs=2, batch_size=64, shuffle=False, seed=0, verbose=0,
              callbacks=[logger])
    assert list(logger.norms) == ["dense_1.W", "dense_1.b", "dense_2.W", "dense_2.b"]
    assert logger.steps == list(range(1, 9))
    assert all(len(v) == 8 for v in logger.norms.values())

    # The same 8 steps by hand: after each step, the norm of every gradient it applied.
    twin = models.mlp(hidden=(16,), seed=0)
    expected = {name: [] for name in logger.norms}
    for _ in range(2):
        for start in range(0, 256, 64):
            twin.train_step(x[start:start + 64], y[start:start + 64])
            for layer in twin.layers:
                for p in layer.parameters():
                    norm = float(np.linalg.norm(p.grad.astype(np.float64)))
                    expected[f"{layer.name}.{p.name}"].append(norm)
    for name, values in logger.norms.items():
        assert values == pytest.approx(expected[name], rel=1e-5), name

    per_epoch = cr.GradientNormLogger(every="epoch")
    again = models.mlp(hidden=(16,), seed=0)
    again.fit(x[:256], y[:256], epochs=2, batch_size=64, shuffle=False, seed=0, verbose=0,
              callbacks=[per_epoch])
    assert per_epoch.steps == [1, 2]
    for name, values in per_epoch.norms.items():
        batch = logger.norms[name]
        assert values == pytest.approx([np.mean(batch[:4]), np.mean(batch[4:])], rel=1e-6)
    with pytest.raises(ValueError, match="every"):
        cr.GradientNormLogger(every="step")


def test_gradient_norms_vanish_through_sigmoids_not_through_relus(mnist, tmp_path):
    x, y, _, _ = mnist
    loggers = {}
    for activation in ("sigmoid", "relu"):
        net = models.mlp(hidden=(32,) * 5, activation=activation, lr=1e-3, seed=0)
        loggers[activation] = cr.GradientNormLogger()
        net.fit(x[:1280], y[:1280], epochs=1, batch_size=64, seed=0, verbose=0,
                callbacks=[loggers[activation]])
    ratio = {name: np.mean(log.norms["dense_1.W"]) / np.mean(log.norms["dense_6.W"])
             for name, log in loggers.items()}
    assert ratio["sigmoid"] < 0.02 < 0.2 < ratio["relu"], ratio

    fig = plot.plot_gradient_norms(loggers, tmp_path / "norms.png")
    assert_png(tmp_path / "norms.png", (900, 350))
    sigmoid_ax, relu_ax = fig.axes
    assert sigmoid_ax.get_title() == "sigmoid" and sigmoid_ax.get_yscale() == "log"
    assert len(sigmoid_ax.get_lines()) == len(relu_ax.get_lines()) == 6  # W of 6 Dense layers
    fig = plot.plot_gradient_norms(loggers["relu"].norms, tmp_path / "one.png", params=None)
    assert len(fig.axes[0].get_lines()) == 12
    assert_png(tmp_path / "one.png", (450, 350))


# ---------------------------------------------------------------------- headless, quiet
def test_plots_never_touch_pyplot_and_stay_quiet_with_a_fresh_config_dir(tmp_path):
    """In a fresh process with an empty matplotlib config dir (as in CI, where the font cache
    is built on first use): no pyplot (so no GUI backend), and nothing on stdout or stderr,
    which `chainrule train --quiet` relies on."""
    code = (
        "import sys\n"
        "from chainrule import plot\n"
        "plot.plot_learning_curves({'loss': [1.0, 0.5]}, sys.argv[1])\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mplconfig")}
    env.pop("MPLBACKEND", None)
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c.png")], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert_png(tmp_path / "c.png", (400, 300))
