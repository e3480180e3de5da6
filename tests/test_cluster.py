"""Studies on Ray clusters, with real Ray on one machine.

- every cluster file in cluster/ passes Ray's own preparation and validation;
- (a) a three-node cluster (`ray.cluster_utils.Cluster`: a head that runs no
  tasks, two workers with a fake GPU each) loses a worker mid-study while it
  runs two fractional-GPU runs; the study completes with every run stored
  exactly once, and worker processes train more than one network each;
- (b) the driver that `ray submit` runs (cluster/driver.py) is killed with
  SIGKILL mid-study and started again: the study completes, the rows stored
  before the kill are not written again, no duplicates, no partial files;
- (c) the output is s3:// on a real S3-compatible server on loopback (moto's
  server): the runs, status, resume and consolidation go through S3;
- (d) `ray job submit --working-dir` to a head that the test starts with
  token authentication runs a small study to completion.

Every Ray process of this module uses a private RAY_TMPDIR (so that no other
Ray on the machine finds or joins these clusters) and a token made for the
test. Runtime: about 3 minutes on a loaded 2-core machine (mostly Ray
start-up and worker processes importing torch).
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from study.cli import main as study_main
from study.executor import Executor
from study.jobs.run import run_study
from study.spec import load_study

REPO = Path(__file__).resolve().parent.parent
CLUSTER_FILES = sorted((REPO / "cluster").glob("*.yaml"))
VENV_BIN = str(Path(sys.executable).parent)

STUDY = """
[study]
name = "{name}"
dataset = "digits"
model = "mlp"
seeds = {seeds}
out = "{out}"

[data]
train_size = 200

[train]
target_loss = 0.3
max_epochs = {epochs}

[grid]
width = [8, 16]
lr = [0.1, 0.05]

[measures]
include = ["size", "norm"]

[resources]
num_cpus = {cpus}
num_gpus = {gpus}
"""


def write_study(path: Path, name: str, out: str, *, seeds=(0, 1), epochs: int = 4,
                cpus: float = 1, gpus: float = 0.5) -> Path:
    """A study of 4 tiny networks (~1 s each) per seed; returns the file. A few epochs stop
    every network short of the target: stored ok, reported as not converged."""
    path.write_text(STUDY.format(name=name, out=out, seeds=list(seeds), epochs=epochs, cpus=cpus,
                                 gpus=gpus))
    return path


def expected_ids(study_file: Path) -> set[str]:
    return {s.run_id for s in load_study(study_file).runs()}


def run_files(runs_dir: Path) -> list[Path]:
    return sorted(p for p in runs_dir.iterdir() if p.suffix == ".parquet") if runs_dir.is_dir() else []


def check_whole_rows(runs_dir: Path, ids: set[str]) -> None:
    """Exactly one whole, readable, successful row per expected run; nothing else."""
    names = sorted(os.listdir(runs_dir))
    assert [n for n in names if n.startswith(".")] == [], "temporary or hidden files left"
    assert sorted(names) == sorted(f"{i}.parquet" for i in ids)
    for name in names:
        t = pq.read_table(runs_dir / name)
        assert t.num_rows == 1
        row = t.to_pylist()[0]
        assert row["run_id"] == name.removesuffix(".parquet")
        assert row["status"] == "ok", row["error"]
        assert 0 <= row["train_acc"] <= 1 and 0 <= row["test_acc"] <= 1
        assert json.loads(row["config"])["seed"] == row["seed"]
        assert any(k.startswith("measure.") for k in row)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- cluster files ---------------------------------------------------------------

@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_cluster_file_passes_ray_validation(path):
    from ray.autoscaler._private.util import prepare_config, validate_config
    config = yaml.safe_load(path.read_text())
    prepared = prepare_config(copy.deepcopy(config))  # what `ray up` does before validating
    validate_config(prepared)
    # the head runs no tasks and keeps its dashboard on localhost
    head_start = " ".join(prepared["head_start_ray_commands"])
    assert "--num-cpus=0" in head_start and "--num-gpus=0" in head_start
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    if config["provider"]["type"] != "local":
        head = prepared["available_node_types"][prepared["head_node_type"]]
        assert head["resources"] == {"CPU": 0, "GPU": 0}
        workers = [t for n, t in prepared["available_node_types"].items() if n != prepared["head_node_type"]]
        assert workers and all(t["resources"].get("GPU", 0) >= 1 for t in workers)
        assert all(t["min_workers"] == 0 and t["max_workers"] > 0 for t in workers)  # autoscaling
    # every node gets this checkout and installs it; token auth everywhere
    assert prepared["file_mounts"]["~/genmeasures"] == "."
    setup = " ".join(prepared["setup_commands"])
    assert "install" in setup and "-e ~/genmeasures" in setup
    assert all("RAY_AUTH_MODE=token" in c for c in prepared["head_start_ray_commands"][1:]
               + prepared["worker_start_ray_commands"][1:])
    text = path.read_text()
    assert "Cost assumptions" in text
    assert "AWS_SECRET_ACCESS_KEY" not in text and "aws_secret_access_key" not in text


def test_ray_validation_rejects_a_broken_cluster_file():
    """The validator used above is not a no-op: an unknown key fails it."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config
    config = yaml.safe_load((REPO / "cluster" / "aws.yaml").read_text())
    config["max_worker"] = 3  # typo of max_workers
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


