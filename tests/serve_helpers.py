"""Shared helpers for the ``chainrule serve`` tests: one small trained model, servers, clients.

The model is trained once per test process (a 784-64-10 MLP with Dropout, 3 epochs on 6,000
real MNIST images: about 2 s, about 90% test accuracy) and saved in a run folder with a
manifest.json, as ``chainrule train`` leaves it.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import functools
import io
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from threadpoolctl import threadpool_limits

from chainrule import models
from chainrule.data import load_mnist

DATA_ROOT = Path(
    os.environ.get("CHAINRULE_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)

with warnings.catch_warnings():
    # Starlette asks for httpx2 instead of httpx; the client works the same either way.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient


def local_client(app, **kwargs) -> TestClient:
    """A TestClient that sends ``Host: localhost``: its default name, testserver, is refused by
    the Host check (web/limits.py)."""
    return TestClient(app, base_url="http://localhost", **kwargs)


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """One BLAS thread: these models are small, and on a busy 2-core machine OpenBLAS's
    spinning threads can slow a 0.2 s training run down a hundredfold."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@functools.cache
def mnist():
    """((x_train, y_train), (x_test, y_test)) as float32 in [0, 1]."""
    return load_mnist(DATA_ROOT, progress=False)


@functools.cache
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="chainrule-serve-tests-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def trained_run() -> Path:
    """A run folder holding model.npz (MLP 784-64-10 with Dropout, no RandomShift) and
    manifest.json."""
    (x, y), (x_test, y_test) = mnist()
    model = models.mlp(hidden=(64,), dropout=0.2, augment=0, seed=0)
    model.fit(x[:6000], y[:6000], epochs=3, batch_size=64, seed=0, verbose=0)
    accuracy = model.evaluate(x_test[:2000], y_test[:2000])["accuracy"]
    run = _workdir() / "run"
    run.mkdir()
    model.save(run / "model.npz")
    (run / "manifest.json").write_text(json.dumps({"final": {"test_accuracy": accuracy}}))
    return run


def neighbour_set(n: int = 5000):
    """The first ``n`` MNIST training images and labels (a fast stand-in for all 60,000)."""
    (x, y), _ = mnist()
    return x[:n], y[:n]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def mnist_png(image: np.ndarray, size: int = 140) -> bytes:
    """An MNIST image (float in [0, 1], ink bright) as a user's picture: dark ink on white."""
    gray = Image.fromarray(np.uint8(255 - np.round(image * 255)))
    return png_bytes(gray.resize((size, size), Image.Resampling.BICUBIC))


def drawn_one(size: int = 280) -> bytes:
    """What the page sends for a '1': a thick vertical stroke on a white canvas."""
    canvas = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(canvas).line([(size // 2, size // 5), (size // 2, 4 * size // 5)],
                                fill=(21, 24, 31), width=int(0.08 * size))
    return png_bytes(canvas)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app, port: int | None = None):
    """Serve ``app`` with uvicorn on 127.0.0.1 in a background thread, with the limits of
    ``chainrule serve``; yield its base URL."""
    import uvicorn

    from chainrule.web.limits import server_options

    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off", **server_options())
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class ServeProcess:
    """A ``chainrule serve`` process on 127.0.0.1 (see ``serve_process``)."""

    def __init__(self, proc, port: int):
        self.proc = proc
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.url = f"http://{self.host}"


@contextlib.contextmanager
def serve_process(model, *args: str, data_dir=None, timeout: float = 120):
    """Run ``python -m chainrule serve MODEL --port P [--data-dir D] ARGS…`` on 127.0.0.1 until
    /healthz answers; yield a ServeProcess; stop it (SIGTERM) afterwards."""
    import subprocess
    import sys
    import urllib.request

    port = free_port()
    command = [sys.executable, "-m", "chainrule", "serve", str(model), "--port", str(port),
               *(["--data-dir", str(data_dir)] if data_dir is not None else []), *args]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError("chainrule serve did not start:\n"
                                       + log.read().decode(errors="replace")) from None
                time.sleep(0.1)
        yield ServeProcess(proc, port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
