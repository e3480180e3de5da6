"""Shared fixtures: tiny study files, and one real mini-study run once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Tiny networks run much faster on one thread, above all on a loaded 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import torch
    torch.set_num_threads(1)
except ImportError:  # analysis-only environments
    pass

MINI_RUNS_STUDY = """
[study]
name = "minitest"
dataset = "digits"
model = "mlp"
seeds = [0, 1]
out = "{out}"

[data]
train_size = 400

[train]
target_loss = 0.05
max_epochs = 80

[grid]
width = [16, 48]
lr = [0.1, 0.2]
batch_size = [32, 128]

[measures]
include = ["all"]
exclude = ["keskar_sharpness_5e-4", "adaptive_sharpness_l2", "local_entropy"]

[measures.knobs]   # cheaper settings: this fixture feeds the report and notebook tests
keskar_maxiter = 3
flat_depth = 8
slq_steps = 16
adaptive_steps = 5
fisher_examples = 128
loss_surface_points = 5   # the optional 2-D loss surface, so that the report draws it
"""


@pytest.fixture(scope="session")
def mini_runs(tmp_path_factory) -> Path:
    """A real small study (16 networks, nearly every measure), run serially once per session.

    Returns the study's folder (holding runs/). The report and notebook tests read it.
    """
    from study.executor import Executor
    from study.jobs.run import run_study
    from study.spec import load_study
    d = tmp_path_factory.mktemp("mini_runs")
    p = d / "minitest.toml"
    p.write_text(MINI_RUNS_STUDY.format(out=d / "out"))
    s = run_study(load_study(p), Executor(serial=True, progress=False))
    assert s.failed == 0 and s.ran == 16, s
    return d / "out" / "minitest"


@pytest.fixture
def py():
    return sys.executable


# -- the case matrix of the measure tests (tests/cases.py) ----------------------------------

try:
    from tests.cases import CASES, make
except ImportError:  # analysis-only environments (no torch)
    CASES, make = [], None


@pytest.fixture(params=CASES, ids=lambda spec: spec.id)
def case(request):
    """One small trained network with its data, initial state and training log; built
    once per session (tests/cases.py)."""
    return make(request.param)
