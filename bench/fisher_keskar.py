"""The Fisher group and Keskar's ζ: the previous implementation against today's, same networks.

    python bench/fisher_keskar.py [--study configs/mini.toml] [--limit N] [--width 512 --depth 4]
                                  [--threads 1] [--memory-mb 512]

Trains the study's seed-0 networks (and, with --width/--depth, one more MLP of that shape on
the study's data), then on each times the Fisher group (fisher_trace, fisher_fro,
fisher_max_eig) and the two Keskar measures twice: with the previous implementation, kept
here only for this comparison (Gram blocks recomputing per-example gradients through the
flat vector; L-BFGS-B evaluations through the flat vector with float64↔float32 copies), and
with the measures as registered. Prints old and new seconds per network and the largest
relative difference of the values.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.linalg
import torch
from scipy.optimize import Bounds, minimize
from torch.func import grad, vmap

from study.data import load_dataset
from study.measures import MeasureContext, core, curvature, sharpness, stable_seed
from study.models import build_model
from study.spec import load_study
from study.train import TrainOptions, train

# -- the previous implementation (for the comparison only) ----------------------------


def old_per_example_grads(ctx, x, y):
    f = vmap(grad(lambda v, xi, yi: core.batch_loss(ctx, v, xi[None], yi[None])),
             in_dims=(None, 0, 0))
    return f(core.flat(ctx), x, y).detach()


def old_fisher_gram(ctx):
    idx = ctx.subset(int(ctx.knob(curvature.FISHER_N)), "fisher")
    x, y = ctx.x[idx], ctx.y[idx]
    n = len(idx)
    c = core.fit(ctx, (2 * core.flat(ctx).numel() + 4 * core.probe(ctx).outputs) * core.itemsize(ctx))
    starts = list(range(0, n, c))
    G = torch.zeros(n, n, dtype=torch.float64, device=ctx.device)
    for bi, i in enumerate(starts):
        gi = old_per_example_grads(ctx, x[i:i + c], y[i:i + c])
        for j in starts[:bi + 1]:
            gj = gi if j == i else old_per_example_grads(ctx, x[j:j + c], y[j:j + c])
            blk = (gi @ gj.T).double()
            G[i:i + c, j:j + c] = blk
            G[j:j + c, i:i + c] = blk.T
    return G.cpu().numpy()


def old_fisher_group(ctx):
    G = old_fisher_gram(ctx)
    n = len(G)
    return {"fisher_trace": float(np.trace(G)) / n,
            "fisher_fro": float(np.sqrt((G ** 2).sum())) / n,
            "fisher_max_eig": float(scipy.linalg.eigvalsh(G, subset_by_index=[n - 1, n - 1])[0]) / n}


def old_keskar(ctx, eps, maxiter):
    w = core.flat(ctx)
    idx = ctx.subset(int(ctx.knob(sharpness.KESKAR_N)), "keskar")
    x, y = ctx.x[idx], ctx.y[idx]
    bound = (eps * (w.abs() + 1)).double().cpu().numpy()
    seen = {}

    def neg_loss(v):
        v = torch.as_tensor(v, dtype=w.dtype, device=w.device)
        L, g, _ = core.loss_and_grad(ctx, w + v, x, y)
        seen.setdefault("L0", float(L))
        return -float(L), -g.double().cpu().numpy()

    res = minimize(neg_loss, np.zeros(len(bound)), jac=True, method="L-BFGS-B",
                   bounds=Bounds(-bound, bound), options={"maxiter": int(maxiter)})
    L0 = seen["L0"]
    return 100.0 * (max(-float(res.fun), L0) - L0) / (1.0 + L0)


def old_keskar_group(ctx):
    it = ctx.knob(sharpness.KESKAR_ITERS)
    return {"keskar_sharpness_1e-3": old_keskar(ctx, 1e-3, it),
            "keskar_sharpness_5e-4": old_keskar(ctx, 5e-4, it)}


# -- today's, as registered -----------------------------------------------------------


def new_fisher_group(ctx):
    return {"fisher_trace": curvature.fisher_trace(ctx), "fisher_fro": curvature.fisher_fro(ctx),
            "fisher_max_eig": curvature.fisher_max_eig(ctx)}


def new_keskar_group(ctx):
    return {"keskar_sharpness_1e-3": sharpness.keskar_sharpness_1e3(ctx),
            "keskar_sharpness_5e-4": sharpness.keskar_sharpness_5e4(ctx)}


def timed(fn, make_ctx):
    ctx = make_ctx()  # a fresh context: nothing cached
    t0 = time.perf_counter()
    out = fn(ctx)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    return out, time.perf_counter() - t0


def rel(a: dict, b: dict) -> float:
    return max(abs(a[k] - b[k]) / max(abs(a[k]), abs(b[k]), 1e-300) for k in a)


def trained(dataset, data, model, options, train_opts, seed):
    d = load_dataset(dataset, **data)
    torch.manual_seed(stable_seed(seed, "init"))
    net = build_model(model, d.input_shape, d.num_classes, **options)
    res = train(net, d.x_train, d.y_train, TrainOptions(**train_opts), seed=seed)
    return net, d, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="configs/mini.toml")
    ap.add_argument("--limit", type=int, default=0, help="only the first N networks (0: all)")
    ap.add_argument("--width", type=int, default=0, help="also one MLP of this width ...")
    ap.add_argument("--depth", type=int, default=4, help="... and depth, on the study's data")
    ap.add_argument("--max-epochs", type=int, default=0, help="cap the training (0: the study's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--memory-mb", type=float, default=0, help="memory_mb knob (0: default)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    study = load_study(args.study)
    specs = [s for s in study.runs() if s.seed == study.seeds[0]]
    specs = specs[:args.limit] if args.limit else specs
    jobs = [(str(s.hp), s.dataset, s.data.model_dump(), s.model, s.model_options.model_dump(exclude_unset=True),
             s.train.model_dump(), s.seed, s.measures.knobs) for s in specs]
    if args.width:
        s = specs[0]
        opts = {**s.model_options.model_dump(exclude_unset=True), "width": args.width, "depth": args.depth}
        jobs.append((f"mlp width {args.width} depth {args.depth}", s.dataset, s.data.model_dump(), "mlp", opts,
                     s.train.model_dump(), s.seed, s.measures.knobs))
    knobs_extra = {"memory_mb": args.memory_mb} if args.memory_mb else {}
    tot = {"fisher": [0.0, 0.0], "keskar": [0.0, 0.0]}
    worst = {"fisher": 0.0, "keskar": 0.0}
    print(f"{'network':<58} {'P':>8} {'fisher old':>10} {'new':>7} {'rel':>8} "
          f"{'keskar old':>10} {'new':>7} {'rel':>8}", flush=True)
    for label, dataset, data, model, options, train_opts, seed, knobs in jobs:
        t = dict(train_opts)
        if args.max_epochs:
            t["max_epochs"] = min(t["max_epochs"], args.max_epochs)
        net, d, res = trained(dataset, data, model, options, t, seed)

        def make_ctx():
            return MeasureContext(net, d.x_train, d.y_train, train_log=res.log, seed=seed,
                                  knobs={**knobs, **knobs_extra}, device=args.device)
        row = [label, sum(p.numel() for p in net.parameters())]
        for group, old, new in [("fisher", old_fisher_group, new_fisher_group),
                                ("keskar", old_keskar_group, new_keskar_group)]:
            a, ta = timed(old, make_ctx)
            b, tb = timed(new, make_ctx)
            r = rel(a, b)
            tot[group][0] += ta
            tot[group][1] += tb
            worst[group] = max(worst[group], r)
            row += [ta, tb, r]
        print(f"{row[0]:<58} {row[1]:>8} {row[2]:>10.3f} {row[3]:>7.3f} {row[4]:>8.1e} "
              f"{row[5]:>10.3f} {row[6]:>7.3f} {row[7]:>8.1e}", flush=True)
    for g in tot:
        print(f"{g}: old {tot[g][0]:.2f} s, new {tot[g][1]:.2f} s "
              f"({tot[g][0] / max(tot[g][1], 1e-9):.1f}× faster), "
              f"largest relative difference {worst[g]:.1e}")


if __name__ == "__main__":
    main()
