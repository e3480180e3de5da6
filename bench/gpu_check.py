"""Every measure on CPU and on CUDA for the same trained NiN: agreement, GPU seconds, GPU memory.

    python bench/gpu_check.py                           # CPU against CUDA, full size (≤ 5 min, 1 GPU)
    python bench/gpu_check.py --device cpu --size tiny  # CPU against a second CPU run (the test)
    python bench/gpu_check.py --out gpu_check.json      # the figures as JSON too

Each network (a NiN with BatchNorm) is trained on the checked device on
CIFAR-shaped synthetic data (3×32×32, 10 classes, a seeded class-prototype
task, `synthetic_cifar`), its initial and final weights are copied to the CPU,
and `measure_full` computes the whole measure set twice with the same seed,
knobs and measure subset: once on the CPU (the reference) and once on the
checked device. With ``--device cpu`` the second run is on the CPU too, so the
check is one of determinism, small enough for the test suite.

Printed per measure: reference value, checked value, relative difference
``|a − b| / max(|a|, |b|)``, the tolerance, the checked device's seconds
(`measure_full`'s, synchronised; shared work is charged as `compute` charges it)
and the verdict; per network: training seconds, total measure seconds and peak
GPU memory (`torch.cuda.max_memory_allocated`, reset after training). The exit
status is 1 when any measure disagrees beyond its tolerance (`TOLERANCE`), 2
when the device is unavailable.

For the check, and in this process only, CUDA is made as deterministic as
PyTorch allows: ``torch.backends.cudnn.deterministic = True``,
``cudnn.benchmark = False``, ``torch.use_deterministic_algorithms(True,
warn_only=True)`` with ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (the ops PyTorch has
no deterministic kernel for are printed, not fatal), and TF32 is switched off
for matmuls and convolutions (cuDNN allows it by default, which alone moves
float32 convolutions by ~1e-3 relative; ``--tf32`` keeps PyTorch's defaults to
see the effect). The library sets none of these: they are global switches.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from study.measures import REGISTRY, measure_full, stable_seed  # noqa: E402
from study.models import build_model  # noqa: E402
from study.train import TrainOptions, train  # noqa: E402

# Tolerance per kind of measure: (relative, absolute); a and b agree when
# |a − b| ≤ abs + rel · max(|a|, |b|). NaN agrees only with NaN.
TOLERANCE = {
    # Closed forms of the weights, margins or the training log (norms, margins,
    # counts, the optimisation measures): float32 rounding only, ~1e-6 relative.
    "closed": (1e-4, 1e-9),
    # Deterministic given the seeded draws, which are made on the CPU and moved to the
    # device (context.MeasureContext.randn), so both devices see the same draws: Lanczos,
    # power iteration, exact Fisher/GGN sums, Monte-Carlo means over shared draws.
    # Rounding may change where an iteration stops (lanczos_tol = 1e-3 relative), and
    # differences of nearly equal losses (L(w + u) − L(w)) amplify rounding.
    "shared_draws": (1e-3, 1e-9),
    # Spectral fractions from SLQ: a Ritz value that rounding moves across the
    # near-zero or the negative threshold carries its whole quadrature weight
    # (a few per cent with 32 steps) to the other side.
    "fraction": (0.0, 0.05),
    # Searched scales (σ, σ′, α, α′ by bisection on an error count) and ascents
    # (Keskar's L-BFGS-B, adaptive sharpness, local-entropy Langevin steps): one
    # prediction flipped by float32 rounding (a margin within ~1e-6 of zero on one
    # perturbed copy) changes an error count by 1/n; where the count sits on the
    # criterion δ this flips one bisection decision and moves the scale by that level's
    # bracket, and an ascent takes another path. Agreement to the search's own
    # resolution (flat_rtol = 0.02 on the scale, ~0.04 on 1/σ²) is what we expect;
    # 0.1 leaves room for one late flip while still catching a wrong device path
    # (a systematically different loss moves every decision). A failure here alone:
    # rerun with another --seed before suspecting the device.
    "searched": (0.1, 1e-9),
}

_SEARCHED = ("pacbayes_", "sharpness_", "keskar_", "adaptive_sharpness_", "local_entropy")
_SHARED = ("hessian_max_eig", "hessian_trace", "hessian_fro", "fisher_", "grad_variance",
           "expected_sharpness", "filter_sharpness", "log_prod_spec_op")


def kind(name: str) -> str:
    """The tolerance kind of measure ``name`` (`TOLERANCE`)."""
    if name in ("hessian_near_zero_frac", "hessian_neg_frac"):
        return "fraction"
    if name.startswith(_SHARED):
        return "shared_draws"
    if name.startswith(_SEARCHED):
        return "searched"
    return "closed"


def agree(a: float, b: float, k: str) -> tuple[bool, float]:
    """(within tolerance of kind ``k``, relative difference); NaN on one side only disagrees."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b), (0.0 if math.isnan(a) and math.isnan(b) else math.inf)
    if a == b:
        return True, 0.0
    scale = max(abs(a), abs(b))
    rel_diff = abs(a - b) / scale if scale > 0 else math.inf
    rel, ab = TOLERANCE[k]
    return abs(a - b) <= ab + rel * scale, rel_diff


