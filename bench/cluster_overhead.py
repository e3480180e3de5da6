"""The cost of the cluster path: one study through `ray job submit` against `python -m study run`.

    python bench/cluster_overhead.py [STUDY.toml] [--repeat N] [--keep OUT]

Runs the study (default: configs/mini.toml) from scratch both ways, each
time into a fresh output folder:

1. local: ``python -m study run STUDY --out OUT1`` — the command starts its
   own local Ray (in a private RAY_TMPDIR, so it never joins another Ray on
   this machine);
2. job: a single-node head with as many CPUs as this machine
   (`cluster.local_head.LocalHead`: ``ray start --head --block``, token
   auth), then ``ray job submit --working-dir . -- python -m study run
   STUDY --out OUT2``: the checkout is uploaded, the job's driver connects
   to the head, the same runs go to the same number of CPUs. The head is
   started once, before both (it idles during the local runs).

Prints both wall times, the head's start-up time (paid once per cluster,
not per study) and the ratio job / local. Every run must store the whole
study. The machine may be shared: ``--repeat N`` alternates the order
(local, job, job, local, …) and reports medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cluster.local_head import LocalHead  # noqa: E402


def timed(cmd: list[str], env: dict, log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - t0
    if rc != 0:
        sys.exit(f"{' '.join(cmd[:6])} … failed (exit {rc}):\n{log.read_text()[-3000:]}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", nargs="?", default=str(REPO / "configs" / "mini.toml"))
    p.add_argument("--repeat", type=int, default=1,
                   help="pairs of runs, in the order local, job, job, local, … (default 1)")
    p.add_argument("--keep", help="keep the outputs and logs in this folder")
    args = p.parse_args()
    study = str(Path(args.study).resolve())
    work = Path(args.keep or tempfile.mkdtemp(prefix="overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    cpus = os.cpu_count() or 1
    from study.spec import load_study
    n = len(load_study(study).runs())
    print(f"study {study}: {n} runs, {cpus} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    times: dict[str, list[float]] = {"local": [], "job": []}

    def local_run(i: int) -> None:
        out = work / f"local{i}"
        ray_tmp = tempfile.mkdtemp(prefix="rl-", dir="/tmp")
        env = dict(os.environ, RAY_TMPDIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0")
        env.pop("RAY_ADDRESS", None)
        t = timed([sys.executable, "-m", "study", "run", study, "--out", str(out), "--no-progress"],
                  env, work / f"local{i}.log")
        shutil.rmtree(ray_tmp, ignore_errors=True)
        check(out, n, work)
        times["local"].append(t)
        print(f"python -m study run : {t:7.1f} s  (load average {os.getloadavg()[0]:.1f})", flush=True)

    def job_run(i: int, head: LocalHead) -> None:
        out = work / f"job{i}"
        t = timed([head.ray, "job", "submit", "--address", head.dashboard_url, "--working-dir", ".",
                   "--", "python", "-m", "study", "run", study, "--out", str(out), "--no-progress"],
                  head.env, work / f"job{i}.log")
        check(out, n, work)
        times["job"].append(t)
        print(f"ray job submit      : {t:7.1f} s  (load average {os.getloadavg()[0]:.1f})", flush=True)

    t0 = time.perf_counter()
    with LocalHead(num_cpus=cpus) as head:
        startup = time.perf_counter() - t0
        print(f"head start-up       : {startup:7.1f} s  (ray start --head; paid once per cluster)",
              flush=True)
        for i in range(args.repeat):
            if i % 2 == 0:
                local_run(i), job_run(i, head)
            else:
                job_run(i, head), local_run(i)
    local, job = statistics.median(times["local"]), statistics.median(times["job"])
    print(f"\nmedian of {args.repeat}: python -m study run {local:.1f} s, ray job submit {job:.1f} s, "
          f"ratio job / local {job / local:.2f}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def check(out: Path, n: int, work: Path) -> None:
    got = sum(1 for _ in out.glob("*/runs/*.parquet"))
    if got != n:
        sys.exit(f"{got} of {n} runs stored in {out}: see the logs in {work}")


if __name__ == "__main__":
    main()
