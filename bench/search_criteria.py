"""The flatness searches against their own criterion (issue 10, item 2).

For each seed-0 network of a study (default: the mini study), trained as the runner trains it,
a MeasureContext with the study's knobs (the defaults for the mini study) runs the four searches
of `study.measures.flatness` (σ, σ', α, α'); then, independently of the search's own draws:

- σ, σ': the expected training-error rise at the found scale, estimated with ``--draws`` fresh
  Gaussian draws (default 200; a generator the search never uses), on the same examples the
  search used. Reported: the mean rise, its 95 % Monte-Carlo interval (mean ± 1.96·sd/√draws),
  and where δ = 0.1 lies: ``above`` the interval, ``within`` it, or ``below`` it. The criterion
  holds within Monte-Carlo error unless δ is below the interval.
- α, α': a stronger ascent at the found scale: ``--boost`` × flat_steps steps and ``--boost`` ×
  flat_restarts restarts (default 4×) of the same projected sign-gradient ascent, from fresh
  starts (another generator), never stopping early. Reported: the largest error rise over every
  visited point, and whether it stays ≤ δ + 0.02.

Summary: the share of networks meeting each check (target for α, α': ≥ 90 %). A search that is
`Undefined` on a network is counted as neither passing nor failing and listed.

    python bench/search_criteria.py [--study configs/mini.toml] [--limit N] [--draws 200] [--boost 4]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from study.measures import MeasureContext, core, flatness, measure_set
from study.measures.context import stable_seed
from study.measures.registry import Undefined
from study.runner import build_network, load_data
from study.spec import load_study
from study.train import train

DELTA = flatness.DELTA
EPS = flatness.EPS
SLACK = 0.02
MC = ("sigma", "sigma_mag")
WC = ("alpha", "alpha_mag")


def errors(ctx: MeasureContext, w: torch.Tensor) -> int:
    """Wrong predictions of the network with flat parameters ``w`` on the searches' examples."""
    with torch.no_grad():
        return sum(int(core.at(ctx, w, xb, yb, core.wrong)) for xb, yb in flatness.measure_batches(ctx))


def mc_check(ctx: MeasureContext, what: str, s: float, draws: int) -> tuple[float, float, float]:
    """(mean rise, 95 % lower, 95 % upper) of err(w+u) − err(w) over ``draws`` fresh draws."""
    w = core.flat(ctx)
    wrong0, n = flatness.err0(ctx)
    gen = torch.Generator().manual_seed(stable_seed(ctx.seed, "bench.search_criteria", what))
    std = (torch.full_like(w, s) if what == "sigma"
           else torch.sqrt(s * s * w * w + EPS * EPS))
    rises = []
    for _ in range(draws):
        z = torch.randn(w.numel(), generator=gen).to(w.device, w.dtype)
        rises.append((errors(ctx, w + z * std) - wrong0) / n)
    r = torch.tensor(rises, dtype=torch.float64)
    mean = float(r.mean())
    half = 1.96 * float(r.std(unbiased=True)) / math.sqrt(draws)
    return mean, mean - half, mean + half


