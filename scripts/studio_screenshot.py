"""Take the README's screenshot of ``chainrule studio``: spirals trained to 95%+ test accuracy.

    python scripts/studio_screenshot.py [--out docs/assets/studio.png] [--width 1280]

Starts the studio on 127.0.0.1 in this process, opens it in Debian's Chromium through
Playwright (never a downloaded browser), trains a small tanh MLP on the spirals, pauses it and
saves a screenshot of the page's top (PNG, palette-reduced with Pillow to keep it small).
"""

from __future__ import annotations

import argparse
import io
import socket
import threading
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
QUERY = "?dataset=spirals&hidden=8,8&activation=tanh&optimizer=adam&lr=0.03&batch_size=32"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/assets/studio.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=860)
    args = parser.parse_args()

    import tempfile

    import uvicorn
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from chainrule.web import limits
    from chainrule.web.studio import create_studio_app

    port = free_port()
    app = create_studio_app(runs_dir=tempfile.mkdtemp(prefix="studio-shot-"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", **limits.server_options()))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(f"http://127.0.0.1:{port}/{QUERY}")
            page.wait_for_function("() => window.studio.runId && window.studio.updates > 0")
            page.click("#train")
            page.wait_for_function("() => Number(document.getElementById('val-acc')"
                                   ".textContent) >= 0.97", timeout=60_000)
            time.sleep(1.5)
            page.click("#pause")
            page.wait_for_function("() => document.getElementById('state').textContent "
                                   "=== 'paused'")
            time.sleep(0.3)
            png = page.screenshot(full_page=False)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size:,} bytes, {image.width}×{image.height})")


if __name__ == "__main__":
    main()
