"""What each measure costs, as a multiple of one training epoch of the same network.

    python bench/measure_cost.py [--study configs/mini.toml] [--limit N] [--threads 1]
    python bench/measure_cost.py --study configs/nin_fashion_mnist_small.toml --limit 1
    python bench/measure_cost.py --width 512 --depth 4   # one MLP of that shape instead
    python bench/measure_cost.py --widths 32,64,128,256,512 --depth 4   # a width sweep

For each network of the study (seed 0 of each grid point, the first N with
--limit): train it to its target, then compute its whole measure set, one
right after the other so that the machine's load weighs on both alike. A
warm-up first (one epoch, then the measures) keeps one-off imports out.
Prints each measure's total seconds over the mean epoch, and the whole
set's cost over the whole training, summed over the networks.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import defaultdict

import torch

from study.data import load_dataset
from study.measures import KNOBS, MeasureContext, compute, select, stable_seed
from study.measures.sharpness import FS_RADIUS, LS_POINTS, loss_surface
from study.models import MLPOptions, family
from study.spec import load_study
from study.train import train


def train_and_measure(spec, max_epochs=None):
    """Train the network of ``spec``, then compute its measure set. Knobs that only add an
    artifact (the 2-D loss surface) are left at their defaults for the measure set; the
    surface, where the study asks for it, is timed on its own right after. Returns (training
    result, measure result, measure seconds, examples, (surface N, its seconds))."""
    d = load_dataset(spec.dataset, spec.data, root=spec.data_source.root, download=spec.data_source.download)
    torch.manual_seed(stable_seed(spec.seed, "init"))
    model = family(spec.model).build(d.input_shape, d.num_classes, spec.model_options)
    options = spec.train.model_copy(update={"max_epochs": max_epochs or spec.train.max_epochs})
    res = train(model, d.x_train, d.y_train, options, seed=spec.seed)
    knobs = {k: v for k, v in spec.measures.knobs.items() if not KNOBS[k].artifact}
    ctx = MeasureContext(model, d.x_train, d.y_train, init_state=res.init_state,
                         train_log=res.log, seed=spec.seed, knobs=knobs)
    t0 = time.perf_counter()
    out = compute(ctx, select(spec.measures.include, spec.measures.exclude))
    measure_s = time.perf_counter() - t0
    n = int(spec.measures.knobs.get(LS_POINTS, 0))
    t0 = time.perf_counter()
    if n:
        loss_surface(ctx, n, float(ctx.knob(FS_RADIUS)))
    return res, out, measure_s, len(d.x_train), (n, time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="configs/mini.toml")
    ap.add_argument("--limit", type=int, default=0, help="only the first N networks")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--width", type=int, default=0,
                    help="instead of the grid: one MLP of this width (the first network's other settings)")
    ap.add_argument("--depth", type=int, default=4, help="... and this depth (with --width)")
    ap.add_argument("--widths", default="",
                    help="a width sweep: comma-separated widths, one MLP each (--depth), "
                         "printed as parameters against whole set / training")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    study = load_study(args.study)
    specs = [s for s in study.runs() if s.seed == study.seeds[0]]
    specs = specs[:args.limit] if args.limit else specs
    if args.widths:
        return sweep(specs[0], [int(w) for w in args.widths.split(",")], args.depth)
    if args.width:
        s = specs[0]
        specs = [as_mlp(s, args.width, args.depth)]
    train_and_measure(specs[0], max_epochs=1)  # warm-up: one-off imports and compilation
    train_s = measure_s = 0.0
    epochs = 0
    per = defaultdict(float)
    surface_s, surface_n = 0.0, 0
    for spec in specs:
        res, out, total, n, (surface_n, s) = train_and_measure(spec)
        surface_s += s
        train_s += res.seconds
        measure_s += total
        epochs += res.log.epochs
        for k, v in out.seconds.items():
            per[k] += v
        print(f"  {spec.hp}: {res.log.epochs} epochs, training {res.seconds:.2f} s, "
              f"measures {total:.2f} s ({total / res.seconds:.2f}x)", flush=True)
    epoch_s = train_s / epochs
    print(f"\n== {study.name}: {len(specs)} networks ({study.model} on {study.dataset}, {n} examples), "
          f"{args.threads} thread(s)")
    print(f"   mean epoch {epoch_s:.3f} s; training {train_s:.1f} s; whole measure sets {measure_s:.1f} s")
    print(f"   {'measure':<28} {'× epoch':>8}  (mean per network)")
    for m in sorted(per, key=per.get, reverse=True):
        print(f"   {m:<28} {per[m] / len(specs) / epoch_s:8.2f}")
    print(f"   whole set / one epoch = {measure_s / len(specs) / epoch_s:.1f}; "
          f"whole set / training = {measure_s / train_s:.2f}")
    if surface_n:
        print(f"   besides the measure set, the study's optional {surface_n} × {surface_n} loss surface "
              f"(loss_surface_points): {surface_s / len(specs) / epoch_s:.1f} epochs per network, "
              f"{surface_s / train_s:.2f} × training")


def as_mlp(spec, width, depth):
    """The study point ``spec`` as an MLP of that width and depth."""
    given = spec.model_options.model_dump(exclude_unset=True)
    return dataclasses.replace(spec, model="mlp", model_options=MLPOptions(**{**given, "width": width, "depth": depth}),
                               hp={**spec.hp, "width": width, "depth": depth})


def sweep(spec, widths, depth) -> None:
    """Train and measure one MLP per width, in that order; print the cost ratio against
    the parameter count, and the five costliest measures at each width."""
    train_and_measure(as_mlp(spec, widths[0], depth), max_epochs=1)  # warm-up
    print(f"{'width':>6} {'params':>9} {'epochs':>6} {'train s':>8} {'measure s':>9} "
          f"{'ratio':>6}  costliest measures (× epoch)")
    for w in widths:
        res, out, total, _, _ = train_and_measure(as_mlp(spec, w, depth))
        params = sum(p.numel() for p in res.init_state.values())
        epoch_s = res.seconds / res.log.epochs
        top = sorted(out.seconds, key=out.seconds.get, reverse=True)[:5]
        print(f"{w:>6} {params:>9} {res.log.epochs:>6} {res.seconds:>8.2f} {total:>9.2f} "
              f"{total / res.seconds:>6.2f}  "
              + ", ".join(f"{m} {out.seconds[m] / epoch_s:.1f}" for m in top), flush=True)


if __name__ == "__main__":
    main()
