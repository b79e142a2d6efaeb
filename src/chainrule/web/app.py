"""The web app of ``chainrule serve``: a drawing page and a JSON API around one trained model.

Endpoints (the OpenAPI schema is at ``/openapi.json``):

    GET  /               the page (static/index.html, app.js, style.css; no build step, no CDN)
    POST /api/predict    {"image": "data:image/png;base64,…"} or {"pixels": [784 numbers in
                         0..1] or 28 rows of 28}, optional "explain": ["saliency", "units",
                         "neighbours"] → class, probabilities, the 28×28 input the model got,
                         and the requested explanations
    GET  /api/model      architecture, parameter count, test accuracy (from manifest.json)
    GET  /healthz        {"status": "ok"}

Images go through ``chainrule.data.preprocess_digit``, as in ``chainrule predict``, so the page
and the command line give the same class and probabilities for the same picture.

Every bad request gets a 4xx JSON ``{"detail": "<what was wrong and how to fix it>"}``: 413 for
a body over ``max_body_bytes``, 415 for a body that is not ``application/json``, 422 for
malformed JSON, wrong fields, a wrong number of pixels, NaN/inf or out-of-range values
(Python's JSON parser accepts the literals NaN and Infinity), and data that is not a readable
image. An unexpected exception is answered with a JSON 500 and logged; Starlette re-raises it
after responding, so the server keeps serving and ``TestClient`` still surfaces the bug.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
import re
import time
from pathlib import Path

import numpy as np

from ..data import ImageTooLargeError, open_image, preprocess_digit
from ..model import Sequential
from ..serialization import load_model
from ..version import __version__
from . import WEB_HINT
from .explain import SIDE, Explainer, Neighbours
from .schemas import (
    ERRORS,
    Health,
    LayerInfo,
    ModelInfo,
    Neighbour,
    NeighboursInfo,
    PredictRequest,
    PredictResponse,
    Units,
)

try:
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from PIL import Image, UnidentifiedImageError
except ImportError as exc:  # pragma: no cover - exercised without the web extra
    raise ImportError(f"{WEB_HINT} ({exc})") from exc

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 1_000_000
NEIGHBOURS_K = 5
INLINE_MS = 2.0                # model work per digit below which requests skip the thread pool
INLINE_IMAGE_CHARS = 100_000   # base64 pictures above this are decoded in the thread pool
log = logging.getLogger("chainrule.web")

# --------------------------------------------------------------------------- input checks
class APIError(Exception):
    """A request the API refuses: answered as ``{"detail": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


_DATA_URL = re.compile(r"^data:([\w.+/-]*)((?:;[\w.+-]+=[\w.+-]+)*)(;base64)?,", re.ASCII)


def decode_image(text: str) -> Image.Image:
    """Decode a data URL or plain base64 into a loaded PIL image, as ``chainrule predict`` does.

    ``chainrule.data.open_image`` checks the declared size against
    ``chainrule.data.MAX_IMAGE_PIXELS`` before decoding and reduces the picture to the
    working resolution of ``preprocess_digit`` while decoding.

    Raises:
        APIError: 422 for bad base64, a non-image, an undecodable or too large image.
    """
    match = _DATA_URL.match(text)
    if match:
        if not match.group(3):
            raise APIError(422, "image: the data URL must be base64-encoded "
                           "('data:image/png;base64,…')")
        text = text[match.end():]
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise APIError(422, "image: not valid base64; send a data URL such as "
                       "canvas.toDataURL('image/png') or the base64 of an image file") from None
    if not raw:
        raise APIError(422, "image: empty; send the base64 of a PNG or JPEG file")
    try:
        picture = open_image(io.BytesIO(raw))
    except ImageTooLargeError as exc:
        raise APIError(422, f"image: {exc}") from None
    except UnidentifiedImageError:
        raise APIError(422, f"image: the {len(raw):,} bytes are not a picture; send a PNG, "
                       "JPEG, GIF, BMP or WebP file") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on hostile bytes
        raise APIError(422, f"image: the picture is corrupt or truncated ({exc}); send a "
                       "complete PNG, JPEG, GIF, BMP or WebP file") from None
    return picture


# --------------------------------------------------------------------------- body limits
def _json_error(status: int, message: str) -> tuple[dict, list]:
    body = json.dumps({"detail": message}).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    return start, {"type": "http.response.body", "body": body}


class BodyGuard:
    """ASGI middleware: a POST/PUT/PATCH body must be JSON and at most ``max_bytes`` long.

    The body is read here (at most ``max_bytes`` + one chunk, whether or not a Content-Length
    was sent) and replayed to the app, so an oversized or chunked upload never reaches the
    JSON parser.
    """

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        media = content_type.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            got = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
            return await self._refuse(send, 415, f"the body must be JSON sent with "
                                      f"Content-Type: application/json, got {got}")
        declared = headers.get(b"content-length")
        too_big = (f"the body is larger than {self.max_bytes:,} bytes; send a smaller image "
                   "(the page sends about 10 kB)")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._refuse(send, 413, too_big)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._refuse(send, 413, too_big)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return await self._refuse(send, 422, f"the body is not UTF-8 text ({exc.reason} at "
                                      f"byte {exc.start}); JSON must be sent as UTF-8")
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send, status: int, message: str) -> None:
        start, body = _json_error(status, message)
        await send(start)
        await send(body)


