"""The example notebooks: exactly what examples/make_notebooks.py writes, outputs cleared, and
each one runs top to bottom (its own asserts included) in a kernel on this interpreter.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DATA_ROOT = Path(
    os.environ.get("CHAINRULE_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
KERNEL = "chainrule-tests"


def generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", EXAMPLES / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NOTEBOOKS = sorted(generator().NOTEBOOKS)


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A kernelspec that launches ipykernel on *this* interpreter, found first on JUPYTER_PATH,
    so a user-level 'python3' kernel pointing elsewhere cannot be picked up."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "chainrule tests", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("CHAINRULE_DATA", str(DATA_ROOT))
    spec = KernelSpecManager().get_kernel_spec(KERNEL)
    assert spec.argv[0] == sys.executable
    return KERNEL


def test_notebooks_are_generated_and_have_no_outputs():
    module = generator()
    assert NOTEBOOKS == ["01_softmax_regression.ipynb", "02_mlp_mnist.ipynb",
                         "03_gradient_checking.ipynb", "04_exercises.ipynb"]
    for name, cells in module.NOTEBOOKS.items():
        on_disk = nbformat.read(EXAMPLES / name, as_version=4)
        nbformat.validate(on_disk)
        assert on_disk == module.build(cells), f"{name}: rerun python examples/make_notebooks.py"
        for cell in on_disk.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, name


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, kernel, tmp_path):
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    probe = nbformat.v4.new_code_cell("import sys; print(sys.executable)")
    nb.cells.insert(0, probe)
    client = NotebookClient(nb, kernel_name=kernel, timeout=240,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the traceback, if any cell fails

    assert nb.cells[0].outputs[0]["text"].strip() == sys.executable
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert errors == []
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "data" in o and ("image/png" in o.data or "image/gif" in o.data)]
    expected = {"01_softmax_regression.ipynb": 3, "02_mlp_mnist.ipynb": 6,
                "03_gradient_checking.ipynb": 0, "04_exercises.ipynb": 0}[name]
    assert len(images) == expected, f"{name}: {len(images)} pictures shown"
    gifs = sorted(p.name for p in tmp_path.glob("*.gif"))
    assert gifs == {"01_softmax_regression.ipynb": ["blobs_training.gif"],
                    "02_mlp_mnist.ipynb": ["spirals_training.gif"]}.get(name, [])
