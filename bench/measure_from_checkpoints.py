"""Recomputing a study's measures from its checkpoints against measuring in the original run.

Runs the mini study (configs/mini.toml, local Ray) into a temporary folder (or ``--out``, reusing
what is stored there), then `study measure --measures all --force` on the same local Ray: every
measure of every stored network recomputed from its checkpoint, never training. Printed side by
side: the measure time of the original run (the sum of the rows' ``measure_seconds``), the
recomputation's task time (summed over networks: reading the checkpoint, the data, rebuilding
the network and measuring) and its measure time alone, and the ratio (target ≤ 1.1×).

    python bench/measure_from_checkpoints.py [--out DIR] [--study configs/mini.toml]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import pyarrow.compute as pc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from study.executor import Executor  # noqa: E402
from study.jobs.measure import Want, measure_study  # noqa: E402
from study.jobs.run import run_study  # noqa: E402
from study.spec import load_study  # noqa: E402
from study.storage import Store  # noqa: E402


def _sums(store: Store) -> tuple[int, float, float]:
    t = store.read_all()
    t = t.filter(pc.equal(t["status"], "ok"))
    return t.num_rows, pc.sum(t["measure_seconds"]).as_py(), pc.sum(t["train_seconds"]).as_py()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="configs/mini.toml")
    ap.add_argument("--out", help="output folder (default: a temporary one)")
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="bench-remeasure-")
    study = load_study(args.study).with_out(out)
    store = Store(out, study.name)

    t0 = time.perf_counter()
    run = run_study(study, Executor(progress=False))
    run_wall = time.perf_counter() - t0
    n, measure_before, train = _sums(store)
    print(f"{study.name}: {n} ok networks in {out} (ran {run.ran} now in {run_wall:.0f} s wall; "
          f"training {train:.0f} s summed)")

    t0 = time.perf_counter()
    s = measure_study(study, Want(("all",), force=True), Executor(progress=False))
    wall = time.perf_counter() - t0
    _, measure_after, _ = _sums(store)
    ratio = s.task_seconds / measure_before
    print(f"{'':44}{'original run':>14}{'from checkpoints':>18}")
    print(f"{'measure time, summed over networks (s)':44}{measure_before:>14.1f}{measure_after:>18.1f}")
    print(f"{'task time incl. checkpoint + data load (s)':44}{'':>14}{s.task_seconds:>18.1f}")
    print(f"{'wall time of the command (s)':44}{run_wall if run.ran else float('nan'):>14.1f}{wall:>18.1f}")
    print(f"recomputed {s.computed} values on {s.done} networks ({len(s.failures)} failed); "
          f"ratio task time / original measure time = {ratio:.2f}x (target <= 1.1x)")


if __name__ == "__main__":
    main()
