"""Every Colab notebook runs top to bottom on CPU in smoke mode (fixture weights, tiny training)."""
import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ("sample_released.ipynb", "edit.ipynb", "train_demo.ipynb")


def test_every_notebook_is_tested():
    assert sorted(p.name for p in (REPO / "colab").glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_smoke_mode(name, tmp_path, tmp_path_factory, monkeypatch):
    # The kernel inherits this process's environment: smoke mode, a scratch dir for outputs, and
    # the session's compilation cache (shared with the demo test: identical programs compile once).
    monkeypatch.setenv("VAR_JAX_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("VAR_JAX_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        session = tmp_path_factory.getbasetemp()
        session = session.parent if os.environ.get("PYTEST_XDIST_WORKER") else session
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(session / "jax_cache"))
    nb = nbformat.read(REPO / "colab" / name, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}})
    client.execute()
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, f"{name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
