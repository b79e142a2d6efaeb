"""The training report: written by ``chainrule train``, rebuilt by ``chainrule report``, opened in
headless Chromium (Debian's, never a downloaded build) to prove it is self-contained.
"""

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser_helpers import CHROMIUM, CHROMIUM_ARGS
from chainrule import cli, load_model, metrics, models, report
from chainrule.data import load_mnist

DATA_ROOT = Path(
    os.environ.get("CHAINRULE_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
SECTIONS = ["Final metrics", "Learning curves", "Test set", "Most confidently wrong test digits",
            "First-layer weights", "Configuration", "Model", "Run"]


class Page(HTMLParser):
    """Tags, attributes, headings and <img> elements of an HTML page."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.urls, self.images, self.h2 = [], [], [], []
        self._in_h2 = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.urls += [v for k, v in attrs.items() if k in ("src", "href", "srcset", "action")]
        if tag == "img":
            self.images.append(attrs)
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        self._in_h2 = False if tag == "h2" else self._in_h2

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data.strip())


def check_self_contained(text: str) -> Page:
    """No script, no external resource of any kind; every image a PNG data URI that decodes to
    a non-blank picture of the size the <img> declares."""
    page = Page(text)
    assert "script" not in page.tags and "iframe" not in page.tags
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), "external URL"
    assert "@import" not in text and "url(" not in text and "@font-face" not in text
    assert all(url.startswith("data:") for url in page.urls), page.urls
    assert page.images, "no images"
    for img in page.images:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix) and img.get("alt")
        png = Image.open(io.BytesIO(base64.b64decode(img["src"][len(prefix):])))
        assert png.format == "PNG"
        assert png.size == (int(img["width"]), int(img["height"]))
        assert np.asarray(png.convert("L"), dtype=np.float64).std() > 12, img["alt"]
    return page


def run_cli(*args, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHAINRULE_DATA": str(DATA_ROOT)} if env is None else env
    return subprocess.run([sys.executable, "-m", "chainrule", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``chainrule train --model softmax --epochs 1 --quiet`` (the report is on by default)."""
    folder = tmp_path_factory.mktemp("report") / "run"
    result = run_cli("train", "--model", "softmax", "--epochs", "1", "--quiet", "--out", folder)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == "", "--quiet must stay quiet"
    return folder


def test_train_writes_a_self_contained_report(run):
    text = (run / "report.html").read_text(encoding="utf-8")
    page = check_self_contained(text)
    assert page.h2 == SECTIONS
    alts = [img["alt"] for img in page.images]
    assert alts == ["training and validation loss and accuracy per epoch",
                    "confusion matrix of the test set",
                    "the test digits the model got wrong with the highest confidence",
                    "the first layer's weights as images"]

    manifest = json.loads((run / "manifest.json").read_text())
    assert f"{manifest['final']['test_accuracy']:.4f}" in text
    assert f"{manifest['final']['test_loss']:.4f}" in text
    history = json.loads((run / "history.json").read_text())
    assert f"{history['val_accuracy'][-1]:.4f}" in text
    # The classification report of this model on the test set, exactly.
    _, (x_test, y_test) = load_mnist(DATA_ROOT, progress=False)
    pred = load_model(run / "model.npz").predict_proba(x_test).argmax(axis=1)
    assert html.escape(metrics.classification_report(y_test, pred)) in text
    assert f"{int(np.count_nonzero(pred != y_test)):,} / 10,000" in text
    config = json.loads((run / "config.json").read_text())
    for key, value in config.items():
        assert f"<tr><th>{key}</th><td>{html.escape(report._value(value))}</td></tr>" in text
    assert "<th>lr</th><td>0.01</td>" in text and "<th>model</th><td>softmax</td>" in text


def test_report_opens_in_headless_chromium_with_no_request_and_no_error(run, tmp_path):
    from playwright.sync_api import sync_playwright

    url = (run / "report.html").resolve().as_uri()
    requests, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
            page.goto(url, wait_until="load")
            images = page.evaluate(
                "Array.from(document.images, i => [i.alt, i.complete, i.naturalWidth])"
            )
            heading = page.inner_text("h1")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert requests == [url], f"requests other than the page itself: {requests}"
    assert errors == []
    assert len(images) == 4
    for alt, complete, width in images:
        assert complete and width > 0, f"image not loaded: {alt}"
    assert heading == "chainrule run run"
    with Image.open(tmp_path / "report.png") as shot:
        assert shot.size[0] == 1200 and shot.size[1] > 2000
        assert np.asarray(shot.convert("L"), dtype=np.float64).std() > 12


def test_report_command_rebuilds_the_page(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "report.html").unlink()
    env = {k: v for k, v in os.environ.items() if k != "CHAINRULE_DATA"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    result = run_cli("report", copy, "--data-dir", DATA_ROOT, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(copy / "report.html")
    rebuilt = (copy / "report.html").read_text(encoding="utf-8")
    original = (run / "report.html").read_text(encoding="utf-8")
    page = check_self_contained(rebuilt)
    assert page.h2 == SECTIONS
    # Same model, same test set: the same pictures, byte for byte.
    assert [i["src"] for i in page.images] == [i["src"] for i in Page(original).images]
    strip = re.compile(r"report written [^·<]*|chainrule run \w+")
    assert strip.sub("", rebuilt) == strip.sub("", original)


def test_report_reads_the_dataset_named_in_the_run_config(run, tmp_path, monkeypatch):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    config = json.loads((copy / "config.json").read_text())
    config["data_dir"] = str(DATA_ROOT / "mnist")
    (copy / "config.json").write_text(json.dumps(config))
    monkeypatch.delenv("CHAINRULE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CHAINRULE_MIRROR", "http://127.0.0.1:9/")
    out = report.write_report(copy, path=tmp_path / "elsewhere.html")
    assert out == tmp_path / "elsewhere.html"
    assert [i["src"] for i in Page(out.read_text()).images] == [
        i["src"] for i in Page((run / "report.html").read_text()).images]


def test_report_for_a_cnn_shows_its_first_conv_filters(tmp_path):
    (x_train, y_train), (x_test, y_test) = load_mnist(DATA_ROOT, progress=False)
    model = models.cnn(seed=0)
    history = model.fit(x_train[:96], y_train[:96], epochs=2, batch_size=32,
                        validation_data=(x_train[-64:], y_train[-64:]), seed=0, verbose=0)
    run = tmp_path / "cnn"
    model.save(run / "model.npz")
    (run / "history.json").write_text(json.dumps(history.history))
    (run / "config.json").write_text(json.dumps({"model": "cnn", "dataset": "mnist"}))
    out = report.write_report(run, test_data=(x_test[:200], y_test[:200]))
    text = out.read_text()
    page = check_self_contained(text)
    assert page.h2 == SECTIONS
    assert "conv2d_1" in text and "BatchNorm" in text
    pred = model.predict_proba(x_test[:200]).argmax(axis=1)
    assert f"{metrics.accuracy(y_test[:200], pred):.4f}" in text
    assert "none in this run folder" in text, "no manifest: the Run table says so"


def test_no_report_writes_none_and_report_errors_are_one_line(tmp_path, monkeypatch, capsys):
    parser = cli.build_parser()
    assert parser.parse_args(["train"]).report is True
    assert parser.parse_args(["train", "--report"]).report is True

    def must_not_run(*args, **kwargs):
        raise AssertionError("--no-report still built the report")

    monkeypatch.setattr(report, "write_report", must_not_run)
    monkeypatch.setenv("CHAINRULE_DATA", str(DATA_ROOT))
    out = tmp_path / "quiet"
    argv = ["train", "--model", "softmax", "--epochs", "1", "--quiet", "--no-report", "--out"]
    assert cli.main([*argv, str(out)]) == 0
    assert (out / "model.npz").is_file() and not (out / "report.html").exists()

    assert cli.main(["report", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("chainrule report: error: ") and "holds no model.npz" in err
    monkeypatch.undo()
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "model.npz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="config.json"):
        report.write_report(tmp_path / "bare")
