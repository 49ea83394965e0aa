"""notebooks/explore.ipynb runs top to bottom without an error (its cells assert what they show), in a kernel on
this very interpreter, and is stored without outputs."""

import sys
from pathlib import Path

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore.ipynb"

# Appended to the copy that runs, never to the file: which interpreter the kernel is.
WHICH_PYTHON = "import sys; print(sys.executable)"


def test_notebook_runs_top_to_bottom_in_this_interpreter(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # the kernel inherits it: no display needed
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(WHICH_PYTHON))
    # ipykernel's "python3" kernelspec starts with "python", which jupyter_client replaces by sys.executable; the
    # last cell checks that it did, so the notebook tests the package installed where pytest runs.
    client = NotebookClient(
        notebook,
        km=KernelManager(kernel_name="python3"),
        timeout=120,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    printed = "".join(output.get("text", "") for output in notebook.cells[-1].outputs)
    assert printed.strip() == sys.executable


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code_cells)
