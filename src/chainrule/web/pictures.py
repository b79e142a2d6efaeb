"""From the bytes a client sent to the 28×28 digit the model reads, here or in worker processes.

``picture_bytes`` turns a data URL or base64 text into bytes; ``declared_pixels`` reads the
width and height from the header alone (no pixel decoded); ``read_digit`` decodes the picture
(``chainrule.data.open_image``) and runs ``preprocess_digit`` on it, as ``chainrule predict``
does. A picture refused for what it is raises :class:`PictureError` (a 422).

``Readers`` runs ``read_digit`` in worker processes, which is how ``chainrule serve`` reads
pictures: ``preprocess_digit`` holds the GIL for most of its 2.5 ms a drawing (measured on 2
cores: two threads read 0.7 times as many drawings a second as one), so threads cannot spread
it over the cores and processes can; and a picture that crashes or exhausts a worker leaves
the server running. Pillow and NumPy only; no web framework is imported here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
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


def _read_in_worker(raw: bytes) -> tuple[str, object]:
    """read_digit in a worker process: ("digit", x) or ("refused", message) — exceptions of
    our own types are not sent back through pickle, whose copy would lose their message."""
    try:
        return "digit", read_digit(raw)
    except PictureError as exc:
        return "refused", str(exc)
    except MemoryError:
        return "refused", "image: the picture needs more memory than this server has"


def _worker_start(parent: int) -> None:
    """In each worker: ignore Ctrl-C (it reaches the whole process group, and the server stops
    its workers itself), and exit once the server (pid ``parent``) is gone, even killed (a
    worker waiting for a picture would not notice: the other workers hold the queue's pipe
    open)."""
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


class Readers:
    """``read_digit`` in ``processes`` worker processes (spawned, so no thread is forked).

    Pictures declaring more than ``limits.INLINE_PIXELS`` pixels (``large=True``) are read one
    at a time (``large_at_once``), so the others always find a free worker. A worker that dies
    (killed, out of memory, a crash in a decoder) fails the requests it held with
    :class:`WorkerLost` and is replaced.

    Args:
        processes: how many worker processes (at least 1).
        large_at_once: how many large pictures may be read at the same time.
    """

    def __init__(self, processes: int, large_at_once: int = 1):
        self.processes = max(1, int(processes))
        self._large = asyncio.Semaphore(large_at_once)
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    self.processes, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_worker_start, initargs=(os.getpid(),))
            return self._pool

    def start(self) -> None:
        """Start every worker now and let each read a picture once (at server start-up)."""
        pool = self._executor()
        for future in [pool.submit(_warm) for _ in range(self.processes)]:
            future.result()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    async def read(self, raw: bytes, large: bool = False) -> np.ndarray:
        """The digit of ``raw`` (see ``read_digit``), read in a worker process.

        Raises:
            PictureError: as read_digit.
            WorkerLost: the worker died while reading it.
        """
        if large:
            async with self._large:
                return await self._read(raw)
        return await self._read(raw)

    async def _read(self, raw: bytes) -> np.ndarray:
        pool = self._executor()
        try:
            # submit raises at once once the pool knows a worker died; the future otherwise.
            kind, value = await asyncio.wrap_future(pool.submit(_read_in_worker, raw))
        except concurrent.futures.process.BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            log.error("chainrule serve: a worker process died reading a %d-byte picture; "
                      "starting new ones", len(raw))
            raise WorkerLost("the worker process reading the picture died (out of memory or "
                             "a crash); the server goes on, send it again") from None
        if kind == "refused":
            raise PictureError(value)
        return value


class WorkerLost(RuntimeError):
    """The worker process reading a picture died (answered 503)."""
