"""bench/gpu_check.py on the CPU: the whole pipeline (train, measure twice, compare) on a
tiny NiN, a determinism check that must pass; and its agreement rule on hand cases."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from study.measures import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import gpu_check  # noqa: E402


def test_cpu_tiny_runs_and_agrees(tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--size", "tiny",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    assert "measure" in text and "rel diff" in text and "cpu#2" in text
    lines = {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.split()}
    for name in REGISTRY:  # one row per measure, ending in its verdict
        assert lines[name][-1] == "ok", lines[name]
    assert "disagreements 0" in text and "all agree" in text
    fig = json.loads(out.read_text())
    rows = fig["networks"][0]["rows"]
    assert [r["measure"] for r in rows] == list(REGISTRY)
    assert fig["networks"][0]["converged"]
    # the same CPU twice: bit-identical, not merely within tolerance
    assert all(r["identical"] for r in rows), [r["measure"] for r in rows if not r["identical"]]
    assert sum(math.isfinite(r["cpu"]) for r in rows) >= 50


def test_agreement_rule():
    assert gpu_check.agree(1.0, 1.00005, "closed")[0]
    assert not gpu_check.agree(1.0, 1.001, "closed")[0]
    assert gpu_check.agree(100.0, 109.0, "searched")[0]
    assert not gpu_check.agree(100.0, 112.0, "searched")[0]
    assert gpu_check.agree(0.30, 0.34, "fraction")[0] and not gpu_check.agree(0.3, 0.36, "fraction")[0]
    assert gpu_check.agree(math.nan, math.nan, "closed") == (True, 0.0)
    assert gpu_check.agree(math.nan, 1.0, "searched") == (False, math.inf)
    assert gpu_check.agree(0.0, 0.0, "closed") == (True, 0.0)
    assert {gpu_check.kind(n) for n in REGISTRY} <= set(gpu_check.TOLERANCE)


def test_cuda_unavailable_is_exit_2(monkeypatch):
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--device", "cuda", "--size", "tiny"]) == 2