def wc_check(ctx: MeasureContext, what: str, s: float, steps: int, restarts: int) -> float:
    """Largest err(w+v) − err(w) over every point of ``restarts`` ascents of ``steps`` steps in
    the box of scale ``s`` (the search's update rule, fresh starts, no early stop)."""
    w = core.flat(ctx)
    wrong0, n = flatness.err0(ctx)
    x, y = flatness.search_set(ctx)
    b = torch.full_like(w, s) if what == "alpha" else s * (w.abs() + EPS)
    gen = torch.Generator().manual_seed(stable_seed(ctx.seed, "bench.search_criteria", what))
    step = 2.5 / max(steps, 1)
    worst = 0
    for _ in range(restarts):
        t = (2 * torch.rand(w.numel(), generator=gen) - 1).to(w.device, b.dtype)
        for it in range(steps + 1):
            v = w + b * t
            if it < steps:
                _, g, n_wrong = core.loss_and_grad(ctx, v, x, y)
                t = (t + step * torch.sign(g)).clamp_(-1.0, 1.0)
            else:
                n_wrong = errors(ctx, v)
            worst = max(worst, int(n_wrong))
    return (worst - wrong0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="configs/mini.toml")
    ap.add_argument("--limit", type=int, default=0, help="only the first N seed-0 networks (0: all)")
    ap.add_argument("--draws", type=int, default=200, help="fresh Monte-Carlo draws for σ, σ'")
    ap.add_argument("--boost", type=int, default=4, help="× steps and × restarts of the α, α' check")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    study = load_study(args.study)
    specs = [s for s in study.runs() if s.seed == study.seeds[0]]
    specs = specs[:args.limit] if args.limit else specs
    device = torch.device("cpu")

    print(f"study {args.study}: {len(specs)} networks of seed {study.seeds[0]}; "
          f"δ = {DELTA}; σ, σ' checked with {args.draws} fresh draws; "
          f"α, α' with {args.boost}× steps and {args.boost}× restarts", flush=True)
    head = (f"{'#':>2} {'network':<40} {'err0':>6} | {'σ':>8} {'rise':>6} {'95% MC':>15} {'δ':>6} | "
            f"{'σ′':>8} {'rise':>6} {'95% MC':>15} {'δ':>6} | {'α':>8} {'rise':>6} {'ok':>3} | "
            f"{'α′':>8} {'rise':>6} {'ok':>3}")
    rows, undefined, knobs_used = [], [], None
    t_all = time.perf_counter()
    for i, spec in enumerate(specs):
        data = load_data(spec, device)
        model = build_network(spec, data, device)
        res = train(model, data.x_train, data.y_train, spec.train,
                    seed=stable_seed(spec.seed, "order"))
        mx, my = measure_set(data.x_train, data.y_train, spec.measures.subset, spec.seed)
        ctx = MeasureContext(model, mx, my, init_state=res.init_state, train_log=res.log,
                             seed=spec.seed, knobs=spec.measures.knobs,
                             n_train=len(data.x_train), device=device)
        knobs_used = knobs_used or {k: ctx.knob(k) for k in ("flat_samples", "flat_steps",
                                                             "flat_restarts", "flat_subset", "flat_confidence")}
        if i == 0:
            print(f"knobs: {knobs_used}", flush=True)
            print(head, flush=True)
        row = {"net": " ".join(f"{k}={v}" for k, v in spec.hp.items()), "err0": flatness.err0(ctx)[0] / flatness.err0(ctx)[1]}
        for what in MC + WC:
            try:
                s = flatness.search(ctx, what).scale
            except Undefined as e:
                row[what] = None
                undefined.append((i, what, str(e)))
                continue
            if what in MC:
                row[what] = (s, *mc_check(ctx, what, s, args.draws))
            else:
                row[what] = (s, wc_check(ctx, what, s, args.boost * int(ctx.knob("flat_steps")),
                                         args.boost * int(ctx.knob("flat_restarts"))))
        rows.append(row)
        cells = [f"{i:>2} {row['net'][:40]:<40} {row['err0']:>6.3f}"]
        for what in MC:
            r = row[what]
            if r is None:
                cells.append(f"{'undefined':>39}")
                continue
            s, m, lo, hi = r
            where = "above" if DELTA > hi else ("below" if DELTA < lo else "within")
            cells.append(f"{s:>8.4g} {m:>6.3f} [{lo:>6.3f},{hi:>6.3f}] {where:>6}")
        for what in WC:
            r = row[what]
            if r is None:
                cells.append(f"{'undefined':>19}")
                continue
            s, rise = r
            cells.append(f"{s:>8.4g} {rise:>6.3f} {'yes' if rise <= DELTA + SLACK + 1e-9 else 'NO':>3}")
        print(" | ".join(cells), flush=True)

    print(f"\nsummary over {len(rows)} networks ({time.perf_counter() - t_all:.0f} s in all):")
    for what in MC:
        got = [r[what] for r in rows if r[what] is not None]
        ok = sum(lo <= DELTA + 1e-9 for _, _, lo, _ in got)
        above = sum(DELTA > hi for _, _, _, hi in got)
        means = [m for _, m, _, _ in got]
        print(f"  {what:<9}: rise ≤ δ within MC error on {ok}/{len(got)} = {ok / max(len(got), 1):.0%} "
              f"(δ above the interval on {above}); mean rise {min(means, default=math.nan):.3f}–"
              f"{max(means, default=math.nan):.3f}")
    for what in WC:
        got = [r[what] for r in rows if r[what] is not None]
        ok = sum(rise <= DELTA + SLACK + 1e-9 for _, rise in got)
        rises = [rise for _, rise in got]
        frac = ok / max(len(got), 1)
        print(f"  {what:<9}: rise ≤ δ + {SLACK} under a {args.boost}× ascent on {ok}/{len(got)} = "
              f"{frac:.0%} (target ≥ 90 %: {'met' if frac >= 0.9 else 'NOT met'}); "
              f"rise {min(rises, default=math.nan):.3f}–{max(rises, default=math.nan):.3f}")
    for i, what, msg in undefined:
        print(f"  undefined: network {i} {what}: {msg}")


if __name__ == "__main__":
    main()
