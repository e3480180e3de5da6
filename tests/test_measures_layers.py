"""study/measures is layered: no import cycle, no family importing another, no private name
taken from a sibling; every module imports on its own; a measure is added in one file."""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from study.measures import KNOBS, REGISTRY, core, measure_full, select
from study.measures.registry import check_knobs, knob, register

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "study" / "measures"
MODULES = sorted(p.stem for p in PKG.glob("*.py") if p.stem != "__init__")


def imports(name: str) -> list[tuple[str, str | None, ast.AST]]:
    """(sibling module, imported name or None, node) for each import of a sibling by ``name``,
    module-level or inside functions; the package itself is the sibling ``""``."""
    tree = ast.parse((PKG / f"{name}.py").read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 or (node.module or "").startswith("study.measures"):
                mod = (node.module or "").removeprefix("study.measures").lstrip(".")
                for a in node.names:
                    if not mod and a.name in MODULES:       # from . import core
                        out.append((a.name, None, node))
                    elif mod in MODULES or not mod:         # from .core import flat
                        out.append((mod, a.name, node))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("study.measures."):
                    out.append((a.name.split(".")[2], None, node))
    return out


def test_no_import_cycle_in_the_package():
    graph = {m: {s for s, _, _ in imports(m)} for m in MODULES}
    assert all("" not in deps for deps in graph.values()), \
        "a submodule imports from the package __init__ (the aggregator on top)"
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if m not in done:
            for s in sorted(graph[m]):
                visit(s, path + [m])
            done.add(m)

    for m in MODULES:
        visit(m, [])


def test_no_family_imports_another_and_no_private_sibling_name():
    families = {fn.__module__.rsplit(".", 1)[1] for fn in (m.fn for m in REGISTRY.values())}
    assert families == {"size", "norms", "flatness", "pacbayes_optimized", "sharpness", "curvature", "optimisation"}
    for m in MODULES:
        aliases = set()
        for sib, name, node in imports(m):
            assert not (m in families and sib in families), f"family {m} imports family {sib}"
            assert not (name or "").startswith("_"), f"{m} imports private {sib}.{name}"
            if name is None:
                aliases.add(sib)
        tree = ast.parse((PKG / f"{m}.py").read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")):
                raise AssertionError(f"{m} uses private {node.value.id}.{node.attr}")


def test_each_module_imports_first_in_a_fresh_interpreter():
    # One fresh interpreter; before each module the study package is dropped from
    # sys.modules, so each import starts the package from nothing (torch stays loaded).
    code = f"""
import importlib, sys
for name in {MODULES!r}:
    for k in [k for k in sys.modules if k == "study" or k.startswith("study.")]:
        del sys.modules[k]
    importlib.import_module("study.measures." + name)
    reg = sys.modules["study.measures.registry"].REGISTRY
    assert len(reg) >= 56, (name, len(reg))
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


# -- adding a measure: one decorated function ----------------------------------------

@pytest.fixture
def toy_measure():
    scale = knob("toy_loss_scale", 1.0, "factor of toy_loss")

    @register("toy_loss", "curvature", cite="(test)", knobs=(scale, core.MEMORY_MB))
    def toy_loss(ctx):
        """toy_loss_scale · L(w), L the mean cross-entropy on the measure set."""
        return ctx.knob(scale) * float(core.loss_w(ctx))

    yield "toy_loss"
    del REGISTRY["toy_loss"], KNOBS[scale]


def test_a_measure_registered_in_a_test_module_runs_through_measure_full(toy_measure):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    res = measure_full(model, (x, y), names=[toy_measure], knobs={"toy_loss_scale": 3})
    with torch.no_grad():
        want = 3 * F.cross_entropy(model(x), y).item()
    assert list(res.values) == ["toy_loss"] and not res.reasons
    assert math.isclose(res.values["toy_loss"], want, rel_tol=1e-6)
    assert toy_measure in [m.name for m in select(["curvature"])]


def test_check_knobs_is_typed_and_names_what_is_wrong():
    full = check_knobs({"flat_rtol": 1, "flat_samples": 3})
    assert full["flat_rtol"] == 1.0 and full["flat_samples"] == 3     # int for a float knob
    assert full["memory_mb"] == 512 and set(full) == set(KNOBS)
    with pytest.raises(ValueError, match=r"unknown measure knob\(s\) nope; knobs: .*memory_mb"):
        check_knobs({"nope": 1})
    with pytest.raises(ValueError, match="'flat_samples' must be an integer"):
        check_knobs({"flat_samples": 2.5})
    with pytest.raises(ValueError, match="'flat_samples' must be an integer"):
        check_knobs({"flat_samples": True})
    with pytest.raises(ValueError, match="'flat_rtol' must be a number"):
        check_knobs({"flat_rtol": "0.1"})
