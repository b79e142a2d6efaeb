"""Load on ``chainrule serve`` over loopback: requests/s, p50/p99 latency and errors.

Usage:
    CHAINRULE_DATA=../shared/data python benchmarks/serve_load.py [--model runs/mlp/model.npz]
        [--requests 2000] [--clients 20]

Starts a real server (``python -m chainrule serve MODEL --port P``, uvicorn, on 127.0.0.1) in a
subprocess, waits for /healthz, then for each scenario sends ``--requests`` POST /api/predict
from ``--clients`` concurrent keep-alive clients (one connection each, each client sending its
next request when the previous answer is in) after 100 warm-up requests. Latency is measured
per request at the client. The clients run in this process on the same cores as the server:
by default they are a minimal asyncio HTTP/1.1 client (a few µs of CPU a request);
``--client httpx`` uses httpx.AsyncClient instead (about 1 ms of CPU a request, taken from
the server). The last column is the server's CPU time per request (user + system, from
/proc, Linux only): its main process, and its picture worker processes together; it depends
less on other jobs sharing the cores than the latencies do. Without ``--model`` it trains the
default MLP preset (784-256-256-10) for one epoch on 10,000 MNIST images in a temporary
folder (the weights do not change the cost of a request). This is a benchmark, not a test.

Scenarios: the page's request while drawing (a 140×140 PNG data URL; preprocess_digit, the
forward pass, saliency and hidden units), the page's request on pen-up (the same plus the 5
nearest of the 60,000 training digits, when MNIST is found), a bare PNG, and 784 pixels. The
units' weight images are not in these answers: the page fetches them once
(GET /api/model/units), whose size is printed above the table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a model .npz (default: train an MLP)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--data-dir", default=None, help="MNIST folder for the neighbours")
    parser.add_argument("--scenarios", default="drawing,pen-up,png,pixels")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="raw: a minimal asyncio HTTP/1.1 client; httpx: httpx.AsyncClient")
    parser.add_argument("--picture-workers", type=int, default=None,
                        help="passed to chainrule serve (default: its own default, 2)")
    return parser.parse_args()


def quick_mlp(folder: Path, data_dir) -> Path:
    from chainrule import models
    from chainrule.data import load_mnist

    (x, y), _ = load_mnist(data_dir, progress=False)
    model = models.mlp(seed=0)
    model.fit(x[:10000], y[:10000], epochs=1, batch_size=128, seed=0, verbose=0)
    path = folder / "model.npz"
    model.save(path)
    return path


def drawn_digit() -> bytes:
    """A '7' as the page sends it: dark strokes 8% of the side wide on a white 140×140 RGBA
    PNG (what canvas.toDataURL gives)."""
    canvas = Image.new("RGBA", (140, 140), (255, 255, 255, 255))
    pen = ImageDraw.Draw(canvas)
    pen.line([(35, 30), (105, 30), (60, 115)], fill=(21, 24, 31, 255), width=11, joint="curve")
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def bodies() -> dict[str, bytes]:
    url = "data:image/png;base64," + base64.b64encode(drawn_digit()).decode()
    rng = np.random.default_rng(0)
    pixels = np.clip(rng.random(784) - 0.6, 0, None) * 2.5
    return {
        "drawing": {"image": url, "explain": ["saliency", "units"]},
        "pen-up": {"image": url, "explain": ["saliency", "units", "neighbours"]},
        "png": {"image": url},
        "pixels": {"pixels": np.round(np.clip(pixels, 0, 1), 4).tolist()},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, data_dir, log, picture_workers=None
                 ) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "chainrule", "serve", str(model), "--port", str(port)]
    if data_dir:
        command += ["--data-dir", str(data_dir)]
    if picture_workers is not None:
        command += ["--picture-workers", str(picture_workers)]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2):
                return server, base
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("chainrule serve did not start; see its log") from None
            time.sleep(0.2)


async def raw_client(host: str, port: int, body: bytes, counter, latencies, errors) -> None:
    """One keep-alive HTTP/1.1 connection written by hand: a few µs of client CPU a request,
    so that the clients, which share the cores with the server, disturb it little."""
    request = (f"POST /api/predict HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for _ in counter:
            start = time.perf_counter()
            try:
                writer.write(request)
                await writer.drain()
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                payload = await reader.readexactly(length)
                if status != 200 or b'"probabilities"' not in payload:
                    errors.append(f"HTTP {status}: {payload[:80]!r}")
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
            latencies.append(time.perf_counter() - start)
    finally:
        writer.close()


async def httpx_client(base: str, body: bytes, counter, latencies, errors) -> None:
    """The same with httpx.AsyncClient (about 1 ms of client CPU a request)."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as session:
        for _ in counter:
            start = time.perf_counter()
            try:
                response = await session.post("/api/predict", content=body,
                                              headers={"content-type": "application/json"})
                if response.status_code != 200 or b'"probabilities"' not in response.content:
                    errors.append(f"HTTP {response.status_code}: {response.text[:80]}")
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            latencies.append(time.perf_counter() - start)


