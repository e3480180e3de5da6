"""`study measure` and `analysis score`: measures computed on stored networks from their
checkpoints, never training; resumable; a user's own measure ranked with the rest."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time

import polars as pl
import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

from analysis.cli import main as analysis_main
from study.cli import main as study_main
from study.executor import Executor
from study.jobs.measure import Want, measure_study
from study.jobs.run import run_study
from study.measures import KNOBS
from study.measures.registry import Knob, expected_settings, select
from study.spec import load_study
from study.storage import Store
from tests.studyfiles import write_study

TWO = "width = [16, 32]\nlr = [0.1]\nbatch_size = [64]"
M = "log_prod_spec_op"  # cheap, with knobs


def rows(out, name="tiny") -> dict[str, dict]:
    df = pl.read_parquet(out / name / "runs" / "*.parquet")
    return {r["run_id"]: r for r in df.to_dicts()}


def same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def test_an_added_measure_keeps_the_ids_and_missing_computes_exactly_its_column(tmp_path):
    old = load_study(write_study(tmp_path, grid=TWO, include='["params", "path_norm"]'))
    assert run_study(old, Executor(serial=True, progress=False)).ok == 2
    before = rows(tmp_path / "out")
    nets = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "tiny" / "nets").iterdir()}
    p = write_study(tmp_path, grid=TWO, include=f'["params", "path_norm", "{M}"]')
    new = load_study(p)
    assert [s.run_id for s in new.runs()] == [s.run_id for s in old.runs()]

    r = subprocess.run([sys.executable, "-m", "study", "measure", str(p), "--missing", "--no-progress"],
                       capture_output=True, text=True, timeout=300)  # local Ray
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 to measure (2 values" in r.stdout and "measured 2 of 2 networks" in r.stdout
    after = rows(tmp_path / "out")
    assert set(after) == set(before)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "tiny" / "nets").iterdir()} == nets
    new_cols = {f"measure.{M}", f"measure_cfg.{M}", f"seconds.{M}", "remeasured_at"}
    for rid, a in after.items():
        b = before[rid]
        assert set(a) == set(b) | new_cols
        changed = {k for k in b if not same(a[k], b[k])}
        assert changed <= {"measure_seconds"}, changed  # nothing else moved, training included
        assert a["measure_seconds"] >= b["measure_seconds"]
        assert a[f"measure_cfg.{M}"] == expected_settings(select([M]), {}, 0)[M]

    # the same measure in a fresh run of a copy of the study: the same value
    copy = load_study(write_study(tmp_path, name="copy", grid=TWO, include=f'["params", "path_norm", "{M}"]'))
    run_study(copy, Executor(serial=True, progress=False))
    fresh = rows(tmp_path / "out", "copy")
    assert sorted(fresh) == sorted(after)
    for rid in after:
        assert after[rid][f"measure.{M}"] == fresh[rid][f"measure.{M}"]
    again = subprocess.run([sys.executable, "-m", "study", "measure", str(p), "--no-progress", "--serial"],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "nothing to compute" in again.stdout, again.stdout + again.stderr


def test_a_changed_knob_default_marks_rows_stale_and_stale_recomputes_exactly_those(tmp_path, monkeypatch):
    study = load_study(write_study(tmp_path, grid=TWO, include=f'["{M}", "params"]'))
    assert run_study(study, Executor(serial=True, progress=False)).ok == 2
    before = rows(tmp_path / "out")
    k = KNOBS["spec_op_rtol"]
    monkeypatch.setitem(KNOBS, k.name, Knob(k.name, k.default * 100, k.doc))
    assert measure_study(study, Want(missing=True), Executor(serial=True, progress=False)).todo == 0
    s = measure_study(study, Want(stale=True), Executor(serial=True, progress=False))
    assert (s.rows, s.todo, s.pairs, s.computed, s.failures) == (2, 2, 2, 2, [])
    after = rows(tmp_path / "out")
    want = expected_settings(select([M]), {}, 0)[M]
    for rid, a in after.items():
        b = before[rid]
        assert a[f"measure_cfg.{M}"] == want != b[f"measure_cfg.{M}"]
        changed = {c for c in b if not same(a[c], b[c])}
        assert changed <= {f"measure.{M}", f"measure_cfg.{M}", f"seconds.{M}", "measure_seconds"}
        assert f"measure_cfg.{M}" in changed and a["remeasured_at"]
    assert measure_study(study, Want(stale=True), Executor(serial=True, progress=False)).todo == 0
    # named and up to date: skipped unless forced
    assert measure_study(study, Want((M,)), Executor(serial=True, progress=False)).todo == 0
    assert measure_study(study, Want((M,), force=True), Executor(serial=True, progress=False)).computed == 2


def test_sigkill_mid_measure_loses_nothing_and_a_rerun_finishes(tmp_path):
    grid = "width = [16, 24, 32, 40]\nlr = [0.1]\nbatch_size = [64]"
    study = load_study(write_study(tmp_path, grid=grid, include='["params"]'))
    assert run_study(study, Executor(serial=True, progress=False)).ok == 4
    p = write_study(tmp_path, grid=grid, include='["params", "flatness"]')
    cmd = [sys.executable, "-m", "study", "measure", str(p), "--missing", "--serial", "--no-progress"]
    runs = tmp_path / "out" / "tiny" / "runs"

    def measured() -> int:
        n = 0
        for f in runs.glob("*.parquet"):
            try:
                n += "remeasured_at" in pq.read_schema(f).names
            except Exception:  # noqa: BLE001 - a file being replaced: count it next time
                pass
        return n

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and measured() < 1:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    done = measured()
    assert 1 <= done < 4
    for f in runs.glob("*.parquet"):  # whole files only, every row kept
        assert pq.read_table(f).num_rows == 1
    assert sorted(f.stem for f in runs.iterdir()) == sorted(s.run_id for s in study.runs())
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{4 - done} to measure" in r.stdout and f"{done} up to date" in r.stdout
    flat = [m.name for m in select(["flatness"])]
    for row in rows(tmp_path / "out").values():
        assert all(f"measure.{n}" in row and row[f"measure_cfg.{n}"] for n in flat)
    assert Store(study.out, study.name).statuses() == {s.run_id: "ok" for s in study.runs()}


def test_clear_errors_and_networks_without_a_checkpoint(tmp_path, capsys):
    p = write_study(tmp_path, grid=TWO, include='["params"]')
    assert study_main(["measure", str(p), "--measures", "params,nope", "--serial"]) == 2
    err = capsys.readouterr().err
    assert "unknown measure or family 'nope' in --measures" in err and "path_norm" in err
    assert study_main(["measure", str(p), "--serial"]) == 2
    assert "no stored runs" in capsys.readouterr().err
    old = Store(str(tmp_path / "out"), "tiny")
    old.write_row({"run_id": "x" * 16, "status": "ok", "config": json.dumps({"schema": 1})})
    assert study_main(["measure", str(p), "--serial"]) == 2
    assert "study migrate" in capsys.readouterr().err
    off = write_study(tmp_path, name="off", grid=TWO, include='["params"]')
    off.write_text(off.read_text().replace("[study]\n", "[study]\nkeep_networks = false\n", 1))
    assert run_study(load_study(off), Executor(serial=True, progress=False)).ok == 2
    off.write_text(off.read_text().replace('["params"]', '["params", "path_norm"]'))
    assert study_main(["measure", str(off), "--serial", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "2 without a checkpoint" in out and "nothing to compute" in out


USER = '''
import torch

def final_sq_norm(model, data, init):
    """The squared norm of the final weights."""
    x, y = data
    assert len(x) == len(y) == 300 and set(init) == set(model.state_dict())
    return float(sum((p.detach().double() ** 2).sum() for p in model.parameters()))

def fails_on_wide(model, data, init):
    if next(model.parameters()).shape[0] == 32:
        raise RuntimeError("too wide")
    return 1.0
'''


def test_a_user_measure_is_scored_and_ranked(tmp_path, capsys):
    study = load_study(write_study(tmp_path, include='["params", "path_norm"]'))  # 4 networks
    assert run_study(study, Executor(serial=True, progress=False)).ok == 4
    user = tmp_path / "mine.py"
    user.write_text(USER)
    runs = tmp_path / "out" / "tiny" / "runs"
    table, report = tmp_path / "t.csv", tmp_path / "r.html"
    code = analysis_main(["score", f"{user}:final_sq_norm", str(runs), "--serial", "--no-progress",
                          "--boots", "0", "--out", str(table), "--report", str(report)])
    out = capsys.readouterr().out
    assert code == 0
    ranked = pl.read_csv(table)["measure"].to_list()
    assert {"final_sq_norm", "params", "path_norm"} <= set(ranked) and "final_sq_norm" in out
    assert "final_sq_norm" in report.read_text()

    from analysis.score import score
    df, reasons, no_net = score(f"{user}:final_sq_norm", str(runs), executor=Executor(serial=True, progress=False))
    assert not reasons and not no_net
    for rid, v in zip(df["run_id"], df["measure.final_sq_norm"]):
        final = {k[len("final/"):]: t for k, t in load_file(runs.parent / "nets" / f"{rid}.safetensors").items()
                 if k.startswith("final/")}
        assert v == pytest.approx(sum(float((t.double() ** 2).sum()) for t in final.values()), rel=1e-12)

    # a failing function: NaN with the reason on those networks, not a crash
    df, reasons, _ = score(f"{user}:fails_on_wide", str(runs), name="w", executor=Executor(serial=True, progress=False))
    wide = {r["run_id"] for r in df.to_dicts() if r["hp.width"] == 32}
    assert set(reasons) == wide and all("too wide" in r for r in reasons.values())
    assert all(math.isnan(v) == (rid in wide) for rid, v in zip(df["run_id"], df["measure.w"]))
    # a missing file or function: one clear error, exit 2
    assert analysis_main(["score", f"{tmp_path}/absent.py:f", str(runs), "--serial"]) == 2
    assert "absent.py: no such file" in capsys.readouterr().err
    assert analysis_main(["score", f"{user}:nope", str(runs), "--serial"]) == 2
    err = capsys.readouterr().err
    assert "has no function 'nope'" in err and "final_sq_norm" in err


def test_measure_backfills_the_training_curve_of_rows_written_before_it(tmp_path):
    study = load_study(write_study(tmp_path, grid=TWO, include=f'["{M}", "params"]'))
    assert run_study(study, Executor(serial=True, progress=False)).ok == 2
    curve = "artifact.train_loss_curve"
    runs = tmp_path / "out" / "tiny" / "runs"
    written = {}
    for f in runs.glob("*.parquet"):  # an older row: the same, without the curve
        t = pq.read_table(f)
        written[f.stem] = t.column(curve).to_pylist()[0]
        pq.write_table(t.drop_columns([curve]), f)
    assert all(len(v) >= 1 for v in written.values())
    assert measure_study(study, Want((M,), force=True), Executor(serial=True, progress=False)).computed == 2
    after = rows(tmp_path / "out")
    assert {rid: r[curve] for rid, r in after.items()} == written  # from the checkpoint's training log
