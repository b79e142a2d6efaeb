"""What ``chainrule serve`` allows a client: names, bytes, seconds, connections, event-loop work.

Every limit is a constant here, named in the README's serve section:

    Host header        localhost, 127.0.0.1, [::1] or the bound host, on the server's port,
                       plus the names given with ``--allowed-host``; anything else is a 400
                       (a page under another name must not reach the server: DNS rebinding)
    request headers    at most MAX_HEADER_BYTES (431, or 400 while still incomplete),
                       complete within HEADER_TIMEOUT_S of the connection opening or of the
                       previous answer, or the connection is closed (with a 408 when part of
                       a request had come)
    request body       JSON, at most MAX_BODY_BYTES (413), complete within BODY_TIMEOUT_S of
                       the headers (408)
    idle keep-alive    closed after KEEP_ALIVE_S
    connections        a request arriving while MAX_CONNECTIONS connections are open, or as
                       many requests are in progress, is answered 503 at once
    event loop         see ``inline`` below: small work on the loop, the rest in threads;
                       under chainrule serve pictures are read in worker processes

``BodyGuard`` and ``HeadGuard`` are ASGI middleware (``create_app`` installs them); the header
deadline lives in the HTTP protocol (``guarded_h11``), since uvicorn's h11 protocol has none: an
ASGI app only hears of a request once its headers are complete. ``server_options()`` gives
uvicorn all of it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re

MAX_BODY_BYTES = 1_000_000
MAX_HEADER_BYTES = 16_384
HEADER_TIMEOUT_S = 5.0
BODY_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5
MAX_CONNECTIONS = 128
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")

# The event loop answers a request itself when its work is small: handing a millisecond of
# work to a worker thread costs more than the work (40% of the page's request throughput on
# 2 cores, measured when serve was written). Pictures declaring more than INLINE_PIXELS pixels
# (the page sends 140 × 140) are decoded in a worker thread, one at a time (IMAGE_WORKERS),
# and so are the neighbour searches and every request to a model of more than
# INLINE_MULTIPLY_ADDS multiply-adds per digit (``explain.multiply_adds``: 0.27 million for the
# MLP preset 784-256-256-10, 4.0 million for the CNN preset).
INLINE_PIXELS = 256 * 256
INLINE_MULTIPLY_ADDS = 1_000_000
IMAGE_WORKERS = 1
# chainrule serve reads every picture in worker processes (pictures.Readers, --picture-workers):
# preprocess_digit holds the GIL, so only processes spread it over the cores. Large pictures
# then take one worker at a time (IMAGE_WORKERS) and the others stay free.
PICTURE_PROCESSES = 2

# chainrule studio: runs held at once (one per browser tab; each trains in its own thread, and
# a run that nobody watches for STUDIO_ORPHAN_S seconds, or nobody asks about for
# STUDIO_IDLE_S, is stopped and freed), and the uploaded CSV (inside the JSON body, so at most
# MAX_BODY_BYTES) of at most STUDIO_CSV_ROWS rows.
STUDIO_RUNS = 4
STUDIO_ORPHAN_S = 10.0
STUDIO_IDLE_S = 900.0
STUDIO_CSV_ROWS = 10_000


def inline(multiply_adds: int | None, pixels: int | None, neighbours: bool) -> bool:
    """Whether a request is answered on the event loop rather than in a worker thread.

    Args:
        multiply_adds: the model's multiply-adds per digit (None: unknown, a worker thread).
        pixels: width × height that the request's picture declares (None: no picture).
        neighbours: whether it asks for the nearest training digits.
    """
    return (multiply_adds is not None and multiply_adds <= INLINE_MULTIPLY_ADDS
            and (pixels is None or pixels <= INLINE_PIXELS) and not neighbours)


# --------------------------------------------------------------------------- answers
def json_error(status: int, message: str, close: bool = False) -> tuple[dict, dict]:
    """The two ASGI messages of a ``{"detail": message}`` answer; ``close`` ends the
    connection after it (for a refusal that leaves the body unread)."""
    body = json.dumps({"detail": message}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    start = {"type": "http.response.start", "status": status, "headers": headers}
    return start, {"type": "http.response.body", "body": body}


async def _refuse(send, status: int, message: str, close: bool = False) -> None:
    start, body = json_error(status, message, close)
    await send(start)
    await send(body)


# --------------------------------------------------------------------------- the body
class BodyGuard:
    """ASGI middleware: a POST/PUT/PATCH body must be JSON, at most ``max_bytes`` long, and
    complete within ``timeout`` seconds.

    The body is read here (at most ``max_bytes`` + one chunk, whether or not a Content-Length
    was sent) and replayed to the app, so an oversized, chunked or trickled upload never
    reaches the JSON parser. Refusals before the whole body is read close the connection.

    Args:
        hint: what the 413 answer tells the client to do instead.
    """

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES, timeout: float = BODY_TIMEOUT_S,
                 hint: str = "send a smaller image (the page sends about 10 kB)"):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.hint = hint

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        media = content_type.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            got = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
            return await _refuse(send, 415, f"the body must be JSON sent with "
                                 f"Content-Type: application/json, got {got}", close=True)
        declared = headers.get(b"content-length")
        too_big = f"the body is larger than {self.max_bytes:,} bytes; {self.hint}"
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _refuse(send, 413, too_big, close=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        chunks, size, more = [], 0, True
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                return await _refuse(send, 408, f"the body did not arrive within "
                                     f"{self.timeout:g} s (received {size:,} bytes)", close=True)
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await _refuse(send, 413, too_big, close=True)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return await _refuse(send, 422, f"the body is not UTF-8 text ({exc.reason} at "
                                 f"byte {exc.start}); JSON must be sent as UTF-8")
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# --------------------------------------------------------------------------- the Host header
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)(?::([0-9]{1,5}))?")


def parse_host(text: str) -> tuple[str, int | None]:
    """``"name[:port]"`` (a Host header, or an ``--allowed-host`` value) as (lowercase name,
    port or None); a bare IPv6 address gets its brackets (``::1`` → ``[::1]``).

    Raises:
        ValueError: not a host name, IPv4/IPv6 address, or port 1 … 65535.
    """
    value = text.strip().lower()
    if value.count(":") > 1 and not value.startswith("["):
        value = f"[{value}]"
    match = _HOST.fullmatch(value)
    port = int(match.group(2)) if match and match.group(2) else None
    if not match or (port is not None and not 1 <= port <= 65535):
        raise ValueError(f"{text!r} is not a host name or address with an optional port "
                         "(e.g. mybox.local, 192.168.1.5, [fe80::1], localhost:9000)")
    return match.group(1), port


def answered_hosts(allowed_hosts, host: str) -> list[str]:
    """The Host names a server bound to ``host`` answers besides LOCAL_HOSTS: every
    ``--allowed-host`` value, and the bound address itself when a Host header can carry it
    (otherwise uvicorn says what is wrong with it).

    Raises:
        ValueError: an allowed host that is not a host name or address (see ``parse_host``).
    """
    names = []
    for name in allowed_hosts:
        try:
            parse_host(name)
        except ValueError as exc:
            raise ValueError(f"argument --allowed-host: {exc}") from None
        names.append(name)
    try:
        names.append(parse_host(host)[0])  # the bound address, on its port
    except ValueError:
        pass
    return names


class HeadGuard:
    """ASGI middleware: answer only requests whose head is small and names this server.

    Headers over MAX_HEADER_BYTES in all get a 431 (h11 refuses them only while they are
    incomplete, so a request arriving at once would pass). A web page on another site can
    make the browser send requests to 127.0.0.1 under its own name (DNS rebinding:
    evil.example resolves to 127.0.0.1 once the page is loaded); the Host header still
    carries that name. Accepted: LOCAL_HOSTS and each name of ``allowed`` on the server's own
    port (the port of the socket the request came in on; no port means 80), and each
    ``allowed`` entry given with a port on exactly that port. Anything else, no Host header
    or more than one, is a 400 JSON answer.

    Args:
        allowed: more names, ``"name"`` or ``"name:port"`` (see ``parse_host``), e.g. the
            address the server is bound to.
        command: the command the refusal tells the user to restart ("chainrule serve").
    """

    def __init__(self, app, allowed=(), command: str = "chainrule serve"):
        self.app = app
        self.command = command
        self.names = set(LOCAL_HOSTS)
        self.pairs: set[tuple[str, int]] = set()
        for entry in allowed:
            name, port = parse_host(entry)
            if port is None:
                self.names.add(name)
            else:
                self.pairs.add((name, port))

    def allows(self, host: bytes | None, server_port: int | None) -> bool:
        if host is None:
            return False
        try:
            name, port = parse_host(host.decode("latin-1"))
        except ValueError:
            return False
        port = 80 if port is None else port
        if name in self.names and (server_port is None or port == server_port):
            return True
        return (name, port) in self.pairs

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        size = sum(len(key) + len(value) + 4 for key, value in scope["headers"])
        if size > MAX_HEADER_BYTES and scope["type"] == "http":
            return await _refuse(send, 431, f"the request headers are {size:,} bytes, more "
                                 f"than the limit of {MAX_HEADER_BYTES:,} bytes", close=True)
        hosts = [value for key, value in scope["headers"] if key == b"host"]
        server = scope.get("server")
        server_port = server[1] if server and len(server) > 1 else None
        if len(hosts) == 1 and self.allows(hosts[0], server_port):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        shown = (repr(hosts[0].decode("latin-1")) if len(hosts) == 1
                 else "missing" if not hosts else f"sent {len(hosts)} times")
        names = ", ".join(sorted(self.names) + [f"{n}:{p}" for n, p in sorted(self.pairs)])
        where = f" on port {server_port}" if server_port else ""
        await _refuse(send, 400, f"the Host header is {shown}; this server answers to {names}"
                      f"{where} (another name could be a web page reaching it through DNS "
                      f"rebinding); start {self.command} with --allowed-host NAME to allow "
                      "another name", close=True)


# --------------------------------------------------------------------------- the connection
@functools.cache
def guarded_h11():
    """uvicorn's h11 protocol with a deadline on request headers, and JSON 400 answers.

    The deadline (HEADER_TIMEOUT_S) starts when the connection opens and again after each
    answer, and stops when a request's headers are complete; uvicorn's own keep-alive timer is
    reset by every byte, so a client sending one byte every few seconds would otherwise hold
    the connection for ever.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        header_timeout = HEADER_TIMEOUT_S

        def connection_made(self, transport) -> None:
            self._deadline = None
            self._partial = False
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._partial = False
            self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def data_received(self, data: bytes) -> None:
            self._partial = self._partial or (self._deadline is not None and bool(data))
            super().data_received(data)

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a request's headers are complete
                self._disarm()

        def on_response_complete(self) -> None:
            self._arm()  # first: answering a pipelined request disarms it again
            super().on_response_complete()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _too_slow(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self._partial:
                body = json.dumps({"detail": f"the request headers did not arrive within "
                                   f"{self.header_timeout:g} s"}).encode()
                self.transport.write(
                    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
            self.transport.close()

        def send_400_response(self, msg: str) -> None:
            body = json.dumps({"detail": f"not a valid HTTP/1.1 request ({msg.rstrip('.')}): "
                               "a malformed request line or header, or headers over "
                               f"{MAX_HEADER_BYTES:,} bytes"}).encode()
            event = h11.Response(status_code=400, reason=b"Bad Request", headers=[
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()), (b"connection", b"close")])
            for part in (event, h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(part))
            self.transport.close()

    return GuardedH11Protocol


def server_options() -> dict:
    """uvicorn.Config arguments for the limits above."""
    return {
        "http": guarded_h11(),
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "limit_concurrency": MAX_CONNECTIONS,
        "timeout_graceful_shutdown": 5,
    }
