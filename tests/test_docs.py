"""The course site: ``mkdocs build --strict`` of the repository, what the built site holds, and
the site in Debian's Chromium (driven by Playwright, never downloaded).

The site is built once for this module, into a temporary folder, by ``python -m mkdocs build
--strict`` on this interpreter: it executes the example notebooks (the main cost, about half a
minute on 2 cores), so it runs with MNIST from CHAINRULE_DATA, as the notebook tests do, and
with an unreachable download mirror, so that nothing can be fetched. Then:

- the build passes strict mode with no warning, and leaves examples/*.ipynb untouched;
- every page is there, the notebooks with their pictures, one page per exercise and per CLI
  command, the API reference from the docstrings;
- no part of an exercise's solution, nor any hint past the first, appears anywhere in the site
  (and the statements, templates and first hints do, so the search is not vacuous);
- no HTML attribute or stylesheet points at another host;
- in Chromium, served from 127.0.0.1, every page loads with no console error and no request to
  any other host, the math is typeset by the site's own KaTeX (fonts included) and fits the
  column, every picture loads, and the search finds pages (with their formulas typeset).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import html.parser
import http.server
import io
import json
import os
import re
import subprocess
import sys
import threading
import tokenize
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from browser_helpers import CHROMIUM, CHROMIUM_ARGS, require_chromium
from chainrule import cli, exercises

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(
    os.environ.get("CHAINRULE_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
#: Pictures each notebook shows (as tests/test_notebooks.py counts them).
NOTEBOOK_IMAGES = {"01_softmax_regression": 3, "02_mlp_mnist": 6, "03_gradient_checking": 0}
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


@dataclass
class Built:
    site: Path
    returncode: int
    log: str


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    site = tmp_path_factory.mktemp("docs") / "site"
    notebooks = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in (ROOT / "examples").glob("*.ipynb")}
    env = {**os.environ, "CHAINRULE_DATA": str(DATA_ROOT), "NO_MKDOCS_2_WARNING": "1",
           "CHAINRULE_MIRROR": "http://127.0.0.1:9/", "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean",
         "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
             for p in (ROOT / "examples").glob("*.ipynb")}
    assert after == notebooks, "the docs build changed examples/*.ipynb"
    return Built(site, result.returncode, result.stdout + result.stderr)


@pytest.fixture(scope="module")
def site(built) -> Path:
    if built.returncode != 0:
        pytest.fail(f"mkdocs build --strict failed:\n{built.log[-6000:]}", pytrace=False)
    return built.site


def test_strict_build_has_no_warning(built, site):
    warnings = [line for line in built.log.splitlines()
                if re.match(r"\s*(WARNING|ERROR)\b", line)]
    assert warnings == [], "\n".join(warnings)
    assert re.search(r"Documentation built in [0-9.]+ seconds", built.log)


def page(site: Path, path: str) -> str:
    return (site / path / "index.html").read_text(encoding="utf-8")


BLOCKS = {"p", "div", "li", "td", "th", "tr", "pre", "br", "h1", "h2", "h3", "h4", "h5", "h6",
          "table", "ul", "ol", "details", "summary", "nav", "header", "footer", "article"}


class TextOf(html.parser.HTMLParser):
    """The text of an HTML page as a reader sees it (entities decoded, a code block's
    highlighted tokens joined back into its lines), <script> and <style> left out."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")
        if tag in BLOCKS:
            self.parts.append(" ")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style") and self._skip > 0
        if tag in BLOCKS:
            self.parts.append(" ")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def squash(text: str) -> str:
    return " ".join(text.split())


def text_of(markup: str) -> str:
    parser = TextOf()
    parser.feed(markup)
    return squash("".join(parser.parts))


