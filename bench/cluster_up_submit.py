"""`ray up` and `ray submit` for real: cluster/onprem.yaml pointed at this machine over SSH.

    python bench/cluster_up_submit.py [--work /tmp/rayup]

Needs Debian's openssh-server and rsync (``apt-get install openssh-server
rsync``); runs as root. Too slow and too intrusive for CI (an SSH server,
minutes of set-up), so it is this script, run by hand:

1. an SSH server on 127.0.0.1 and 127.0.0.2 only (port 22), with a host key
   and a client key made for the run, accepting only that key, giving each
   session HOME=WORK/home so that nothing of the real home is touched;
2. a cluster file made from cluster/onprem.yaml: head 127.0.0.1, one
   worker 127.0.0.2, that key; its file_mounts, rsync filters and auth as
   they are. What is replaced, because this machine is shared and
   offline, and HOME is not the passwd home: the setup commands install
   the checkout editable into a venv whose dependencies are those of this
   checkout's .venv (no package index); the start commands leave out
   ``ray stop`` (it would stop every Ray on the machine) and run ``ray
   start --block`` detached, with free ports and a private RAY_TMPDIR,
   recording its pid; a head setup command makes the head's path to the
   SSH key absolute (ssh expands ``~`` to the passwd home); ``ray up``
   runs with RAY_UP_enable_autoscaler_v2=0 (see cluster/onprem.yaml);
3. ``ray up -y``, then ``ray submit CLUSTER cluster/driver.py -- STUDY
   --consolidate`` for a study of 4 tiny networks, then ``ray exec CLUSTER
   'ray status'``; checks every run is stored once and consolidated;
4. tear-down without ``ray down`` (it runs ``ray stop``): SIGTERM to the two
   recorded ``ray start --block`` processes, then to the SSH server.

Prints each step's wall time and output tail; exits non-zero on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cluster.local_head import free_port  # noqa: E402

NAME = "genmeasures-loopback"
STUDY = """
[study]
name = "upsubmit"
dataset = "digits"
model = "mlp"
seeds = [0]
out = "{out}"
[data]
train_size = 200
[train]
target_loss = 0.3
max_epochs = 3
[grid]
width = [8, 16]
lr = [0.1, 0.05]
[measures]
include = ["size", "norm"]
[resources]
num_cpus = 1
num_gpus = 0
"""


def sh(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def step(title: str, cmd: list[str], env: dict, log: Path, timeout: float) -> str:
    print(f"\n== {title}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT,
                           timeout=timeout)
    out = log.read_text()
    tail = "\n".join(out.splitlines()[-25:])
    print(f"{tail}\n-- {title}: exit {p.returncode} after {time.perf_counter() - t0:.1f} s", flush=True)
    if p.returncode != 0:
        raise SystemExit(f"{title} failed; full output in {log}")
    return out


def start_sshd(work: Path) -> int:
    """An SSH server for root on 127.0.0.1/127.0.0.2, accepting only WORK/key."""
    for key in ("key", "hostkey"):
        if not (work / key).exists():
            sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / key)])
    shutil.copy(work / "key.pub", work / "authorized_keys")
    (work / "home").mkdir(exist_ok=True)
    (work / "sshd_config").write_text(f"""
