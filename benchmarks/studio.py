"""``chainrule studio``: training throughput with the page attached, and the update rate.

    python benchmarks/studio.py [--samples 10000] [--epochs 5]
        [--repeats 3] [--seconds 5] [--no-browser]

Starts the studio in this process (uvicorn on 127.0.0.1 in a thread, as ``chainrule studio``
runs it) and prints three tables:

1. Throughput of an MNIST MLP (the mlp preset: 784-256-256-10, dropout 0.2, Adam, batch 64)
   on the same ``--samples`` training images with the same seed: plain ``Sequential.fit``
   against the studio (start → done) with a page watching its updates: an SSE client
   reading every event, and the studio page itself in Debian's Chromium. Runs are
   interleaved (plain, studio+SSE, studio+page, plain, …); the table gives the median of
   ``--repeats`` and the studio's share of plain fit: the ratio of the medians, and the
   median of each round's ratio (its plain fit against its studio runs, which ran next to
   each other: less exposed to the machine's load changing), and the ratio of the best
   (shortest) runs, since a busy machine only ever adds time.
2. The update rate a page receives on the spirals (2-D, tanh MLP 8-8) while it trains:
   events counted over ``--seconds`` by an SSE client and by the page in Chromium.
3. The decision regions as the studio sends them (class and confidence bytes of the 64×64
   grid, base64) against a PNG of the same painted grid drawn on the server with Pillow:
   bytes per update and milliseconds to make.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import statistics
import tempfile
import threading
import time

import numpy as np

CHROMIUM = "/usr/bin/chromium"
MLP = {"dataset": "mnist", "model": "mlp", "hidden": [256, 256], "dropout": 0.2,
       "optimizer": "adam", "batch_size": 64, "seed": 0}
SPIRALS = {"dataset": "spirals", "hidden": [8, 8], "activation": "tanh", "lr": 0.03,
           "batch_size": 32, "seed": 0, "epochs": 100000}


def query(settings: dict) -> str:
    """The page's URL query for these settings (hidden as 256,256)."""
    return "&".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                    for k, v in settings.items())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The studio app under uvicorn in a thread."""

    def __init__(self):
        import uvicorn

        from chainrule.web import limits
        from chainrule.web.studio import create_studio_app

        self.app = create_studio_app(runs_dir=tempfile.mkdtemp(prefix="studio-bench-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning",
                                                    **limits.server_options()))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)

    def close(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


class SSEReader:
    """Reads a run's event stream in a thread, counting events."""

    def __init__(self, url: str, run: str):
        import httpx

        self.count, self.stop, self.bytes = 0, False, 0
        self.times: list[float] = []

        def read():
            with httpx.Client(base_url=url, timeout=None) as client, \
                    client.stream("GET", f"/api/runs/{run}/events") as stream:
                for line in stream.iter_lines():
                    if line.startswith("data: "):
                        json.loads(line[6:])
                        self.count += 1
                        self.bytes += len(line)
                        self.times.append(time.monotonic())
                    if self.stop:
                        break

        self.thread = threading.Thread(target=read, daemon=True)
        self.thread.start()

    def close(self):
        self.stop = True
        self.thread.join(timeout=10)