@functools.cache
def site_text(site: Path) -> str:
    """Every text the site holds, whitespace squashed: the pages, the search index, and any
    other text file."""
    texts = []
    for path in sorted(site.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".html":
            parser = TextOf()
            parser.feed(path.read_text(encoding="utf-8"))
            texts.append("".join(parser.parts))
        elif path.suffix == ".json":
            texts.append(json.dumps(json.loads(path.read_text(encoding="utf-8")),
                                    ensure_ascii=False))
        elif path.suffix in (".txt", ".md", ".py", ".ipynb", ".xml"):
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
    return squash("\n".join(texts))


def test_every_page_is_there(site):
    expected = ["", "getting-started", "softmax-regression", "layers", "layers/dense",
                "layers/conv", "layers/normalization", "layers/recurrent", "layers/attention",
                "losses", "optimizers", "gradcheck", "explain-backward", "examples",
                "exercises", "cli", "serve", "studio", "api"]
    expected += [f"examples/{stem}" for stem in NOTEBOOK_IMAGES]
    expected += [f"exercises/{name}" for name in exercises.names()]
    expected += [f"api/{name}" for name in ("chainrule", "layers", "losses", "optimizers",
                                             "schedules", "functional", "initializers",
                                             "callbacks", "metrics", "models", "data", "plot",
                                             "exercises", "web")]
    missing = [p for p in expected if not (site / p / "index.html").is_file()]
    assert missing == []
    # The notebook with the exercises' answers is not a page (see docs/hooks).
    assert not (site / "examples" / "04_exercises").exists()


def test_notebook_pages_show_their_outputs(site):
    for stem, count in NOTEBOOK_IMAGES.items():
        text = page(site, f"examples/{stem}")
        images = re.findall(r'<img alt="output [^"]*" src="([^"]+)"', text)
        assert len(images) == count, f"{stem}: {len(images)} pictures"
        for src in images:
            assert (site / "examples" / stem / src).stat().st_size > 1000, src
        assert "nb-output" in text and "Executed when this site was built" in text
    # The lecture notebook's own check printed its result: both paths equal the formula.
    assert "Jacobian path vs (a - y)/N" in page(site, "examples/01_softmax_regression")


def test_generated_pages_come_from_the_code(site):
    cli_page = page(site, "cli")
    parser = cli.build_parser()
    commands = [name for action in parser._actions if hasattr(action, "choices")
                and isinstance(action.choices, dict) for name in action.choices]
    assert "train" in commands and "exercise" in commands
    for name in commands:
        assert f'id="chainrule-{name}"' in cli_page, name
    for option in ("--batch-size", "--resume", "--samples", "--time-limit", "--level"):
        assert option in cli_page
    explain = text_of(page(site, "explain-backward"))
    assert "backward pass of model 'softmax_regression' on 3 samples: L = 1.09861" in explain
    assert "backward pass of model 'mlp' on 8 samples" in explain
    assert "dL/dW₃ = a₂ᵀ (256×8) · dL/dz₃ (8×10) → (256×10)" in explain
    serve = page(site, "serve")
    for path in ("/api/predict", "/api/model", "/healthz"):
        assert f"<code>{path}</code>" in serve
    studio = page(site, "studio")
    for path in ("/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/step",
                 "/api/runs/{run_id}/events", "/api/runs/{run_id}/save"):
        assert f"<code>{path}</code>" in studio, path
    gradcheck = text_of(page(site, "gradcheck"))
    assert "gradcheck model 'mlp': OK" in gradcheck
    api = page(site, "api/layers")
    for name in ("Dense", "Conv2D", "BatchNorm", "LSTM", "CausalSelfAttention"):
        assert f'id="chainrule.layers.{name}"' in api, name
    assert "dL/dW = xᵀ g" in api  # Dense's docstring, rendered


def without_comments(source: str) -> str:
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type != tokenize.COMMENT]
    return tokenize.untokenize(tokens)


def solution_snippets(name: str) -> set[str]:
    """What would give an exercise's answer away (the template shows the signatures and the
    docstrings, never a body): each function body of the solution, each pair of consecutive
    lines of a body, and each line of 20 characters or more that computes a gradient or
    returns a result; with the solution's comments and without them, whitespace squashed."""
    source = exercises.get(name).solution()
    snippets = set()
    for text in (source, without_comments(source)):
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef):
                continue
            body = node.body[1:] if ast.get_docstring(node) is not None else node.body
            code = [squash(line) for line in lines[body[0].lineno - 1:body[-1].end_lineno]
                    if line.strip()]
            snippets.add(" ".join(code))
            snippets.update(f"{a} {b}" for a, b in zip(code, code[1:], strict=False))
            snippets.update(line for line in code if len(line) >= 20
                            and ("grad" in line or line.startswith("return ")))
    return snippets


