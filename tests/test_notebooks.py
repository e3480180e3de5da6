"""The notebooks in analysis/notebooks: stored without outputs, and they run clean on a runs folder."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.test_report import study_frame, write_runs_folder

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "analysis" / "notebooks").glob("*.ipynb"))
NAMES = ["01_overview", "02_ranking", "03_measure_deep_dive"]


@pytest.fixture(scope="module")
def synthetic_folder(tmp_path_factory) -> Path:
    return write_runs_folder(study_frame(), tmp_path_factory.mktemp("nb") / "runs")


def execute(path: Path, runs: Path, monkeypatch) -> nbformat.NotebookNode:
    """Run the notebook in a fresh python3 kernel (this interpreter), from the repository root."""
    monkeypatch.setenv("RUNS", str(runs))
    monkeypatch.setenv("N_BOOT", "20")  # a short bootstrap keeps the test fast
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()  # raises on a cell error
    return nb


def test_the_notebooks_are_there_and_stored_without_outputs():
    assert [p.stem for p in NOTEBOOKS] == NAMES
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{p.name} holds outputs"
                assert "import torch" not in cell.source and "import ray" not in cell.source


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_clean(name, synthetic_folder, monkeypatch):
    nb = execute(ROOT / "analysis" / "notebooks" / f"{name}.ipynb", synthetic_folder, monkeypatch)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} drew no figure"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_on_the_mini_study(name, mini_runs, monkeypatch):
    execute(ROOT / "analysis" / "notebooks" / f"{name}.ipynb", mini_runs, monkeypatch)
