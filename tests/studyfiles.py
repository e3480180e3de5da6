"""Small study files for the tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

TINY = """
[study]
name = "{name}"
dataset = "digits"
model = "mlp"
seeds = {seeds}
out = "{out}"

[data]
train_size = 300

[train]
target_loss = 0.05
max_epochs = 300

[grid]
{grid}

[measures]
include = {include}
"""


def write_study(tmp_path: Path, name: str = "tiny", grid: str | None = None,
                seeds="[0]", include='["size", "norm", "optimisation"]', extra: str = "",
                out: Path | str | None = None) -> Path:
    """A small, fast study file (digits subset, MLP, cheap measures)."""
    grid = grid or 'width = [16, 32]\nlr = [0.1, 0.2]\nbatch_size = [64]'
    text = TINY.format(name=name, seeds=seeds, out=out or (tmp_path / "out"), grid=grid,
                       include=include) + textwrap.dedent(extra)
    p = tmp_path / f"{name}.toml"
    p.write_text(text)
    return p
