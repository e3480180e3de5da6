"""The driver unattended and safe (issue 12): resources no node can hold, flags, local Ray on
loopback, SIGTERM, a write the output refuses, and one driver per study (the lease).

Real parts: local Ray, real subprocesses and signals, a real read-only filesystem (a tmpfs
remounted read-only; skipped where this process cannot mount), a real S3 server on loopback.
The Ray tests start Ray once or twice each (about 10–30 s apiece on a loaded 2-core machine).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import study
from study.cli import main as study_main
from study.executor import ClusterError, Executor, check_feasible, fan_out, infeasible
from study.jobs.run import run_study
from study.lease import LEASE_TIMEOUT_S, Lease, LeaseHeld
from study.spec import Resources, load_study
from study.storage import Store
from tests.studyfiles import write_study

REPO = Path(__file__).resolve().parent.parent
EIGHT = "width = [8, 16, 24, 32]\nlr = [0.1, 0.2]\nbatch_size = [64]"
ONE = "width = [16]\nlr = [0.1]\nbatch_size = [64]"


@pytest.fixture
def env(monkeypatch):
    """A fresh local Ray for every driver started here, never a cluster of RAY_ADDRESS."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.delenv("STUDY_AUTOSCALER", raising=False)
    return {**os.environ, "PYTHONPATH": str(REPO)}


def deadline(seconds: int):
    """Fail the test (TimeoutError) instead of hanging past ``seconds`` (SIGALRM)."""
    def wrap(test):
        @functools.wraps(test)
        def run(*args, **kwargs):
            def expire(signum, frame):
                raise TimeoutError(f"{test.__name__} hung for {seconds} s")
            before = signal.signal(signal.SIGALRM, expire)
            signal.alarm(seconds)
            try:
                return test(*args, **kwargs)
            finally:
                signal.alarm(0)
                signal.signal(signal.SIGALRM, before)
        return run
    return wrap


def study_cmd(path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "study", "run", str(path), "--no-progress", *extra]


def parquet_files(runs: Path) -> list[Path]:
    return sorted(runs.glob("*.parquet")) if runs.is_dir() else []


def assert_only_whole_rows(runs: Path) -> int:
    """No temporary or hidden file; every stored file one readable row. Returns how many."""
    if not runs.is_dir():
        return 0
    assert [n for n in os.listdir(runs) if n.startswith(".")] == [], "temporary files left"
    for f in parquet_files(runs):
        assert pq.read_table(f).num_rows == 1
    return len(parquet_files(runs))


