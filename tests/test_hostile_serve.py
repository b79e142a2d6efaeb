"""Hostile clients against a real ``chainrule serve`` process (issue 11).

Five kinds of attack, each a table or a group of tests below, all on 127.0.0.1:

- bad hosts: Host headers naming another server (DNS rebinding) get a 400 JSON answer;
- paths: nothing the server answers names a folder of the machine (the training data's, the
  run's), and the static files cannot be left through ``..``;
- slow clients: sockets that send their headers or body slowly, or nothing, are closed within
  the stated deadlines while a normal request still answers at once; past the connection limit
  a request gets a 503 at once;
- the event loop: small files declaring huge pictures are decoded in a worker thread, so they
  cannot stall the requests the loop answers itself;
- bad images: float images holding NaN or inf, header-only giants, bombs, odd modes and sizes:
  each a 200 or a 422, never a 500 or a hang.
"""

import base64
import contextlib
import http.client
import io
import json
import re
import select
import shutil
import socket
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from chainrule import cli, models
from chainrule.data import dataset_files
from chainrule.web import limits
from chainrule.web.app import training_data
from chainrule.web.explain import multiply_adds
from serve_helpers import (
    DATA_ROOT,
    data_url,
    drawn_one,
    mnist,
    one_blas_thread,  # noqa: F401 - an autouse fixture
    png_bytes,
    serve_process,
    trained_run,
)

