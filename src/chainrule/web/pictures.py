"""From the bytes a client sent to the 28×28 digit the model reads, here or in worker processes.

``picture_bytes`` turns a data URL or base64 text into bytes; ``declared_pixels`` reads the
width and height from the header alone (no pixel decoded); ``read_digit`` decodes the picture
(``chainrule.data.open_image``) and runs ``preprocess_digit`` on it, as ``chainrule predict``
does. A picture refused for what it is raises :class:`PictureError` (a 422).

``Readers`` runs ``read_digit`` in worker processes, which is how ``chainrule serve`` reads
pictures: ``preprocess_digit`` holds the GIL for most of its work (measured on 2 cores: two
threads read 0.7 times as many drawings a second as one), so threads cannot spread it over the
cores and processes can; and a picture that crashes or exhausts a worker leaves the server
running. Each worker talks to the server over a pipe of its own, read by the event loop
itself: with a ``ProcessPoolExecutor`` (pickled calls, a queue-feeding and a result thread in
the server) a drawing took 2.4 ms more CPU than read in the server's own process (2 workers,
benchmarks/serve_load.py's CPU column).
Pillow and NumPy only; no web framework is imported here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import logging
import multiprocessing
import os
import re
import signal
import threading
import time

import numpy as np

from ..data import ImageTooLargeError, check_image_size, open_image, preprocess_digit
from ..data.preprocess import declared_size

log = logging.getLogger("chainrule.web")


class PictureError(ValueError):
    """A picture refused for what it is (bad base64, not a picture, too large, NaN values)."""


_DATA_URL = re.compile(r"^data:([\w.+/-]*)((?:;[\w.+-]+=[\w.+-]+)*)(;base64)?,", re.ASCII)


def picture_bytes(text: str) -> bytes:
    """The bytes of a picture sent as a data URL or plain base64 (line breaks allowed).

    Raises:
        PictureError: for a data URL that is not base64, bad base64, or no bytes.
    """
    match = _DATA_URL.match(text)
    if match:
        if not match.group(3):
            raise PictureError("image: the data URL must be base64-encoded "
                               "('data:image/png;base64,…')")
        text = text[match.end():]
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise PictureError("image: not valid base64; send a data URL such as "
                           "canvas.toDataURL('image/png') or the base64 of an image file"
                           ) from None
    if not raw:
        raise PictureError("image: empty; send the base64 of a PNG or JPEG file")
    return raw


def _pillow(raw: bytes, read):
    """``read(file)`` on the bytes, with Pillow's errors as PictureErrors."""
    from PIL import UnidentifiedImageError

    try:
        return read(io.BytesIO(raw))
    except ImageTooLargeError as exc:
        raise PictureError(f"image: {exc}") from None
    except UnidentifiedImageError:
        raise PictureError(f"image: the {len(raw):,} bytes are not a picture; send a PNG, "
                           "JPEG, GIF, BMP or WebP file") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on hostile bytes
        raise PictureError(f"image: the picture is corrupt or truncated ({exc}); send a "
                           "complete PNG, JPEG, GIF, BMP or WebP file") from None


def declared_pixels(raw: bytes) -> int:
    """Width × height from the picture's header, no pixel decoded; refuses one over
    ``chainrule.data.MAX_IMAGE_PIXELS``.

    Raises:
        PictureError: for a non-picture or one too large.
    """
    width, height = _pillow(raw, declared_size)
    try:
        check_image_size(width, height)
    except ImageTooLargeError as exc:
        raise PictureError(f"image: {exc}") from None
    return width * height


def decode_picture(raw: bytes):
    """The loaded PIL image of a picture's bytes (``chainrule.data.open_image``: size checked
    from the header, decoded reduced to the working resolution).

    Raises:
        PictureError: for a non-picture, a corrupt or a too large one.
    """
    return _pillow(raw, open_image)


