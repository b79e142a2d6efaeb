"""Where a ``chainrule serve`` request spends its CPU: milliseconds per stage, in one process.

Usage:
    CHAINRULE_DATA=../shared/data python benchmarks/serve_profile.py [--model runs/mlp/model.npz]
        [--repeats 300]

Times, in this process with one BLAS thread (as ``chainrule serve`` runs), each stage of the
load benchmark's requests (benchmarks/serve_load.py: the same 140×140 drawing, the same model
when --model is not given): decoding the base64, reading the picture's header, decoding it,
``preprocess_digit``, the forward pass, the saliency map, the hidden units, the 5 nearest
training digits; then the whole request through the app (ASGI, called directly: FastAPI,
pydantic, the answer's JSON; pictures read in this process, no socket, no uvicorn), whose
remainder after the stages is the framework and the answer's building. Each figure is the
median over 5 rounds of ``--repeats`` calls of the CPU time per call (``time.process_time``),
which depends less on other jobs sharing the cores than wall time. This is a benchmark, not a
test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from serve_load import bodies, drawn_digit, quick_mlp
from threadpoolctl import threadpool_limits

from chainrule.data import preprocess_digit
from chainrule.serialization import load_model
from chainrule.web.app import create_app
from chainrule.web.explain import Explainer
from chainrule.web.pictures import declared_pixels, decode_picture, picture_bytes


def cpu_ms(call, repeats: int) -> float:
    """Median over 5 rounds of the CPU milliseconds per call."""
    call()
    rounds = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(repeats):
            call()
        rounds.append((time.process_time() - start) * 1e3 / repeats)
    return float(np.median(rounds))


def asgi_requests(app, body: bytes):
    """A function f(count) that sends ``count`` POST /api/predict with ``body``, one after the
    other, straight to the ASGI app on one running event loop (as uvicorn's stays running)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/api/predict", "raw_path":
             b"/api/predict", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
    loop = asyncio.new_event_loop()

    async def one():
        sent = False
        status = []

        async def receive():
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        if status != [200]:
            raise RuntimeError(f"the app answered {status}")

    async def many(count: int):
        for _ in range(count):
            await one()

    return lambda count: loop.run_until_complete(many(count))


def cpu_ms_batched(run, repeats: int) -> float:
    """Median over 5 rounds of the CPU milliseconds per call of run(repeats) / repeats."""
    run(3)
    rounds = []
    for _ in range(5):
        start = time.process_time()
        run(repeats)
        rounds.append((time.process_time() - start) * 1e3 / repeats)
    return float(np.median(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a model .npz (default: train an MLP)")
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    threadpool_limits(limits=1, user_api="blas")
    data_dir = os.environ.get("CHAINRULE_DATA")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.model) if args.model else quick_mlp(Path(tmp), data_dir)
        model = load_model(path, compile=False)
    app = create_app(model, data_dir=data_dir)
    index = app.state.neighbours
    explainer = Explainer(model)
    request = bodies()["drawing"]
    raw = drawn_digit()
    picture = decode_picture(raw)
    x = preprocess_digit(picture)
    result = explainer.predict(x)
    n = args.repeats
    stages = {
        "base64 of the data URL": cpu_ms(lambda: picture_bytes(request["image"]), n),
        "picture header (declared size)": cpu_ms(lambda: declared_pixels(raw), n),
        "PNG decode (open_image)": cpu_ms(lambda: decode_picture(raw).load(), n),
        "preprocess_digit": cpu_ms(lambda: preprocess_digit(picture), n),
        "forward pass (predict)": cpu_ms(lambda: explainer.predict(x), n),
        "saliency": cpu_ms(lambda: explainer.saliency(x, result["class"]), n),
        "hidden units": cpu_ms(lambda: explainer.units(result["units_output"]), n),
    }
    if index is not None:
        stages["5 nearest training digits"] = cpu_ms(lambda: index.query(x, 5), n // 3)
    whole = {}
    for name, body in bodies().items():
        if name == "pen-up" and index is None:
            continue
        whole[name] = cpu_ms_batched(asgi_requests(app, json.dumps(body).encode()), n // 3)

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"CPU ms per call, median of 5 rounds; load average (1, 5, 15 min) after: {load}\n")
    print("| stage | CPU ms |")
    print("|---|---|")
    for name, ms in stages.items():
        print(f"| {name} | {ms:.3f} |")
    print("\n| whole request through the app (no socket) | CPU ms | of which the stages | "
          "rest: framework, validation, answer's JSON |")
    print("|---|---|---|---|")
    picture_stages = sum(stages[k] for k in list(stages)[:4])
    used = {
        "drawing": picture_stages + sum(stages[k] for k in list(stages)[4:7]),
        "png": picture_stages + stages["forward pass (predict)"],
        "pixels": stages["forward pass (predict)"],
    }
    if "pen-up" in whole:
        used["pen-up"] = used["drawing"] + stages["5 nearest training digits"]
    for name, ms in whole.items():
        print(f"| {name} | {ms:.3f} | {used[name]:.3f} | {ms - used[name]:.3f} |")


if __name__ == "__main__":
    main()
