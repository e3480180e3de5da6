"""Time the ranking table on synthetic studies, and the speed-up over the brute-force definitions.

    python bench/rank.py [--sizes 2187,10000,100000] [--measures 50] [--bf-measures 3]

For each size: the full rank (τ, Ψ and every ψ_k, CMI over every
conditioning set of up to 2 of the 7 axes, robust sign-error; no
bootstrap), then the bootstrap alone (``rank_table(n_boot=B)`` minus the
full rank, B replicates; projected to 200 where B is smaller). At 2,187
runs (the 7-axis × 3-value grid once), the brute-force definitions of
bench/bruteforce.py run on the first few measures and are scaled to all of
them, and the largest difference from the fast table is printed.
Targets (2 cores): 100,000 × 50 within 60 s; ≥ 100× faster than brute force at 2,187.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from analysis.stats._parallel import n_threads  # noqa: E402
from analysis.synthetic import synthetic_runs  # noqa: E402
from analysis.table import codes, rank_table  # noqa: E402
from bench.bruteforce import bf_cmi_all, bf_psi, bf_robust, bf_tau  # noqa: E402


def timed(fn):
    """(result, wall seconds, CPU seconds of this process, all threads)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def brute_force(df, measures: list[str]) -> tuple[dict, dict]:
    """Every statistic of the given measures by definition; returns results and seconds per statistic."""
    axes = [c for c in df.columns if c.startswith("hp.")]
    ax = np.column_stack([codes(df[c]) for c in axes])
    keys = np.column_stack([codes(df["seed"]), codes(df["dataset"])])
    g = df["gap"].to_numpy()
    n_test = float(df["n_test"][0])
    out: dict = {}
    secs = {"tau": 0.0, "psi": 0.0, "cmi": 0.0, "robust_max": 0.0}
    for m in measures:
        mu = df[m].to_numpy()
        k = np.isfinite(mu) & np.isfinite(g)
        r = {}
        for stat, fn in (("tau", lambda: bf_tau(g[k], mu[k])),
                         ("psi", lambda: bf_psi(g[k], mu[k], ax[k], keys[k])[0]),
                         ("cmi", lambda: min(bf_cmi_all(g[k], mu[k], ax[k], 2).values())),
                         ("robust_max", lambda: bf_robust(g[k], mu[k], ax[k], n_test)[2])):
            r[stat], wall, _ = timed(fn)
            secs[stat] += wall
        out[m] = r
    return out, secs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="2187,10000,100000")
    ap.add_argument("--measures", type=int, default=50)
    ap.add_argument("--bf-measures", type=int, default=3, help="measures the brute force runs on (then scaled)")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    M = args.measures
    warnings.simplefilter("ignore")
    _, compile_s, _ = timed(lambda: rank_table(synthetic_runs(60, 3), n_boot=2))
    print(f"threads: {n_threads()}; os.getloadavg() {os.getloadavg()[0]:.1f} (other work on the machine "
          f"inflates wall time; CPU time is this process's, all threads)")
    print(f"first call (numba compile or cache load): {compile_s:.1f} s")
    print(f"{'runs':>8} {'measures':>8} {'full rank wall s':>17} {'cpu s':>7}   bootstrap (wall / cpu)")
    fast_2187 = None
    for n in sizes:
        df = synthetic_runs(n, M, nan_frac=0.02, failed_frac=0.01, unconverged_frac=0.01)
        table, full_s, full_c = timed(lambda: rank_table(df, n_boot=0))
        boots = 200 if n <= 3000 else (20 if n <= 20000 else 2)
        _, wb_s, wb_c = timed(lambda: rank_table(df, n_boot=boots))
        boot_s, boot_c = max(wb_s - full_s, 0.0), max(wb_c - full_c, 0.0)
        proj = f"{boot_s:.1f} s / {boot_c:.1f} s for {boots}"
        if boots != 200:
            proj += f" (≈{boot_s * 200 / boots:.0f} s / {boot_c * 200 / boots:.0f} s for 200)"
        print(f"{n:>8} {M:>8} {full_s:>17.2f} {full_c:>7.1f}   {proj}", flush=True)
        if n == 2187:
            fast_2187 = (df, table, full_s)
    if fast_2187 is not None:
        df, table, full_s = fast_2187
        pop = df.filter((df["status"] == "ok") & df["converged"])
        measures = [c for c in pop.columns if c.startswith("measure.")][: args.bf_measures]
        ref, secs = brute_force(pop, measures)
        bf_s = sum(secs.values())
        scaled = bf_s * M / len(measures)
        worst = 0.0
        for m, r in ref.items():
            row = table.filter(table["measure"] == m[len("measure."):]).row(0, named=True)
            for key, val in r.items():
                a, b = row[key], val
                if not (np.isnan(a) and np.isnan(b)):
                    worst = max(worst, abs(a - b))
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in secs.items())
        print(f"brute force at 2187 runs (numpy over all pairs): {bf_s:.1f} s for {len(measures)} measures "
              f"({parts}), scaled to {M}: {scaled:.0f} s; fast full rank {full_s:.2f} s; "
              f"speed-up ×{scaled / full_s:.0f} (largest difference from the fast table {worst:.1e})")


if __name__ == "__main__":
    main()
