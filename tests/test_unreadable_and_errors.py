"""Unattended use (issue 12): unreadable run files, error rows, unreachable stores."""

from __future__ import annotations

import socket

import pyarrow.parquet as pq
import pytest

from study.cli import main
from study.spec import load_study
from study.storage import Store
from tests.studyfiles import write_study


def _stored(tmp_path, corrupt=1):
    """A study of 4 runs: 2 stored rows (failed), ``corrupt`` more as truncated files, the rest left."""
    p = write_study(tmp_path)
    study = load_study(p)
    store = Store(study.out, study.name)
    specs = study.runs()
    for s in specs[:2]:
        store.write_row({"run_id": s.run_id, "study": study.name, "status": "failed", "error": "boom"})
    bad = []
    for s in specs[2:2 + corrupt]:
        path = store.run_path(s.run_id)
        good = open(store.run_path(specs[0].run_id), "rb").read()
        open(path, "wb").write(good[: len(good) // 2])  # a writer killed mid-copy, say
        bad.append(path)
    return p, store, bad


def test_consolidate_names_unreadable_files_and_skips_them_on_request(tmp_path, capsys):
    p, store, bad = _stored(tmp_path)
    assert main(["consolidate", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read 1 run file(s): ") and bad[0] in err and "--skip-corrupt" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["consolidate", str(p), "--skip-corrupt"]) == 0
    out, err = capsys.readouterr()
    assert "2 rows consolidated" in out and f"skipped unreadable run file {bad[0]}" in err
    assert pq.read_table(f"{store.base}/runs.parquet").num_rows == 2


def test_status_lists_unreadable_files_instead_of_counting_them_left(tmp_path, capsys):
    p, store, bad = _stored(tmp_path)
    assert main(["status", str(p)]) == 4  # has failed runs (study.jobs.status.status_code)
    out = capsys.readouterr().out
    assert "4 runs: 0 done, 2 failed, 0 diverged, 1 left, 1 unreadable" in out
    assert "1 unreadable run file(s)" in out and bad[0] in out


# ------------------------------------------------------------------ unreachable object store

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the socket is: connections are refused


@pytest.fixture
def dead_s3(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_EC2_METADATA_DISABLED": "true",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    return (f"s3://bucket/prefix?endpoint_override=127.0.0.1:{_closed_port()}&scheme=http"
            "")


def test_status_on_an_unreachable_store_is_one_line(tmp_path, capsys, dead_s3):
    p = write_study(tmp_path)
    assert main(["status", str(p), "--out", dead_s3]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the output s3://bucket/prefix") and len(err.strip().splitlines()) == 1


def test_rank_on_an_unreachable_store_is_one_line(capsys, dead_s3):
    from analysis.cli import main as analysis
    assert analysis(["rank", dead_s3]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read s3://bucket/prefix") and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ error rows from Ray

ANSI_TRACE = ("\x1b[36mray::run_one()\x1b[39m (pid=1, ip=127.0.0.1)\n"
              "  File \"study/runner.py\", line 9, in execute\n"
              "    \x1b[1mraise ValueError\x1b[0m\n"
              "ValueError: the data is bad\nsecond line of the message")


class _FakeRay:
    """Just enough of `ray` for `fan_out`: every task fails with a RayTaskError."""
    def __init__(self):
        import ray.exceptions
        self.exceptions = ray.exceptions

    def is_initialized(self):
        return True

    def remote(self, task):
        fake = self

        class Remote:
            def options(self, **kw):
                return self

            def remote(self, *args):
                return object()
        fake.task = task
        return Remote()

    def wait(self, refs, num_returns=1, timeout=None):
        return refs[:1], refs[1:]

    def get(self, ref):
        cause = ValueError("the data is bad\nsecond line of the message")
        raise self.exceptions.RayTaskError("run_one", ANSI_TRACE, cause, proctitle="ray::run_one",
                                               pid=1, ip="127.0.0.1")

    def cluster_resources(self):
        return {"CPU": 1}

    def nodes(self):
        return [{"Alive": True, "Resources": {"CPU": 1}}]


def test_error_text_is_plain_with_type_message_and_traceback():
    import ray.exceptions

    from study.errors import error_text
    text = error_text(ray.exceptions.RayTaskError("run_one", ANSI_TRACE, ValueError("the data is bad\nsecond"),
                                                           proctitle="ray::run_one", pid=1, ip="127.0.0.1"))
    assert "\x1b" not in text
    assert text.splitlines()[0] == "ValueError: the data is bad second"
    assert 'File "study/runner.py", line 9, in execute' in text and "raise ValueError" in text


def test_lost_run_row_keeps_the_whole_plain_error(tmp_path, monkeypatch):
    import sys

    from study.executor import Executor
    from study.jobs.run import run_study
    monkeypatch.setitem(sys.modules, "ray", _FakeRay())
    study = load_study(write_study(tmp_path, grid="width = [16]\nlr = [0.1]"))
    s = run_study(study, Executor(progress=False))
    assert s.failed == 1 and s.failures == [f"{study.runs()[0].run_id}: ValueError: the data is bad second line "
                                            "of the message"]
    row = pq.read_table(Store(study.out, study.name).run_path(study.runs()[0].run_id)).to_pylist()[0]
    assert row["status"] == "failed" and "\x1b" not in row["error"]
    assert row["error"].startswith("ValueError: the data is bad second line of the message\n")
    assert 'File "study/runner.py", line 9, in execute' in row["error"] and "raise ValueError" in row["error"]
