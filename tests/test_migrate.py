"""`study migrate` on a stored old-schema study (tests/golden/old_schema: written by the code
at 415e3ab, run-id schema 1, from tiny.toml and then tiny_optim.toml, which measures one of
the same networks again under another id)."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study import SCHEMA_VERSION
from study.cli import main as study_main
from study.executor import Executor
from study.jobs.measure import Want, measure_study
from study.jobs.migrate import migrate
from study.jobs.run import run_study
from study.lease import LEASE_TIMEOUT_S
from study.schema import TIMES, TIMESTAMP
from study.spec import RunSpec, load_study
from study.storage import OldSchemaError, Store
from tests.studyfiles import write_study

OLD = Path(__file__).resolve().parent / "golden" / "old_schema"


def copy_old(tmp_path: Path) -> Store:
    shutil.copytree(OLD / "out", tmp_path / "out")
    return Store(str(tmp_path / "out"), "tiny")


def rows(store: Store) -> dict[str, dict]:
    return {Path(p).stem: pq.read_table(p).to_pylist()[0] for p in store.run_files()}


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def test_the_stored_old_study_is_small_and_old():
    assert sum(f.stat().st_size for f in OLD.rglob("*") if f.is_file()) < 200_000
    old = rows(Store(str(OLD / "out"), "tiny"))
    assert len(old) == 5 and all(json.loads(r["config"])["schema"] == 1 for r in old.values())


def test_run_and_status_refuse_an_old_schema_output(tmp_path, capsys):
    store = copy_old(tmp_path)
    study = load_study(OLD / "tiny.toml").with_out(store.out)
    with pytest.raises(OldSchemaError, match="5 stored rows"):
        run_study(study, Executor(serial=True, progress=False))
    for cmd in ("run", "status"):
        assert study_main([cmd, str(OLD / "tiny.toml"), "--out", store.out, "--serial"][:5 if cmd == "run" else 4]) == 2
        err = capsys.readouterr().err
        assert "5 stored rows" in err and f"study migrate {OLD / 'tiny.toml'}" in err
    assert len(store.run_files()) == 5  # nothing touched


def test_migrate_keeps_every_row_once_under_the_new_ids(tmp_path, capsys):
    store = copy_old(tmp_path)
    old = rows(store)
    assert study_main(["migrate", str(OLD / "tiny.toml"), "--out", store.out]) == 0
    out = capsys.readouterr().out
    assert "5 old-schema rows" in out and "4 rows written (1 merged" in out and "5 old files deleted" in out
    new = rows(store)
    # the new ids are what this code computes for the same study file
    assert set(new) == {s.run_id for s in load_study(OLD / "tiny.toml").runs()}
    for rid, r in new.items():
        spec = RunSpec.from_json(r["config"])
        assert r["run_id"] == rid == spec.run_id and json.loads(r["config"])["schema"] == SCHEMA_VERSION
    # every old row is in its network's new row: each of its measures, with its value
    for r in old.values():
        target = new[RunSpec.from_json(r["config"]).run_id]
        for k, v in r.items():
            if k.startswith(("measure.", "hp.")) or k in ("train_acc", "test_loss", "steps", "seed"):
                assert _same(target[k], v), k
    # the network measured twice: both measure sets, one row; the later row wins shared columns
    twice = [rid for rid in new if new[rid]["measure.params"] is not None
             and new[rid].get("measure.step_size_sum") is not None]
    assert len(twice) == 1
    merged = new[twice[0]]
    later = max((r for r in old.values() if RunSpec.from_json(r["config"]).run_id == twice[0]),
                key=lambda r: r["finished_at"])
    # migrated rows hold their time columns as timestamps (the old ones: ISO strings)
    assert merged["finished_at"] == datetime.fromisoformat(later["finished_at"])
    assert merged["measure_seconds"] == later["measure_seconds"]
    reasons = json.loads(merged["nan_reasons"])
    assert all(set(json.loads(r["nan_reasons"])) <= set(reasons) for r in old.values()
               if RunSpec.from_json(r["config"]).run_id == twice[0])
    # a rerun is a no-op; a study run finds everything stored
    before = {p: Path(p).read_bytes() for p in store.run_files()}
    again = migrate(store)
    assert (again.old_rows, again.written, again.deleted) == (0, 0, 0)
    assert {p: Path(p).read_bytes() for p in store.run_files()} == before
    s = run_study(load_study(OLD / "tiny.toml").with_out(store.out), Executor(serial=True, progress=False))
    assert s.ran == 0 and s.stored_before == 4


def test_a_migration_killed_half_way_finishes(tmp_path):
    done = copy_old(tmp_path / "done")
    migrate(done)
    want = rows(done)
    # killed half-way: the merged row written and one of its two old files deleted; another
    # network's new row written, its old file not yet deleted; the others not begun
    half = copy_old(tmp_path / "half")
    old = rows(half)
    by_new: dict[str, list[str]] = {}
    for stem, r in old.items():
        by_new.setdefault(RunSpec.from_json(r["config"]).run_id, []).append(stem)
    pair = next(rid for rid, stems in by_new.items() if len(stems) == 2)
    single = next(rid for rid, stems in by_new.items() if len(stems) == 1)
    for rid in (pair, single):
        shutil.copy(done.run_path(rid), half.run_path(rid))
    Path(half.run_path(by_new[pair][0])).unlink()
    leftover = Path(half.runs_dir, ".tmp-leftover.parquet-123")
    leftover.write_bytes(b"partial")
    then = time.time() - LEASE_TIMEOUT_S - 1  # a killed writer's: only stale temporaries are removed
    os.utime(leftover, (then, then))
    r = migrate(half)
    assert (r.old_rows, r.written, r.deleted) == (4, 2, 4)  # the rows already written: kept as they are
    got = rows(half)
    assert set(got) == set(want)
    for rid in want:
        assert set(got[rid]) == set(want[rid]) and all(_same(got[rid][k], want[rid][k]) for k in want[rid]), rid
    assert sorted(p.name for p in Path(half.runs_dir).iterdir()) == sorted(f"{rid}.parquet" for rid in want)


def _as_text(path: str, remeasured: str = "2026-01-02T03:04:05+00:00") -> None:
    """The row at ``path`` as rows were written before its time columns were timestamps."""
    t = pq.read_table(path)
    for c in ("started_at", "finished_at"):
        t = t.set_column(t.column_names.index(c), c, pa.array([t[c][0].as_py().isoformat()]))
    if "remeasured_at" in t.column_names:
        t = t.drop_columns(["remeasured_at"])
    pq.write_table(t.append_column("remeasured_at", pa.array([remeasured])), path)


def test_time_columns_stored_as_text_are_read_migrated_and_merged_as_timestamps(tmp_path, capsys):
    p = write_study(tmp_path, include='["params"]', grid="width = [8]\nlr = [0.1]\nbatch_size = [64]")
    study = load_study(p)
    assert run_study(study, Executor(serial=True, progress=False)).ok == 1
    store = Store(study.out, study.name)
    path, = store.run_files()
    before = pq.read_table(path).to_pylist()[0]
    _as_text(path)
    assert pq.read_schema(path).field("remeasured_at").type == pa.string()
    read = store.read_all()  # reading casts the text
    assert all(read.schema.field(c).type == TIMESTAMP for c in TIMES)
    assert read["remeasured_at"][0].as_py() == datetime.fromisoformat("2026-01-02T03:04:05+00:00")
    # study migrate rewrites the row typed, every other column kept; a rerun does nothing
    assert study_main(["migrate", str(p)]) == 0
    assert "1 rows in" in capsys.readouterr().out
    row = pq.read_table(path)
    assert all(row.schema.field(c).type == TIMESTAMP for c in TIMES)
    after = row.to_pylist()[0]
    assert after["finished_at"] == before["finished_at"] and after["train_acc"] == before["train_acc"]
    data = Path(path).read_bytes()
    assert study_main(["migrate", str(p)]) == 0 and "nothing to do" in capsys.readouterr().out
    assert Path(path).read_bytes() == data
    # study measure merges into a row whose remeasured_at is text: now a timestamp
    _as_text(path)
    assert measure_study(study, Want(force=True), Executor(serial=True, progress=False)).computed == 1
    row = pq.read_table(path)
    assert all(row.schema.field(c).type == TIMESTAMP for c in TIMES)
    assert row["remeasured_at"][0].as_py() > datetime.fromisoformat("2026-01-02T03:04:05+00:00")