def read_digit(raw: bytes) -> np.ndarray:
    """The (28, 28) float32 digit of a picture's bytes, as ``chainrule predict`` reads a file.

    Raises:
        PictureError: for a picture that cannot be read (see ``_pillow``) or that
            ``preprocess_digit`` refuses (e.g. a float image holding NaN or inf).
    """
    picture = decode_picture(raw)
    try:
        return preprocess_digit(picture)
    except ValueError as exc:
        raise PictureError(f"image: {exc}") from None


def _read_in_worker(raw: bytes) -> bytes:
    """read_digit in a worker process, as the message sent back: b"d" and the digit's 784
    float32 values, or b"r" and the refusal's UTF-8 text."""
    try:
        return b"d" + read_digit(raw).astype(np.float32).tobytes()
    except PictureError as exc:
        return b"r" + str(exc).encode()
    except MemoryError:
        return b"r" + b"image: the picture needs more memory than this server has"


def _worker_start(parent: int) -> None:
    """In each worker: ignore Ctrl-C (it reaches the whole process group, and the server stops
    its workers itself), and exit once the server (pid ``parent``) is gone, even killed (a
    worker blocked reading its pipe would not notice while the pipe is open)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="chainrule-parent-watch", daemon=True).start()


def _warm() -> None:
    """Import and run the pipeline once, so a worker's first picture is not its slowest."""
    read_digit(base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGP4DwABAQEAsTj2FAAAAABJRU5ErkJggg=="))


def _worker_main(conn, parent: int) -> None:
    """A worker process: say b"ready" once warm, then answer each picture's bytes with
    ``_read_in_worker``'s message, one at a time, until the server closes the pipe."""
    _worker_start(parent)
    _warm()
    conn.send_bytes(b"ready")
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return
        conn.send_bytes(_read_in_worker(raw))


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, context, parent: int):
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(target=_worker_main, args=(child, parent),
                                       name="chainrule-picture-reader", daemon=True)
        self.process.start()
        child.close()

    def wait_ready(self) -> None:
        """Block until the worker is warm (raises EOFError if it died first)."""
        if self.conn.recv_bytes() != b"ready":
            raise EOFError("the picture worker did not start")

    def stop(self) -> None:
        self.conn.close()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class _Pool:
    """The running workers: each reads one picture at a time, sent down its pipe; the event
    loop hears the answer through ``loop.add_reader`` on the pipe (no thread, no pickle)."""

    def __init__(self, processes: int):
        self._context = multiprocessing.get_context("spawn")
        workers = [_Worker(self._context, os.getpid()) for _ in range(processes)]
        for worker in workers:
            worker.wait_ready()
        self._processes = {w.process.pid: w.process for w in workers}
        self._workers = workers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: asyncio.Queue | None = None
        self._pending: dict[_Worker, asyncio.Future] = {}
        self._starting = 0  # replacements being started

    def _attach(self) -> None:
        """Start listening on the event loop (the first read; start() ran in a thread)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._idle = asyncio.Queue()
            for worker in self._workers:
                self._listen(worker)

    def _listen(self, worker: _Worker) -> None:
        self._loop.add_reader(worker.conn.fileno(), self._answered, worker)
        self._idle.put_nowait(worker)

    def _answered(self, worker: _Worker) -> None:
        try:
            message = worker.conn.recv_bytes()
        except (EOFError, OSError):
            self._lost(worker)
            return
        future = self._pending.pop(worker, None)
        if future is None:  # not asked for anything: nothing to answer
            return
        self._idle.put_nowait(worker)
        if not future.done():  # else its request was cancelled meanwhile
            future.set_result(message)

    def _lost(self, worker: _Worker) -> None:
        """A worker died: fail its picture, drop it, and start a replacement."""
        self._loop.remove_reader(worker.conn.fileno())
        self._workers.remove(worker)
        self._processes.pop(worker.process.pid, None)
        worker.conn.close()
        worker.process.join(timeout=1)
        future = self._pending.pop(worker, None)
        if future is not None and not future.done():
            future.set_exception(WorkerLost(
                "the worker process reading the picture died (out of memory or a crash); "
                "the server goes on, send it again"))
        log.error("chainrule serve: a picture worker process died; starting a new one")
        self._loop.create_task(self._replace())

    async def _replace(self) -> None:
        self._starting += 1
        try:
            worker = await self._loop.run_in_executor(None, self._started)
        except Exception as exc:  # noqa: BLE001 - whatever stopped it, the pool goes on without
            log.error("chainrule serve: a new picture worker did not start: %s", exc)
            worker = None
        finally:
            self._starting -= 1
        if self._loop is None:  # closed meanwhile
            if worker is not None:
                worker.stop()
            return
        if worker is None:
            if not self._workers and not self._starting:
                self._idle.put_nowait(None)  # wakes a read() waiting for a worker, to fail
            return
        self._workers.append(worker)
        self._processes[worker.process.pid] = worker.process
        self._listen(worker)

    def _started(self) -> _Worker:
        worker = _Worker(self._context, os.getpid())
        worker.wait_ready()
        return worker

    async def read(self, raw: bytes) -> bytes:
        """``_read_in_worker``'s message for ``raw``, from the next idle worker."""
        self._attach()
        while True:
            if not self._workers and not self._starting:
                raise WorkerLost("no picture worker is running (a new one did not start; see "
                                 "the server's log); restart the server")
            worker = await self._idle.get()
            if worker is None:  # no worker left: wake the next waiter too, then fail
                self._idle.put_nowait(None)
            elif worker in self._workers:  # not one that died while idle
                break
        future = self._loop.create_future()
        self._pending[worker] = future
        try:
            worker.conn.send_bytes(raw)
        except OSError:
            pass  # it died; _answered hears the end of its pipe and fails the future
        return await future

    def close(self) -> None:
        loop, self._loop = self._loop, None
        for worker in self._workers:
            if loop is not None:
                loop.remove_reader(worker.conn.fileno())
            worker.stop()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerLost("the server is stopping"))
        self._workers, self._processes, self._pending = [], {}, {}


