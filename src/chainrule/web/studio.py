"""The web app of ``chainrule studio``: train a network in the browser and watch it learn.

Endpoints (the OpenAPI schema is at ``/openapi.json``; every POST, PATCH body is JSON sent
with ``Content-Type: application/json``, an empty body or ``{}`` for the actions):

    GET    /                          the page (static/studio.html, studio.js, studio.css)
    POST   /api/runs                  settings (``RunSettings``) → {"id": …}, a paused run
    GET    /api/runs/{id}             state, step, epoch, metrics, settings, data, curve
    POST   /api/runs/{id}/start       train until paused or done
    POST   /api/runs/{id}/pause       stop before the next batch (answers once stopped)
    POST   /api/runs/{id}/step        exactly one batch (paused runs only; 409 while training)
    POST   /api/runs/{id}/reset       stop the worker; new weights from the seed, step 0
    PATCH  /api/runs/{id}             {"lr": …, "weight_decay": …}, from the next batch on
    DELETE /api/runs/{id}             stop the worker and forget the run
    GET    /api/runs/{id}/events      Server-Sent Events: one JSON update per message
    GET    /api/runs/{id}/model.npz   the current model, for chainrule serve and predict
    POST   /api/runs/{id}/save        a run folder with report under --runs-dir
    GET    /healthz                   {"status": "ok"}

The server holds at most ``limits.STUDIO_RUNS`` runs (one per browser tab; a 429 beyond); a
run whose page has gone (no event stream for ``limits.STUDIO_ORPHAN_S`` seconds) or that
nobody asked about for ``limits.STUDIO_IDLE_S`` is stopped and forgotten. The Host check,
body limits and connection limits are those of ``chainrule serve`` (``web/limits.py``).
Every refusal is a 4xx JSON ``{"detail": "…"}``: 404 for an unknown run, 409 for an action
the run's state does not allow, 422 for bad settings or a bad CSV (naming the line), 429 for
too many runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from pathlib import Path

from ..data import dataset_files, load_idx_dataset, read_points_csv
from ..version import __version__
from . import WEB_HINT, limits
from .app import PAGE_HEADERS, STATIC, APIError, add_error_handlers
from .limits import BodyGuard, HeadGuard
from .schemas import ErrorBody, Health
from .studio_data import image_data, point_data
from .studio_run import Run
from .studio_save import model_bytes, write_run_folder
from .studio_schemas import IMAGE_SETS, RunCreated, RunPatch, RunSettings, RunState, Saved

try:
    from fastapi import FastAPI
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import FileResponse, Response, StreamingResponse
    from fastapi.staticfiles import StaticFiles
except ImportError as exc:  # pragma: no cover - exercised without the web extra
    raise ImportError(f"{WEB_HINT} ({exc})") from exc

log = logging.getLogger("chainrule.web")
EVENT_POLL_S = 0.04
KEEPALIVE_S = 15.0

_WHY = {404: "no run with this id", 409: "not allowed in the run's state",
        422: "bad settings, CSV or change", 429: "too many runs",
        503: "the worker did not get there in time"}


def _errors(*codes: int) -> dict:
    """The error answers of an endpoint, for the OpenAPI schema."""
    return {code: {"model": ErrorBody, "description": _WHY[code]} for code in codes}


class Studio:
    """The runs of one studio server, at most ``max_runs`` at once, and the image sets they
    share (loaded once, never downloaded)."""

    def __init__(self, data_dir=None, runs_dir="runs/studio", max_runs: int = limits.STUDIO_RUNS):
        self.data_dir = data_dir
        self.runs_dir = Path(runs_dir)
        self.max_runs = max_runs
        self.runs: dict[str, Run] = {}
        self._lock = threading.Lock()
        self._images: dict = {}
        self._images_lock = threading.Lock()

    def images(self, name: str):
        """((x, y), (x_test, y_test), files) of an image set, loaded on first use."""
        with self._images_lock:
            if name not in self._images:
                try:
                    files = dataset_files(name, self.data_dir, download=False, progress=False)
                    train, test = load_idx_dataset(name, self.data_dir, download=False,
                                                   progress=False)
                except (OSError, ValueError) as exc:
                    log.warning("chainrule studio: %s", " ".join(str(exc).split()))
                    raise APIError(422, f"dataset: {name} was not found on the server (its log "
                                  "says where it looked); start chainrule studio with "
                                  "--data-dir DIR or set CHAINRULE_DATA") from None
                self._images[name] = (train, test, files)
            return self._images[name]

    def create(self, settings: RunSettings) -> Run:
        """A new paused run (data made, model built).

        Raises:
            APIError: 422 for a bad CSV or a missing image set, 429 beyond ``max_runs``.
        """
        self.reap()
        with self._lock:
            if len(self.runs) >= self.max_runs:
                raise APIError(429, f"the studio holds {self.max_runs} runs at most (one per "
                              "browser tab); close a tab, or DELETE /api/runs/{id} a run")
            run_id = secrets.token_hex(8)
            self.runs[run_id] = None  # the place is taken while the data is made
        try:
            if settings.dataset in IMAGE_SETS:
                data, used = image_data(settings, self.images(settings.dataset))
            elif settings.csv is not None:
                try:
                    points = read_points_csv(settings.csv, max_rows=limits.STUDIO_CSV_ROWS)
                except ValueError as exc:
                    raise APIError(422, f"csv: {exc}") from None
                data, used = point_data(settings, points)
            else:
                data, used = point_data(settings)
            run = Run(run_id, settings, data, used)
        except BaseException:
            with self._lock:
                del self.runs[run_id]
            raise
        with self._lock:
            self.runs[run_id] = run
        return run

    def get(self, run_id: str) -> Run:
        with self._lock:
            run = self.runs.get(run_id)
        if run is None:
            raise APIError(404, f"no run {run_id!r}: it was never made, was deleted, or was "
                          "stopped after its page closed; POST /api/runs to make one")
        run.last_seen = time.monotonic()
        return run

    def delete(self, run_id: str) -> None:
        run = self.get(run_id)
        with self._lock:
            self.runs.pop(run_id, None)
        run.closed = True
        run.close()

    def reap(self) -> None:
        """Stop and forget the runs nobody watches any more (see the module docstring)."""
        now = time.monotonic()
        with self._lock:
            gone = [run for run in self.runs.values() if run is not None
                    and run.subscribers == 0
                    and ((run.watched and now - run.last_seen > limits.STUDIO_ORPHAN_S)
                         or now - run.last_seen > limits.STUDIO_IDLE_S)]
            for run in gone:
                del self.runs[run.id]
        for run in gone:
            log.info("chainrule studio: run %s stopped: nobody watches it", run.id)
            run.closed = True
            run.close()

    def close_all(self) -> None:
        with self._lock:
            gone = [run for run in self.runs.values() if run is not None]
            self.runs.clear()
        for run in gone:
            run.closed = True
            run.close()


def create_studio_app(data_dir=None, runs_dir="runs/studio", max_runs: int = limits.STUDIO_RUNS,
                      allowed_hosts=()) -> FastAPI:
    """Build the FastAPI app of ``chainrule studio``.

    Args:
        data_dir: where to look for MNIST and Fashion-MNIST (default: the usual search,
            ``$CHAINRULE_DATA`` first; never downloads).
        runs_dir: where POST /api/runs/{id}/save writes run folders.
        max_runs: runs held at once (429 beyond).
        allowed_hosts: Host header names answered besides the local ones (``limits.HeadGuard``).
    """
    studio = Studio(data_dir, runs_dir, max_runs)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            await run_in_threadpool(studio.close_all)

    app = FastAPI(title="chainrule studio", version=__version__, docs_url=None,
                  redoc_url=None, lifespan=lifespan,
                  description="Train a chainrule network live: make a run, start, pause, step "
                  "it, change its learning rate, and watch its updates as Server-Sent Events.")
    app.state.studio = studio
    app.add_middleware(BodyGuard, hint="send a smaller CSV (at most "
                       f"{limits.STUDIO_CSV_ROWS:,} rows)")
    app.add_middleware(HeadGuard, allowed=allowed_hosts, command="chainrule studio")
    add_error_handlers(app, "chainrule studio", '{"dataset": "spirals"}')

    def state(run: Run) -> dict:
        return run.describe()

    @app.get("/healthz", response_model=Health, tags=["service"])
    def healthz() -> Health:
        """Liveness: the server answers."""
        return Health(status="ok")

    @app.post("/api/runs", response_model=RunCreated, status_code=201, tags=["runs"],
              responses=_errors(422, 429))
    def create(settings: RunSettings) -> RunCreated:
        """Make a run (paused at step 0): its data, its model, its optimizer."""
        return RunCreated(id=studio.create(settings).id)

    @app.get("/api/runs/{run_id}", response_model=RunState, tags=["runs"],
             responses=_errors(404))
    def get(run_id: str) -> dict:
        """Where the run stands; also its settings, data and the curve so far."""
        studio.reap()
        return state(studio.get(run_id))

    @app.patch("/api/runs/{run_id}", response_model=RunState, tags=["runs"],
               responses=_errors(404, 422, 503))
    def patch(run_id: str, change: RunPatch) -> dict:
        """Change the learning rate or weight decay; it applies from the next batch on (the
        answer comes once it does)."""
        run = studio.get(run_id)
        run.change(change.lr, change.weight_decay)
        return state(run)

    @app.delete("/api/runs/{run_id}", status_code=204, tags=["runs"], responses=_errors(404))
    def delete(run_id: str) -> Response:
        """Stop the run's worker and forget the run (the page does this when it closes)."""
        studio.delete(run_id)
        return Response(status_code=204)

    def action(name: str, doc: str, act):
        def endpoint(run_id: str) -> dict:
            run = studio.get(run_id)
            act(run)
            return state(run)

        endpoint.__doc__ = doc
        endpoint.__name__ = name
        app.post(f"/api/runs/{{run_id}}/{name}", response_model=RunState, tags=["runs"],
                 responses=_errors(404, 409, 503))(endpoint)

    action("start", "Train until paused or done.", Run.start)
    action("pause", "Stop before the next batch; answers once the worker has stopped.",
           Run.pause)
    action("step", "Train exactly one batch (paused runs only); answers once it is done.",
           Run.step_once)
    action("reset", "Stop the worker and start over: new weights from the seed, step 0, "
           "paused.", Run.reset)

    @app.get("/api/runs/{run_id}/events", tags=["runs"], responses={
        **_errors(404), 200: {"content": {"text/event-stream": {}},
                         "description": "one `data: {json}` message per update"}})
    async def events(run_id: str) -> StreamingResponse:
        """The run's live updates as Server-Sent Events, several a second while it trains:
        step, metrics, the last curve points, and the views (decision regions or
        first-layer weights and gradients, confusion matrix, mistakes, gradient health,
        backward summary)."""
        run = studio.get(run_id)

        async def stream():
            run.subscribers += 1
            run.watched = True
            seen, quiet = -1, time.monotonic()
            try:
                yield "retry: 2000\n\n"
                while not run.closed:
                    if run.version != seen:
                        seen, event = run.version, run.event
                        yield f"id: {seen}\ndata: {event}\n\n"
                        quiet = time.monotonic()
                    elif time.monotonic() - quiet > KEEPALIVE_S:
                        yield ": keep-alive\n\n"
                        quiet = time.monotonic()
                    await asyncio.sleep(EVENT_POLL_S)
                yield "event: closed\ndata: {}\n\n"
            finally:
                run.subscribers -= 1
                run.last_seen = time.monotonic()
                loop = asyncio.get_running_loop()
                loop.call_later(limits.STUDIO_ORPHAN_S + 0.5,
                                lambda: loop.run_in_executor(None, studio.reap))

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    @app.get("/api/runs/{run_id}/model.npz", tags=["save"], responses={
        **_errors(404, 503), 200: {"content": {"application/octet-stream": {}},
                         "description": "a chainrule model .npz"}})
    def model_file(run_id: str) -> Response:
        """The current model (weights and optimizer state) as a chainrule .npz: what
        ``chainrule serve`` and ``chainrule predict`` take (image runs)."""
        run = studio.get(run_id)
        body = model_bytes(run)
        name = f"studio-{run.data.name}-{run.settings['model']}-step{run.step}.npz"
        return Response(body, media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.post("/api/runs/{run_id}/save", response_model=Saved, tags=["save"],
              responses=_errors(404, 503))
    def save(run_id: str) -> Saved:
        """Write the run as a run folder (config, model, history, manifest, report) under
        the studio's --runs-dir."""
        folder, files = write_run_folder(studio.get(run_id), studio.runs_dir)
        return Saved(folder=str(folder), files=files)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "studio.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def studio(host: str = "127.0.0.1", port: int = 8000, data_dir=None, runs_dir="runs/studio",
           allowed_hosts=(), log_level: str = "info") -> None:
    """Run the studio with uvicorn until Ctrl-C (``chainrule studio``), with the limits of
    ``web/limits.py``.

    Raises:
        ImportError: without uvicorn (install the ``web`` extra).
        ValueError: an allowed host that is not a host name or address.
    """
    try:
        import uvicorn
    except ImportError as exc:
        raise ImportError(f"{WEB_HINT} ({exc})") from exc
    app = create_studio_app(data_dir, runs_dir,
                            allowed_hosts=limits.answered_hosts(allowed_hosts, host))
    shown = f"[{host}]" if ":" in host else host
    print(f"chainrule studio: open http://{shown}:{port}/ (Ctrl-C to stop); run folders go to "
          f"{Path(runs_dir)}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, **limits.server_options())

