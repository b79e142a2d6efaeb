"""The drawing page in a real browser: Debian's Chromium driven by Playwright (never downloaded).

A uvicorn server runs the app on 127.0.0.1 in a thread. The tests draw with the mouse (desktop)
and with a finger (phone-sized viewport, touch events through the DevTools protocol), and
check what the page shows, that it sends throttled requests, logs no console errors and asks
no other host for anything.
"""

import time
from urllib.parse import urlparse

import pytest

from browser_helpers import CHROMIUM, CHROMIUM_ARGS, require_chromium
from chainrule import models
from chainrule.web import create_app
from serve_helpers import (
    mnist,
    neighbour_set,
    one_blas_thread,  # noqa: F401 - an autouse fixture
    running_server,
    trained_run,
)

require_chromium()

from playwright.sync_api import sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def server():
    app = create_app(trained_run() / "model.npz", neighbours=neighbour_set())
    with running_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def playwright():
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                         headless=True)
    yield browser
    browser.close()


class Watched:
    """A page that records console errors, page errors and every request it makes."""

    def __init__(self, context, server: str):
        self.page = context.new_page()
        self.errors: list[str] = []
        self.requests: list[tuple[float, str, str]] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request",
                     lambda r: self.requests.append((time.monotonic(), r.method, r.url)))
        # The page's own clock for each /api/predict call, to check the throttling.
        self.page.add_init_script("""
            window.__predictTimes = [];
            const fetch0 = window.fetch;
            window.fetch = (url, options) => {
                if (String(url).endsWith('/api/predict')) __predictTimes.push(performance.now());
                return fetch0(url, options);
            };""")
        self.page.goto(server + "/")
        self.page.wait_for_function("() => document.getElementById('model-line').textContent"
                                    ".includes('parameters')")

    def predictions(self) -> list[float]:
        return [t for t, method, url in self.requests
                if method == "POST" and url.endswith("/api/predict")]

    def check_clean(self) -> None:
        assert self.errors == [], f"console errors: {self.errors}"
        hosts = {urlparse(url).hostname for _, _, url in self.requests
                 if not url.startswith(("data:", "blob:"))}
        assert hosts == {"127.0.0.1"}, f"requests to other hosts: {hosts}"

    def bars(self) -> list[float]:
        return self.page.eval_on_selector_all("#bars .bar", "els => els.map(e => +e.dataset.p)")

    def digit(self) -> str:
        return self.page.text_content("#digit")

    def wait_for_answer(self) -> None:
        self.page.wait_for_function("() => /^[0-9]$/.test(document.getElementById('digit')"
                                    ".textContent)")
        self.page.wait_for_selector("#neighbours .tile")

    def no_horizontal_scroll(self) -> None:
        width = self.page.evaluate("document.documentElement.scrollWidth")
        assert width <= self.page.viewport_size["width"], f"page is {width} px wide"


def draw_with_mouse(page, points, pause_ms: float = 0) -> None:
    box = page.locator("#pad").bounding_box()
    xy = [(box["x"] + u * box["width"], box["y"] + v * box["height"]) for u, v in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y)
        if pause_ms:
            page.wait_for_timeout(pause_ms)