class Readers:
    """``read_digit`` in ``processes`` worker processes (spawned, so no thread is forked).

    Each worker has a pipe to the server: the picture's bytes go down, the digit's 784 float32
    values (or the refusal's text) come back, and the event loop reads the answer as soon as
    the pipe is readable. Pictures declaring more than ``limits.INLINE_PIXELS`` pixels
    (``large=True``) are read one at a time (``large_at_once``), so the others always find a
    free worker. A worker that dies (killed, out of memory, a crash in a decoder) fails the
    request it held with :class:`WorkerLost` and is replaced.

    Args:
        processes: how many worker processes (at least 1).
        large_at_once: how many large pictures may be read at the same time.
    """

    def __init__(self, processes: int, large_at_once: int = 1):
        self.processes = max(1, int(processes))
        self._large = asyncio.Semaphore(large_at_once)
        self._lock = threading.Lock()
        self._pool: _Pool | None = None

    def start(self) -> None:
        """Start every worker now and wait until each has read a picture once (at server
        start-up; it blocks, so the app runs it in a thread)."""
        with self._lock:
            if self._pool is None:
                self._pool = _Pool(self.processes)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    async def read(self, raw: bytes, large: bool = False) -> np.ndarray:
        """The digit of ``raw`` (see ``read_digit``), read in a worker process.

        Raises:
            PictureError: as read_digit.
            WorkerLost: the worker died while reading it.
        """
        if self._pool is None:
            await asyncio.get_running_loop().run_in_executor(None, self.start)
        if large:
            async with self._large:
                message = await self._pool.read(raw)
        else:
            message = await self._pool.read(raw)
        if message[:1] == b"r":
            raise PictureError(message[1:].decode())
        return np.frombuffer(message, dtype=np.float32, offset=1).reshape(28, 28).copy()


class WorkerLost(RuntimeError):
    """The worker process reading a picture died (answered 503)."""
