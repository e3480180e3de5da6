"""The notebooks in analysis/notebooks: stored without outputs, they run clean on a runs folder,
and no figure they show has an empty axes (where there is nothing to plot they say why)."""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from tests.test_report import study_frame, write_runs_folder

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "analysis" / "notebooks").glob("*.ipynb"))
NAMES = ["01_overview", "02_ranking", "03_measure_deep_dive"]


@pytest.fixture(scope="module")
def synthetic_folder(tmp_path_factory) -> Path:
    return write_runs_folder(study_frame(), tmp_path_factory.mktemp("nb") / "runs")


def drawn(ax) -> bool:
    """Whether ``ax`` shows something: a line, patch or collection with a finite point, an image or a text."""
    import numpy as np

    def finite(xy) -> bool:
        xy = np.asarray(xy, dtype=float)
        return xy.size > 0 and bool(np.isfinite(xy.reshape(len(xy), -1)).all(axis=1).any())
    return (bool(ax.images) or bool(ax.texts)
            or any(finite(ln.get_xydata()) for ln in ax.lines)
            or any(finite(p.get_extents().get_points()) and (p.get_extents().width > 0 or p.get_extents().height > 0)
                   for p in ax.patches)
            or any(finite(c.get_offsets()) or any(finite(q.vertices) for q in c.get_paths()) for c in ax.collections))


# Test-only cells run around the notebook: every figure the kernel renders (inline backend,
# `display` of a Figure) is checked for axes that show nothing, and the count is printed.
_HOOK = inspect.getsource(drawn) + """
import json as _json, matplotlib.backend_bases as _bb
_EMPTY, _SEEN, _print = [], [0], _bb.FigureCanvasBase.print_figure
def _checked(self, *a, **k):
    _SEEN[0] += 1
    _EMPTY.extend(f"{self.figure.get_suptitle()!r} axes {i} {ax.get_title()!r}"
                  for i, ax in enumerate(self.figure.axes) if not drawn(ax))
    return _print(self, *a, **k)
_bb.FigureCanvasBase.print_figure = _checked
"""
_REPORT = 'print("__axes__" + _json.dumps({"empty": _EMPTY, "figures": _SEEN[0]}))'


def execute(path: Path, runs: Path, monkeypatch) -> nbformat.NotebookNode:
    """Run the notebook in a fresh python3 kernel (this interpreter), from the repository root,
    with the empty-axes check around it (`_HOOK`, `_REPORT`; see `axes_report`)."""
    monkeypatch.setenv("RUNS", str(runs))
    monkeypatch.setenv("N_BOOT", "20")  # a short bootstrap keeps the test fast
    nb = nbformat.read(path, as_version=4)
    nb.cells = [nbformat.v4.new_code_cell(_HOOK), *nb.cells, nbformat.v4.new_code_cell(_REPORT)]
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()  # raises on a cell error
    return nb


def axes_report(nb: nbformat.NotebookNode) -> dict:
    """{"empty": the empty axes of the figures shown, "figures": how many were rendered}."""
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    return json.loads(text.split("__axes__", 1)[1])


def test_the_empty_axes_check_sees_an_empty_axes():
    from matplotlib.figure import Figure
    fig = Figure()
    a, b, c, d = fig.subplots(1, 4)
    a.plot([0, 1], [1, 2])
    b.barh([0, 1], [np.nan, np.nan])  # bars of NaN width: nothing shown
    c.text(0.5, 0.5, "nothing to show because …")
    assert [drawn(ax) for ax in (a, b, c, d)] == [True, False, True, False]


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
    seen = axes_report(nb)
    assert seen["figures"] > 0 and seen["empty"] == [], seen


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_on_the_mini_study(name, mini_runs, monkeypatch):
    nb = execute(ROOT / "analysis" / "notebooks" / f"{name}.ipynb", mini_runs, monkeypatch)
    seen = axes_report(nb)
    assert seen["figures"] > 0 and seen["empty"] == [], seen
    if name.startswith("03"):  # it opens on one network: the figure with the loss surface
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        assert "run " in text and "not shown: 2-D loss surface" not in text