def test_draw_a_one_then_clear_on_a_desktop(server, browser, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    w = Watched(context, server)
    page = w.page
    assert len(w.bars()) == 10 and w.digit() == "–"

    # A vertical stroke, drawn over about a second: answers arrive while drawing.
    draw_with_mouse(page, [(0.5, 0.2 + 0.6 * i / 40) for i in range(41)], pause_ms=25)
    page.wait_for_timeout(150)
    started, during = w.predictions()[0], len(w.predictions())
    page.mouse.up()
    w.wait_for_answer()
    page.screenshot(path=str(tmp_path / "desktop.png"), full_page=True)

    assert w.digit() == "1"
    probabilities = w.bars()
    assert len(probabilities) == 10
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
    assert max(probabilities) == probabilities[1]
    assert page.eval_on_selector_all("#bars .bar.top .bar-label",
                                     "e => e.map(x => x.textContent)") == ["1"]
    assert len(page.query_selector_all("#units .tile")) == 8
    assert len(page.query_selector_all("#neighbours .tile")) == 5
    assert page.evaluate("""() => {  // the 28×28 input and the saliency map were drawn
        const lit = id => document.getElementById(id).getContext('2d')
            .getImageData(0, 0, 28, 28).data.some((v, i) => i % 4 < 3 && v > 0);
        return lit('input28') && lit('saliency') && lit('saliency-ink');
    }""")

    # Throttled: at most one request per 100 ms while drawing, and at least a few.
    sent = w.predictions()
    elapsed = sent[-1] - started
    assert during >= 3, f"only {during} requests while drawing"
    assert len(sent) <= 2 + elapsed / 0.1, f"{len(sent)} requests in {elapsed:.2f} s"
    times = page.evaluate("window.__predictTimes")
    assert len(times) == len(sent)
    gaps = [b - a for a, b in zip(times[:-1], times[1:], strict=True)]
    # Every gap is ~100 ms or more (timers are ±1–2 ms) but the last: releasing the pen sends
    # at once.
    assert min(gaps[:-1]) >= 95, gaps

    page.click("#clear")
    assert w.digit() == "–"
    assert w.bars() == [0.0] * 10
    heights = page.eval_on_selector_all("#bars .bar-fill", "els => els.map(e => e.style.height)")
    assert heights == ["0%"] * 10
    assert page.query_selector_all("#bars .bar.top") == []
    assert page.query_selector_all("#neighbours .tile") == []
    assert page.evaluate("""() => {  // the pad is blank again
        const pad = document.getElementById('pad');
        return !pad.getContext('2d').getImageData(0, 0, pad.width, pad.height).data
            .some(v => v > 0);
    }""")
    page.screenshot(path=str(tmp_path / "desktop-cleared.png"))
    w.no_horizontal_scroll()
    w.check_clean()
    context.close()


def touch_stroke(page, points) -> None:
    """A finger stroke through the DevTools protocol: touchstart, touchmoves, touchend."""
    cdp = page.context.new_cdp_session(page)
    box = page.locator("#pad").bounding_box()
    xy = [{"x": box["x"] + u * box["width"], "y": box["y"] + v * box["height"]}
          for u, v in points]
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [xy[0]]})
    for point in xy[1:]:
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [point]})
        page.wait_for_timeout(15)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def test_phone_viewport_fits_and_draws_with_a_finger(server, browser, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844},
                                  device_scale_factor=3, is_mobile=True, has_touch=True)
    w = Watched(context, server)
    page = w.page
    w.no_horizontal_scroll()
    for selector in ("#pad", "#bars", "#clear", "#digit"):
        box = page.locator(selector).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (selector, box)
        assert box["y"] + box["height"] <= 844, f"{selector} is below the first screen: {box}"
    assert page.locator("#pad").bounding_box()["width"] >= 300

    touch_stroke(page, [(0.5, 0.2 + 0.6 * i / 20) for i in range(21)])
    w.wait_for_answer()
    assert w.digit() == "1"
    assert page.evaluate("window.scrollY") == 0, "drawing must not scroll the page"
    page.screenshot(path=str(tmp_path / "phone.png"))
    page.screenshot(path=str(tmp_path / "phone-full.png"), full_page=True)
    w.no_horizontal_scroll()

    page.tap("#clear")
    assert w.digit() == "–" and w.bars() == [0.0] * 10
    w.check_clean()
    context.close()


def test_a_softmax_regression_shows_its_ten_templates(browser, tmp_path):
    (x, y), _ = mnist()
    model = models.softmax_regression(seed=0)
    model.fit(x[:3000], y[:3000], epochs=2, batch_size=100, seed=0, verbose=0)
    with running_server(create_app(model, neighbours=False)) as url:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        w = Watched(context, url)
        page = w.page
        page.wait_for_selector("#units .tile")
        assert page.text_content("#units-title") == "Class templates"
        captions = page.eval_on_selector_all("#units figcaption", "e => e.map(x => x.textContent)")
        assert captions == [str(c) for c in range(10)], "templates before drawing, no logits"
        draw_with_mouse(page, [(0.5, 0.2 + 0.6 * i / 10) for i in range(11)])
        page.mouse.up()
        page.wait_for_function("() => /^[0-9]$/.test(document.getElementById('digit')"
                               ".textContent)")
        page.wait_for_selector("#units .tile.top")
        top = page.eval_on_selector_all("#units .tile.top figcaption b",
                                        "e => e.map(x => x.textContent)")
        assert top == [w.digit()]
        assert "turned off" in page.text_content("#neighbours-caption")
        page.screenshot(path=str(tmp_path / "softmax.png"), full_page=True)
        w.check_clean()
        context.close()


def test_a_page_under_another_name_is_refused(server, playwright):
    """DNS rebinding, as the browser does it: a name that resolves to 127.0.0.1 (here by
    Chromium's resolver rules) still sends that name in the Host header, and gets a 400."""
    port = urlparse(server).port
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True,
        args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP rebound.test 127.0.0.1"])
    try:
        page = browser.new_page()
        response = page.goto(f"http://rebound.test:{port}/")
        assert response.status == 400
        assert "DNS rebinding" in response.json()["detail"]
        answer = page.evaluate("""async () => {
            const r = await fetch('/api/predict', {method: 'POST', body: '{}',
                                                   headers: {'Content-Type': 'application/json'}});
            return [r.status, await r.text()];
        }""")
        assert answer[0] == 400 and "--allowed-host" in answer[1]
        assert page.goto(f"{server}/").status == 200, "under its own name it loads"
    finally:
        browser.close()