def test_the_solution_search_finds_a_real_answer():
    """examples/04_exercises.ipynb shows answers that pass (it is not a page of the site, see
    docs/hooks/chainrule_docs.py): the search below must find them in it."""
    import nbformat

    notebook = nbformat.read(ROOT / "examples" / "04_exercises.ipynb", as_version=4)
    text = squash(" ".join(cell.source for cell in notebook.cells))
    for name in ("dense", "softmax", "dense_layer"):
        assert solution_snippets(name) & {s for s in solution_snippets(name) if s in text}, name


def test_no_solution_and_no_hint_past_the_first_in_the_site(site):
    text = site_text(site)
    for name in exercises.names():
        ex = exercises.get(name)
        # What the exercise page must show: found, so the search below is not vacuous.
        assert squash(ex.statement) in text, name
        assert squash(ex.template()) in text, name
        assert squash(ex.hints[0]) in text, name
        snippets = solution_snippets(name)
        assert snippets, name
        leaked = sorted(snippet for snippet in snippets if snippet in text)
        assert leaked == [], f"{name}: parts of the solution are in the site: {leaked}"
        assert squash(ex.solution()) not in text
        for level, hint in enumerate(ex.hints[1:], start=2):
            assert squash(hint) not in text, f"{name}: hint {level} is in the site"