# --------------------------------------------------------------------------- the app
def _display(a: np.ndarray, digits: int = 4) -> list:
    """(28, 28) values rounded to ``digits`` significant digits of the largest magnitude, so the
    JSON stays short (e.g. 0.0123 rather than 0.012299999594688416)."""
    a = np.asarray(a, dtype=np.float64)
    top = float(np.abs(a).max()) if a.size else 0.0
    if top == 0.0 or not math.isfinite(top):
        return a.tolist()
    decimals = digits - 1 - math.floor(math.log10(top))
    return np.round(a, decimals).tolist()


def _compute_ms(explainer: Explainer) -> float:
    """Milliseconds of model work for one digit (prediction and saliency), best of 3."""
    blank = np.zeros((SIDE, SIDE), dtype=np.float32)
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        explainer.saliency(blank, int(explainer.predict(blank)["class"]))
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def _load_neighbours(data_dir) -> tuple[Neighbours | None, str | None]:
    """The MNIST training set from the usual places (never downloaded), or None and why."""
    from ..data import dataset_files
    from ..data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx

    try:
        files = dataset_files("mnist", data_dir, download=False, progress=False)
        images = read_idx(files["train_images"], expect=IMAGES_MAGIC)
        labels = read_idx(files["train_labels"], expect=LABELS_MAGIC)
        return Neighbours(images, labels, source=str(files["train_images"])), None
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, (
            f"the MNIST training set was not found ({first}); set CHAINRULE_DATA or pass "
            "--data-dir to show the nearest training digits"
        )


def _read_manifest(model_path: Path | None) -> dict | None:
    if model_path is None:
        return None
    path = model_path.with_name("manifest.json")
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None
    return manifest if isinstance(manifest, dict) else None


