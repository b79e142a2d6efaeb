"""The training report: one self-contained HTML page per run folder.

A language-model run (``chainrule lm train``) gets its own page, ``write_lm_report``: the loss
curves in nats per character, the validation and test loss, and words sampled from the model.

``write_report(run_dir)`` reads what ``chainrule train`` leaves in a run folder (model.npz,
history.json, config.json, manifest.json), reloads the test set named in config.json, and
writes ``report.html``: the configuration, final metrics, classification report, learning
curves, confusion matrix, the most confidently wrong test digits and the first layer's weights
as images. Every image is a base64 PNG data URI and the page has no script, no external style
sheet and no web font, so it opens offline and makes no request beyond itself.
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path

import numpy as np

from . import functional, plot, runs
from . import metrics as metrics_mod
from .data import load_idx_dataset
from .fileio import atomic_write
from .serialization import load_model
from .version import __version__

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 1100px; padding: 1.5rem 2rem 3rem; color: #1f2328;
       line-height: 1.45; background: #fff; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 .6rem; padding-bottom: .25rem;
     border-bottom: 1px solid #d0d7de; }
.sub { color: #59636e; margin: 0 0 1rem; }
.cards { display: flex; flex-wrap: wrap; gap: .75rem; margin: 1rem 0; }
.card { border: 1px solid #d0d7de; border-radius: 8px; padding: .6rem 1rem; min-width: 9rem; }
.card .v { font-size: 1.5rem; font-weight: 600; }
.card .k { color: #59636e; font-size: .85rem; }
table { border-collapse: collapse; font-size: .92rem; }
th, td { text-align: left; padding: .25rem .9rem .25rem 0; border-bottom: 1px solid #eaeef2;
         vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f8fa; border-radius: 6px; padding: .8rem 1rem; overflow-x: auto;
      font-size: .85rem; }
figure { margin: .5rem 0 1rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #59636e; font-size: .88rem; margin-top: .3rem; }
.columns { display: flex; flex-wrap: wrap; gap: 0 2rem; align-items: flex-start; }
"""


def write_report(run_dir, test_data=None, data_dir=None, path=None) -> Path:
    """Build ``RUN_DIR/report.html`` from a run folder written by ``chainrule train``.

    Args:
        run_dir: the run folder (model.npz, history.json, config.json; manifest.json optional).
        test_data: (x_test, y_test) to score instead of reloading the dataset named in
            config.json (``chainrule train`` passes the arrays it already has).
        data_dir: where to look for the dataset, overriding config.json's ``data_dir``.
        path: where to write the page (default ``RUN_DIR/report.html``).

    Returns:
        The path of the written page.

    Raises:
        FileNotFoundError: if model.npz or config.json is missing.
        ValueError: for a JSON file that does not parse or holds the wrong types, naming it.
        ImportError: without matplotlib (``pip install "chainrule[plot]"``).
    """
    run_dir = Path(run_dir)
    for name in (runs.MODEL, runs.CONFIG):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(
                f"{run_dir} has no {name}: pass a run folder written by chainrule train"
            )
    plot.matplotlib_modules()  # fail before the dataset is loaded when matplotlib is missing
    config = runs.read_config(run_dir, check=False)
    if runs.is_lm_config(config):
        return write_lm_report(run_dir, path=path)
    manifest = runs.read_manifest(run_dir)
    history = runs.read_history(run_dir)
    model = load_model(run_dir / runs.MODEL)
    if test_data is None:
        source = data_dir if data_dir is not None else config.get("data_dir")
        _, test_data = load_idx_dataset(config.get("dataset", "mnist"), source, progress=False)
    x_test, y_test = test_data
    page = render_report(model, history, config, manifest, x_test, y_test,
                         title=f"chainrule run {run_dir.resolve().name}")
    out = Path(path) if path is not None else run_dir / runs.REPORT
    atomic_write(out, lambda f: f.write(page.encode("utf-8")))
    return out