def test_driver_finds_study_files_in_the_checkout(tmp_path, monkeypatch):
    from cluster.driver import resolve_study
    monkeypatch.chdir(tmp_path)  # `ray submit` runs the driver from the head's home folder
    assert resolve_study("configs/mini.toml") == REPO / "configs" / "mini.toml"
    (tmp_path / "configs").mkdir()
    local = tmp_path / "configs" / "mini.toml"
    local.write_text("")
    assert resolve_study("configs/mini.toml").resolve() == local  # the working folder first


# -- a Ray cluster on this machine -------------------------------------------------

def refresh_ray_auth() -> None:
    """Make this process's Ray read RAY_AUTH_MODE and the token again (it caches both
    at first use, which may be before this module set them)."""
    from ray._raylet import AuthenticationTokenLoader, Config
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@pytest.fixture(scope="module")
def ray_env():
    """Private Ray temp folder and auth token; fake AWS credentials for the S3 test."""
    tmp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: Ray's socket paths have a limit
    token = Path(tmp) / "token"
    token.write_text(secrets.token_hex(32))
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"RAY_TMPDIR": tmp, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                     "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1", "RAY_USAGE_STATS_ENABLED": "0",
                     "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}.items():
            mp.setenv(k, v)
        mp.delenv("RAY_ADDRESS", raising=False)
        refresh_ray_auth()
        yield Path(tmp)
    refresh_ray_auth()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(ray_env):
    """Head (no CPUs: runs no tasks) + two workers of 2 CPUs and one (fake) GPU each."""
    import ray
    from ray.cluster_utils import Cluster
    if ray.is_initialized():  # left connected by an earlier test
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    c.workers = [c.add_node(num_cpus=2, num_gpus=1) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


def tasks_on(node) -> set[int]:
    """Process ids of the Ray workers of `node` running a study run right now."""
    import psutil
    out = set()
    try:
        raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
        for p in raylet.children(recursive=True):
            try:
                if p.cmdline()[:1] == ["ray::run_one"]:
                    out.add(p.pid)
            except psutil.Error:
                continue
    except psutil.Error:
        pass
    return out


def alive(pid: int) -> bool:
    import psutil
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_a_worker_node_lost_mid_study(cluster, tmp_path):
    study = load_study(write_study(tmp_path / "a.toml", "a", str(tmp_path / "out")))
    runs_dir = tmp_path / "out" / "a" / "runs"
    result = {}
    driver = threading.Thread(target=lambda: result.update(s=run_study(study, Executor(progress=False))))
    driver.start()
    victim, survivor = cluster.workers
    watched = [victim, survivor]
    seen: set[int] = set()          # every worker process seen running a network
    killed_running: set[int] = set()
    deadline = time.time() + 300
    while driver.is_alive() and time.time() < deadline:
        for node in watched:
            seen |= tasks_on(node)
        on_victim = tasks_on(victim) if not killed_running else set()
        if len(on_victim) == 2 and 1 <= len(run_files(runs_dir)) < 8:
            killed_running = on_victim  # two half-GPU runs packed on one node, both lost now
            cluster.remove_node(victim, allow_graceful=False)  # SIGKILL, as a preemption
            # the autoscaler's new spot node
            watched = [survivor, cluster.add_node(num_cpus=2, num_gpus=1)]
        time.sleep(0.05)
    driver.join(timeout=5)
    assert not driver.is_alive(), "the study did not finish in 300 s"
    assert len(killed_running) == 2, "the worker node was never seen running two runs at once"
    assert not any(alive(p) for p in killed_running), "the lost runs' processes live on"
    s = result["s"]
    assert (s.ran, s.unconverged, s.failed) == (8, 8, 0), s.failures  # 4 epochs: short of the target
    check_whole_rows(runs_dir, expected_ids(tmp_path / "a.toml"))
    # ≥ 8 runs were executed (plus the 2 lost ones) by fewer processes:
    # worker processes are reused, so each loads the dataset once for many runs
    assert 0 < len(seen) < 8, seen


def test_b_driver_killed_and_restarted(cluster, tmp_path):
    toml = write_study(tmp_path / "b.toml", "b", str(tmp_path / "out"))
    runs_dir = tmp_path / "out" / "b" / "runs"
    cmd = [sys.executable, str(REPO / "cluster" / "driver.py"), str(toml),
           "--address", cluster.address, "--no-progress"]
    first = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while len(run_files(runs_dir)) < 2 and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in run_files(runs_dir)}
    assert 2 <= len(before) < 8, f"not killed mid-study: {len(before)} rows stored"

    again = subprocess.run(cmd + ["--consolidate"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "8 runs: 0 done, 8 not converged, 0 failed" in again.stdout
    check_whole_rows(runs_dir, expected_ids(toml))
    after = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in run_files(runs_dir)}
    assert {k: after[k] for k in before} == before, "a run stored before the kill was written again"
    runs = pq.read_table(tmp_path / "out" / "b" / "runs.parquet")
    assert sorted(runs["run_id"].to_pylist()) == sorted(expected_ids(toml))


@pytest.fixture
def s3(ray_env):
    """A moto S3 server on loopback with an empty bucket; yields (endpoint, boto3 client)."""
    import boto3
    from moto.server import ThreadedMotoServer
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1")
    client.create_bucket(Bucket="studies")
    yield f"127.0.0.1:{port}", client
    server.stop()


def test_c_study_on_s3(cluster, s3, tmp_path, capsys):
    endpoint, client = s3
    out = f"s3://studies/lab?endpoint_override={endpoint}&scheme=http&region=us-east-1"
    toml = write_study(tmp_path / "c.toml", "c", out, seeds=[0], epochs=2)
    ids = expected_ids(toml)

    def keys():  # what the S3 server holds, listed by boto3, not by the code under test
        objs = client.list_objects_v2(Bucket="studies", Prefix="lab/c/runs/").get("Contents", [])
        return {o["Key"]: o["ETag"] for o in objs if o["Key"].endswith(".parquet")}

    s = run_study(load_study(toml), Executor(progress=False))
    assert (s.ran, s.unconverged) == (4, 4)
    assert sorted(keys()) == sorted(f"lab/c/runs/{i}.parquet" for i in ids)
    nets = client.list_objects_v2(Bucket="studies", Prefix="lab/c/nets/").get("Contents", [])
    assert sorted(o["Key"] for o in nets) == sorted(f"lab/c/nets/{i}.safetensors" for i in ids)

    lost = sorted(keys())[0]
    client.delete_object(Bucket="studies", Key=lost)
    kept = {k: v for k, v in keys().items()}
    capsys.readouterr()
    assert study_main(["status", str(toml)]) == 3  # incomplete (study.jobs.status.status_code)
    assert "4 runs: 0 done, 3 not converged, 0 failed, 0 diverged, 1 left" in capsys.readouterr().out
    assert study_main(["run", str(toml), "--address", cluster.address, "--no-progress"]) == 0
    assert "ran 1 (0 ok, 1 not converged" in capsys.readouterr().out
    now = keys()
    assert sorted(now) == sorted(f"lab/c/runs/{i}.parquet" for i in ids)
    assert {k: now[k] for k in kept} == kept, "resume rewrote stored runs"
    assert study_main(["status", str(toml)]) == 0
    assert "4 runs: 0 done, 4 not converged" in capsys.readouterr().out
    assert study_main(["consolidate", str(toml)]) == 0
    said = capsys.readouterr().out
    uri = said.split(" into ")[1].strip()
    assert uri == f"s3://studies/lab/c/runs.parquet?endpoint_override={endpoint}&scheme=http&region=us-east-1"
    table = pq.read_table(uri)  # the printed URI opens the consolidated file
    assert sorted(table["run_id"].to_pylist()) == sorted(ids)
    assert set(table["status"].to_pylist()) == {"ok"}
    from analysis.load import read_runs  # what a notebook reads
    df = read_runs(out.replace("s3://studies/lab?", "s3://studies/lab/c?"))
    assert sorted(df["run_id"].to_list()) == sorted(ids)


# -- ray job submit to a head started here ------------------------------------------

@pytest.fixture
def job_head(ray_env):
    """`ray start --head --block` with token auth and its own RAY_TMPDIR."""
    from cluster.local_head import LocalHead
    with LocalHead(num_cpus=2) as head:
        yield head


def test_d_ray_job_submit(job_head, tmp_path, capsys):
    url, env = job_head.dashboard_url, job_head.env
    toml = write_study(tmp_path / "d.toml", "d", str(tmp_path / "out"), seeds=[0], epochs=2,
                       gpus=0)
    ray_cli = job_head.ray
    # without the token the head refuses the client
    refused = subprocess.run([ray_cli, "job", "list", "--address", url], capture_output=True,
                             text=True, timeout=120, env={**env, "RAY_AUTH_MODE": "disabled"})
    assert refused.returncode != 0 and "Missing authentication token" in refused.stderr
    job = subprocess.run(
        [ray_cli, "job", "submit", "--address", url, "--working-dir", ".", "--",
         "python", "-m", "study", "run", str(toml), "--no-progress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "succeeded" in job.stdout + job.stderr
    assert "ran 4 (0 ok, 4 not converged, 0 failed, 0 diverged)" in job.stdout
    check_whole_rows(tmp_path / "out" / "d" / "runs", expected_ids(toml))
    assert study_main(["status", str(toml)]) == 0  # from outside the cluster, no Ray needed
    assert "4 runs: 0 done, 4 not converged" in capsys.readouterr().out
