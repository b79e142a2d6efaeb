"""Dataset lookup, download (against a local HTTP server only) and loading, real MNIST included."""

import gzip
import hashlib
import http.server
import os
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from chainrule.data import (
    DATASETS,
    DatasetInfo,
    DatasetNotFoundError,
    DownloadError,
    IDXError,
    dataset_files,
    download,
    find_dataset,
    load_idx_dataset,
    load_mnist,
    search_paths,
    write_idx,
)
from chainrule.data import datasets as datasets_module

DATA_DIR = Path(
    os.environ.get("CHAINRULE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Point every search location into tmp_path; no test sees the user's real folders."""
    monkeypatch.delenv("CHAINRULE_DATA", raising=False)
    monkeypatch.delenv("CHAINRULE_MIRROR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(datasets_module, "SYSTEM_DATA_ROOT", tmp_path / "system")
    return tmp_path


def make_dataset(folder: Path, n_train=6, n_test=4, gz=True, seed=0):
    """Write four small valid IDX files into folder; return the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        FILES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        FILES[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
        FILES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        FILES[3]: rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / (name if gz else name[: -len(".gz")]), array)
    return arrays


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


class Server:
    """Local HTTP server: routes[path] = body; paths in `short` send a too-large Content-Length."""

    def __init__(self):
        self.routes: dict[str, bytes] = {}
        self.short: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                extra = 1000 if self.path in server.short else 0
                self.send_header("Content-Length", str(len(body) + extra))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def tiny(tmp_path, server, monkeypatch):
    """Register a dataset 'tiny' whose four files the local server serves under /tiny/."""
    source = tmp_path / "source"
    arrays = make_dataset(source)
    md5 = {}
    for name in FILES:
        body = (source / name).read_bytes()
        server.routes[f"/tiny/{name}"] = body
        md5[name] = hashlib.md5(body).hexdigest()
    info = DatasetInfo(name="tiny", mirrors=(closed_port_url(),), md5=md5)
    monkeypatch.setitem(DATASETS, "tiny", info)
    return arrays


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_search_paths_order(isolated, monkeypatch):
    cache = isolated / "xdg" / "chainrule" / "mnist"
    system = isolated / "system" / "mnist"
    assert search_paths("mnist") == [cache, system]
    monkeypatch.setenv("CHAINRULE_DATA", str(isolated / "env"))
    assert search_paths("MNIST") == [isolated / "env" / "mnist", cache, system]
    explicit = isolated / "mine"
    assert search_paths("mnist", data_dir=explicit) == [explicit, explicit / "mnist"]
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(isolated / "home"))
    assert search_paths("kmnist")[1] == isolated / "home" / ".cache" / "chainrule" / "kmnist"


def test_find_dataset_search_order(isolated, monkeypatch):
    env_root = isolated / "env"
    monkeypatch.setenv("CHAINRULE_DATA", str(env_root))
    cache = isolated / "xdg" / "chainrule" / "mnist"
    system = isolated / "system" / "mnist"
    make_dataset(system)
    assert find_dataset("mnist", download=False) == system.resolve()
    make_dataset(cache)
    assert find_dataset("mnist", download=False) == cache.resolve()
    make_dataset(env_root / "mnist")
    assert find_dataset("mnist", download=False) == (env_root / "mnist").resolve()
    (env_root / "mnist" / FILES[2]).unlink()
    assert find_dataset("mnist", download=False) == cache.resolve()


def test_data_dir_folder_or_parent_and_uncompressed(isolated):
    folder = isolated / "mine" / "mnist"
    make_dataset(folder, gz=False)
    assert find_dataset("mnist", data_dir=folder) == folder.resolve()
    assert find_dataset("mnist", data_dir=folder.parent) == folder.resolve()
    files = dataset_files("mnist", data_dir=folder.parent)
    assert sorted(files) == ["test_images", "test_labels", "train_images", "train_labels"]
    assert files["train_images"] == (folder / "train-images-idx3-ubyte").resolve()
    assert all(p.is_absolute() and p.is_file() for p in files.values())


def test_explicit_data_dir_without_files_is_error_not_fallthrough(isolated, server, tiny):
    make_dataset(isolated / "xdg" / "chainrule" / "mnist")
    empty = isolated / "empty"
    empty.mkdir()
    make_dataset(empty / "mnist")
    (empty / "mnist" / FILES[1]).unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        find_dataset("mnist", data_dir=empty, mirrors=[server.url + "/tiny/"])
    message = str(info.value)
    assert f"data_dir={str(empty)!r}" in message
    assert str(empty / "mnist") in message
    assert f"has 3 of 4 files; missing {FILES[1]}" in message
    assert server.requests == []
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        find_dataset("mnist", data_dir=isolated / "nowhere")


def test_load_from_directory(isolated):
    folder = isolated / "digits"
    arrays = make_dataset(folder, n_train=5, n_test=3)
    (x, y), (xt, yt) = load_idx_dataset(folder)
    assert x.shape == (5, 28, 28) and x.dtype == np.float32
    assert xt.shape == (3, 28, 28) and yt.shape == (3,)
    assert y.dtype == np.int64 and yt.dtype == np.int64
    np.testing.assert_array_equal(x, arrays[FILES[0]].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(y, arrays[FILES[1]])
    (xu, _), _ = load_idx_dataset(str(folder), normalize=False, flatten=True)
    assert xu.shape == (5, 784) and xu.dtype == np.uint8
    with pytest.raises(ValueError, match="pass the directory alone"):
        load_idx_dataset(folder, data_dir=folder)


def test_count_mismatch_names_both_files(isolated):
    folder = isolated / "bad"
    make_dataset(folder, n_train=6)
    write_idx(folder / FILES[1], np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="holds 6 images but .* holds 5 labels") as info:
        load_idx_dataset(folder)
    assert FILES[0] in str(info.value) and FILES[1] in str(info.value)


def test_swapped_files_in_dataset(isolated):
    folder = isolated / "swapped"
    make_dataset(folder)
    images, labels = folder / FILES[2], folder / FILES[3]
    tmp = folder / "tmp"
    images.rename(tmp)
    labels.rename(images)
    tmp.rename(labels)
    with pytest.raises(IDXError, match="swapped"):
        load_idx_dataset(folder)


def test_directory_missing_files(isolated):
    folder = isolated / "partial"
    make_dataset(folder)
    (folder / FILES[0]).unlink()
    with pytest.raises(DatasetNotFoundError, match=f"missing {FILES[0]}"):
        dataset_files(folder)
    with pytest.raises(DatasetNotFoundError, match="nowhere does not exist"):
        load_idx_dataset(str(isolated / "nowhere"))


def test_download_good_checksum(isolated, server):
    body = gzip.compress(bytes(range(256)) * 100)
    server.routes["/f.gz"] = body
    dest = isolated / "dl" / "sub" / "f.gz"
    out = download(server.url + "/f.gz", dest, md5=hashlib.md5(body).hexdigest(), timeout=5)
    assert out == dest
    assert dest.read_bytes() == body
    assert leftovers(isolated / "dl") == ["f.gz", "sub"]


def test_download_bad_checksum_leaves_nothing(isolated, server):
    server.routes["/f.gz"] = b"not what was published"
    dest = isolated / "dl" / "f.gz"
    with pytest.raises(DownloadError, match="MD5 mismatch: expected 0{32}, got") as info:
        download(server.url + "/f.gz", dest, md5="0" * 32, progress=False, timeout=5)
    assert server.url + "/f.gz" in str(info.value)
    assert leftovers(isolated / "dl") == []


def test_download_truncated_transfer_leaves_nothing(isolated, server):
    server.routes["/f.gz"] = b"x" * 5000
    server.short.add("/f.gz")
    dest = isolated / "dl" / "f.gz"
    with pytest.raises(DownloadError, match="Content-Length is 6000 bytes, received 5000"):
        download(server.url + "/f.gz", dest, progress=False, timeout=5)
    assert leftovers(isolated / "dl") == []


def test_download_interrupted_leaves_nothing(isolated, server, monkeypatch):
    server.routes["/f.gz"] = b"x" * 5000

    class InterruptingBar:
        def update(self, n):
            raise KeyboardInterrupt

        def close(self):
            pass

    monkeypatch.setattr(datasets_module, "_progress_bar", lambda total, label: InterruptingBar())
    dest = isolated / "dl" / "f.gz"
    with pytest.raises(KeyboardInterrupt):
        download(server.url + "/f.gz", dest, progress=True, timeout=5)
    assert leftovers(isolated / "dl") == []


def test_download_without_tqdm(isolated, server, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    server.routes["/f.gz"] = b"abc"
    dest = download(server.url + "/f.gz", isolated / "f.gz", progress=True, timeout=5)
    assert dest.read_bytes() == b"abc"


def test_download_falls_back_to_next_mirror(isolated, server):
    server.routes["/ok/f.gz"] = b"payload"
    dest = isolated / "dl" / "f.gz"
    urls = [closed_port_url() + "f.gz", server.url + "/missing/f.gz", server.url + "/ok/f.gz"]
    download(urls, dest, md5=hashlib.md5(b"payload").hexdigest(), timeout=5)
    assert dest.read_bytes() == b"payload"
    assert server.requests == ["/missing/f.gz", "/ok/f.gz"]


def test_find_dataset_downloads_into_cache(isolated, server, tiny):
    folder = find_dataset("tiny", mirrors=[server.url + "/{name}"], timeout=5)
    cache = isolated / "xdg" / "chainrule" / "tiny"
    assert folder == cache.resolve()
    assert leftovers(cache) == sorted(FILES)
    (x, y), (xt, yt) = load_idx_dataset("tiny", normalize=False)
    np.testing.assert_array_equal(x, tiny[FILES[0]])
    np.testing.assert_array_equal(yt, tiny[FILES[3]])
    assert len(server.requests) == 4


def test_mirror_env_var_and_partial_cache(isolated, server, tiny, monkeypatch):
    cache = isolated / "xdg" / "chainrule" / "tiny"
    cache.mkdir(parents=True)
    for name in FILES[:2]:
        (cache / name).write_bytes(server.routes[f"/tiny/{name}"])
    monkeypatch.setenv("CHAINRULE_MIRROR", f"{closed_port_url()}, {server.url}/tiny/")
    files = dataset_files("tiny", timeout=5, progress=False)
    assert files["test_images"] == (cache / FILES[2]).resolve()
    assert sorted(server.requests) == sorted(f"/tiny/{name}" for name in FILES[2:])


def test_download_bad_checksum_via_find_dataset(isolated, server, tiny):
    server.routes[f"/tiny/{FILES[0]}"] = b"tampered"
    with pytest.raises(DatasetNotFoundError, match="MD5 mismatch"):
        find_dataset("tiny", mirrors=[server.url + "/tiny/"], timeout=5)
    cache = isolated / "xdg" / "chainrule" / "tiny"
    assert not any(name.endswith(".part") for name in leftovers(cache))
    assert FILES[0] not in leftovers(cache)


def test_offline_lists_every_searched_path(isolated, monkeypatch):
    monkeypatch.setenv("CHAINRULE_DATA", str(isolated / "env"))
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(mirrors=[closed_port_url()], timeout=5, progress=False)
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    for path in search_paths("mnist"):
        assert str(path) in message
    assert "CHAINRULE_DATA" in message and "data_dir=" in message
    assert "copy the four files into" in message
    assert "refused" in message.lower() or "failed" in message.lower()
    assert leftovers(isolated / "xdg") in ([], ["chainrule"])


def test_unknown_name_is_not_downloaded(isolated):
    with pytest.raises(DatasetNotFoundError, match="'mnsit' is not a known dataset"):
        find_dataset("mnsit")


def test_registry_has_standard_files_and_checksums():
    assert set(DATASETS) >= {"mnist", "fashion-mnist", "kmnist"}
    mnist = DATASETS["mnist"]
    assert mnist.mirrors[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert mnist.md5["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    for info in DATASETS.values():
        assert tuple(info.files.values()) == FILES
        assert set(info.md5) == set(FILES)
        assert all(m is None or len(m) == 32 for m in info.md5.values())


@pytest.fixture(scope="module")
def real_mnist():
    return load_mnist(data_dir=DATA_DIR)


def test_real_mnist(real_mnist):
    (x, y), (xt, yt) = real_mnist
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)
    assert x.dtype == np.float32 and xt.dtype == np.float32
    assert y.shape == (60000,) and yt.shape == (10000,)
    assert y.dtype == np.int64 and yt.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(yt)) == set(range(10))


def test_real_mnist_flatten_and_raw(real_mnist):
    (x, _), (xt, _) = real_mnist
    (xf, _), (xtf, _) = load_mnist(data_dir=DATA_DIR, flatten=True)
    assert xf.shape == (60000, 784) and xtf.shape == (10000, 784)
    np.testing.assert_array_equal(xtf, xt.reshape(10000, 784))
    _, (xt_raw, _) = load_mnist(data_dir=DATA_DIR, normalize=False)
    assert xt_raw.dtype == np.uint8
    np.testing.assert_array_equal(xt, xt_raw.astype(np.float32) / np.float32(255.0))


def test_real_mnist_found_through_env(monkeypatch):
    monkeypatch.setenv("CHAINRULE_DATA", str(DATA_DIR))
    assert find_dataset("mnist", download=False).resolve() == (DATA_DIR / "mnist").resolve()
    files = dataset_files("mnist", download=False)
    assert files["train_labels"].name == "train-labels-idx1-ubyte.gz"