ListenAddress 127.0.0.1
ListenAddress 127.0.0.2
Port 22
HostKey {work}/hostkey
PidFile {work}/sshd.pid
AuthorizedKeysFile {work}/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
SetEnv HOME={work}/home
Subsystem sftp internal-sftp
""")
    os.makedirs("/run/sshd", exist_ok=True)
    sh(["/usr/sbin/sshd", "-f", str(work / "sshd_config"), "-E", str(work / "sshd.log")])
    for _ in range(50):
        if (work / "sshd.pid").exists():
            return int((work / "sshd.pid").read_text())
        time.sleep(0.1)
    raise SystemExit(f"sshd did not start: {(work / 'sshd.log').read_text()}")


def cluster_file(work: Path, rt: Path, port: int) -> Path:
    """cluster/onprem.yaml, pointed at this machine (see the module docstring for what changes)."""
    config = yaml.safe_load((REPO / "cluster" / "onprem.yaml").read_text())
    config["cluster_name"] = NAME
    config["provider"].update(head_ip="127.0.0.1", worker_ips=["127.0.0.2"])
    config["auth"] = {"ssh_user": "root", "ssh_private_key": str(work / "key")}
    config["file_mounts"] = {"~/genmeasures": str(REPO), "~/.ray/auth_token": str(work / "token")}
    site = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    venv = "~/genmeasures-venv"
    config["setup_commands"] = [
        f"test -x {venv}/bin/python || {sys._base_executable} -m venv --without-pip {venv}",
        # the dependencies (pip and setuptools too) of this checkout's .venv instead of a package index
        f"echo {site} > $({venv}/bin/python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')"
        "/genmeasures_deps.pth",
        f"{venv}/bin/python -m pip install -q --no-deps --no-build-isolation -e ~/genmeasures",
        # the `ray` command of that venv (pip installed no dependencies, so no scripts)
        f"printf '#!%s\\nfrom ray.scripts.scripts import main\\nmain()\\n' $(cd {venv}/bin && pwd)/python"
        f" > {venv}/bin/ray && chmod +x {venv}/bin/ray",
        f"grep -qs '# genmeasures' ~/.bashrc || echo 'export PATH=\"$HOME/genmeasures-venv/bin:$PATH\" "
        f"RAY_AUTH_MODE=token RAY_TMPDIR={rt}  # genmeasures' >> ~/.bashrc",
    ]

    # The head's autoscaler reaches the worker with ssh -i ~/ray_bootstrap_key.pem, and ssh
    # expands ~ to the passwd home (/root), not to the session's HOME: make the path absolute.
    config["head_setup_commands"] = [
        'sed -i "s#\\"~/ray_bootstrap_key.pem\\"#\\"$HOME/ray_bootstrap_key.pem\\"#" '
        "~/ray_bootstrap_config.yaml"]

    def detached(name: str, args: str) -> str:
        ports = " ".join(f"--{k}={free_port()}" for k in (
            "ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
            "metrics-export-port", "runtime-env-agent-port", "node-manager-port",
            "object-manager-port"))
        return (f"setsid -f bash -c 'echo $$ > ~/{name}.pid; exec ray start --block {args} {ports} "
                f"> ~/{name}.log 2>&1 < /dev/null'")

    wait = f"for i in $(seq 180); do ray status --address=127.0.0.1:{port} > /dev/null 2>&1 && break; sleep 1; done"
    config["head_start_ray_commands"] = [
        detached("ray-head", f"--head --port={port} --autoscaling-config=~/ray_bootstrap_config.yaml "
                             f"--dashboard-host=127.0.0.1 --dashboard-port={free_port()} "
                             "--num-cpus=0 --num-gpus=0 --disable-usage-stats"),
        wait,
    ]
    config["worker_start_ray_commands"] = [
        detached("ray-worker", f"--address=$RAY_HEAD_IP:{port} --num-cpus=2 --disable-usage-stats"),
    ]
    path = work / "cluster.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def stop_pid_file(path: Path, timeout: float = 60) -> None:
    if not path.exists():
        return
    pid = int(path.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/rayup", help="working folder (short: Ray's socket paths)")
    args = p.parse_args()
    for tool in ("/usr/sbin/sshd", "ssh", "rsync"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install openssh-server openssh-client rsync")
    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    rt = work / "rt"
    rt.mkdir()
    (work / "token").write_text(os.urandom(32).hex())
    home = work / "home"
    # The launcher keeps the local provider's cluster state in RAY_TMPDIR and syncs it to the
    # same path on the head; on one machine both must use the cluster's private RAY_TMPDIR.
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=str(rt),
               # Ray 2.60's autoscaler v2 counts the head as one of the local provider's
               # worker_ips nodes and never starts the worker; v1 starts it (see onprem.yaml)
               RAY_UP_enable_autoscaler_v2="0")
    env.pop("RAY_ADDRESS", None)
    t_all = time.perf_counter()
    sshd = start_sshd(work)
    try:
        who = sh(["ssh", "-i", str(work / "key"), "-o", "StrictHostKeyChecking=no", "-o",
                  "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "root@127.0.0.2",
                  "echo $HOME"]).stdout.strip()
        print(f"sshd pid {sshd}; a session on 127.0.0.2 has HOME={who}")
        assert who == str(home), who
        cfg = cluster_file(work, rt, free_port())
        study = work / "upsubmit.toml"
        study.write_text(STUDY.format(out=work / "out"))
        step("ray up", ["ray", "up", "-y", "--no-config-cache", str(cfg)], env, work / "up.log", 900)
        out = step("ray submit", ["ray", "submit", str(cfg), "cluster/driver.py", "--", str(study),
                                  "--consolidate", "--no-progress"], env, work / "submit.log", 900)
        step("ray exec 'ray status'", ["ray", "exec", str(cfg), "ray status"], env,
             work / "status.log", 300)
        where = step("ray exec: which study package", ["ray", "exec", str(cfg),
                     "python -c 'import study; print(\"study from\", study.__file__)'"],
                     env, work / "where.log", 300)
        if f"study from {home}/genmeasures/study/__init__.py" not in where:
            raise SystemExit("the head does not run the mounted, installed checkout")
        runs = sorted((work / "out" / "upsubmit" / "runs").glob("*.parquet"))
        import pyarrow.parquet as pq
        table = pq.read_table(work / "out" / "upsubmit" / "runs.parquet")
        ids = table["run_id"].to_pylist()
        print(f"\nstored {len(runs)} run files; runs.parquet has {table.num_rows} rows, "
              f"{len(set(ids))} distinct run ids, statuses {sorted(set(table['status'].to_pylist()))}")
        hosts = json.dumps(sorted(set(table["device"].to_pylist())))
        if not (len(runs) == 4 and sorted(ids) == sorted(r.stem for r in runs)
                and "4 runs: 4 done" in out):
            raise SystemExit(f"the study did not complete as expected (devices {hosts})")
        print(f"ray up + ray submit: OK in {time.perf_counter() - t_all:.0f} s in all")
    finally:
        stop_pid_file(home / "ray-worker.pid")
        stop_pid_file(home / "ray-head.pid")
        stop_pid_file(work / "sshd.pid", timeout=10)
        for cached in Path(tempfile.gettempdir()).glob("ray-config-*"):  # the launcher's cache
            if NAME in cached.read_text(errors="replace"):
                cached.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
