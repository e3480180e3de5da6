"""Curvature measures against the field's libraries: value and seconds side by side.

    pip install -e '.[bench]'     # BackPACK, curvlinops, PyHessian
    python bench/curvature_peers.py [--widths 128 512] [--repeats 3] [--examples 512]

For each width W, a depth-4, W-wide MLP trained on digits (target loss 0.02,
SGD lr 0.1, batch 32, seed 0) and one seeded set of ``--examples`` training
examples. On those examples, with L(w) = (1/n) Σ_i CE(f(x_i), y_i):

- λ_max(∇²L): the project's ``hessian_max_eig`` (Lanczos), curvlinops'
  ``HessianLinearOperator`` with scipy ``eigsh``, PyHessian's power iteration;
- tr ∇²L: the project's ``hessian_trace`` (exact GGN trace on these ReLU
  nets), BackPACK ``DiagGGNExact`` and ``DiagHessian`` (summed diagonals),
  curvlinops' and PyHessian's Hutchinson;
- the empirical Fisher trace (1/n) Σ_i ‖∇ℓ_i‖²: the project's ``fisher_trace``,
  BackPACK ``BatchL2Grad`` (sum reduction, so each entry is ‖∇ℓ_i‖²),
  curvlinops' Hutchinson on its ``EFLinearOperator``.

The project runs with ``hessian_examples = fisher_examples = 0`` so it uses
exactly these examples. Every row is the median over ``--repeats`` calls
(seeds 0, 1, …, after one untimed warm-up call on 32 examples; time includes
each library's setup: extending the model, building the operator); the error column is |value − ref|/|ref| of the median
value and, after the slash, the largest over the repeats. References, in
float64: λ_max from curvlinops + ``eigsh`` at tol 1e-10 (an explicit Hessian
does not fit: P² floats for P ≈ 59k already at W = 128, and its O(P³)
eigendecomposition is out of reach on a CPU); tr ∇²L from BackPACK's exact
Hessian diagonal; the Fisher trace from per-example gradients of
``torch.func.vmap(grad)``. One thread throughout.

Verdict per quantity: the project against the fastest peer whose error is at
most max(the project's error, the floor: 1e-3 for λ_max, the project's Lanczos
tolerance; 1e-4 for the exact traces, float32 rounding).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import numpy as np
import torch
from torch import nn

from study.data import load_dataset
from study.measures import measure_full
from study.models import build_model
from study.train import TrainOptions, train

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)

QUANTITIES = {"lam_max": ("λ_max", "hessian_max_eig", 1e-3),
              "h_trace": ("tr H", "hessian_trace", 1e-4),
              "f_trace": ("tr F_emp", "fisher_trace", 1e-4)}


def libraries() -> dict:
    """The installed peers; a missing or broken one is skipped with the reason."""
    libs = {}
    for name, mod in (("backpack", "backpack"), ("curvlinops", "curvlinops"), ("pyhessian", "pyhessian.hessian")):
        try:
            libs[name] = __import__(mod, fromlist=["_"])
        except Exception as e:  # noqa: BLE001  (any failure to import means: skip the peer)
            print(f"skipping {name}: {type(e).__name__}: {e}")
    return libs


def trained_mlp(width: int, d) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("mlp", d.input_shape, d.num_classes, depth=4, width=width)
    train(model, d.x_train, d.y_train, TrainOptions(target_loss=0.02, lr=0.1, batch_size=32), seed=0)
    return model.eval()


# -- the project --------------------------------------------------------------------------


def project(measure_name: str):
    def run(model, x, y, seed):
        r = measure_full(model, (x, y), names=[measure_name], seed=seed,
                         knobs={"hessian_examples": 0, "fisher_examples": 0})
        if measure_name == "hessian_trace" and r.methods.get("hessian_trace") != "exact_ggn":
            print(f"  note: the project's hessian_trace used {r.methods.get('hessian_trace')}")
        return r.values[measure_name]
    return run


# -- peers --------------------------------------------------------------------------------


def curvlinops_eigsh(cl, tol: float):
    from scipy.sparse.linalg import eigsh

    def run(model, x, y, seed):
        params = [p for p in model.parameters() if p.requires_grad]
        H = cl.HessianLinearOperator(model, nn.CrossEntropyLoss(), params, [(x, y)], check_deterministic=False)
        dtype = np.float64 if x.dtype == torch.float64 else np.float32
        v0 = np.random.default_rng(seed).standard_normal(H.shape[0]).astype(dtype)
        return float(eigsh(H.to_scipy(dtype=dtype), k=1, which="LA", tol=tol, v0=v0, return_eigenvectors=False)[0])
    return run


def curvlinops_hutchinson(cl, operator: str, matvecs: int):
    def run(model, x, y, seed):
        torch.manual_seed(seed)
        params = [p for p in model.parameters() if p.requires_grad]
        A = getattr(cl, operator)(model, nn.CrossEntropyLoss(), params, [(x, y)], check_deterministic=False)
        return float(cl.hutchinson_trace(A, matvecs))
    return run


def pyhessian_run(ph, what: str):
    def run(model, x, y, seed):
        torch.manual_seed(seed)
        h = ph.hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False)
        if what == "eig":
            return float(h.eigenvalues(maxIter=100, tol=1e-3, top_n=1)[0][0])
        return float(np.mean(h.trace(maxIter=100, tol=1e-3)))
    return run


def backpack_run(bp, what: str):
    from backpack import backpack, extend
    from backpack.extensions import BatchL2Grad, DiagGGNExact, DiagHessian

    ext = {"diag_ggn_exact": DiagGGNExact, "diag_h": DiagHessian, "batch_l2": BatchL2Grad}[what]

    def run(model, x, y, seed):
        model = extend(model)
        loss_fn = extend(nn.CrossEntropyLoss(reduction="sum" if what == "batch_l2" else "mean"))
        loss = loss_fn(model(x), y)
        with backpack(ext()):
            loss.backward()
        total = sum(getattr(p, what).sum() for p in model.parameters())
        return float(total / len(x) if what == "batch_l2" else total)
    return run


def vmap_fisher_trace(model, x, y, chunk: int = 64) -> float:
    """(1/n) Σ_i ‖∇ℓ_i‖² from torch.func per-example gradients, in chunks."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss_i(p, xi, yi):
        return nn.functional.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

    per = vmap(grad(loss_i), in_dims=(None, 0, 0))
    total = 0.0
    for i in range(0, len(x), chunk):
        g = per(params, x[i:i + chunk], y[i:i + chunk])
        total += float(sum((t.flatten(1) ** 2).sum(1).sum() for t in g.values()))
    return total / len(x)


