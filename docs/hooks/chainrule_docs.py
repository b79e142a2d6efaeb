"""MkDocs hooks of the chainrule course site (mkdocs.yml: ``hooks:``).

What the site shows of the code is generated from the code while the site is built:

- ``on_config``: one nav entry per notebook and per exercise, appended to the "Notebooks" and
  "Exercises" sections, so a new exercise or notebook appears without editing mkdocs.yml;
- ``on_files``: the pages that exist only at build time: the executed notebooks with their
  pictures (``nbpages``), one page per exercise (``codepages``);
- ``on_page_markdown``: a hand-written page asks for generated content with a marker on a line
  of its own, ``<!-- chainrule: NAME -->`` (NAME in ``MARKERS``); an unknown name fails the
  build.

Nothing is fetched from the network: MNIST must be found locally ($CHAINRULE_DATA, else the
``shared/data`` folder beside the repository, as the tests look; else the usual search without
download) or the build stops and says so.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from pathlib import Path

import codepages
import nbpages
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SRC = ROOT / "src" / "chainrule"

#: Notebooks that are not pages of the site, and why (shown on the notebooks' index page).
LEFT_OUT = {
    "04_exercises.ipynb": "it shows answers that pass three exercises and a level-3 hint, "
                          "which the exercise pages keep to the package",
}

MARKERS = {
    "exercise-index": codepages.exercise_index,
    "diagnosis-codes": codepages.diagnosis_codes,
    "cli-summary": codepages.cli_summary,
    "cli-reference": codepages.cli_reference,
    "serve-api": codepages.serve_api,
    "studio-api": codepages.studio_api,
    "explain-backward": lambda: codepages.command_output(["explain-backward"]),
    "explain-backward-mlp": lambda: codepages.command_output(
        ["explain-backward", "--model", "mlp", "--data", "mnist", "--samples", "8"]),
    "explain-backward-html": codepages.explain_backward_html,
    "gradcheck-mlp": lambda: codepages.command_output(["gradcheck", "--model", "mlp"]),
    "notebook-index": lambda: _notebook_index(),
    "readme-train-command": lambda: codepages.readme_command("train", ROOT / "README.md"),
    "readme-test-command": lambda: codepages.readme_command("test", ROOT / "README.md"),
}
_MARKER = re.compile(r"^<!-- chainrule: ([a-z0-9-]+) -->$", re.MULTILINE)

_pages: list[nbpages.NotebookPage] = []


def on_config(config):
    sections = {"Notebooks": [{page_title: f"examples/{stem}.md"}
                              for stem, page_title in _notebook_titles()],
                "Exercises": codepages.exercise_nav()}
    for item in config.nav or []:
        if isinstance(item, dict):
            for title, children in item.items():
                if title in sections and isinstance(children, list):
                    children.extend(sections.pop(title))
    if sections:
        raise PluginError(f"mkdocs.yml: the nav needs the sections {sorted(sections)}")
    return config


def on_files(files, config):
    data_root = _data_root()
    paths = [EXAMPLES / name for name in _notebooks() if name not in LEFT_OUT]
    workers = min(2, os.cpu_count() or 1)
    try:
        pages = nbpages.build_pages(paths, data_root, _source_fingerprint(), workers=workers)
    except Exception as exc:  # CellExecutionError carries the notebook's traceback
        raise PluginError(f"executing the example notebooks failed: {exc}") from exc
    _pages[:] = pages
    generated: dict[str, str | bytes] = {}
    for page in pages:
        generated[f"examples/{page.name.removesuffix('.ipynb')}.md"] = page.markdown
        generated.update(page.files)
    generated.update(codepages.exercise_pages())
    for uri, content in generated.items():
        files.append(File.generated(config, uri, content=content))
    return files


def on_page_markdown(markdown, page, config, files):
    def fill(match):
        name = match.group(1)
        if name not in MARKERS:
            raise PluginError(f"{page.file.src_uri}: unknown marker {name!r}; known: "
                              f"{', '.join(sorted(MARKERS))}")
        return MARKERS[name]()

    return _MARKER.sub(fill, markdown)


# ---------------------------------------------------------------------- helpers
def _notebooks() -> list[str]:
    """The notebook file names, from examples/make_notebooks.py (what the tests run)."""
    spec = importlib.util.spec_from_file_location("make_notebooks", EXAMPLES / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return sorted(module.NOTEBOOKS)


def _notebook_titles() -> list[tuple[str, str]]:
    import nbformat

    titles = []
    for name in _notebooks():
        if name in LEFT_OUT:
            continue
        nb = nbformat.read(EXAMPLES / name, as_version=4)
        titles.append((name.removesuffix(".ipynb"), nbpages._title(nb, name)))
    return titles


def _notebook_index() -> str:
    rows = ["| notebook | pictures | ran in |", "|---|---|---|"]
    for page in _pages:
        stem = page.name.removesuffix(".ipynb")
        rows.append(f"| [{page.title}]({stem}.md) | {page.images} | {page.seconds:.0f} s |")
    left = [f"- `examples/{name}` is not on the site: {why}. Run it in Jupyter, or see "
            f"[the exercises](../exercises/index.md)." for name, why in LEFT_OUT.items()]
    return "\n".join(rows + [""] + left)


def _data_root() -> Path | None:
    """The CHAINRULE_DATA the notebooks get ($CHAINRULE_DATA, else ../shared/data when it
    exists, else None: the user cache and the other usual folders), checked to hold MNIST:
    the build never downloads."""
    from chainrule.data import DatasetNotFoundError, find_dataset

    root = os.environ.get("CHAINRULE_DATA")
    if not root and (ROOT.parent / "shared" / "data").is_dir():
        root = str(ROOT.parent / "shared" / "data")
    saved = os.environ.get("CHAINRULE_DATA")
    if root:
        os.environ["CHAINRULE_DATA"] = root
    try:
        find_dataset("mnist", download=False, progress=False)
    except DatasetNotFoundError as exc:
        raise PluginError(f"the notebooks need MNIST and the docs build downloads nothing: set "
                          f"CHAINRULE_DATA to the folder that holds mnist/ ({exc})") from exc
    finally:
        if saved is None:
            os.environ.pop("CHAINRULE_DATA", None)
        else:
            os.environ["CHAINRULE_DATA"] = saved
    return Path(root).resolve() if root else None


def _source_fingerprint() -> str:
    """Changes when any file of src/chainrule changes (for the notebook cache of serve)."""
    digest = hashlib.sha256()
    for path in sorted(SRC.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            stat = path.stat()
            digest.update(f"{path.relative_to(SRC)}\0{stat.st_size}\0{stat.st_mtime_ns}\0"
                          .encode())
    return digest.hexdigest()
