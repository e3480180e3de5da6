"""What each measure costs, as a multiple of one training epoch of the same network.

    python bench/measure_cost.py [--presets mini,nin_fashion] [--threads 1]

For each preset: train the network to its target from the same initial
weights and compute the whole measure set, alternately, ``--repeats`` times
(after one warm-up of each, so one-off imports are excluded), and take the
fastest of each: on a shared, noisy machine the minimum is the honest cost.
Prints each measure's seconds over the mean epoch, and the whole set over
the whole training.
"""

from __future__ import annotations

import argparse
import time

import torch

from study.data import load_dataset
from study.measures import compute, select
from study.measures.context import MeasureContext
from study.models import build_model
from study.train import train

PRESETS = {
    # one network of configs/mini.toml (the largest: depth 3, width 128, batch 32)
    "mini": dict(dataset="digits", data={}, model="mlp", opts=dict(depth=3, width=128),
                 train=dict(optimizer="sgd", lr=0.1, batch_size=32, weight_decay=0.0,
                            target_loss=0.02, max_epochs=200)),
    # a NiN on Fashion-MNIST with 5,000 training examples
    "nin_fashion": dict(dataset="fashion_mnist", data={"train_size": 5000}, model="nin",
                        opts=dict(depth=2, width=32, batchnorm=True),
                        train=dict(optimizer="sgd", lr=0.1, batch_size=64, weight_decay=0.0,
                                   target_loss=0.05, max_epochs=60)),
}


def bench(name: str, p: dict, repeats: int) -> None:
    d = load_dataset(p["dataset"], **p["data"])
    measures = select(["all"])
    best_train = best_measure = None
    for _ in range(repeats + 1):  # the first round warms up
        torch.manual_seed(0)
        model = build_model(p["model"], d.input_shape, d.num_classes, **p["opts"])
        res = train(model, d.x_train, d.y_train, seed=0, **p["train"])
        ctx = MeasureContext(model, d.x_train, d.y_train, init_state=res.init_state,
                             train_log=res.log, seed=0)
        t0 = time.perf_counter()
        out = compute(ctx, measures)
        total = time.perf_counter() - t0
        if best_train is not None:
            if res.seconds < best_train.seconds:
                best_train = res
            if total < best_measure[0]:
                best_measure = (total, out)
        else:
            best_train, best_measure = res, (float("inf"), out)
    res, (total, out) = best_train, best_measure
    epoch_s = res.seconds / max(res.log.epochs, 1)
    print(f"\n== {name}: {p['model']} {p['opts']} on {p['dataset']} ({len(d.x_train)} examples), "
          f"{res.log.epochs} epochs to loss {res.final_train_loss:.4f} "
          f"({'converged' if res.converged else 'NOT converged'})")
    print(f"   fastest of {repeats}: one epoch {epoch_s:.3f} s; training {res.seconds:.2f} s; "
          f"whole measure set {total:.2f} s")
    print(f"   {'measure':<28} {'seconds':>8} {'× epoch':>8}   value")
    for m in sorted(out.seconds, key=out.seconds.get, reverse=True):
        print(f"   {m:<28} {out.seconds[m]:8.3f} {out.seconds[m] / epoch_s:8.2f}   {out.values[m]:.4g}"
              + (f"  (NaN: {out.reasons[m]})" if m in out.reasons else ""))
    print(f"   whole set / one epoch = {total / epoch_s:.1f}; whole set / training = "
          f"{total / res.seconds:.2f} (target ≤ 1 on the mini preset)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.presets.split(","):
        bench(name, PRESETS[name], args.repeats)


if __name__ == "__main__":
    main()