# -- driver -------------------------------------------------------------------------------


def timed(fn, model, x, y, repeats: int):
    values, seconds = [], []
    for r in range(repeats):
        m = copy.deepcopy(model)
        t0 = time.perf_counter()
        values.append(fn(m, x, y, r))
        seconds.append(time.perf_counter() - t0)
    return values, statistics.median(seconds)


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else float("nan")


def references(model, x, y, libs) -> dict:
    m64, x64 = copy.deepcopy(model).double(), x.double()
    ref = {}
    t0 = time.perf_counter()
    if "curvlinops" in libs:
        ref["lam_max"] = (curvlinops_eigsh(libs["curvlinops"], 1e-10)(m64, x64, y, 0), "curvlinops+eigsh f64 tol 1e-10")
    if "backpack" in libs:
        ref["h_trace"] = (backpack_run(libs["backpack"], "diag_h")(copy.deepcopy(m64), x64, y, 0),
                          "BackPACK DiagHessian f64")
    ref["f_trace"] = (vmap_fisher_trace(m64, x64, y), "torch.func vmap(grad) f64")
    print(f"  references computed in {time.perf_counter() - t0:.1f} s")
    return ref


def contenders(libs) -> dict:
    rows = {"lam_max": [("project hessian_max_eig", project("hessian_max_eig"))],
            "h_trace": [("project hessian_trace", project("hessian_trace"))],
            "f_trace": [("project fisher_trace", project("fisher_trace"))]}
    if "curvlinops" in libs:
        cl = libs["curvlinops"]
        rows["lam_max"] += [("curvlinops+eigsh tol 1e-3", curvlinops_eigsh(cl, 1e-3)),
                            ("curvlinops+eigsh tol 1e-6", curvlinops_eigsh(cl, 1e-6))]
        rows["h_trace"] += [("curvlinops Hutchinson GGN 8", curvlinops_hutchinson(cl, "GGNLinearOperator", 8)),
                            ("curvlinops Hutchinson H 8", curvlinops_hutchinson(cl, "HessianLinearOperator", 8))]
        rows["f_trace"] += [("curvlinops Hutchinson EF 8", curvlinops_hutchinson(cl, "EFLinearOperator", 8))]
    if "pyhessian" in libs:
        ph = libs["pyhessian"]
        rows["lam_max"] += [("PyHessian power it. tol 1e-3", pyhessian_run(ph, "eig"))]
        rows["h_trace"] += [("PyHessian Hutchinson tol 1e-3", pyhessian_run(ph, "trace"))]
    if "backpack" in libs:
        bp = libs["backpack"]
        rows["h_trace"] += [("BackPACK DiagGGNExact", backpack_run(bp, "diag_ggn_exact")),
                            ("BackPACK DiagHessian", backpack_run(bp, "diag_h"))]
        rows["f_trace"] += [("BackPACK BatchL2Grad", backpack_run(bp, "batch_l2"))]
    return rows