def wait_for(cond, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the driver ended early: {proc.communicate()}")
        time.sleep(0.1)
    assert cond(), f"not reached in {timeout} s"


# -- 1. resources no node can hold; flags -------------------------------------------------

def test_infeasible_messages():
    two = [{"CPU": 2.0, "memory": 1e9}]
    assert infeasible(two, 1, 0) == ""
    assert infeasible(two, 64, 0) == "each run asks for 64 CPUs; the largest node has 2 CPUs"
    assert infeasible(two, 1, 1) == "each run asks for 1 CPU and 1 GPU; the largest node has 0 GPUs"
    assert infeasible([{"CPU": 8}, {"CPU": 1, "GPU": 1}], 2, 1) == \
        "each run asks for 2 CPUs and 1 GPU; no node has both: 8 CPUs + 0 GPUs, 1 CPU + 1 GPU"
    assert infeasible([], 1, 0) == "each run asks for 1 CPU; the cluster has no node"


@deadline(180)
@pytest.mark.parametrize("resources, said", [
    ("num_cpus = 64", "each run asks for 64 CPUs; the largest node has 2 CPUs"),
    ("num_gpus = 1", "the largest node has 0 GPUs"),
], ids=["64cpus", "1gpu"])
def test_resources_no_node_can_hold_stop_before_submitting(tmp_path, env, resources, said):
    if resources == "num_cpus = 64":
        assert os.cpu_count() < 64
    p = write_study(tmp_path, grid=ONE, extra=f"\n[resources]\n{resources}\n")
    r = subprocess.run(study_cmd(p), capture_output=True, text=True, timeout=150, env=env)
    assert r.returncode == 2, r.stdout + r.stderr[-3000:]
    assert said.replace("2 CPUs", f"{os.cpu_count()} CPUs") in r.stderr
    assert "nothing was run" in r.stderr and "Traceback" not in r.stderr
    assert parquet_files(tmp_path / "out" / "tiny" / "runs") == []
    assert not (tmp_path / "out" / "tiny" / "lease.json").exists()


@deadline(120)
@pytest.mark.parametrize("bad", ["-1", "0", "two"])
def test_max_in_flight_below_one_is_refused(tmp_path, capsys, bad):
    p = write_study(tmp_path, grid=ONE)
    with pytest.raises(SystemExit) as e:
        study_main(["run", str(p), "--max-in-flight", bad])
    assert e.value.code == 2
    assert "--max-in-flight" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least 1"):
        fan_out([1], abs, lambda i: (i,), Resources(), print, Executor(serial=True, max_in_flight=-1))


@deadline(240)
def test_with_an_autoscaler_a_warning_then_a_wait_for_a_node(env, caplog):
    """A growing cluster (a node added by hand, as an autoscaler would): the driver warns
    and waits for a node that can hold a run; none in time: ClusterError."""
    import ray
    from ray.cluster_utils import Cluster
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        ray.init(address=c.address, log_to_driver=False)
        res = Resources(num_cpus=3)
        with pytest.raises(ClusterError, match="does not grow"):  # no autoscaler: at once
            check_feasible(ray, res, autoscaler=False)
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="study.executor"), \
                pytest.raises(ClusterError, match="added no node that can within 2 s"):
            check_feasible(ray, res, autoscaler=True, wait_s=2)
        assert time.monotonic() - t0 >= 2
        assert "each run asks for 3 CPUs; the largest node has 1 CPU; waiting up to 2 s" in caplog.text
        os.environ["STUDY_AUTOSCALER"] = "1"  # the env var says so too
        done: dict = {}

        def wait():
            try:
                check_feasible(ray, res, wait_s=120)
                done["at"] = time.monotonic()
            except Exception as e:
                done["error"] = e
        waiter = threading.Thread(target=wait)
        try:
            waiter.start()
            time.sleep(3)
            assert waiter.is_alive(), done
            t0 = time.monotonic()
            c.add_node(num_cpus=3)  # Ray adds nodes from the main thread only
            waiter.join(timeout=120)
        finally:
            del os.environ["STUDY_AUTOSCALER"]
        assert "at" in done and done["at"] - t0 < 60, done
    finally:
        ray.shutdown()
        c.shutdown()


# -- 11. local Ray on loopback --------------------------------------------------------------

@deadline(180)
def test_local_ray_listens_on_loopback_only(env):
    import psutil
    import ray
    if ray.is_initialized():
        ray.shutdown()
    seen: dict = {}

    def where(_):  # in a Ray worker: which code it imports, and its node's address
        import ray

        import study as s
        return {"file": s.__file__, "ip": ray.util.get_node_ip_address()}

    def record(res):
        seen.update(res)
        seen["nodes"] = [n["NodeManagerAddress"] for n in ray.nodes()]
        me = psutil.Process()
        ours = {p.pid for p in me.children(recursive=True)} | {me.pid}
        seen["listen"] = sorted({(c.laddr.ip, psutil.Process(c.pid).name())
                                 for c in psutil.net_connections("inet")
                                 if c.status == psutil.CONN_LISTEN and c.pid in ours})

    fan_out([0], where, lambda i: (i,), Resources(), record)
    assert not ray.is_initialized()
    print(seen)
    assert seen["file"] == study.__file__ == str(REPO / "study" / "__init__.py")  # this tree
    assert seen["nodes"] == ["127.0.0.1"] and seen["ip"] == "127.0.0.1"
    assert seen["listen"], "no listening socket found"
    off = [(ip, name) for ip, name in seen["listen"] if ip not in ("127.0.0.1", "::ffff:127.0.0.1")]
    assert off == [], f"listening beyond loopback: {off}"


# -- 15. SIGTERM like Ctrl-C ----------------------------------------------------------------

