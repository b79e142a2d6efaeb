"""The example notebooks as site pages: executed during the build, turned into Markdown.

``examples/*.ipynb`` stay as committed, without outputs: each one is read, executed in memory
by nbclient in a kernel on *this* interpreter (a kernelspec written to a temporary folder that
comes first on ``JUPYTER_PATH``, as tests/test_notebooks.py does), in a temporary working folder
(the notebooks write their GIFs there), with ``CHAINRULE_DATA`` set. The executed notebook then
becomes one Markdown page: markdown cells as they are, code cells as Python blocks, text
outputs as text blocks, pictures (PNG, GIF) as image files next to the page, HTML outputs as
they are.

Executing is the cost of a build (about a minute on 2 cores); the results are kept in memory
for the life of the process, keyed by the notebook's bytes and the source tree, so that
``mkdocs serve`` re-executes a notebook only when it or chainrule changed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

KERNEL = "chainrule-docs"
#: Seconds one cell may run before the build fails (the MNIST MLP trains for about 30 s).
CELL_TIMEOUT = 600
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_IMAGES = {"image/png": "png", "image/gif": "gif", "image/jpeg": "jpg", "image/svg+xml": "svg"}


@dataclass
class NotebookPage:
    """One notebook, executed: its page and the files the page shows."""

    name: str                      # 01_softmax_regression.ipynb
    title: str                     # the notebook's first heading
    markdown: str
    files: dict[str, bytes] = field(default_factory=dict)   # path under docs → content
    seconds: float = 0.0
    images: int = 0


_CACHE: dict[str, NotebookPage] = {}


_BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@contextmanager
def kernel(data_root: Path | None, workers: int = 1):
    """A kernelspec named KERNEL that starts ipykernel on sys.executable, first on
    JUPYTER_PATH, and CHAINRULE_DATA for the kernels (unless None); with several kernels at
    once, each gets its share of the cores for BLAS (unless the caller chose). All restored
    afterwards."""
    from jupyter_client.kernelspec import KernelSpecManager

    with tempfile.TemporaryDirectory(prefix="chainrule-docs-jupyter-") as tmp:
        spec_dir = Path(tmp, "kernels", KERNEL)
        spec_dir.mkdir(parents=True)
        (spec_dir / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "chainrule docs", "language": "python",
        }))
        saved = {key: os.environ.get(key)
                 for key in ("JUPYTER_PATH", "CHAINRULE_DATA", *_BLAS_THREADS)}
        os.environ["JUPYTER_PATH"] = os.pathsep.join(
            p for p in (tmp, saved["JUPYTER_PATH"]) if p)
        if data_root is not None:
            os.environ["CHAINRULE_DATA"] = str(data_root)
        if workers > 1 and not any(saved[key] for key in _BLAS_THREADS):
            # Two kernels with a thread per core each would contend for the cores (OpenBLAS's
            # threads spin while they wait).
            share = str(max(1, (os.cpu_count() or 1) // workers))
            for key in _BLAS_THREADS:
                os.environ[key] = share
        try:
            spec = KernelSpecManager().get_kernel_spec(KERNEL)
            if spec.argv[0] != sys.executable:
                raise RuntimeError(f"kernel {KERNEL} would run {spec.argv[0]}, not "
                                   f"{sys.executable}")
            yield KERNEL
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def build_pages(paths: list[Path], data_root: Path | None, fingerprint: str,
                workers: int = 2) -> list[NotebookPage]:
    """Execute each notebook (those not cached) and return their pages, in ``paths`` order.

    Raises:
        nbclient.exceptions.CellExecutionError: a cell failed (the message has the traceback).
    """
    keys = [_key(path, data_root, fingerprint) for path in paths]
    todo = [(path, key) for path, key in zip(paths, keys, strict=True) if key not in _CACHE]
    if todo:
        workers = max(1, min(workers, len(todo)))
        with kernel(data_root, workers) as kernel_name, ThreadPoolExecutor(workers) as pool:
            # Longest first (the largest file is the MLP notebook), so the two workers finish
            # together.
            todo.sort(key=lambda item: -item[0].stat().st_size)
            futures = {key: pool.submit(_build_one, path, kernel_name) for path, key in todo}
            for key, future in futures.items():
                _CACHE[key] = future.result()
    return [_CACHE[key] for key in keys]


def _key(path: Path, data_root: Path | None, fingerprint: str) -> str:
    digest = hashlib.sha256(path.read_bytes())
    digest.update(f"{data_root}\0{fingerprint}\0{sys.executable}".encode())
    return digest.hexdigest()


def _build_one(path: Path, kernel_name: str) -> NotebookPage:
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="chainrule-docs-nb-") as workdir:
        # Local sockets in the notebook's own folder rather than TCP ports on 127.0.0.1.
        km = KernelManager(kernel_name=kernel_name, transport="ipc",
                           ip=str(Path(workdir, ".kernel")))
        client = NotebookClient(nb, km=km, kernel_name=kernel_name, timeout=CELL_TIMEOUT,
                                resources={"metadata": {"path": workdir}})
        try:
            client.execute()
        finally:  # nbclient shuts down only the kernels it started itself
            if km.has_kernel:
                km.shutdown_kernel()
    seconds = time.perf_counter() - start
    return to_page(nb, path.name, seconds)


def to_page(nb, name: str, seconds: float = 0.0) -> NotebookPage:
    """The Markdown page of an executed notebook; images go to ``examples/<stem>/``."""
    stem = name.removesuffix(".ipynb")
    page = NotebookPage(name=name, title=_title(nb, stem), markdown="", seconds=seconds)
    parts: list[str] = []
    heading_done = False
    for number, cell in enumerate(nb.cells, start=1):
        if cell.cell_type == "markdown":
            text = cell.source.strip()
            if not heading_done and text.startswith("# "):
                first, _, rest = text.partition("\n")
                parts.append(first + "\n\n" + _banner(name, seconds) + "\n\n" + rest.strip())
                heading_done = True
            else:
                parts.append(text)
        elif cell.cell_type == "code":
            parts.append(_fence(cell.source.strip("\n"), "python"))
            outputs = _outputs(cell.outputs, stem, number, page)
            if outputs:
                parts.append('<div class="nb-output" markdown>\n\n' + "\n\n".join(outputs)
                             + "\n\n</div>")
    if not heading_done:
        parts.insert(0, f"# {page.title}\n\n{_banner(name, seconds)}")
    page.markdown = "\n\n".join(parts) + "\n"
    return page


def _title(nb, stem: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return stem


def _banner(name: str, seconds: float) -> str:
    return (f'!!! info "Executed when this site was built"\n'
            f"    `examples/{name}` ran top to bottom in {seconds:.0f} s on the chainrule this "
            f"site documents; the outputs below are from that run. The repository keeps the "
            f"notebook without outputs: open it in Jupyter to run it yourself.")


def _outputs(outputs, stem: str, number: int, page: NotebookPage) -> list[str]:
    parts: list[str] = []
    streams: dict[str, list[str]] = {}

    def flush():
        for texts in streams.values():  # stdout, then stderr
            text = _clean("".join(texts))
            if text.strip():
                parts.append(_fence(text.rstrip("\n"), "text"))
        streams.clear()

    for index, out in enumerate(outputs, start=1):
        kind = out.output_type
        if kind == "stream":
            streams.setdefault(out.name, []).append(out.text)
            continue
        flush()
        if kind == "error":  # execution raises first; kept for notebooks executed elsewhere
            parts.append(_fence(_clean("\n".join(out.traceback)), "text"))
            continue
        data = out.get("data", {})
        image = next((mime for mime in _IMAGES if mime in data), None)
        if image is not None:
            uri = f"examples/{stem}/cell{number:02d}-{index}.{_IMAGES[image]}"
            raw = data[image]
            content = raw.encode() if image == "image/svg+xml" else base64.b64decode(raw)
            page.files[uri] = content
            page.images += 1
            parts.append(f"![output {index} of cell {number}]({uri.removeprefix('examples/')})")
        elif "text/html" in data:
            parts.append('<div class="nb-html">\n' + data["text/html"].strip() + "\n</div>")
        elif "text/markdown" in data:
            parts.append(data["text/markdown"])
        elif "text/plain" in data:
            parts.append(_fence(_clean(data["text/plain"]).rstrip("\n"), "text"))
    flush()
    return parts


def _clean(text: str) -> str:
    """Text as a terminal would show it: ANSI colours dropped, a carriage return (a progress
    bar redrawing itself) keeping only what was written last on the line."""
    text = _ANSI.sub("", text)
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def _fence(text: str, language: str) -> str:
    ticks = max([3] + [len(run) + 1 for run in re.findall(r"`{3,}", text)])
    fence = "`" * ticks
    return f"{fence}{language}\n{text}\n{fence}"