def plain_fit(data, epochs: int) -> float:
    """Seconds of ``fit`` on the run's own data and settings, outside the studio."""
    from chainrule import losses, models

    model = models.mlp(hidden=MLP["hidden"], dropout=MLP["dropout"], num_classes=10,
                       input_shape=(28, 28), seed=MLP["seed"])
    model.compile(optimizer=models.make_optimizer("adam", models.default_lr("mlp"),
                                                  schedule="constant"),
                  loss=losses.SparseCategoricalCrossEntropy(from_logits=True),
                  metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(data.x, data.y, epochs=epochs, batch_size=MLP["batch_size"], seed=MLP["seed"],
              validation_data=(data.x_val, data.y_val), verbose=0)
    return time.perf_counter() - start


def studio_fit(server, http, settings: dict, watcher: str, browser) -> tuple[float, int, int]:
    """Seconds from Start to done in the studio with a watcher attached ("sse" or "page");
    also the updates it received and the view seconds the worker spent."""
    run = http.post("/api/runs", json=settings).json()["id"]
    page = reader = None
    if watcher == "sse":
        reader = SSEReader(server.url, run)
    else:
        http.delete(f"/api/runs/{run}")  # the page makes its own run, from its URL
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{server.url}/?{query(settings)}")
        page.wait_for_function("() => window.studio.runId && window.studio.updates > 0")
        run = page.evaluate("window.studio.runId")
        assert server.app.state.studio.get(run).settings["samples"] == settings["samples"]
    time.sleep(0.5)
    start = time.perf_counter()
    http.post(f"/api/runs/{run}/start", json={})
    studio_run = server.app.state.studio.get(run)
    studio_run.thread.join()  # no polling: a GET would take the server's time too
    seconds = time.perf_counter() - start
    views = studio_run.view_seconds
    if reader is not None:
        reader.close()
        updates = reader.count
    else:
        updates = page.evaluate("window.studio.updates")
        page.close()
    http.delete(f"/api/runs/{run}")
    return seconds, updates, views


def rate(server, http, browser, seconds: float) -> list[tuple[str, float, float]]:
    rows = []
    run = http.post("/api/runs", json=SPIRALS).json()["id"]
    reader = SSEReader(server.url, run)
    http.post(f"/api/runs/{run}/start", json={})
    time.sleep(1.0)
    first = reader.count
    time.sleep(seconds)
    rows.append(("SSE client", (reader.count - first) / seconds,
                 reader.bytes / max(reader.count, 1) / 1000))
    reader.close()
    http.delete(f"/api/runs/{run}")
    if browser is not None:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{server.url}/?{query(SPIRALS)}")
        page.wait_for_function("() => window.studio.runId && window.studio.updates > 0")
        page.click("#train")
        time.sleep(1.0)
        first = page.evaluate("window.studio.updates")
        time.sleep(seconds)
        rows.append(("the page in Chromium",
                     (page.evaluate("window.studio.updates") - first) / seconds, float("nan")))
        page.close()
    return rows


def region_formats(server, http) -> list[tuple[str, float, float]]:
    """Bytes and milliseconds of one regions view: as sent (bytes) and as a PNG."""
    from PIL import Image

    from chainrule.web import studio_views as views

    run_id = http.post("/api/runs", json=SPIRALS).json()["id"]
    run = server.app.state.studio.get(run_id)
    logits, _ = views.layer_outputs(run.model, run.grid)
    n = 200
    start = time.perf_counter()
    for _ in range(n):
        sent = views.regions(logits)
    ours = (time.perf_counter() - start) / n * 1000
    size = len(sent["classes"]) + len(sent["confidence"])
    colours = np.array([[230, 85, 60], [52, 120, 220], [40, 170, 90]], np.float64)
    start = time.perf_counter()
    for _ in range(n):
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        cls = probs.argmax(1)
        a = (0.15 + 0.6 * (probs.max(1) - 1 / 3) / (2 / 3))[:, None]
        rgb = (255 * (1 - a) + colours[cls] * a).astype(np.uint8).reshape(64, 64, 3)
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="PNG")
        png = base64.b64encode(buffer.getvalue())
    theirs = (time.perf_counter() - start) / n * 1000
    http.delete(f"/api/runs/{run_id}")
    return [("class + confidence bytes (sent)", size / 1000, ours),
            ("PNG drawn on the server", len(png) / 1000, theirs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()

    import httpx

    server = Server()
    http = httpx.Client(base_url=server.url, timeout=120)
    playwright = browser = None
    if not args.no_browser:
        from playwright.sync_api import sync_playwright

        playwright = sync_playwright().start()
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
    settings = {**MLP, "samples": args.samples, "epochs": args.epochs}
    probe = http.post("/api/runs", json=settings).json()["id"]
    data = server.app.state.studio.get(probe).data
    http.delete(f"/api/runs/{probe}")
    samples = len(data.y) * args.epochs
    print(f"chainrule studio benchmark: {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; MNIST MLP 784-256-256-10 on {len(data.y):,} images × "
          f"{args.epochs} epochs, {len(data.y_val):,} validation images\n")

    plain_fit(data, 1)  # warm-up: the first fit in a process pays for page faults and BLAS
    plain, with_sse, with_page = [], [], []
    watched = {"sse": [], "page": []}
    for _ in range(args.repeats):
        plain.append(plain_fit(data, args.epochs))
        seconds, updates, views = studio_fit(server, http, settings, "sse", browser)
        with_sse.append(seconds)
        watched["sse"].append((updates, views))
        if browser is not None:
            seconds, updates, views = studio_fit(server, http, settings, "page", browser)
            with_page.append(seconds)
            watched["page"].append((updates, views))
    base = statistics.median(plain)
    best = min(plain)
    print("| training | seconds (median) | images/s | share of plain fit: medians, per round, "
          "best runs | updates received | view seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| plain `fit` | {base:.2f} | {samples / base:,.0f} | 100% | – | – |")
    for label, times, key in (("studio + SSE client", with_sse, "sse"),
                              ("studio + page in Chromium", with_page, "page")):
        if not times:
            continue
        t = statistics.median(times)
        updates = statistics.median(u for u, _ in watched[key])
        views = statistics.median(v for _, v in watched[key])
        rounds = statistics.median(p / s for p, s in zip(plain, times, strict=True))
        print(f"| {label} | {t:.2f} | {samples / t:,.0f} | {100 * base / t:.0f}%, "
              f"{100 * rounds:.0f}%, {100 * best / min(times):.0f}% | {updates:.0f} | "
              f"{views:.2f} |")
    print(f"\nruns (s): plain {[round(t, 2) for t in plain]}, studio+SSE "
          f"{[round(t, 2) for t in with_sse]}, studio+page {[round(t, 2) for t in with_page]}")

    print(f"\n| spirals (8-8 tanh), {args.seconds:g} s | updates/s | kB per update |")
    print("|---|---:|---:|")
    for label, per_s, kb in rate(server, http, browser, args.seconds):
        print(f"| {label} | {per_s:.1f} | {'–' if kb != kb else f'{kb:.1f}'} |")

    print("\n| decision regions, 64×64 grid, 3 classes | kB per update | ms to make |")
    print("|---|---:|---:|")
    for label, kb, ms in region_formats(server, http):
        print(f"| {label} | {kb:.1f} | {ms:.2f} |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    if browser is not None:
        browser.close()
        playwright.stop()
    http.close()
    server.close()


if __name__ == "__main__":
    main()
