"""Mini-study throughput: local Ray against serial in-process, side by side in one run.

    python bench/throughput.py [--study configs/mini.toml]

Runs the whole study twice, into fresh temporary folders, and prints runs
per minute for each mode and their ratio (Ray's time includes its start).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from study.executor import Executor
from study.jobs.run import run_study
from study.spec import load_study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="configs/mini.toml")
    args = ap.parse_args()
    study = load_study(args.study)
    rate = {}
    for mode in ("serial", "ray"):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            s = run_study(study.with_out(out), Executor(serial=mode == "serial", progress=False))
            wall = time.perf_counter() - t0
            rate[mode] = s.ran / wall * 60
            print(f"{mode:>6}: {s.ran} runs in {wall:6.1f} s = {rate[mode]:6.2f} runs/min "
                  f"({s.failed} failed, {s.diverged} diverged)", flush=True)
    print(f"ray / serial: {rate['ray'] / rate['serial']:.2f}x on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
