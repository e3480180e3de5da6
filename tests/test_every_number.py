"""Every number from the network it names (issue 23, the second outside attack): checkpoints
identified and verified on load, a run id counted once, a user's score function unable to
change the next network's data, and the commands that read or rewrite rows failing cleanly.

One tiny study (digits, MLP, seeds 0 and 1) is trained once for the module; each test works on
its own copy of the output."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import polars as pl
import pyarrow.parquet as pq
import pytest

from study.executor import Executor
from study.jobs.run import run_study
from study.spec import load_study
from study.storage import Store

STUDY = """
[study]
name = "tiny"
dataset = "digits"
model = "mlp"
seeds = [0, 1]
out = "{out}"

[train]
target_loss = 0.3
max_epochs = 15

[grid]
width = [16]
lr = [0.1]
batch_size = [64]

[measures]
include = ["params", "path_norm"]
"""


def write_study(folder, out):
    """The study file (all of digits' training set: the data the cache holds)."""
    p = folder / "tiny.toml"
    p.write_text(STUDY.format(out=out))
    return p


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("trained")
    study = load_study(write_study(base, base / "out"))
    assert run_study(study, Executor(serial=True, progress=False)).ok == 2
    return base / "out"


@pytest.fixture
def copy(trained, tmp_path):
    """(study file, output) of a fresh copy of the trained study."""
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    return write_study(tmp_path, out), out


def rows(out) -> dict[str, dict]:
    df = pl.concat([pl.read_parquet(f) for f in sorted((out / "tiny" / "runs").glob("*.parquet"))],
                   how="diagonal_relaxed")
    return {r["run_id"]: r for r in df.to_dicts()}


def by_seed(out) -> dict[int, str]:
    return {r["seed"]: rid for rid, r in rows(out).items()}


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)


# --- 1. a checkpoint is the row's network, verified on load ---------------------------------

def test_swapped_checkpoints_fail_their_rows_and_change_no_value(copy):
    p, out = copy
    ids = by_seed(out)
    nets = out / "tiny" / "nets"
    a, b = nets / f"{ids[0]}.safetensors", nets / f"{ids[1]}.safetensors"
    tmp = nets / "swap"
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    before = rows(out)
    r = cli("-m", "study", "measure", str(p), "--measures", "path_norm", "--force", "--serial", "--no-progress")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.count("is not the checkpoint of") == 2, r.stdout
    after = rows(out)
    for rid in ids.values():  # the rows stay as they were: no value traded places
        assert after[rid]["measure.path_norm"] == before[rid]["measure.path_norm"]
    # analysis score: NaN on both, with the reason
    fn = out.parent / "m.py"
    fn.write_text("def w(model, data, init):\n    return float(sum(p.abs().sum() for p in model.parameters()))\n")
    s = cli("-m", "analysis", "score", f"{fn}:w", str(out / "tiny"), "--serial", "--no-progress", "--boots", "0")
    assert s.returncode != 0, s.stdout + s.stderr
    assert "is not the checkpoint of" in s.stderr and "0 of 2 networks scored" in s.stdout, s.stdout + s.stderr


def test_a_flipped_bit_or_blown_up_weight_in_a_checkpoint_fails_its_row(copy):
    import torch
    from safetensors.torch import load, save

    p, out = copy
    ids = by_seed(out)
    f0 = out / "tiny" / "nets" / f"{ids[0]}.safetensors"
    data = bytearray(f0.read_bytes())
    data[-3] ^= 0x40  # an exponent bit of the last final weight
    f0.write_bytes(bytes(data))
    # seed 1: rewritten whole with its digest recomputed, one weight blown up (what training calls diverged)
    store = Store(str(out), "tiny")
    init, final, meta = store.read_net(ids[1], verify=False)
    k = next(k for k in final if k.endswith("weight"))
    final[k] = final[k].clone()
    final[k].view(-1)[0] = 3e20
    store.write_net(ids[1], init, final, {"config": meta["config"], "train_log": meta["train_log"]})
    before = rows(out)
    r = cli("-m", "study", "measure", str(p), "--measures", "path_norm", "--force", "--serial", "--no-progress")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "digest" in r.stdout and "blew up" in r.stdout, r.stdout
    after = rows(out)
    for rid in ids.values():
        assert after[rid]["measure.path_norm"] == before[rid]["measure.path_norm"]
    del torch, load, save


