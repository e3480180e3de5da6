"""The measure examples of docs/extending.md run as written (they were the README's before issue 22)."""

from __future__ import annotations

import math
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "docs" / "extending.md"


def test_readme_measure_example_runs(capsys):
    text = README.read_text()
    section = text.split("## Measures on your own network", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    res = scope["res"]
    assert math.isfinite(res.values["path_norm"]) and math.isfinite(res.values["hessian_max_eig"])
    assert res.values["hessian_max_eig"] > 0
    assert {"path_norm", "fro_dist", "hessian_trace", "fisher_trace"} <= set(res.values)


def test_readme_measure_extension_runs():
    import torch
    import torch.nn.functional as F

    from study.measures import KNOBS, REGISTRY

    section = README.read_text().split("**A measure**", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    scope = {"model": model, "x": x, "y": y}
    try:
        exec(compile(code, "README.md", "exec"), scope)
    finally:
        REGISTRY.pop("scaled_loss", None)
        KNOBS.pop("loss_scale", None)
    with torch.no_grad():
        want = 2.0 * F.cross_entropy(model(x), y).item()
    assert math.isclose(scope["res"].values["scaled_loss"], want, rel_tol=1e-5)