async def load(base: str, body: bytes, total: int, clients: int, kind: str) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(total))
    host, port = base.removeprefix("http://").split(":")
    if kind == "raw":
        tasks = [raw_client(host, int(port), body, counter, latencies, errors)
                 for _ in range(clients)]
    else:
        tasks = [httpx_client(base, body, counter, latencies, errors) for _ in range(clients)]
    started = time.perf_counter()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1e3
    return {
        "requests": len(latencies), "seconds": elapsed, "rps": len(latencies) / elapsed,
        "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
        "max": float(ms.max()), "errors": len(errors), "first_error": errors[:1],
        "bytes": len(body),
    }


def cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(CPU seconds of process ``pid``, of its child processes now alive): user + system time
    from /proc, or None where there is no /proc (not Linux)."""
    tick = os.sysconf("SC_CLK_TCK")

    def own(p: int) -> float:
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime, stime

    def children(p: int) -> list[int]:
        found = []
        for task in os.listdir(f"/proc/{p}/task"):
            with open(f"/proc/{p}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
        return found + [g for c in found for g in children(c)]

    try:
        return own(pid), sum(own(c) for c in children(pid))
    except OSError:
        return None


def response_size(base: str, body: bytes) -> int:
    """Bytes of one answer's body to ``body`` (the same for every request of a scenario)."""
    request = urllib.request.Request(base + "/api/predict", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as answer:
        return len(answer.read())


def units_size(base: str) -> tuple[int, int] | None:
    """Bytes of GET /api/model/units as JSON and as gzip, or None for a model without units."""
    sizes = []
    for encoding in ("identity", "gzip"):
        request = urllib.request.Request(base + "/api/model/units",
                                         headers={"Accept-Encoding": encoding})
        try:
            with urllib.request.urlopen(request) as answer:
                sizes.append(len(answer.read()))
        except urllib.error.HTTPError:
            return None
    return sizes[0], sizes[1]


def main() -> None:
    args = parse_args()
    load_before = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    data_dir = args.data_dir or os.environ.get("CHAINRULE_DATA")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = Path(args.model) if args.model else quick_mlp(tmp, data_dir)
        log_path = tmp / "server.log"
        with open(log_path, "wb") as log:
            server, base = start_server(model, data_dir, log, args.picture_workers)
            try:
                with urllib.request.urlopen(base + "/api/model") as r:
                    info = json.load(r)
                units = units_size(base)
                all_bodies = bodies()
                results = {}
                for name in args.scenarios.split(","):
                    body = json.dumps(all_bodies[name]).encode()
                    if name == "pen-up" and not info["neighbours"]["available"]:
                        continue
                    asyncio.run(load(base, body, 100, args.clients, args.client))  # warm-up
                    before = cpu_seconds(server.pid)
                    results[name] = asyncio.run(
                        load(base, body, args.requests, args.clients, args.client))
                    after = cpu_seconds(server.pid)
                    if before and after:
                        results[name]["cpu_ms"] = [
                            (b - a) * 1e3 / results[name]["requests"]
                            for a, b in zip(before, after, strict=True)]
                    results[name]["response_bytes"] = response_size(base, body)
            finally:
                server.terminate()
                server.wait(timeout=30)

    load_after = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    dense = [str(layer["output_shape"][0]) for layer in info["layers"] if layer["type"] == "Dense"]
    print(f"model: {info['name']} 784-{'-'.join(dense)} ({info['parameters']:,} parameters); "
          f"neighbours: {info['neighbours']['count']:,} training digits")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, NumPy {np.__version__}")
    workers = "default" if args.picture_workers is None else args.picture_workers
    print(f"load average (1, 5, 15 min) before: {load_before}; after: {load_after} (server, "
          f"clients and any other job share the cores; client: {args.client}; picture "
          f"workers: {workers})")
    if units:
        print(f"unit images (GET /api/model/units, once per page): {units[1] / 1000:,.0f} kB "
              f"gzip ({units[0] / 1000:,.0f} kB of JSON)")
    print(f"{args.requests:,} requests per row from {args.clients} concurrent keep-alive clients "
          "over loopback\n")
    print("| request | body | response | requests/s | p50 ms | p99 ms | max ms | errors | "
          "server CPU ms/request (main + workers) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        cpu = ("{:.2f} + {:.2f}".format(*r["cpu_ms"]) if "cpu_ms" in r else "n/a")
        print(f"| {name} | {r['bytes'] / 1000:.1f} kB | {r['response_bytes'] / 1000:.1f} kB | "
              f"{r['rps']:,.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | "
              f"{r['errors']} | {cpu} |")
        if r["errors"]:
            print(f"  first error: {r['first_error'][0]}")


if __name__ == "__main__":
    main()
