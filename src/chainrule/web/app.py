"""The web app of ``chainrule serve``: a drawing page and a JSON API around one trained model.

Endpoints (the OpenAPI schema is at ``/openapi.json``):

    GET  /                 the page (static/index.html, app.js, style.css; no build step, no CDN)
    POST /api/predict      {"image": "data:image/png;base64,…"} or {"pixels": [784 numbers in
                           0..1] or 28 rows of 28}, optional "explain": ["saliency", "units",
                           "neighbours"] → class, probabilities, the 28×28 input the model got,
                           and the requested explanations
    GET  /api/model        architecture, parameter count, test accuracy and training data
                           (names and SHA-256 from manifest.json, never paths)
    GET  /api/model/units  every first-layer unit's weights as a 28×28 image, computed once
                           (gzip, ETag): the page fetches it once, predictions name units only
    GET  /healthz          {"status": "ok"}

Images go through ``chainrule.data.preprocess_digit``, as in ``chainrule predict``, so the page
and the command line give the same class and probabilities for the same picture.

Every bad request gets a 4xx JSON ``{"detail": "<what was wrong and how to fix it>"}``: 400 for
a Host header naming another server or a malformed request, 408 for a request that does not
arrive in time, 413 for a body over ``max_body_bytes``, 415 for a body that is not
``application/json``, 422 for malformed JSON, wrong fields, a wrong number of pixels, NaN/inf
or out-of-range values (Python's JSON parser accepts the literals NaN and Infinity), and data
that is not a readable image (or a float image holding NaN or inf), 431 for headers over 16 KiB.
``web/limits.py`` holds these limits and the rule for which requests the event loop answers
itself; ``web/pictures.py`` reads pictures, in worker processes under ``chainrule serve`` (a
503 if one dies). An unexpected exception is answered with a JSON 500 and logged; Starlette
re-raises it after responding, so the server keeps serving and ``TestClient`` still surfaces
the bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import logging
import math
from pathlib import Path

import numpy as np

from .. import runs
from ..model import Sequential
from ..serialization import load_model
from ..version import __version__
from . import WEB_HINT, limits
from .explain import SIDE, Explainer
from .limits import MAX_BODY_BYTES, BodyGuard, HeadGuard
from .neighbours import Neighbours
from .pictures import (
    PictureError,
    Readers,
    WorkerLost,
    declared_pixels,
    decode_picture,
    picture_bytes,
    read_digit,
)
from .schemas import (
    ERRORS,
    DataFile,
    ErrorBody,
    Health,
    LayerInfo,
    ModelInfo,
    Neighbour,
    NeighboursInfo,
    PredictRequest,
    PredictResponse,
    TrainingData,
    Units,
    UnitWeights,
)

try:
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
except ImportError as exc:  # pragma: no cover - exercised without the web extra
    raise ImportError(f"{WEB_HINT} ({exc})") from exc

STATIC = Path(__file__).resolve().parent / "static"
NEIGHBOURS_K = 5
log = logging.getLogger("chainrule.web")


# --------------------------------------------------------------------------- answers
class APIError(Exception):
    """A request the API refuses: answered as ``{"detail": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def decode_image(data: str | bytes):
    """The loaded PIL image of a picture sent as a data URL or base64 text (or its bytes), as
    the server reads it (``pictures.picture_bytes`` and ``pictures.decode_picture``).

    Raises:
        APIError: 422 for bad base64, a non-image, an undecodable or too large image.
    """
    try:
        return decode_picture(picture_bytes(data) if isinstance(data, str) else data)
    except PictureError as exc:
        raise APIError(422, str(exc)) from None


def _display(a: np.ndarray, digits: int = 4) -> list:
    """(28, 28) values rounded to ``digits`` significant digits of the largest magnitude, so the
    JSON stays short (e.g. 0.0123 rather than 0.012299999594688416)."""
    a = np.asarray(a, dtype=np.float64)
    top = float(np.abs(a).max()) if a.size else 0.0
    if top == 0.0 or not math.isfinite(top):
        return a.tolist()
    decimals = digits - 1 - math.floor(math.log10(top))
    return np.round(a, decimals).tolist()


# --------------------------------------------------------------------------- what is served
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _load_neighbours(data_dir) -> tuple[Neighbours | None, str | None]:
    """The MNIST training set from the usual places (never downloaded), or None and why.

    The reason is shown to every client, so it names no folder; the server log has the
    details.
    """
    from ..data import dataset_files
    from ..data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx

    try:
        files = dataset_files("mnist", data_dir, download=False, progress=False)
        images = read_idx(files["train_images"], expect=IMAGES_MAGIC)
        labels = read_idx(files["train_labels"], expect=LABELS_MAGIC)
        return Neighbours(images, labels, dataset="mnist",
                          sha256=_sha256(files["train_images"])), None
    except (OSError, ValueError) as exc:
        log.warning("chainrule serve: no nearest neighbours: %s",
                    " ".join(str(exc).split()) or type(exc).__name__)
        return None, ("the MNIST training set was not found (the server's log says where it "
                      "looked); set CHAINRULE_DATA or pass --data-dir to show the nearest "
                      "training digits")


def _read_manifest(model_path: Path | None) -> dict | None:
    """The run's manifest.json next to a model (``runs.read_manifest``); None without one,
    or when it is unreadable (the server still serves the model, and logs why)."""
    if model_path is None:
        return None
    try:
        return runs.read_manifest(model_path.parent) or None
    except (OSError, ValueError) as exc:
        log.warning("ignoring the manifest next to %s: %s", model_path, exc)
        return None


def _name(value) -> str | None:
    """A dataset or file name without the folders a manifest may give with it."""
    if not isinstance(value, str):
        return None
    return Path(value.replace("\\", "/")).name or None


def training_data(manifest: dict | None) -> TrainingData | None:
    """The dataset and files a run was trained on, from its manifest: names and SHA-256 only
    (the manifest also holds their absolute paths, which are nobody else's business)."""
    config = (manifest or {}).get("config")
    data = (manifest or {}).get("data")
    dataset = _name(config.get("dataset")) if isinstance(config, dict) else None
    files = [DataFile(split=str(split), file=_name(entry.get("path")),
                      sha256=entry.get("sha256") if isinstance(entry.get("sha256"), str)
                      else None)
             for split, entry in (data.items() if isinstance(data, dict) else ())
             if isinstance(entry, dict)]
    if dataset is None and not files:
        return None
    return TrainingData(dataset=dataset, files=files)


def _gzip_accepted(header: str) -> bool:
    """Whether an Accept-Encoding header takes gzip (``gzip`` or ``*``, not with q=0)."""
    for part in header.split(","):
        name, _, params = part.partition(";")
        if name.strip().lower() in ("gzip", "*"):
            q = params.strip().removeprefix("q=")
            try:
                return not q or float(q) > 0
            except ValueError:
                return False
    return False


# --------------------------------------------------------------------------- the app
def create_app(model: str | Path | Sequential, *, data_dir=None, neighbours=True,
               manifest: dict | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               allowed_hosts=(), processes: int = 0) -> FastAPI:
    """Build the FastAPI app serving ``model``.

    Args:
        model: a trained Sequential or the path of a model .npz written by ``chainrule train``
            (its run folder's manifest.json, if any, gives the test accuracy and the training
            data's names and hashes).
        data_dir: where to look for MNIST for the nearest neighbours (default: the usual
            search, ``$CHAINRULE_DATA`` first; never downloads).
        neighbours: True to load the MNIST training set, False for none, or a
            :class:`Neighbours` / ``(images, labels)`` to search instead.
        manifest: the run's manifest (default: manifest.json next to a model path).
        max_body_bytes: larger request bodies get a 413.
        allowed_hosts: Host header names answered besides localhost, 127.0.0.1 and [::1]
            (``"name"`` on the server's port, or ``"name:port"``; see ``limits.HeadGuard``).
        processes: read pictures in this many worker processes (``pictures.Readers``,
            started with the app's lifespan); 0 reads them in the server's own process, on
            the event loop or in a worker thread as ``limits.inline`` says.

    Raises:
        FileNotFoundError / ValueError: for a missing or invalid model file, a model that
            does not take 28×28 digits, or an allowed host that is not a host name.
    """
    model_path = None
    if not isinstance(model, Sequential):
        model_path = Path(model)
        model = load_model(model_path, compile=False)
    explainer = Explainer(model)
    if manifest is None:
        manifest = _read_manifest(model_path)
    final = (manifest or {}).get("final")
    accuracy = final.get("test_accuracy") if isinstance(final, dict) else None
    accuracy = float(accuracy) if isinstance(accuracy, int | float) else None

    reason = None
    if neighbours is True:
        index, reason = _load_neighbours(data_dir)
    elif neighbours is False or neighbours is None:
        index, reason = None, "nearest neighbours are turned off"
    elif isinstance(neighbours, Neighbours):
        index = neighbours
    else:
        index = Neighbours(*neighbours, dataset="given")
    if reason and neighbours is not True:
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
        training_data=training_data(manifest),
        neighbours=NeighboursInfo(
            available=index is not None, count=0 if index is None else len(index),
            dataset=None if index is None else index.dataset,
            sha256=None if index is None else index.sha256, reason=reason,
        ),
        version=__version__,
    )
    units = _unit_images(explainer)
    readers = Readers(processes, limits.IMAGE_WORKERS) if processes else None

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if readers is not None:
            await run_in_threadpool(readers.start)
        try:
            yield
        finally:
            if readers is not None:
                readers.close()

    app = FastAPI(
        title="chainrule serve",
        version=__version__,
        description="Classify handwritten digits with a chainrule model; the page at / lets "
        "you draw one.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.explainer = explainer
    app.state.neighbours = index
    app.state.readers = readers
    app.add_middleware(BodyGuard, max_bytes=max_body_bytes)
    app.add_middleware(HeadGuard, allowed=allowed_hosts)
    add_error_handlers(app)

    @app.get("/healthz", response_model=Health, tags=["service"])
    def healthz() -> Health:
        """Liveness: the server answers and the model is loaded."""
        return Health(status="ok")

    @app.get("/api/model", response_model=ModelInfo, tags=["model"])
    def model_info() -> ModelInfo:
        """The served model: layers, parameter count, test accuracy and training data."""
        return info

    @app.get("/api/model/units", response_model=UnitWeights, tags=["model"], responses={
        304: {"description": "not modified (If-None-Match)"},
        404: {"model": ErrorBody, "description": "no Dense layer on the pixels"}})
    def unit_weights(request: Request) -> Response:
        """Every first-layer unit's 784 weights as a 28×28 image (a softmax regression's
        templates), for the units that ``explain: ["units"]`` names."""
        if units is None:
            raise APIError(404, "this model has no Dense layer on the 784 pixels, so there "
                           "are no unit images to show")
        body, packed, etag = units
        headers = {"ETag": etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        if _gzip_accepted(request.headers.get("accept-encoding", "")):
            return Response(packed, media_type="application/json",
                            headers={**headers, "Content-Encoding": "gzip"})
        return Response(body, media_type="application/json", headers=headers)

    def answer(request: PredictRequest, raw: bytes | None, x: np.ndarray | None) -> bytes:
        if x is None:
            x = (read_digit(raw) if raw is not None
                 else np.asarray(request.pixels, dtype=np.float32).reshape(SIDE, SIDE))
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
            found = explainer.units(result["units_output"])
            if found is None:
                response.notes.append(
                    "units: the model has no Dense layer on the 784 pixels to show"
                )
            else:
                response.units = Units(**found)
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

    large_pictures = asyncio.Semaphore(limits.IMAGE_WORKERS)

    @app.post("/api/predict", response_model=PredictResponse, responses=ERRORS,
              tags=["model"])
    async def predict(request: PredictRequest) -> Response:
        """Classify one digit; optionally explain the decision."""
        # A picture's size is read from its header before any pixel is decoded. With worker
        # processes, they read every picture (large ones one at a time); without, the event
        # loop reads small ones itself and hands large ones to a worker thread, one at a time.
        # What is left is answered on the loop or in a worker thread as limits.inline says.
        raw = x = pixels = None
        if request.image is not None:
            raw = picture_bytes(request.image)
            pixels = declared_pixels(raw)
            if readers is not None:
                x = await readers.read(raw, large=pixels > limits.INLINE_PIXELS)
                raw = pixels = None
        if limits.inline(explainer.multiply_adds, pixels, "neighbours" in request.explain):
            body = answer(request, raw, x)
        elif pixels is not None and pixels > limits.INLINE_PIXELS:
            async with large_pictures:
                body = await run_in_threadpool(answer, request, raw, x)
        else:
            body = await run_in_threadpool(answer, request, raw, x)
        return Response(body, media_type="application/json")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _unit_images(explainer: Explainer) -> tuple[bytes, bytes, str] | None:
    """The body of /api/model/units (JSON, its gzip, its ETag), made once per model."""
    weights = explainer.unit_weights()
    if weights is None:
        return None
    for unit in weights["units"]:
        unit["weights"] = _display(unit["weights"])
    body = UnitWeights(**weights).model_dump_json().encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return body, gzip.compress(body, compresslevel=6, mtime=0), etag


# The page loads nothing but its own files: the browser refuses any other host.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
}


def add_error_handlers(app: FastAPI, name: str = "chainrule serve",
                       example: str = '{"image": "data:image/png;base64,…"}') -> None:
    """Answer every refusal as ``{"detail": "…"}``: APIError with its status, validation errors
    as one 422 line (location and message, never the input), anything else as a logged 500.

    Args:
        name: the server's name in the log. example: a body to suggest for an empty request.
    """
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(PictureError)
    async def picture_error(request: Request, exc: PictureError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(WorkerLost)
    async def worker_lost(request: Request, exc: WorkerLost):
        return JSONResponse({"detail": str(exc)}, status_code=503)

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
                messages.append(f"the body is empty; send a JSON object such as {example}")
                continue
            msg = str(error.get("msg", "invalid"))
            msg = msg.removeprefix("Value error, ")
            where = ".".join(loc)
            messages.append(f"{where}: {msg}" if where else msg)
        return JSONResponse({"detail": "; ".join(dict.fromkeys(messages)) or "invalid request"},
                            status_code=422)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):
        log.error("%s: %s %s failed", name, request.method, request.url.path,
                  exc_info=exc)
        return JSONResponse(
            {"detail": f"internal server error ({type(exc).__name__}); see the server log"},
            status_code=500,
        )


def serve(model, host: str = "127.0.0.1", port: int = 8000, data_dir=None,
          log_level: str = "info", allowed_hosts=(),
          picture_workers: int = limits.PICTURE_PROCESSES) -> None:
    """Run the app with uvicorn until Ctrl-C (``chainrule serve``), with the limits of
    ``web/limits.py``, pictures read in worker processes, and one BLAS thread (see
    ``_one_blas_thread``).

    Args:
        allowed_hosts: Host header names to answer besides the local ones and ``host``.
        picture_workers: processes that read pictures (0: the server's own process).

    Raises:
        ImportError: without uvicorn (install the ``web`` extra).
        ValueError: an allowed host that is not a host name or address.
    """
    try:
        import uvicorn
    except ImportError as exc:
        raise ImportError(f"{WEB_HINT} ({exc})") from exc
    names = limits.answered_hosts(allowed_hosts, host)
    _one_blas_thread()
    app = create_app(model, data_dir=data_dir, allowed_hosts=names, processes=picture_workers)
    shown = f"[{host}]" if ":" in host else host
    print(f"chainrule serve: open http://{shown}:{port}/ (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, **limits.server_options())


def _one_blas_thread() -> None:
    """Limit BLAS to one thread in the server process (with threadpoolctl, when installed).

    A digit's products are far too small to split (784 × 256: 0.01 ms on one thread, three
    times that split in two), the server already works on several requests at once (event
    loop, worker threads and processes), and on a busy machine a BLAS thread waiting for a
    core made the neighbours' product of 15.6 MB eight times slower (2 ms → 16 ms, measured
    on 2 shared cores).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log.info("chainrule serve: threadpoolctl is not installed; BLAS uses its default "
                 "threads (set OPENBLAS_NUM_THREADS=1 for one)")
        return
    threadpool_limits(limits=1, user_api="blas")