def test_a_checkpoint_without_identity_or_digest_still_loads_with_a_note(copy):
    from safetensors.torch import load, save

    p, out = copy
    ids = by_seed(out)
    f0 = out / "tiny" / "nets" / f"{ids[0]}.safetensors"
    raw = f0.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    meta = json.loads(raw[8:8 + n])["__metadata__"]
    f0.write_bytes(save(load(raw), metadata={"config": meta["config"], "train_log": meta["train_log"]}))
    before = rows(out)
    r = cli("-m", "study", "measure", str(p), "--measures", "path_norm", "--force", "--serial", "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 checkpoint written before checkpoints carried their run id and digest" in r.stdout, r.stdout
    after = rows(out)
    assert after[ids[0]]["measure.path_norm"] == before[ids[0]]["measure.path_norm"]


# --- 2. a run id counts once ------------------------------------------------------------------

def test_duplicate_rows_count_once_and_conflicting_ones_are_refused(copy, tmp_path):
    from analysis.cli import main as analysis_main

    p, out = copy
    dup = tmp_path / "dup"
    shutil.copytree(out, dup)
    claims = []
    for srcs in ([out / "tiny"], [out / "tiny", dup / "tiny"]):
        csv = tmp_path / f"c{len(srcs)}.csv"
        r = cli("-m", "analysis", "claims", *map(str, srcs), "--boots", "50", "--out", str(csv))
        assert r.returncode == 0, r.stderr[-2000:]
        claims.append(pl.read_csv(csv))
        if len(srcs) == 2:
            assert "counted once" in r.stderr, r.stderr
    assert claims[0].equals(claims[1])  # a plain copy of the study changes nothing

    ranks = []
    runs = out / "tiny" / "runs"
    rid = by_seed(out)[0]
    for stray in (False, True):
        if stray:
            shutil.copy(runs / f"{rid}.parquet", runs / f"{rid} (copy).parquet")
        csv = tmp_path / f"r{stray}.csv"
        assert analysis_main(["rank", str(runs), "--boots", "0", "--out", str(csv), "-q"]) == 0
        ranks.append(pl.read_csv(csv))
    assert ranks[0].equals(ranks[1])
    r = cli("-m", "study", "consolidate", str(p))
    assert r.returncode == 0, r.stderr
    assert pq.read_table(out / "tiny" / "runs.parquet").num_rows == 2

    t = pq.read_table(runs / f"{rid} (copy).parquet")
    t = t.set_column(t.column_names.index("gap"), "gap", [[0.5]])
    pq.write_table(t, runs / f"{rid} (copy).parquet")
    for cmd in (["-m", "analysis", "rank", str(runs), "--boots", "0"], ["-m", "study", "consolidate", str(p)]):
        r = cli(*cmd)
        assert r.returncode == 2, r.stdout + r.stderr
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and "stored twice with different values" in err[0] and "(copy).parquet" in err[0], err


# --- 3. a score function cannot change what the next network sees -------------------------------

MUTATE = """
def first_pixel_sum(model, data, init):
    x, y = data
    v = float(x.abs().sum()) + float(y.sum())
    x.mul_(2)
    y.zero_()
    for t in init.values():
        t.zero_()
    return v
"""


@pytest.mark.parametrize("executor", [Executor(serial=True, progress=False),
                                      Executor(max_in_flight=1, progress=False, announce=False)],
                         ids=["serial", "ray"])
def test_a_score_function_that_edits_its_inputs_changes_no_later_network(copy, executor):
    from analysis.score import score

    p, out = copy
    fn = out.parent / "mut.py"
    fn.write_text(MUTATE)
    df, reasons, _ = score(f"{fn}:first_pixel_sum", str(out / "tiny"), executor=executor)
    assert not reasons, reasons
    values = df["measure.first_pixel_sum"].to_list()
    assert len(values) == 2 and all(math.isfinite(v) for v in values)
    assert values[0] == values[1], values  # both networks saw the same data (their subset is all of it)


# --- 5. study measure stops on a lost lease or a failed write, as study run does ------------------

def _measure_then(monkeypatch, after_first):
    """`measure_one` as it is, with ``after_first()`` called once, after the first network."""
    import study.jobs.measure as job
    real, calls = job.measure_one, []

    def measure_one(*a, **k):
        res = real(*a, **k)
        if not calls:
            calls.append(1)
            after_first()
        return res
    monkeypatch.setattr(job, "measure_one", measure_one)


def test_study_measure_stops_when_its_lease_is_taken_over(copy, monkeypatch, capsys):
    import time

    import study.lease
    from study.cli import main as study_main

    p, out = copy
    lease = out / "tiny" / "lease.json"
    monkeypatch.setattr(study.lease, "HEARTBEAT_S", 0.05)

    def taken_over():
        held = json.loads(lease.read_text())
        lease.write_text(json.dumps({**held, "token": "another", "pid": 1, "heartbeat": time.time()}))
        time.sleep(0.5)  # ten heartbeats: the holder has seen it

    _measure_then(monkeypatch, taken_over)
    before = rows(out)
    code = study_main(["measure", str(p), "--measures", "path_norm", "--force", "--serial", "--no-progress"])
    said = capsys.readouterr().out
    assert code == 3, said
    assert "stopped: the lease of study 'tiny' was taken over" in said and "measured 1 of 2" in said, said
    after = rows(out)
    assert sum(after[r].get("remeasured_at") != before[r].get("remeasured_at") for r in after) == 1


def test_study_measure_stops_when_the_output_refuses_a_write(trained, tmp_path, monkeypatch, capsys):
    from study.cli import main as study_main
    from tests.test_unattended import remount

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        out = mnt / "out"
        shutil.copytree(trained, out)
        p = write_study(tmp_path, out)
        _measure_then(monkeypatch, lambda: remount(mnt, "ro"))
        code = study_main(["measure", str(p), "--measures", "path_norm", "--force", "--serial", "--no-progress"])
        said = capsys.readouterr().out
        assert code == 3, said
        assert "stopped: writing to the output failed" in said and "Read-only file system" in said, said
        assert "measured 1 of 2" in said and "run the same command again" in said, said
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# --- 6. analysis score: time limit, clean stops, one-line errors, odd returns, the user's row ------

USER = """
import sys
import time


def slow(model, data, init):
    time.sleep(120)
    return 1.0


def text(model, data, init):
    return "3.5"


def yes(model, data, init):
    return True


def leaves(model, data, init):
    sys.exit(3)


def fails(model, data, init):
    x, y = data
    raise ValueError("no such thing")


def path_norm(model, data, init):
    return 1.0


def width(model, data, init):
    return float(sum(p.numel() for p in model.parameters()))
"""


def score_cmd(out, fn, *extra):
    return ["-m", "analysis", "score", f"{out.parent / 'user.py'}:{fn}", str(out / "tiny"), "--serial",
            "--no-progress", "--boots", "0", *extra]


def test_score_limits_each_network_and_stops_cleanly_on_ctrl_c(copy):
    import signal
    import time

    p, out = copy
    (out.parent / "user.py").write_text(USER)
    t0 = time.monotonic()
    r = cli(*score_cmd(out, "slow", "--timeout", "1"))
    assert time.monotonic() - t0 < 60
    assert r.returncode == 1 and "ran past the time limit of 1 s" in r.stderr, r.stdout + r.stderr
    proc = subprocess.Popen([sys.executable, *score_cmd(out, "slow", "--timeout", "0")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)  # in the function by now
    proc.send_signal(signal.SIGINT)
    o, e = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in e and "interrupted" in e, o + e


def _score(capsys, argv) -> tuple[int, str, str]:
    """``analysis score`` in this process (serial): exit status, stdout, stderr."""
    from analysis.cli import main as analysis_main
    capsys.readouterr()
    code = analysis_main(argv[2:])
    got = capsys.readouterr()
    return code, got.out, got.err


def test_score_refuses_odd_returns_exits_and_clashing_names_and_reports_failures(copy, capsys):
    p, out = copy
    (out.parent / "user.py").write_text(USER)
    for fn, said in (("text", "returned str '3.5', not a number"), ("yes", "returned bool 'True', not a number"),
                     ("leaves", "the function called sys.exit(3)"), ("fails", "ValueError: no such thing")):
        code, o, e = _score(capsys, score_cmd(out, fn))
        assert code == 1, o + e
        assert "scored no network" in e and said in e, e
    assert f'File "{out.parent / "user.py"}", line 25' in e, e  # the failure's traceback
    code, o, e = _score(capsys, score_cmd(out, "path_norm"))
    assert code == 2 and "built-in measure" in e and "--name" in e, o + e
    (out.parent / "exits.py").write_text("import sys\nsys.exit(3)\n")
    code, o, e = _score(capsys, ["-m", "analysis", "score", f"{out.parent / 'exits.py'}:f", str(out / "tiny"), "--serial"])
    assert code == 2 and "called sys.exit(3) while being imported" in e, o + e


def test_score_prints_the_users_row_and_one_line_errors_and_honours_skip_corrupt(copy, capsys):
    p, out = copy
    (out.parent / "user.py").write_text(USER)
    (out / "tiny" / "runs" / "zz.parquet").write_bytes(b"PAR1 not a parquet file")
    code, o, e = _score(capsys, score_cmd(out, "width", "--top", "1"))
    assert code == 2 and "--skip-corrupt" in e, o + e
    code, o, e = _score(capsys, score_cmd(out, "width", "--top", "1", "--skip-corrupt"))
    assert code == 0, o + e
    assert "2 of 2 networks scored" in o and "width (yours): rank " in o, o
    (out / "tiny" / "runs" / "zz.parquet").unlink()
    shutil.copy(out / "tiny" / "runs" / f"{by_seed(out)[0]}.parquet", out.parent / "some.parquet")
    code, o, e = _score(capsys, ["-m", "analysis", "score", f"{out.parent / 'user.py'}:width",
                                 str(out.parent / "some.parquet"), "--serial"])
    assert code == 2 and len(e.strip().splitlines()) == 1, o + e
    f = out / "tiny" / "runs" / f"{by_seed(out)[1]}.parquet"
    t = pq.read_table(f)
    config = json.loads(t["config"][0].as_py())
    t = t.set_column(t.column_names.index("config"), "config", [[json.dumps({**config, "schema": 1})]])
    pq.write_table(t, f)
    code, o, e = _score(capsys, score_cmd(out, "width"))
    assert code == 2 and "study migrate" in e and "Traceback" not in e, o + e


# --- 7. a column of the wrong type: one line naming the file, or skipped ---------------------------

def test_a_row_with_a_column_of_the_wrong_type_is_named_in_one_line_or_skipped(copy, capsys):
    from analysis.cli import main as analysis_main
    from study.cli import main as study_main

    p, out = copy
    runs = out / "tiny" / "runs"
    bad = runs / f"{by_seed(out)[1]}.parquet"
    t = pq.read_table(bad)
    t = t.set_column(t.column_names.index("hp.lr"), "hp.lr", [["0.1"]])
    pq.write_table(t, bad)
    capsys.readouterr()

    def one_line(code, want=2):
        err = capsys.readouterr().err.strip().splitlines()
        err = [ln for ln in err if not ln.startswith("warning:")]
        assert code == want and len(err) == 1, err
        assert bad.name in err[0] and "hp.lr" in err[0] and "--skip-corrupt" in err[0], err
    one_line(study_main(["consolidate", str(p)]))
    one_line(study_main(["measure", str(p), "--measures", "path_norm", "--force", "--serial", "--no-progress"]))
    one_line(analysis_main(["rank", str(runs), "--boots", "0"]))
    one_line(analysis_main(["report", str(runs), "--out", str(out.parent / "r.html"), "--boots", "0"]))
    one_line(analysis_main(["claims", str(runs), "--boots", "20"]))
    assert study_main(["status", str(p)]) in (0, 3, 4)
    assert "Traceback" not in capsys.readouterr().err

    assert study_main(["consolidate", str(p), "--skip-corrupt"]) == 0
    assert pq.read_table(out / "tiny" / "runs.parquet").num_rows == 1
    (out / "tiny" / "runs.parquet").unlink()
    assert analysis_main(["rank", str(runs), "--boots", "0", "--skip-corrupt"]) == 0
    assert study_main(["measure", str(p), "--measures", "path_norm", "--force", "--serial", "--no-progress",
                       "--skip-corrupt"]) == 0
    assert "measured 1 of 1" in capsys.readouterr().out


# --- 8. a lease heartbeat in the future is no live lease -------------------------------------------

def test_a_lease_heartbeat_in_the_future_is_taken_over_and_a_held_lease_says_how_to_clear_it(tmp_path, monkeypatch,
                                                                                           caplog):
    import time

    import study.lease
    from study.lease import Lease, LeaseHeld

    monkeypatch.setattr(study.lease, "SETTLE_S", 0.01)
    store = Store(str(tmp_path / "out"), "s")
    store.check_writable()
    path = tmp_path / "out" / "s" / "lease.json"
    other = {"host": "elsewhere", "pid": 1, "command": "study run", "started_at": "then", "token": "x"}
    path.write_text(json.dumps({**other, "heartbeat": time.time()}))
    with pytest.raises(LeaseHeld, match="delete .*lease.json"):
        Lease(store).acquire()
    for beat in (time.time() + 3600, "inf", 1e300, "nan"):
        path.write_text(json.dumps({**other, "heartbeat": beat}).replace('"inf"', "Infinity").replace('"nan"', "NaN"))
        caplog.clear()
        lease = Lease(store)
        lease.acquire()  # not held for ever: taken over, with a warning that says why
        lease.release()
        assert "heartbeat is not a time" in caplog.text or "in the future" in caplog.text, caplog.text


# --- 4. SIGTERM at any moment of a fan-out on local Ray: exit 143, the summary, nothing left behind ---

def _ours(tmpdir: str) -> list[int]:
    """Pids of the processes whose command line names ``tmpdir`` (this test's Ray)."""
    ps = subprocess.run(["ps", "-eww", "-o", "pid=,args="], capture_output=True, text=True).stdout
    return [int(ln.split(None, 1)[0]) for ln in ps.splitlines() if tmpdir in ln and "ps -eww" not in ln]


def test_sigterm_at_any_moment_of_study_measure_exits_143_with_the_summary_and_leaves_nothing(copy):
    import os
    import signal
    import tempfile
    import time

    p, out = copy
    tmpdir = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths must stay short
    env = {**os.environ, "RAY_TMPDIR": tmpdir}
    try:
        # the moments: Ray starting, tasks running, a task just finished (the race with the other one's end)
        rows_at = {f: f.stat().st_mtime_ns for f in (out / "tiny" / "runs").glob("*.parquet")}
        for wait_for, extra in (("gcs_server", 0.2), ("default_worker", 1.5), ("a row", 0.0)):
            proc = subprocess.Popen([sys.executable, "-m", "study", "measure", str(p), "--force", "--no-progress"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 120 and proc.poll() is None:
                if wait_for == "a row":
                    if any(f.stat().st_mtime_ns != t for f, t in rows_at.items()):
                        break
                    time.sleep(0.01)
                    continue
                ps = subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True).stdout
                if any(tmpdir in ln and wait_for in ln for ln in ps.splitlines()):
                    break
                time.sleep(0.05)
            time.sleep(extra)
            proc.send_signal(signal.SIGTERM)
            o, e = proc.communicate(timeout=120)
            said = f"{wait_for}+{extra}: {o}{e[-3000:]}"
            assert "Check failed" not in e and "Traceback" not in e, said
            if proc.returncode == 0:  # finished before the signal came: nothing to check
                assert "measured 2 of 2" in o, said
            else:
                assert proc.returncode == 143 and "stopped by SIGTERM" in o and "networks left" in o, said
            assert not (out / "tiny" / "lease.json").exists(), said
            t1 = time.monotonic()
            while _ours(tmpdir) and time.monotonic() - t1 < 20:
                time.sleep(0.2)
            assert not _ours(tmpdir), f"processes left behind: {_ours(tmpdir)}; {said}"
    finally:
        for pid in _ours(tmpdir):  # what this test's Ray left, if anything
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(tmpdir, ignore_errors=True)


# --- 9. --serial and local Ray compute with the same number of threads ------------------------------

def test_serial_and_local_ray_give_tasks_the_same_thread_count_and_bit_identical_values(copy):
    import os

    p, out = copy
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # as a user runs it (conftest sets 1)
    seen = out.parent / "seen.txt"
    fn = out.parent / "threads.py"
    fn.write_text("import torch\n\ndef threads(model, data, init):\n"
                  f"    open({str(seen)!r}, 'a').write(f'{{torch.get_num_threads()}}\\n')\n    return 1.0\n")
    for how in ("--serial", "--address="):
        r = subprocess.run([sys.executable, "-m", "analysis", "score", f"{fn}:threads", str(out / "tiny"),
                            "--no-progress", "--boots", "0", *([how] if how == "--serial" else [])],
                           capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
    assert seen.read_text().split() == ["1"] * 4  # [resources] num_cpus = 1, serial and on Ray
    # and so the values: recomputed --serial as a user runs it, the measures equal those computed
    # with one thread (the fixture's, as in a Ray task), bit for bit
    before = rows(out)
    r = subprocess.run([sys.executable, "-m", "study", "measure", str(p), "--force", "--no-progress", "--serial"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    for rid, row in rows(out).items():
        assert {k: v for k, v in row.items() if k.startswith("measure.")} == \
            {k: v for k, v in before[rid].items() if k.startswith("measure.")}


# --- the Low items ----------------------------------------------------------------------------------

def test_a_deleted_checkpoint_is_not_called_keep_networks_false(copy, capsys):
    from study.cli import main as study_main

    p, out = copy
    (out / "tiny" / "nets" / f"{by_seed(out)[0]}.safetensors").unlink()
    assert study_main(["measure", str(p), "--measures", "path_norm", "--force", "--serial", "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "1 without a checkpoint (deleted, or stored with keep_networks = false or before checkpoints" in said, said


def test_deeply_nested_toml_is_not_valid_toml_not_a_recursion_error(tmp_path):
    from study.spec import StudyError

    p = tmp_path / "deep.toml"
    p.write_text("a = " + "{ b = " * 400 + "1" + " }" * 400 + "\n")
    with pytest.raises(StudyError, match="not valid TOML"):
        load_study(p)


def test_claims_markdown_escapes_what_the_rows_hold(copy, tmp_path):
    p, out = copy
    runs = out / "tiny" / "runs"
    for f in runs.glob("*.parquet"):
        t = pq.read_table(f)
        t = t.set_column(t.column_names.index("study"), "study", [["<script>alert(1)</script>"]])
        pq.write_table(t, f)
    md = tmp_path / "c.md"
    r = cli("-m", "analysis", "claims", str(runs), "--boots", "20", "--out", str(md))
    assert r.returncode == 0, r.stderr[-2000:]
    text = md.read_text()
    assert "<script>" not in text and "&lt;script" in text


def test_analysis_says_when_a_consolidated_file_holds_a_deleted_run(copy):
    import warnings

    from analysis.load import read_runs
    from study.cli import main as study_main

    p, out = copy
    assert study_main(["consolidate", str(p)]) == 0
    (out / "tiny" / "runs" / f"{by_seed(out)[0]}.parquet").unlink()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        df = read_runs(out / "tiny")
    assert df.height == 2 and any("runs.parquet holds 2 rows where" in str(x.message) and "1 run files" in str(x.message)
                                  for x in w), [str(x.message) for x in w]
    assert read_runs(out / "tiny" / "runs").height == 1


def test_migrate_on_an_empty_output_creates_nothing_and_status_json_says_an_old_schema(copy, tmp_path, capsys):
    from study.cli import main as study_main

    p, out = copy
    empty = tmp_path / "empty"
    (tmp_path / "e").mkdir()
    q = write_study(tmp_path / "e", empty)
    assert study_main(["migrate", str(q)]) == 0
    assert not (empty / "tiny").exists()
    capsys.readouterr()
    f = out / "tiny" / "runs" / f"{by_seed(out)[0]}.parquet"
    t = pq.read_table(f)
    config = json.loads(t["config"][0].as_py())
    t = t.set_column(t.column_names.index("config"), "config", [[json.dumps({**config, "schema": 1})]])
    pq.write_table(t, f)
    assert study_main(["status", str(p), "--json"]) == 2
    got = json.loads(capsys.readouterr().out)
    assert "study migrate" in got["error"] and got["exit_code"] == 2