def verdict(label: str, floor: float, table: list) -> str:
    (_, _, _, p_err, p_s), peers = table[0], table[1:]
    bar = max(p_err, floor)
    equal = [row for row in peers if row[3] <= bar]
    if not equal:
        return f"  verdict {label}: no peer within error {bar:.1e}; the project is the most accurate ({p_s:.3f} s)"
    name, _, _, _, s = min(equal, key=lambda row: row[4])
    ok = "yes" if p_s <= s else "NO"
    return (f"  verdict {label}: {ok} — project {p_s:.3f} s vs fastest peer within error {bar:.1e}, "
            f"{name}, {s:.3f} s (project/peer = {p_s / s:.2f}×)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--examples", type=int, default=512)
    args = ap.parse_args()
    torch.set_num_threads(1)
    libs = libraries()
    d = load_dataset("digits")
    idx = torch.randperm(len(d.x_train), generator=torch.Generator().manual_seed(0))[:args.examples]
    x, y = d.x_train[idx], d.y_train[idx]
    summary = []
    for width in args.widths:
        model = trained_mlp(width, d)
        n_params = sum(p.numel() for p in model.parameters())
        with torch.no_grad():
            loss = float(nn.functional.cross_entropy(model(x), y))
        print(f"\n== depth-4 MLP, width {width}: {n_params} parameters, {len(x)} examples, loss {loss:.4f}")
        ref = references(model, x, y, libs)
        for key, fns in contenders(libs).items():
            label, _, floor = QUANTITIES[key]
            r, r_name = ref.get(key, (float("nan"), "none"))
            print(f"  {label}: reference {r:.6g} ({r_name})")
            print(f"    {'method':<32}{'value':>12}{'rel. err med/max':>20}{'seconds':>10}")
            table = []
            for name, fn in fns:
                fn(copy.deepcopy(model), x[:32], y[:32], 0)  # warm-up: one-off imports and tracing
                values, s = timed(fn, model, x, y, args.repeats)
                v = statistics.median(values)
                err, worst = rel(v, r), max(rel(u, r) for u in values)
                table.append((name, v, err, worst, s))
                print(f"    {name:<32}{v:>12.6g}{f'{err:.1e} / {worst:.1e}':>20}{s:>10.3f}")
            line = verdict(label, floor, table)
            print(line)
            summary.append((width, line.strip()))
    print("\n== verdicts")
    for width, line in summary:
        print(f"  W={width}: {line}")


if __name__ == "__main__":
    main()