@deadline(600)
def test_sigterm_stops_like_ctrl_c_and_the_same_command_continues(tmp_path, env):
    p = write_study(tmp_path, grid=EIGHT)
    runs = tmp_path / "out" / "tiny" / "runs"
    proc = subprocess.Popen(study_cmd(p), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    wait_for(lambda: len(parquet_files(runs)) >= 2, 240, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 143, out + err[-3000:]
    assert "stopped by SIGTERM" in out and "run the same command again to continue" in out
    assert "ran " in out and "Traceback" not in err
    stored = assert_only_whole_rows(runs)
    assert 2 <= stored < 8, f"not stopped mid-study: {stored} stored"
    assert not (tmp_path / "out" / "tiny" / "lease.json").exists()
    r = subprocess.run(study_cmd(p), capture_output=True, text=True, timeout=400, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"ran {8 - stored} " in r.stdout
    assert sorted(f.stem for f in parquet_files(runs)) == sorted(s.run_id for s in load_study(p).runs())
    assert assert_only_whole_rows(runs) == 8


# -- 6. a write the output refuses ------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs of its own (to be remounted read-only mid-study), or skip."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def remount(mnt: Path, mode: str) -> None:
    deadline = time.time() + 20  # busy while a file is open for writing: try again
    while True:
        r = subprocess.run(["mount", "-o", f"remount,{mode}", str(mnt)], capture_output=True, text=True)
        if r.returncode == 0:
            return
        assert time.time() < deadline, r.stderr
        time.sleep(0.05)


@deadline(600)
def test_output_turning_read_only_stops_the_driver_cleanly(tmp_path, env, tmpfs):
    p = write_study(tmp_path, grid=EIGHT, out=tmpfs / "out")
    runs = tmpfs / "out" / "tiny" / "runs"
    proc = subprocess.Popen(study_cmd(p), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    wait_for(lambda: len(parquet_files(runs)) >= 2, 240, proc)
    remount(tmpfs, "ro")  # the disk goes read-only under the running study
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 3, out + err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "stopped: writing to the output failed" in out and "Read-only file system" in out
    assert "run the same command again to continue" in out
    stored = assert_only_whole_rows(runs)
    assert 2 <= stored < 8, f"not stopped mid-study: {stored} stored"
    assert f"{stored}/8 stored" in out
    remount(tmpfs, "rw")  # fixed: the same command continues (the old lease is of a dead pid)
    r = subprocess.run(study_cmd(p), capture_output=True, text=True, timeout=400, env=env)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "taking over the stale lease" in r.stderr
    assert sorted(f.stem for f in parquet_files(runs)) == sorted(s.run_id for s in load_study(p).runs())
    assert assert_only_whole_rows(runs) == 8


# -- 5. one driver per study -------------------------------------------------------------

@deadline(400)
def test_a_second_driver_exits_2_naming_the_first_and_leaves_its_temporaries(tmp_path, env):
    p = write_study(tmp_path, grid=EIGHT, seeds=str(list(range(10))))  # 80 runs: still running
    base = tmp_path / "out" / "tiny"
    first = subprocess.Popen(study_cmd(p, "--serial"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for(lambda: len(parquet_files(base / "runs")) >= 1, 240, first)
        lease = json.loads((base / "lease.json").read_text())
        assert lease["pid"] == first.pid and lease["host"] == socket.gethostname()
        live_tmp = base / "runs" / ".tmp-inflight.parquet-0123"  # a write of the first in flight
        live_tmp.write_bytes(b"half")
        second = subprocess.run(study_cmd(p, "--serial"), capture_output=True, text=True,
                                timeout=120, env=env)
        assert second.returncode == 2, second.stdout + second.stderr[-3000:]
        assert f"on host {socket.gethostname()}, pid {first.pid}" in second.stderr
        assert "held by study run" in second.stderr
        assert live_tmp.exists(), "the second driver removed the first one's temporary file"
        assert first.poll() is None
        live_tmp.unlink()
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert first.returncode == 130
    assert not (base / "lease.json").exists(), "the first driver left its lease"


def write_lease(base: Path, **kw) -> None:
    base.mkdir(parents=True, exist_ok=True)
    lease = {"host": "gone-host", "pid": 4242, "command": "study run",
             "started_at": "2020-01-01T00:00:00+00:00", "heartbeat": time.time(), "token": "x", **kw}
    (base / "lease.json").write_text(json.dumps(lease))


def test_a_stale_lease_is_taken_over(tmp_path, caplog):
    p = write_study(tmp_path, grid=ONE)
    base = tmp_path / "out" / "tiny"
    write_lease(base)  # live, on another host
    with pytest.raises(LeaseHeld, match="held by study run on host gone-host, pid 4242"):
        run_study(load_study(p), Executor(serial=True, progress=False))
    write_lease(base, heartbeat=time.time() - LEASE_TIMEOUT_S - 5)
    with caplog.at_level(logging.WARNING, logger="study.lease"):
        s = run_study(load_study(p), Executor(serial=True, progress=False))
    assert s.ran == 1
    assert "taking over the stale lease" in caplog.text and "gone-host, pid 4242" in caplog.text
    assert not (base / "lease.json").exists()


def test_a_lease_of_a_dead_process_on_this_host_is_stale_at_once(tmp_path):
    store = Store(str(tmp_path / "out"), "tiny")
    gone = subprocess.Popen(["true"])
    gone.wait()
    write_lease(tmp_path / "out" / "tiny", host=socket.gethostname(), pid=gone.pid)
    with Lease(store):
        pass
    alive = subprocess.Popen(["sleep", "60"])
    try:
        write_lease(tmp_path / "out" / "tiny", host=socket.gethostname(), pid=alive.pid)
        with pytest.raises(LeaseHeld, match=f"pid {alive.pid}"):
            Lease(store).acquire()
    finally:
        alive.kill()
        alive.wait()


def test_only_stale_temporary_files_are_removed(tmp_path):
    store = Store(str(tmp_path / "out"), "tiny")
    runs = tmp_path / "out" / "tiny" / "runs"
    runs.mkdir(parents=True)
    fresh, old = runs / ".tmp-a.parquet-1", runs / ".tmp-b.parquet-2"
    fresh.write_bytes(b"x")
    old.write_bytes(b"x")
    then = time.time() - LEASE_TIMEOUT_S - 10
    os.utime(old, (then, then))
    assert store.clean_tmp(LEASE_TIMEOUT_S) == 1
    assert fresh.exists() and not old.exists()


@deadline(120)
def test_one_driver_per_study_on_an_object_store(monkeypatch):
    import boto3
    from moto.server import ThreadedMotoServer
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1")
        client.create_bucket(Bucket="studies")
        out = f"s3://studies/lab?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
        first = Lease(Store(out, "tiny"))
        first.acquire()
        obj = json.loads(client.get_object(Bucket="studies", Key="lab/tiny/lease.json")["Body"].read())
        assert obj["token"] == first.token and obj["pid"] == os.getpid()
        with pytest.raises(LeaseHeld, match=f"on host {socket.gethostname()}, pid {os.getpid()}"):
            Lease(Store(out, "tiny")).acquire()
        first.release()
        assert "Contents" not in client.list_objects_v2(Bucket="studies", Prefix="lab/tiny/lease")
        stale = dict(obj, heartbeat=time.time() - LEASE_TIMEOUT_S - 5, host="gone-host")
        client.put_object(Bucket="studies", Key="lab/tiny/lease.json", Body=json.dumps(stale).encode())
        with Lease(Store(out, "tiny")) as second:
            held = json.loads(client.get_object(Bucket="studies", Key="lab/tiny/lease.json")["Body"].read())
            assert held["token"] == second.token
    finally:
        server.stop()


def test_a_corrupt_row_is_run_again(tmp_path):
    p = write_study(tmp_path, grid=ONE)
    assert run_study(load_study(p), Executor(serial=True, progress=False)).ran == 1
    (row,) = parquet_files(tmp_path / "out" / "tiny" / "runs")
    row.write_bytes(row.read_bytes()[:100])  # truncated: unreadable
    s = run_study(load_study(p), Executor(serial=True, progress=False))
    assert (s.stored_before, s.ran, s.ok) == (0, 1, 1)
    assert assert_only_whole_rows(tmp_path / "out" / "tiny" / "runs") == 1