def render_report(model, history: dict, config: dict, manifest: dict, x_test, y_test,
                  title: str = "chainrule run") -> str:
    """The report page as an HTML string (see the module docstring for its contents).

    Args:
        model: the trained Sequential.
        history: per-epoch logs (name → list), may be empty.
        config: the run's config.json (shown as a table).
        manifest: the run's manifest.json, or {} (versions, sample counts, timing).
        x_test, y_test: the test images (N, H, W) or already model-shaped, and labels (N,).
        title: the page heading.
    """
    x_test = np.asarray(x_test)
    y_test = np.asarray(y_test).astype(np.int64)
    x_model = model.reshape_input(x_test)
    # One pass over the test set gives the probabilities, the predictions and the loss.
    out = model.predict(x_model, batch_size=1000)
    probs = out if model.outputs_probabilities else functional.softmax(out)
    pred = np.argmax(probs, axis=1)
    accuracy = metrics_mod.accuracy(y_test, pred)
    if model.loss is not None:
        test_loss = float(model.loss(out, y_test))
    else:
        test_loss = metrics_mod.log_loss(y_test, probs)
    num_classes = probs.shape[1]
    mistakes = int(np.count_nonzero(pred != y_test))

    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # An empty data-URI icon: the browser does not go looking for /favicon.ico.
        '<link rel="icon" href="data:,">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">{_e(_subtitle(model, config, manifest))}</p>',
        '<div class="cards">',
        _card("test accuracy", f"{accuracy:.4f}"),
        _card("test loss", f"{test_loss:.4f}"),
        _card("test mistakes", f"{mistakes:,} / {len(y_test):,}"),
        _card("epochs", str(len(next(iter(history.values()), [])) if history else "–")),
        _card("parameters", f"{model.count_params():,}"),
        "</div>",
        "<h2>Final metrics</h2>",
        _final_table(history, accuracy, test_loss),
    ]
    if history:
        parts += ["<h2>Learning curves</h2>",
                  _img(plot.plot_learning_curves(history),
                       "training and validation loss and accuracy per epoch",
                       "Loss and accuracy after every epoch: on the training batches (running "
                       "mean over the epoch, with dropout active) and on the held-out "
                       "validation images.")]
    parts += [
        "<h2>Test set</h2>",
        '<div class="columns"><div>',
        _img(plot.plot_confusion_matrix(y_test, pred, class_names=range(num_classes)),
             "confusion matrix of the test set",
             "Rows: true class, columns: predicted class; the colour is the fraction of the "
             "row."),
        "</div><div>",
        "<h3>Classification report</h3>",
        f"<pre>{_e(metrics_mod.classification_report(y_test, pred))}</pre>",
        "</div></div>",
    ]
    if x_test.ndim == 2 and x_test.shape[1] == 2:  # 2-D points (chainrule studio)
        parts += ["<h2>Decision regions</h2>",
                  _img(plot.plot_decision_regions(model, x_test, y_test),
                       "the class the model predicts at every point of the plane",
                       "The test points on the regions where the model predicts each class.")]
    else:
        parts += ["<h2>Most confidently wrong test digits</h2>",
                  _img(plot.plot_mistakes(x_test, y_test, probs, n=30),
                       "the test digits the model got wrong with the highest confidence",
                       "Each digit shows its true label, the predicted label and the "
                       "probability the model gave it.")]
    weights = _weights_figure(model)
    if weights is not None:
        parts += ["<h2>First-layer weights</h2>",
                  _img(weights, "the first layer's weights as images",
                       "Diverging colours centred on 0: red for positive weights, blue for "
                       "negative ones. A class, unit or filter responds to ink under its red "
                       "weights and is held back by ink under its blue ones.")]
    parts += [
        "<h2>Configuration</h2>",
        _table(sorted(config.items())),
        "<h2>Model</h2>",
        f"<pre>{_e(model.summary(print_fn=None))}</pre>",
        "<h2>Run</h2>",
        _table(_run_rows(manifest)),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_lm_report(run_dir, path=None, n_samples: int = 20, temperature: float = 0.8) -> Path:
    """Build ``RUN_DIR/report.html`` for a run of ``chainrule lm train``: the final losses, the
    loss curves (nats per character), ``n_samples`` words sampled at ``temperature`` with the
    run's seed (the same words at every rebuild), the configuration, the model and the run.

    Raises:
        FileNotFoundError, ValueError, ImportError: as ``write_report``.
    """
    from .generate import load_language_model, sample_words

    run_dir = Path(run_dir)
    plot.matplotlib_modules()
    config = runs.read_config(run_dir)
    manifest = runs.read_manifest(run_dir)
    history = runs.read_history(run_dir)
    model, vocab = load_language_model(run_dir)
    words = sample_words(model, vocab, n_samples, temperature, seed=config["seed"])
    final = manifest.get("final", {}) if isinstance(manifest.get("final"), dict) else {}
    title = f"chainrule language model {run_dir.resolve().name}"
    counts = manifest.get("samples", {})
    sub = [f"model {config['model']}", f"data {config['data']}"]
    if counts:
        sub.append(", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in counts.items()))
    sub.append(f"report written {time.strftime('%Y-%m-%d %H:%M')} by chainrule {__version__}")

    def nats(key):
        value = final.get(key)
        return "–" if not isinstance(value, int | float) else f"{value:.4f}"

    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">{_e(" · ".join(sub))}</p>',
        '<div class="cards">',
        _card("validation nats/char", nats("val_nats_per_char")),
        _card("test nats/char", nats("test_nats_per_char")),
        _card("epochs", str(len(next(iter(history.values()), [])) if history else "–")),
        _card("parameters", f"{model.count_params():,}"),
        _card("vocabulary", f"{len(vocab)} tokens"),
        "</div>",
    ]
    if history:
        parts += ["<h2>Learning curves</h2>",
                  _img(plot.plot_learning_curves(history),
                       "training and validation loss per epoch, in nats per character",
                       "Cross-entropy in nats per character (each word's end counted as one): "
                       "the running mean over the training batches of each epoch, and the "
                       "held-out validation words after it.")]
    parts += [
        f"<h2>Sampled words (temperature {temperature:g}, seed {config['seed']})</h2>",
        f"<pre>{_e(' '.join(words))}</pre>",
        "<h2>Configuration</h2>",
        _table(sorted(config.items())),
        "<h2>Model</h2>",
        f"<pre>{_e(model.summary(print_fn=None))}</pre>",
        "<h2>Run</h2>",
        _table(_run_rows(manifest)),
        "</body></html>",
    ]
    out = Path(path) if path is not None else run_dir / runs.REPORT
    atomic_write(out, lambda f: f.write(("\n".join(parts) + "\n").encode("utf-8")))
    return out


# ---------------------------------------------------------------------- pieces
def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _subtitle(model, config, manifest) -> str:
    bits = [f"model {config.get('model', model.name)}", f"dataset {config.get('dataset', '?')}"]
    samples = manifest.get("samples")
    if samples:
        bits.append(", ".join(f"{v:,} {k}" for k, v in samples.items()) + " images")
    bits.append(f"report written {time.strftime('%Y-%m-%d %H:%M')} by chainrule {__version__}")
    return " · ".join(bits)


def _card(key: str, value: str) -> str:
    return f'<div class="card"><div class="v">{_e(value)}</div><div class="k">{_e(key)}</div></div>'


def _final_table(history: dict, accuracy: float, test_loss: float) -> str:
    rows = ['<table><tr><th></th><th>loss</th><th>accuracy</th></tr>']
    for label, prefix in (("train (last epoch)", ""), ("validation (last epoch)", "val_")):
        loss = history.get(f"{prefix}loss")
        acc = history.get(f"{prefix}accuracy")
        if loss or acc:
            rows.append(f"<tr><th>{label}</th>{_num(loss[-1] if loss else None)}"
                        f"{_num(acc[-1] if acc else None)}</tr>")
    rows.append(f"<tr><th>test</th>{_num(test_loss)}{_num(accuracy)}</tr></table>")
    return "".join(rows)


def _num(value) -> str:
    return '<td class="num">–</td>' if value is None else f'<td class="num">{value:.4f}</td>'


def _table(rows) -> str:
    body = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(_value(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{body}</table>"


def _value(v) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return f"{v:.6g}"
    return json.dumps(v)


def _run_rows(manifest: dict) -> list:
    rows = []
    if "argv" in manifest:
        rows.append(("command", " ".join(manifest["argv"])))
    for key, value in manifest.get("versions", {}).items():
        rows.append((f"{key} version", value))
    for key in ("platform", "train_seconds_this_session", "model_sha256"):
        if key in manifest:
            rows.append((key.replace("_", " "), manifest[key]))
    for key, entry in manifest.get("data", {}).items():
        digest = entry.get("sha256", "")[:16]
        rows.append((f"data {key}", f"{entry.get('path')} (sha256 {digest}…)"))
    return rows or [("manifest", "none in this run folder")]


def _weights_figure(model):
    try:
        return plot.plot_weights(model)
    except ValueError:
        return None


def _img(fig, alt: str, caption: str) -> str:
    data = base64.b64encode(plot.figure_to_png(fig)).decode("ascii")
    width, height = (int(round(v)) for v in fig.get_size_inches() * 100)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}" '
            f'width="{width}" height="{height}"><figcaption>{_e(caption)}</figcaption></figure>')