SLACK_S = 2.5  # what a busy 2-core machine may add to a deadline


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder as ``chainrule train`` leaves it: model.npz and a manifest naming the
    training files by their absolute paths."""
    folder = tmp_path_factory.mktemp("hostile") / "secret-folder" / "run"
    folder.mkdir(parents=True)
    shutil.copy(trained_run() / "model.npz", folder / "model.npz")
    files = dataset_files("mnist", DATA_ROOT, download=False)
    manifest = {
        "argv": ["chainrule", "train", "--out", str(folder)],
        "config": {"dataset": "mnist", "data_dir": str(DATA_ROOT)},
        "data": {key: {"path": str(path), "sha256": _sha256(path)}
                 for key, path in files.items()},
        "final": {"test_accuracy": 0.9},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def server(run):
    with serve_process(run / "model.npz", "--allowed-host", "mybox.local",
                       "--allowed-host", "tunnel.local:9000", data_dir=DATA_ROOT) as s:
        yield s


@pytest.fixture(scope="module")
def bare_server(run, tmp_path_factory):
    """The same model without MNIST (an empty data folder), reading pictures in its own
    process (--picture-workers 0: on the event loop, or in a thread when large)."""
    empty = tmp_path_factory.mktemp("no-data-here")
    with serve_process(run / "model.npz", "--picture-workers", "0", data_dir=empty) as s:
        yield s


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------- raw HTTP
def read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one HTTP/1.1 answer read from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", 0))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def raw(server, data: bytes, timeout: float = 10) -> tuple[int, dict, bytes]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_response(sock)


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes ``sock`` within ``timeout`` s (reading what it sends)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if select.select([sock], [], [], left)[0]:
            try:
                if not sock.recv(65536):
                    return True
            except OSError:
                return True
    return False


def get(server, path: str, host: str | None = None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        conn.request("GET", path, headers={"Host": host or server.host, **(headers or {})})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def post(server, body: dict, host: str | None = None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", "/api/predict", body=json.dumps(body),
                     headers={"Host": host or server.host, "Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        if own:
            conn.close()


# ---------------------------------------------------------------------- bad hosts
# (Host header, answered?) with {port} the server's port; the server runs with
# --allowed-host mybox.local --allowed-host tunnel.local:9000.
HOSTS = [
    ("127.0.0.1:{port}", True),
    ("localhost:{port}", True),
    ("[::1]:{port}", True),
    ("LocalHost:{port}", True),
    ("mybox.local:{port}", True),
    ("tunnel.local:9000", True),
    ("evil.example:{port}", False),
    ("evil.example", False),
    ("localhost", False),                          # no port: port 80, not the server's
    ("localhost:1{port}", False),
    ("127.0.0.1:80", False),
    ("localhost.:{port}", False),
    ("127.0.0.1.evil.example:{port}", False),
    ("localhost.evil.example:{port}", False),
    ("evil.example:{port}@localhost", False),
    ("user@localhost:{port}", False),
    ("", False),
    ("[::2]:{port}", False),
    ("127.0.0.2:{port}", False),
    ("0.0.0.0:{port}", False),
    ("tunnel.local:{port}", False),                # allowed on port 9000 only
    ("mybox.local.evil.example:{port}", False),
    ("localhost:{port}:{port}", False),
    ("%6cocalhost:{port}", False),
    ("localhost:0", False),
    ("localhost:99999", False),
]


@pytest.mark.parametrize("host, answered", HOSTS, ids=[f"host{i}" for i in range(len(HOSTS))])
def test_only_this_servers_names_are_answered(server, host, answered):
    host = host.format(port=server.port)
    status, headers, body = raw(server, f"GET /api/model HTTP/1.1\r\nHost: {host}\r\n"
                                "Connection: close\r\n\r\n".encode())
    if answered:
        assert status == 200 and json.loads(body)["name"] == "mlp"
    else:
        assert status == 400, (host, status, body)
        assert headers["content-type"] == "application/json"
        detail = json.loads(body)["detail"]
        assert "Host header" in detail and "--allowed-host" in detail, detail


def test_every_endpoint_refuses_another_host(server):
    evil = f"evil.example:{server.port}"
    for path in ("/", "/static/app.js", "/openapi.json", "/api/model", "/api/model/units",
                 "/healthz", "/nothing"):
        status, _, body = get(server, path, host=evil)
        assert status == 400 and b"DNS rebinding" in body, path
    status, body = post(server, {"image": data_url(drawn_one())}, host=evil)
    assert status == 400 and b"--allowed-host" in body


@pytest.mark.parametrize("request_bytes", [
    b"GET /api/model HTTP/1.0\r\n\r\n",
    b"GET /api/model HTTP/1.1\r\nHost: localhost:{port}\r\nHost: evil.example:{port}\r\n\r\n",
    b"GET /api/model HTTP/1.1\r\nHost: evil.example:{port}\r\nHost: localhost:{port}\r\n\r\n",
], ids=["no-host", "two-hosts", "two-hosts-evil-first"])
def test_no_host_or_two_hosts_are_refused(server, request_bytes):
    status, headers, body = raw(server, request_bytes.replace(b"{port}",
                                                              str(server.port).encode()))
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body)["detail"]


def test_a_refused_post_closes_the_connection_without_reading_the_body(server):
    body = json.dumps({"image": data_url(drawn_one())}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: evil.example\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                     % len(body))
        status, headers, _ = read_response(sock)
        assert status == 400 and headers["connection"] == "close"
        assert closed_by_server(sock, 5)


def test_allowed_host_is_checked_by_the_command_line(run, capsys):
    assert cli.main(["serve", str(run / "model.npz"), "--allowed-host", "bad host!"]) == 1
    err = capsys.readouterr().err
    assert "argument --allowed-host" in err and "'bad host!'" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("text, parsed", [
    ("mybox.local", ("mybox.local", None)),
    ("MyBox.Local:8080", ("mybox.local", 8080)),
    ("192.168.1.5", ("192.168.1.5", None)),
    ("::1", ("[::1]", None)),
    ("[fe80::1]:9000", ("[fe80::1]", 9000)),
])
def test_allowed_host_names(text, parsed):
    assert limits.parse_host(text) == parsed


# ---------------------------------------------------------------------- paths
ABSOLUTE_PATH = re.compile(r"(?<![\w.])(/[\w.-]+){2,}")


def _strings(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def test_model_info_names_the_training_data_without_paths(server, run):
    status, _, body = get(server, "/api/model")
    text = body.decode()
    info = json.loads(text)
    manifest = json.loads((run / "manifest.json").read_text())
    for secret in (str(DATA_ROOT), str(run), "secret-folder", str(run.parents[2])):
        assert secret not in text
    assert not [s for s in _strings(info) if ABSOLUTE_PATH.search(s)]
    data = info["training_data"]
    assert data["dataset"] == "mnist"
    assert {f["split"]: (f["file"], f["sha256"]) for f in data["files"]} == {
        key: (entry["path"].rsplit("/", 1)[-1], entry["sha256"])
        for key, entry in manifest["data"].items()}
    # The neighbours are searched in the very file the model was trained on.
    assert info["neighbours"]["dataset"] == "mnist" and info["neighbours"]["count"] == 60000
    assert info["neighbours"]["sha256"] == manifest["data"]["train_images"]["sha256"]
    assert "source" not in info["neighbours"]


def test_without_mnist_the_reason_names_no_folder(bare_server, tmp_path_factory):
    status, _, body = get(bare_server, "/api/model")
    reason = json.loads(body)["neighbours"]["reason"]
    assert "not found" in reason and "CHAINRULE_DATA" in reason
    assert not ABSOLUTE_PATH.search(reason) and "no-data-here" not in reason
    status, answer = post(bare_server, {"image": data_url(drawn_one()),
                                        "explain": ["neighbours"]})
    notes = json.loads(answer)["notes"]
    assert status == 200 and notes and not any(ABSOLUTE_PATH.search(n) for n in notes)


@pytest.mark.parametrize("manifest, dataset, files", [
    ({"config": {"dataset": "/home/alice/private/letters"},
      "data": {"train_images": {"path": "/home/alice/private/letters/train.gz",
                                "sha256": "ab"}}},
     "letters", [{"split": "train_images", "file": "train.gz", "sha256": "ab"}]),
    ({"config": {"dataset": "C:\\Users\\bob\\digits"},
      "data": {"test_images": {"path": "C:\\Users\\bob\\digits\\t10k.gz"}}},
     "digits", [{"split": "test_images", "file": "t10k.gz", "sha256": None}]),
    ({"config": "not an object", "data": ["not", "an", "object"]}, None, None),
    ({"data": {"train_images": "a string", "x": {"path": 12, "sha256": 3}}},
     None, [{"split": "x", "file": None, "sha256": None}]),
], ids=["posix-folder", "windows-folder", "wrong-types", "odd-entries"])
def test_training_data_keeps_names_only(manifest, dataset, files):
    data = training_data(manifest)
    if files is None:
        assert data is None
    else:
        assert data.model_dump() == {"dataset": dataset, "files": files}


TRAVERSALS = [
    "/static/../app.py",
    "/static/%2e%2e/app.py",
    "/static/..%2fapp.py",
    "/static/%2e%2e%2f%2e%2e%2fweb/app.py",
    "/static/..%5capp.py",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/../../../../etc/passwd",
    "/static/app.js%00.png",
    "/static/....//....//etc/passwd",
]


@pytest.mark.parametrize("path", TRAVERSALS, ids=[f"path{i}" for i in range(len(TRAVERSALS))])
def test_static_files_cannot_be_left(server, path):
    status, headers, body = raw(server, f"GET {path} HTTP/1.1\r\nHost: {server.host}\r\n"
                                "Connection: close\r\n\r\n".encode())
    assert status in (400, 404), (path, status)
    assert b"import" not in body and b"root:" not in body
    assert headers["content-type"].startswith(("application/json", "text/plain"))


def test_error_messages_name_no_path(server):
    good = drawn_one()
    bad = base64.b64encode(good[: len(good) // 2]).decode()
    for body in ({"image": bad}, {"image": "!!"}, {"pixels": [2.0] * 784}):
        status, answer = post(server, body)
        assert status == 422
        assert not ABSOLUTE_PATH.search(json.loads(answer)["detail"])
    status, _, schema = get(server, "/openapi.json")
    assert status == 200 and str(DATA_ROOT).encode() not in schema


# ---------------------------------------------------------------------- slow clients
class Trickler(threading.Thread):
    """Sends one byte of ``data`` every ``every`` s to each socket, after an optional
    ``first`` message, and notes when the server closes each one (and what it answered)."""

    def __init__(self, port: int, plans: list[tuple[bytes, bytes]], every: float = 0.5):
        super().__init__(daemon=True)
        self.every = every
        self.socks, self.rest, self.start_at = [], [], []
        self.closed_after: list[float | None] = [None] * len(plans)
        self.received: list[bytes] = [b""] * len(plans)
        for first, rest in plans:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.setblocking(False)
            if first:
                sock.sendall(first)
            self.socks.append(sock)
            self.rest.append(bytearray(rest))
            self.start_at.append(time.monotonic())
        self.stop = threading.Event()

    def run(self):
        next_byte = time.monotonic()
        while not self.stop.is_set() and any(t is None for t in self.closed_after):
            open_ = [s for s, t in zip(self.socks, self.closed_after, strict=True) if t is None]
            readable, _, _ = select.select(open_, [], [], 0.05)
            for sock in readable:
                i = self.socks.index(sock)
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    chunk = b""
                self.received[i] += chunk
                if not chunk:
                    self.closed_after[i] = time.monotonic() - self.start_at[i]
            if time.monotonic() >= next_byte:
                next_byte += self.every
                for i, sock in enumerate(self.socks):
                    if self.closed_after[i] is None and self.rest[i]:
                        with contextlib.suppress(OSError):
                            sock.send(bytes(self.rest[i][:1]))
                            del self.rest[i][:1]

    def close(self):
        self.stop.set()
        self.join(timeout=5)
        for sock in self.socks:
            sock.close()


def _request(host: str, body: bytes = b"") -> bytes:
    return (f"POST /api/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _percentile(values, q):
    return float(np.percentile(np.asarray(values) * 1e3, q))


def test_slow_and_silent_sockets_are_closed_while_normal_requests_answer(server):
    """50 sockets that never finish a request: 15 silent, 15 sending their headers a byte every
    0.5 s, 10 idle after one answer, 10 trickling a second request after one answer."""
    pixels = json.dumps({"pixels": [0.0] * 784}).encode()
    headers = f"GET /healthz HTTP/1.1\r\nHost: {server.host}\r\nX-Slow: " + "a" * 200
    answered = _request(server.host, pixels)
    plans = ([(b"", b"")] * 15 + [(b"", headers.encode())] * 15
             + [(answered, b"")] * 10 + [(answered, headers.encode())] * 10)
    slow = Trickler(server.port, plans)
    slow.start()
    try:
        latencies = []
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        while time.monotonic() - slow.start_at[-1] < limits.HEADER_TIMEOUT_S - 0.5:
            start = time.perf_counter()
            status, _ = post(server, {"pixels": [0.1] * 784}, conn=conn)
            latencies.append(time.perf_counter() - start)
            assert status == 200
            time.sleep(0.02)
        conn.close()
        deadline = time.monotonic() + limits.HEADER_TIMEOUT_S + SLACK_S
        while any(t is None for t in slow.closed_after) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        slow.close()
    assert _percentile(latencies, 50) < 100 and max(latencies) < 2, latencies
    limit = limits.HEADER_TIMEOUT_S + SLACK_S
    assert all(t is not None and t < limit for t in slow.closed_after), slow.closed_after
    # The deadline, not an accident: none of the header tricklers was cut early.
    assert min(slow.closed_after[15:30]) > limits.HEADER_TIMEOUT_S - 0.5
    for received in slow.received[15:30]:
        assert received.startswith(b"HTTP/1.1 408") and b"did not arrive within" in received
    for received in slow.received[30:]:  # the answered request first
        assert received.startswith(b"HTTP/1.1 200")
    assert all(received.count(b"HTTP/1.1") == 1 for received in slow.received[30:40])
    assert all(b"HTTP/1.1 408" in received for received in slow.received[40:])


def test_a_trickled_body_gets_408_after_the_body_deadline(server):
    body = json.dumps({"pixels": [0.0] * 784}).encode()
    slow = Trickler(server.port, [(_request(server.host, body)[:-len(body)], body)] * 5)
    slow.start()
    try:
        deadline = time.monotonic() + limits.BODY_TIMEOUT_S + SLACK_S
        while any(t is None for t in slow.closed_after) and time.monotonic() < deadline:
            status, _ = post(server, {"pixels": [0.1] * 784})
            assert status == 200
            time.sleep(0.2)
    finally:
        slow.close()
    for closed, received in zip(slow.closed_after, slow.received, strict=True):
        assert closed is not None and closed < limits.BODY_TIMEOUT_S + SLACK_S
        assert received.startswith(b"HTTP/1.1 408") and b"the body did not arrive" in received


@pytest.mark.parametrize("size", [limits.MAX_HEADER_BYTES + 1000, 1_000_000],
                         ids=["just-over", "a-megabyte"])
def test_headers_over_the_limit_are_refused(server, size):
    head = f"GET /healthz HTTP/1.1\r\nHost: {server.host}\r\nX-Big: {'x' * size}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        with contextlib.suppress(OSError):  # the server may close before all is sent
            sock.sendall(head.encode())
        status, headers, body = read_response(sock)
    assert status in (400, 431) and headers["content-type"] == "application/json"
    assert f"{limits.MAX_HEADER_BYTES:,} bytes" in json.loads(body)["detail"]


def test_not_http_gets_a_json_400(server):
    status, headers, body = raw(server, b"GARBAGE\r\n\r\n")
    assert status == 400 and headers["content-type"] == "application/json"
    assert "not a valid HTTP/1.1 request" in json.loads(body)["detail"]


def test_past_the_connection_limit_a_request_gets_503_at_once_then_recovers(bare_server):
    socks = [socket.create_connection(("127.0.0.1", bare_server.port), timeout=10)
             for _ in range(limits.MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)
        start = time.monotonic()
        status, _, _ = get(bare_server, "/healthz")
        assert status == 503 and time.monotonic() - start < 2
        deadline = time.monotonic() + limits.HEADER_TIMEOUT_S + SLACK_S
        while time.monotonic() < deadline:
            status, _, _ = get(bare_server, "/healthz")
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, "the silent sockets were not closed"
        assert all(closed_by_server(s, 1) for s in socks)
    finally:
        for sock in socks:
            sock.close()


# ---------------------------------------------------------------------- the event loop
BLANK_4096 = png_bytes(Image.new("L", (4096, 4096), 255))


@pytest.mark.parametrize("which", ["server", "bare_server"],
                         ids=["picture-processes", "no-picture-processes"])
def test_small_files_of_huge_pictures_do_not_stall_the_event_loop(which, request):
    """Two clients sending a 4096 × 4096 blank PNG (tens of kB) without pause: read in a
    worker (process or thread) one at a time, they leave the loop free for the page's
    requests, which a server without picture processes reads on the loop itself."""
    server = request.getfixturevalue(which)
    assert len(BLANK_4096) < 100_000
    drawing = {"image": data_url(drawn_one(140)), "explain": ["saliency", "units"]}

    def latencies(n):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        out = []
        for _ in range(n):
            start = time.perf_counter()
            status, _ = post(server, drawing, conn=conn)
            out.append(time.perf_counter() - start)
            assert status == 200
        conn.close()
        return out

    quiet = latencies(60)
    stop, attacks = threading.Event(), []

    def attack():
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        while not stop.is_set():
            status, answer = post(server, {"image": data_url(BLANK_4096)}, conn=conn)
            attacks.append((status, json.loads(answer).get("empty")))
        conn.close()

    attackers = [threading.Thread(target=attack, daemon=True) for _ in range(2)]
    for t in attackers:
        t.start()
    try:
        while not attacks:
            time.sleep(0.05)
        loud = latencies(100)
    finally:
        stop.set()
        for t in attackers:
            t.join(timeout=60)
    assert attacks and all(a == (200, True) for a in attacks), attacks[:3]
    quiet_p90, loud_p90 = _percentile(quiet, 90), _percentile(loud, 90)
    assert loud_p90 < max(100.0, 4 * quiet_p90), (quiet_p90, loud_p90)


def test_a_declared_giant_is_refused_from_its_header(server):
    start = time.perf_counter()
    status, answer = post(server, {"image": data_url(png_header(5000, 5000))})
    assert status == 422 and "too large: 5000 × 5000" in json.loads(answer)["detail"]
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize("macs, pixels, neighbours, inline", [
    (270_096, 140 * 140, False, True),        # the page's drawing, the MLP preset
    (270_096, None, False, True),             # pixels
    (270_096, limits.INLINE_PIXELS, False, True),
    (270_096, limits.INLINE_PIXELS + 1, False, False),
    (270_096, 4096 * 4096, False, False),
    (270_096, 140 * 140, True, False),        # neighbours: always a worker
    (4_038_672, None, False, False),          # the CNN preset
    (None, None, False, False),               # a layer of unknown cost
])
def test_which_requests_the_event_loop_answers(macs, pixels, neighbours, inline):
    assert limits.inline(macs, pixels, neighbours) is inline


def test_multiply_adds_of_the_presets():
    mlp, cnn, softmax = models.mlp(seed=0), models.cnn(seed=0), models.softmax_regression()
    for m in (mlp, cnn, softmax):
        m.build((28, 28))

    def elementwise(model):  # Flatten, activations, Dropout: one per value
        return sum(int(np.prod(layer.output_shape)) for layer in model.layers
                   if type(layer).__name__ != "Dense")

    assert multiply_adds(mlp) - elementwise(mlp) == 784 * 256 + 256 * 256 + 256 * 10
    assert multiply_adds(softmax) - elementwise(softmax) == 784 * 10
    conv = 32 * 25 * 24 * 24 + 64 * 32 * 25 * 8 * 8 + 1024 * 256 + 256 * 10
    assert conv < multiply_adds(cnn) < conv * 1.01
    assert multiply_adds(mlp) <= limits.INLINE_MULTIPLY_ADDS < multiply_adds(cnn)


# ---------------------------------------------------------------------- bad images
def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width × height and holds one empty IDAT: a header-only giant."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _saved(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _float_tiff(value: float | None = None, scale: float = 1.0) -> bytes:
    a = np.full((40, 40), 255.0, np.float32) * scale
    a[8:32, 18:22] = 0.0
    if value is not None:
        a[0, 0] = value
    return _saved(Image.fromarray(a, mode="F"), "TIFF")


def _digit(mode: str = "L", size=(140, 140)) -> Image.Image:
    return Image.open(io.BytesIO(drawn_one(max(size)))).convert(mode).resize(size)


def _gif_frames() -> bytes:
    frames = [_digit("P") for _ in range(30)]
    return _saved(frames[0], "GIF", save_all=True, append_images=frames[1:])


def _text_bomb() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "A" * (PngImagePlugin.MAX_TEXT_CHUNK + 1), zip=True)
    return _saved(_digit(), "PNG", pnginfo=info)


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _saved(_digit("RGB"), "JPEG", exif=exif)


def _nan_lzw() -> bytes:
    a = np.zeros((30, 30), np.float32)
    a[3, 4] = np.nan
    return _saved(Image.fromarray(a, mode="F"), "TIFF", compression="tiff_lzw")


def _cmyk_jpeg() -> bytes:
    return _saved(_digit("CMYK"), "JPEG")


# (name, picture bytes, status, a phrase of the 422's detail)
BAD_IMAGES = [
    ("nan-tiff", _float_tiff(np.nan), 422, "NaN or inf"),
    ("inf-tiff", _float_tiff(np.inf), 422, "NaN or inf"),
    ("minus-inf-tiff", _float_tiff(-np.inf), 422, "NaN or inf"),
    ("nan-lzw-tiff", _nan_lzw(), 422, "NaN or inf"),
    ("float-max-tiff", _float_tiff(3.4e38), 200, None),
    ("all-huge-floats", _float_tiff(scale=1e36), 200, None),
    ("negative-floats", _float_tiff(scale=-1.0), 200, None),
    ("int32-extremes", _saved(Image.fromarray(
        np.where(np.eye(40, dtype=bool), 2**31 - 1, -2**31).astype(np.int32)), "TIFF"),
     200, None),
    ("16-bit-png", _saved(Image.fromarray(
        np.asarray(_digit(), np.uint16) * 257), "PNG"), 200, None),
    ("one-pixel", png_bytes(Image.new("L", (1, 1), 0)), 200, None),
    ("one-by-4096", png_bytes(Image.new("L", (1, 4096), 255)), 200, None),
    ("4096-by-1", png_bytes(Image.new("L", (4096, 1), 0)), 200, None),
    ("cmyk-jpeg", _cmyk_jpeg(), 200, None),
    ("palette-transparent", _saved(_digit("P"), "PNG", transparency=0), 200, None),
    ("grey-alpha", png_bytes(_digit("LA")), 200, None),
    ("thirty-gif-frames", _gif_frames(), 200, None),
    ("exif-orientation-8", _exif(8), 200, None),
    ("exif-orientation-bogus", _exif(77), 200, None),
    ("declares-5000x5000", png_header(5000, 5000), 422, "too large"),
    ("declares-100000x100000", png_header(100_000, 100_000), 422, "too large"),
    ("declares-0x0", png_header(0, 0), 422, "image"),
    ("truncated-giant", png_bytes(Image.new("L", (2000, 2000), 255))[:200], 422, "corrupt"),
    ("text-chunk-bomb", _text_bomb(), 422, "image"),
    ("gif-header-only", b"GIF89a" + struct.pack("<HH", 4000, 4000) + b"\x00\x00\x00;",
     422, "image"),
]



@pytest.mark.parametrize("name, picture, status, phrase", BAD_IMAGES,
                         ids=[case[0] for case in BAD_IMAGES])
def test_bad_images_get_200_or_422_never_500(server, name, picture, status, phrase):
    got, answer = post(server, {"image": "data:image/png;base64,"
                                + base64.b64encode(picture).decode(),
                                "explain": ["saliency", "units"]})
    body = json.loads(answer)
    assert got == status, (name, got, body)
    if status == 422:
        assert phrase in body["detail"], body["detail"]
    else:
        assert np.isfinite(body["input"]).all() and np.isfinite(body["saliency"]).all()
        assert sum(body["probabilities"]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", ["nan-tiff", "inf-tiff", "minus-inf-tiff", "nan-lzw-tiff"])
def test_chainrule_predict_refuses_nan_images_in_one_line(name, tmp_path, capsys):
    picture = dict((case[0], case[1]) for case in BAD_IMAGES)[name]
    path = tmp_path / f"{name}.tif"
    path.write_bytes(picture)
    assert cli.main(["predict", str(trained_run() / "model.npz"), str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the image holds NaN or inf values" in err, err


def test_the_server_keeps_serving_after_the_bad_images(server):
    status, answer = post(server, {"image": data_url(drawn_one())})
    assert status == 200 and json.loads(answer)["class"] == 1
    (_, _), (x_test, _) = mnist()
    status, answer = post(server, {"pixels": x_test[0].tolist()})
    assert status == 200