ATTRIBUTE = re.compile(
    r"""\b(?:src|href|srcset|action|poster|data|content)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
CSS_URL = re.compile(r"""url\(\s*["']?([^"')]+)""")
OFF_SITE = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)


def off_site(urls) -> list[str]:
    found = []
    for url in urls:
        for part in url.split(","):  # srcset lists
            part = part.strip().split(" ")[0]
            if OFF_SITE.match(part) and urlparse(part).hostname not in LOCAL_HOSTS:
                found.append(part)
    return found


def test_no_html_attribute_or_stylesheet_points_at_another_host(site):
    bad = {}
    for path in site.rglob("*.html"):
        urls = off_site(ATTRIBUTE.findall(path.read_text(encoding="utf-8")))
        if urls:
            bad[str(path.relative_to(site))] = urls
    for path in site.rglob("*.css"):
        urls = off_site(CSS_URL.findall(path.read_text(encoding="utf-8")))
        if urls:
            bad[str(path.relative_to(site))] = urls
    assert bad == {}
    # The math is KaTeX from the site itself, its license next to it.
    assert (site / "assets" / "katex" / "katex.min.js").stat().st_size > 100_000
    assert "MIT License" in (site / "assets" / "katex" / "LICENSE").read_text()
    assert 'href="../assets/katex/katex.min.css"' in page(site, "softmax-regression")


# ---------------------------------------------------------------------- in the browser
class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_every_page_in_chromium(site, served, tmp_path):
    require_chromium()
    from playwright.sync_api import sync_playwright

    pages = sorted("" if p.parent == site else p.parent.relative_to(site).as_posix()
                   for p in site.rglob("index.html"))
    requests: list[str] = []
    failed: list[str] = []
    problems: dict[str, list[str]] = {}
    math: dict[str, dict] = {}
    images: dict[str, list] = {}
    current = [""]

    def problem(text: str) -> None:
        problems.setdefault(current[0], []).append(text)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                    headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.on("request", lambda r: requests.append(r.url))
            # Leaving a page cancels what it still fetches (net::ERR_ABORTED): not a failure.
            context.on("requestfailed", lambda r: r.failure != "net::ERR_ABORTED"
                       and failed.append(f"{r.url} {r.failure}"))
            tab = context.new_page()
            tab.on("console", lambda m: m.type in ("error", "warning")
                   and problem(f"{m.type}: {m.text}"))
            tab.on("pageerror", lambda e: problem(str(e)))
            tab.on("response", lambda r: r.status >= 400 and problem(f"HTTP {r.status} {r.url}"))
            for path in pages:
                current[0] = path
                tab.goto(f"{served}/{path}/" if path else f"{served}/", wait_until="load")
                # katex-render.js marks each formula "done" or "error" (and logs the error).
                tab.wait_for_function("() => [...document.querySelectorAll('.arithmatex')]"
                                      ".every(e => e.dataset.katex)", timeout=10_000)
                math[path] = tab.evaluate("""() => ({
                    katex: document.querySelectorAll('.arithmatex .katex').length,
                    unrendered: document.querySelectorAll('.arithmatex:not([data-katex="done"])')
                                .length,
                    display: document.querySelectorAll('div.arithmatex .katex-display').length,
                    wide: [...document.querySelectorAll('div.arithmatex')]
                          .filter(e => e.scrollWidth > e.clientWidth + 1).length,
                    tex: [...document.querySelectorAll('annotation[encoding="application/x-tex"]')]
                         .map(a => a.textContent),
                    font: [...document.fonts].some(f => f.family.includes('KaTeX_Main')
                                                   && f.status === 'loaded'),
                })""")
                images[path] = tab.evaluate(
                    "() => [...document.images].map(i => [i.getAttribute('src'), i.complete,"
                    " i.naturalWidth])")
                if path == "softmax-regression":
                    tab.screenshot(path=str(tmp_path / "softmax-regression.png"), full_page=True)
            # The search runs in the page (its index is a file of the site), and the excerpts
            # it shows have their formulas typeset too.
            current[0] = "search"
            tab.goto(f"{served}/", wait_until="load")
            tab.keyboard.press("/")
            tab.keyboard.type("Jacobian")
            tab.wait_for_function("() => document.querySelectorAll("
                                  "'.md-search-result__item .katex').length > 0", timeout=15_000)
            results = tab.evaluate("() => document.querySelectorAll('.md-search-result__item')"
                                   ".length")
        finally:
            browser.close()

    assert problems == {}, f"console errors: {problems}"
    assert {path: m["unrendered"] for path, m in math.items() if m["unrendered"]} == {}
    # At 1280 px every display formula fits its column (none needs its scroll bar).
    assert {path: m["wide"] for path, m in math.items() if m["wide"]} == {}
    assert failed == []
    hosts = {urlparse(url).hostname for url in requests if not url.startswith(("data:", "blob:"))}
    assert hosts == {"127.0.0.1"}, f"requests to other hosts: {hosts - {'127.0.0.1'}}"
    assert any("/assets/katex/fonts/KaTeX_Main-Regular.woff2" in url for url in requests)
    assert any(url.endswith("/search/search_index.json") for url in requests)
    assert results >= 3

    # The lecture's derivation is typeset: display formulas, the Jacobian among them.
    lecture = math["softmax-regression"]
    assert lecture["display"] >= 10 and lecture["katex"] >= 60, lecture
    assert any(r"\operatorname{diag}(a) - a a^\top" in tex for tex in lecture["tex"])
    assert any(r"\frac{\partial L}{\partial Z} = \frac{A - Y}{N}" in tex for tex in lecture["tex"])
    assert lecture["font"], "KaTeX's fonts did not load"
    for path in ("layers/dense", "layers/conv", "layers/normalization", "layers/recurrent",
                 "layers/attention", "losses", "optimizers", "gradcheck"):
        assert math[path]["display"] >= 3, path

    for stem, count in NOTEBOOK_IMAGES.items():
        shown = [img for img in images[f"examples/{stem}"] if "cell" in (img[0] or "")]
        assert len(shown) == count, stem
        for src, complete, width in shown:
            assert complete and width > 0, f"{stem}: {src} did not load"
    broken = {path: [src for src, complete, width in found if not (complete and width > 0)]
              for path, found in images.items()}
    assert {path: srcs for path, srcs in broken.items() if srcs} == {}

    with Image.open(tmp_path / "softmax-regression.png") as shot:
        assert shot.size[0] == 1280 and shot.size[1] > 3000
        assert np.asarray(shot.convert("L"), dtype=np.float64).std() > 12