def create_app(model: str | Path | Sequential, *, data_dir=None, neighbours=True,
               manifest: dict | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """Build the FastAPI app serving ``model``.

    Args:
        model: a trained Sequential or the path of a model .npz written by ``chainrule train``
            (its run folder's manifest.json, if any, gives the test accuracy).
        data_dir: where to look for MNIST for the nearest neighbours (default: the usual
            search, ``$CHAINRULE_DATA`` first; never downloads).
        neighbours: True to load the MNIST training set, False for none, or a
            :class:`Neighbours` / ``(images, labels)`` to search instead.
        manifest: the run's manifest (default: manifest.json next to a model path).
        max_body_bytes: larger request bodies get a 413.

    Raises:
        FileNotFoundError / ValueError: for a missing or invalid model file, or a model that
            does not take 28×28 digits.
    """
    model_path = None
    if not isinstance(model, Sequential):
        model_path = Path(model)
        model = load_model(model_path, compile=False)
    explainer = Explainer(model)
    if manifest is None:
        manifest = _read_manifest(model_path)
    accuracy = (manifest or {}).get("final", {}).get("test_accuracy")
    accuracy = float(accuracy) if isinstance(accuracy, int | float) else None

    reason = None
    if neighbours is True:
        index, reason = _load_neighbours(data_dir)
    elif neighbours is False or neighbours is None:
        index, reason = None, "nearest neighbours are turned off"
    elif isinstance(neighbours, Neighbours):
        index = neighbours
    else:
        index = Neighbours(*neighbours, source="given")
    if reason:
        log.warning("chainrule serve: %s", reason)

    info = ModelInfo(
        name=model.name,
        dtype=model.dtype.name,
        input_shape=list(model.input_shape),
        classes=int(np.prod(model.output_shape)),
        parameters=model.count_params(),
        layers=[LayerInfo(name=layer.name, type=type(layer).__name__,
                          output_shape=list(layer.output_shape),
                          parameters=layer.count_params()) for layer in model.layers],
        summary=model.summary(print_fn=None),
        units=explainer.unit_kind,
        test_accuracy=accuracy,
        neighbours=NeighboursInfo(
            available=index is not None, count=0 if index is None else len(index),
            source=None if index is None else index.source, reason=reason,
        ),
        version=__version__,
    )

    app = FastAPI(
        title="chainrule serve",
        version=__version__,
        description="Classify handwritten digits with a chainrule model; the page at / lets "
        "you draw one.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.explainer = explainer
    app.state.neighbours = index
    app.add_middleware(BodyGuard, max_bytes=max_body_bytes)
    _add_error_handlers(app)

    @app.get("/healthz", response_model=Health, tags=["service"])
    def healthz() -> Health:
        """Liveness: the server answers and the model is loaded."""
        return Health(status="ok")

    @app.get("/api/model", response_model=ModelInfo, tags=["model"])
    def model_info() -> ModelInfo:
        """The served model: layers, parameter count, test accuracy when known."""
        return info

    def answer(request: PredictRequest) -> bytes:
        if request.image is not None:
            picture = decode_image(request.image)
            try:
                x = preprocess_digit(picture)
            except ValueError as exc:
                raise APIError(422, f"image: {exc}") from None
        else:
            x = np.asarray(request.pixels, dtype=np.float32).reshape(SIDE, SIDE)
        result = explainer.predict(x)
        response = PredictResponse(
            class_=result["class"],
            probabilities=result["probabilities"].tolist(),
            input=x.astype(np.float64).tolist(),
            empty=not bool(x.any()),
        )
        wanted = set(request.explain)
        if "saliency" in wanted:
            response.saliency = _display(explainer.saliency(x, result["class"]))
        if "units" in wanted:
            units = explainer.units(result["units_output"])
            if units is None:
                response.notes.append(
                    "units: the model has no Dense layer on the 784 pixels to show"
                )
            else:
                for unit in units["units"]:
                    unit["weights"] = _display(unit["weights"])
                response.units = Units(**units)
        if "neighbours" in wanted:
            if index is None:
                response.notes.append(f"neighbours: {reason}")
            else:
                found = index.query(x, NEIGHBOURS_K)
                for n in found:
                    n["image"] = _display(n["image"])
                response.neighbours = [Neighbour(**n) for n in found]
        # Serialised once, by pydantic-core, rather than validated again by FastAPI and
        # encoded by json.dumps (five times slower for a response with a few 28×28 images).
        return response.model_dump_json(by_alias=True).encode()

    slow_model = _compute_ms(explainer) > INLINE_MS

    @app.post("/api/predict", response_model=PredictResponse, responses=ERRORS,
              tags=["model"])
    async def predict(request: PredictRequest) -> Response:
        """Classify one digit; optionally explain the decision."""
        # A request that takes about a millisecond is answered on the event loop: a worker
        # thread would cost more than the work (40% of the throughput of the page's requests
        # on 2 cores). Big pictures, the neighbours' product over the training set, and
        # models slower than INLINE_MS go to the thread pool, so the loop keeps serving.
        heavy = (slow_model or "neighbours" in request.explain
                 or (request.image is not None and len(request.image) > INLINE_IMAGE_CHARS))
        body = await run_in_threadpool(answer, request) if heavy else answer(request)
        return Response(body, media_type="application/json")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


# The page loads nothing but its own files: the browser refuses any other host.
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
}


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        # The default handler echoes the offending input, which may hold NaN (not valid in
        # JSON: the response itself would fail). Report location and message only.
        messages = []
        for error in exc.errors():
            loc = [str(part) for part in error.get("loc", ()) if part != "body"]
            if error.get("type") == "json_invalid":
                reason = (error.get("ctx") or {}).get("error", "")
                position = loc[0] if loc else "?"
                messages.append(f"the body is not valid JSON ({reason} at character "
                                f"{position})")
                continue
            if error.get("type") == "missing" and not loc:
                messages.append('the body is empty; send a JSON object such as '
                                '{"image": "data:image/png;base64,…"}')
                continue
            msg = str(error.get("msg", "invalid"))
            msg = msg.removeprefix("Value error, ")
            where = ".".join(loc)
            messages.append(f"{where}: {msg}" if where else msg)
        return JSONResponse({"detail": "; ".join(dict.fromkeys(messages)) or "invalid request"},
                            status_code=422)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):
        log.error("chainrule serve: %s %s failed", request.method, request.url.path,
                  exc_info=exc)
        return JSONResponse(
            {"detail": f"internal server error ({type(exc).__name__}); see the server log"},
            status_code=500,
        )


def serve(model, host: str = "127.0.0.1", port: int = 8000, data_dir=None,
          log_level: str = "info") -> None:
    """Run the app with uvicorn until Ctrl-C (``chainrule serve``).

    Raises:
        ImportError: without uvicorn (install the ``web`` extra).
    """
    try:
        import uvicorn
    except ImportError as exc:
        raise ImportError(f"{WEB_HINT} ({exc})") from exc
    app = create_app(model, data_dir=data_dir)
    shown = f"[{host}]" if ":" in host else host
    print(f"chainrule serve: open http://{shown}:{port}/ (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