# Per size: the data, the networks (depth, width), training and the measure set.
# Both use every knob's default (the pipeline a study runs); full measures on a seeded
# 512-example subset so that the CPU reference fits the 5 minutes. threads: torch's CPU
# threads (0: its default).
SIZES = {
    "tiny": {"n": 96, "nets": [(1, 8)], "subset": None, "threads": 1,
             "train": {"optimizer": "momentum", "lr": 0.05, "batch_size": 32,
                       "target_loss": 0.05, "max_epochs": 100},
             "knobs": {"pacbayes_optimized_steps": 200, "pacbayes_optimized_draws": 50}},
    "full": {"n": 4096, "nets": [(2, 32), (3, 48)], "subset": 512, "threads": 0,
             "train": {"lr": 0.05, "batch_size": 128, "target_loss": 0.01, "max_epochs": 100},
             "knobs": {}},
}


def synthetic_cifar(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images 3×32×32 in 10 balanced classes. Class c's image is a fixed colour
    (a 3-vector of norm 2, learnable even after global average pooling) plus a fixed
    smooth pattern (4×4 Gaussian noise upsampled bilinearly, unit standard deviation;
    texture for deeper networks), both at a random contrast in [0.75, 1.25], plus
    pixel noise of standard deviation 1. Made on the CPU from ``seed``."""
    g = torch.Generator().manual_seed(stable_seed(seed, "gpu_check_data"))
    colours = torch.randn(10, 3, 1, 1, generator=g)
    colours = 2.0 * colours / colours.flatten(1).norm(dim=1).view(10, 1, 1, 1)
    protos = torch.randn(10, 3, 4, 4, generator=g)
    protos = torch.nn.functional.interpolate(protos, size=(32, 32), mode="bilinear",
                                             align_corners=False)
    protos = colours + protos / protos.flatten(1).std(1).view(10, 1, 1, 1)
    y = torch.arange(n) % 10
    y = y[torch.randperm(n, generator=g)]
    contrast = 0.75 + 0.5 * torch.rand(n, 1, 1, 1, generator=g)
    x = contrast * protos[y] + torch.randn(n, 3, 32, 32, generator=g)
    return x, y


def deterministic_cuda(tf32: bool) -> None:
    """The switches named in the module docstring; this process only."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    if not tf32:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def check_network(depth: int, width: int, cfg: dict, device: torch.device, seed: int) -> dict:
    """Train one NiN on ``device``; measure it on the CPU and on ``device``; compare."""
    x, y = synthetic_cifar(cfg["n"], seed)
    torch.manual_seed(stable_seed(seed, "gpu_check_init", depth, width))
    model = build_model("nin", (3, 32, 32), 10, depth=depth, width=width, batchnorm=True)
    model = model.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    res = train(model, x.to(device), y.to(device), TrainOptions(**cfg["train"]), seed=seed)
    train_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    init = {k: v.detach().cpu().clone() for k, v in res.init_state.items()}
    cpu_model = copy.deepcopy(model).cpu()
    kw = dict(init=init, train_log=res.log, seed=seed, knobs=cfg["knobs"], subset=cfg["subset"],
              names=tuple(REGISTRY))  # every registered measure, by_name ones too
    ref = measure_full(cpu_model, (x, y), device="cpu", **kw)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    got = measure_full(copy.deepcopy(cpu_model).to(device), (x.to(device), y.to(device)),
                       device=device, **kw)
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    rows = []
    for name in REGISTRY:
        a, b, k = ref.values[name], got.values[name], kind(name)
        ok, rel_diff = agree(a, b, k)
        rows.append({"measure": name, "kind": k, "cpu": a, "checked": b, "rel_diff": rel_diff,
                     "identical": (a == b) or (math.isnan(a) and math.isnan(b)),
                     "seconds": got.seconds[name], "ok": ok,
                     "reason": got.reasons.get(name) or ref.reasons.get(name)})
    return {"network": f"nin depth {depth} width {width} batchnorm",
            "params": sum(p.numel() for p in model.parameters()),
            "converged": res.converged, "diverged": res.diverged, "epochs": res.log.epochs,
            "final_train_loss": res.final_train_loss, "train_seconds": res.seconds,
            "train_peak_bytes": train_peak, "measure_seconds": sum(got.seconds.values()),
            "measure_wall_seconds": wall, "measure_peak_bytes": peak, "rows": rows}


def _num(v: float) -> str:
    return "nan" if math.isnan(v) else ("inf" if math.isinf(v) else f"{v:.6g}")


def print_network(net: dict, other: str) -> None:
    print(f"\n{net['network']}: {net['params']} parameters, {net['epochs']} epochs, "
          f"final training loss {net['final_train_loss']:.4g}, converged {net['converged']}")
    head = f"{'measure':<28} {'kind':<12} {'cpu':>13} {other:>13} {'rel diff':>9} {'tol':>7} {'s':>7}  ok"
    print(head)
    print("-" * len(head))
    for r in net["rows"]:
        rel, ab = TOLERANCE[r["kind"]]
        tol = f"{rel:.0e}" if rel else f"±{ab:g}"
        print(f"{r['measure']:<28} {r['kind']:<12} {_num(r['cpu']):>13} {_num(r['checked']):>13} "
              f"{_num(r['rel_diff']):>9} {tol:>7} {r['seconds']:7.3f}  {'ok' if r['ok'] else 'FAIL'}")
    same = sum(r["identical"] for r in net["rows"])
    mem = (f"{net['measure_peak_bytes'] / 2**20:.1f} MiB measuring, "
           f"{net['train_peak_bytes'] / 2**20:.1f} MiB training"
           if net["measure_peak_bytes"] is not None else "n/a (CPU)")
    print(f"total {other} measure seconds {net['measure_seconds']:.2f} "
          f"(wall {net['measure_wall_seconds']:.2f}), training {net['train_seconds']:.2f} s; "
          f"peak GPU memory {mem}; bit-identical {same}/{len(net['rows'])}; "
          f"disagreements {sum(not r['ok'] for r in net['rows'])}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="the device checked against the CPU "
                    "(cpu: a second CPU run, a determinism check)")
    ap.add_argument("--size", choices=sorted(SIZES), default="full")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the figures to this JSON file")
    ap.add_argument("--tf32", action="store_true", help="keep PyTorch's TF32 defaults on CUDA")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("gpu_check: CUDA is not available here; use --device cpu", file=sys.stderr)
            return 2
        deterministic_cuda(args.tf32)
    elif device.type != "cpu":
        print(f"gpu_check: unsupported device {args.device!r}", file=sys.stderr)
        return 2
    other = "cpu#2" if device.type == "cpu" else str(device)
    cfg = SIZES[args.size]
    if cfg["threads"]:  # tiny: one thread, fast and steady on a shared machine
        torch.set_num_threads(cfg["threads"])
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nets = [check_network(d, w, cfg, device, args.seed) for d, w in cfg["nets"]]
    for net in nets:
        print_network(net, other)
    nondet = sorted({str(w.message).split("\n")[0] for w in caught
                     if "deterministic" in str(w.message)})
    for msg in nondet:
        print(f"no deterministic kernel: {msg}")
    bad = [f"{n['network']}: {r['measure']}" for n in nets for r in n["rows"] if not r["ok"]]
    total = time.perf_counter() - t0
    print(f"\n{len(nets)} network(s), {args.size}, cpu vs {other}: "
          f"{'all agree' if not bad else str(len(bad)) + ' disagree'}; {total:.1f} s in all")
    if args.out:
        args.out.write_text(json.dumps(
            {"device": str(device), "device_name": torch.cuda.get_device_name(device)
             if device.type == "cuda" else "cpu", "size": args.size, "seed": args.seed,
             "tf32": args.tf32, "tolerance": TOLERANCE, "seconds": total,
             "nondeterministic_ops": nondet, "disagree": bad, "networks": nets},
            indent=1, default=float) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
