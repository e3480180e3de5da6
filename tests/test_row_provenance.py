"""What a row says about where it came from (issue 13 item 7): library versions and the git
commit, the CPU or GPU, start and finish as timestamps (old string rows still read), and
`load_runs` decoding the categorical and JSON columns."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from analysis.claims import setting
from analysis.load import load_runs, read_runs
from study.runner import device_name, versions
from study.schema import TIMESTAMP, now
from study.storage import Store, row_table
from study.version import NOT_GIT, git_commit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_versions_name_the_libraries_and_the_commit():
    v = versions()
    for lib in ("study", "schema", "python", "torch", "numpy", "torchvision", "ray", "polars", "pyarrow"):
        assert v.get(lib), lib
    try:
        import numba
        assert v["numba"] == numba.__version__
    except ImportError:
        assert "numba" not in v
    head = git_commit()
    assert head == NOT_GIT or (len(head) == 40 and int(head, 16) >= 0)
    if os.path.isdir(os.path.join(ROOT, ".git")) or os.path.isfile(os.path.join(ROOT, ".git")):
        assert head != NOT_GIT
    assert v["git"] == head and git_commit() is head  # once per process


def test_device_names_the_cpu_model():
    name = device_name(torch.device("cpu"))
    assert name.startswith("cpu (") and "cores" in name and name != "cpu ()"


def test_device_names_the_gpu_and_count(monkeypatch):  # no GPU here: torch.cuda stubbed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H200")
    assert device_name(torch.device("cuda")) == "cuda (NVIDIA H200 × 2)"


def row(run_id: str, started, dataset="digits", status="ok", **extra) -> dict:
    return {"run_id": run_id, "study": "s", "dataset": dataset, "model": "mlp", "seed": 0,
            "status": status, "converged": True, "gap": 0.1, "measure.a": 1.0, "hp.lr": 0.1,
            "config": json.dumps({"train": {"momentum": 0.9, "epochs": 3}, "hp": {"lr": 0.1}}),
            "versions": json.dumps({"study": "0.1.0"}),
            "nan_reasons": json.dumps({"a": "why"}), "started_at": started, "finished_at": started,
            **extra}


def test_times_are_timestamps_and_old_string_rows_still_read(tmp_path):
    new = row_table(row("new", now()))
    assert new.schema.field("started_at").type == TIMESTAMP
    store = Store(str(tmp_path), "s")
    store.write_row_table(new)
    old = row("old", "2025-01-02T03:04:05+00:00", dataset="mnist")  # as rows were written before
    store.write_row_table(pa.table({k: pa.array([v]) for k, v in old.items()}))
    assert pq.read_table(store.run_path("old")).schema.field("started_at").type == pa.string()
    for df in (read_runs(tmp_path / "s"), pl.from_arrow(store.read_all())):
        assert df.schema["started_at"] == pl.Datetime("us", "UTC"), df.schema["started_at"]
        when = dict(zip(df["run_id"], df["started_at"]))
        assert when["old"] == datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
        assert abs((datetime.now(timezone.utc) - when["new"]).total_seconds()) < 600
    path, n = store.consolidate()
    assert n == 2 and pq.read_table(path).schema.field("finished_at").type == TIMESTAMP


def test_load_runs_decodes_categories_and_json(tmp_path):
    store = Store(str(tmp_path), "s")
    store.write_row(row("r1", now()))
    store.write_row(row("r2", now(), dataset="mnist", config=json.dumps({"data": {"momentum": 0.5}}),
                        nan_reasons="{}"))
    df = load_runs(tmp_path / "s")
    for c in ("dataset", "model", "status"):
        assert df.schema[c] == pl.Categorical, c
    for c in ("config", "versions", "nan_reasons"):
        assert isinstance(df.schema[c], pl.Struct), c
    df = df.sort("run_id")
    assert df["config"].struct.field("train").struct.field("epochs").to_list() == [3, None]
    assert df["nan_reasons"].struct.field("a").to_list() == ["why", None]
    assert setting(df, "momentum") == [0.9, 0.5]  # claims read the decoded config as they read the JSON
    assert df.filter(pl.col("dataset") == "mnist").height == 1
    raw = load_runs(tmp_path / "s", decoded=False)
    assert raw.schema["config"] == pl.String and raw.schema["dataset"] == pl.String
    assert setting(raw, "momentum") == [0.9, 0.5]
