"""The README's measure example runs as written."""

from __future__ import annotations

import math
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


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
