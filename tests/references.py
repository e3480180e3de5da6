"""Independent reference computations of the measures (definitions: ../shared/MEASURES.md).

Nothing here calls study.measures except `stable_seed`, which fixes the documented
seeding of every random draw (``Generator().manual_seed(stable_seed(seed, name))``,
drawn on the CPU). The network is only ever run as a plain ``nn.Module`` (or through
``torch.func.functional_call`` on a flat vector of its parameters, in
``model.parameters()`` order); norms, spectra and Gram matrices are numpy; Hessians are
explicit (``torch.autograd.functional.hessian``); per-example and mini-batch gradients
come from plain autograd loops; convolutions are dense matrices built column by column.
"""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import scipy.optimize
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from study.measures import stable_seed

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BN = nn.modules.batchnorm._BatchNorm
EPS = 1e-3      # ε of the magnitude-aware flatness scales
DELTA = 0.1     # allowed rise of the training error in the flatness searches


def generator(seed: int, name: str) -> torch.Generator:
    """The CPU generator a measure draws from: seeded from the run seed and ``name``."""
    return torch.Generator().manual_seed(stable_seed(seed, name))


# -- BatchNorm and folding -----------------------------------------------------------

def randomise_bn(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial running statistics and affine parameters in every BatchNorm."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BN):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g))
                m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.2)
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g))
    return model.eval()


def np_fold_affine(model: nn.Sequential, sd: dict) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(module name, folded weight in module shape, folded bias) of each conv/linear layer,
    BatchNorm folded with its eval-mode statistics, recomputed in numpy from a state dict."""
    out, mods = [], list(model.named_children())
    for i, (name, m) in enumerate(mods):
        if isinstance(m, CONV + (nn.Linear,)):
            w = sd[f"{name}.weight"].detach().cpu().double().numpy()
            b = (sd[f"{name}.bias"].detach().cpu().double().numpy() if m.bias is not None
                 else np.zeros(w.shape[0]))
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            if nxt is not None and isinstance(nxt[1], BN):
                bn = nxt[0]
                get = lambda k: sd[f"{bn}.{k}"].detach().cpu().double().numpy()  # noqa: E731
                s = get("weight") / np.sqrt(get("running_var") + nxt[1].eps)
                w = w * s.reshape(-1, *([1] * (w.ndim - 1)))
                b = s * (b - get("running_mean")) + get("bias")
            out.append((name, w, b))
    return out


def np_fold(model: nn.Sequential, sd: dict) -> list[np.ndarray]:
    """Folded weight matrices (a conv kernel as C_out × C_in·k·k) recomputed in numpy."""
    return [w.reshape(w.shape[0], -1) for _, w, _ in np_fold_affine(model, sd)]


# -- margins and norms -----------------------------------------------------------------

def np_gamma(model, x, y) -> float:
    """γ: the 10th percentile of the margins f(x)[y] − max_{j≠y} f(x)[j]."""
    with torch.no_grad():
        z = model.eval()(x).double().cpu().numpy()
    y = y.cpu().numpy()
    true = z[np.arange(len(y)), y]
    z[np.arange(len(y)), y] = -np.inf
    return float(np.percentile(true - z.max(1), 10))


def fitted_labels(model, x):
    """Labels the network predicts: every margin ≥ 0, so γ > 0."""
    with torch.no_grad():
        return model.eval()(x).argmax(1)


def norm_reference(model, init_sd, x, y) -> dict[str, float]:
    """Every norm measure but the path norm and the conv operator norm, from its
    definition with numpy."""
    W = np_fold(model, model.state_dict())
    W0 = np_fold(model, init_sd)
    spec2 = np.array([np.linalg.norm(w, 2) ** 2 for w in W])
    fro2 = np.array([np.sum(w ** 2) for w in W])
    dspec2 = np.array([np.linalg.norm(w - w0, 2) ** 2 for w, w0 in zip(W, W0)])
    dfro2 = np.array([np.sum((w - w0) ** 2) for w, w0 in zip(W, W0)])
    d, g = len(W), np_gamma(model, x, y)
    ls, lf = np.log(spec2), np.log(fro2)
    return {
        "inverse_margin": 1 / g ** 2,
        "log_prod_spec": ls.sum(),
        "log_prod_spec_over_margin": ls.sum() - 2 * np.log(g),
        "log_sum_spec": np.log(d) + ls.mean(),
        "log_sum_spec_over_margin": np.log(d * (np.prod(spec2) / g ** 2) ** (1 / d)),
        "log_spec_init_main": ls.sum() - 2 * np.log(g) + np.log(np.sum(dfro2 / spec2)),
        "log_spec_orig_main": ls.sum() - 2 * np.log(g) + np.log(np.sum(fro2 / spec2)),
        "fro_over_spec": np.sum(fro2 / spec2),
        "dist_spec_init": dspec2.sum(),
        "log_prod_fro": lf.sum(),
        "log_prod_fro_over_margin": lf.sum() - 2 * np.log(g),
        "log_sum_fro": np.log(d) + lf.mean(),
        "log_sum_fro_over_margin": np.log(d * (np.prod(fro2) / g ** 2) ** (1 / d)),
        "param_norm": fro2.sum(),
        "fro_dist": dfro2.sum(),
    }


def brute_force_path_norm(Ws, bs) -> float:
    """Σ over every input→output path (and every bias→output path) of Π w²."""
    sizes = [Ws[0].shape[1]] + [w.shape[0] for w in Ws]
    total = 0.0
    for start in range(len(Ws) + 1):   # 0: paths from the inputs; l ≥ 1: from layer l's biases
        for units in itertools.product(*(range(n) for n in sizes[start:])):
            p = 1.0 if start == 0 else bs[start - 1][units[0]] ** 2
            for l in range(start, len(Ws)):
                p *= Ws[l][units[l - start + 1], units[l - start]] ** 2
            total += p
    return total


def dense(fn, in_shape) -> np.ndarray:
    """The matrix of a linear map, column by column from the basis vectors."""
    n = math.prod(in_shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    with torch.no_grad():
        return fn(basis).reshape(n, -1).T.numpy()


_CONVF = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def dense_layers(model: nn.Sequential, in_shape) -> list[dict]:
    """The folded network as dense maps at its input size, one entry per module that acts:
    ``{"kind": "affine", "name", "M", "b", "in_shape"}`` (a conv or linear layer, BatchNorm
    folded: M the dense matrix of its linear part at that layer's input size, stride and
    padding included; b its bias at every output position), ``{"kind": "pool", "M"}``
    (average pooling), ``{"kind": "relu", "units"}``. Flatten, Identity and eval-mode
    Dropout act as the identity; BatchNorm is folded. Any other module raises."""
    folded = {name: (w, b) for name, w, b in np_fold_affine(model, model.state_dict())}
    shape, out = tuple(in_shape), []
    for name, m in model.named_children():
        if isinstance(m, CONV + (nn.Linear,)):
            w, b = folded[name]
            if isinstance(m, nn.Linear):
                M, new = w, (w.shape[0],)
            else:
                k = torch.from_numpy(w)
                conv = lambda v: _CONVF[k.dim() - 2](v, k, None, m.stride, m.padding,  # noqa: E731
                                                     m.dilation, m.groups)
                M = dense(conv, shape)
                new = tuple(conv(torch.zeros(1, *shape, dtype=torch.float64)).shape[1:])
            out.append({"kind": "affine", "name": name, "M": M, "in_shape": shape,
                        "b": np.repeat(b, M.shape[0] // w.shape[0])})
            shape = new
        elif isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                            nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
            mm = copy.deepcopy(m).double()
            out.append({"kind": "pool", "M": dense(mm, shape)})
            with torch.no_grad():
                shape = tuple(mm(torch.zeros(1, *shape, dtype=torch.float64)).shape[1:])
        elif isinstance(m, nn.ReLU):
            out.append({"kind": "relu", "units": math.prod(shape)})
        elif isinstance(m, nn.Flatten):
            shape = (math.prod(shape),)
        elif not isinstance(m, (BN, nn.Identity, nn.Dropout)):
            raise TypeError(f"no dense reference for {type(m).__name__}")
    return out


def dense_forward(layers: list[dict], x: np.ndarray) -> np.ndarray:
    """The folded network applied to flat inputs (rows of x) with the dense maps."""
    h = x.reshape(len(x), -1).T
    for l in layers:
        if l["kind"] == "affine":
            h = l["M"] @ h + l["b"][:, None]
        elif l["kind"] == "pool":
            h = l["M"] @ h
        else:
            h = np.maximum(h, 0)
    return h.T


def path_norm_dense(layers: list[dict]) -> float:
    """Σ_paths Π w² from the dense maps: every weight and bias squared entrywise (an entry
    of a conv's dense matrix is one kernel entry), pooling weights kept as they are (they
    are not parameters), ReLU the identity on the non-negative signal, all-ones input."""
    first = next(l for l in layers if l["kind"] != "relu")
    h = np.ones(first["M"].shape[1])
    for l in layers:
        if l["kind"] == "affine":
            h = (l["M"] ** 2) @ h + l["b"] ** 2
        elif l["kind"] == "pool":
            h = l["M"] @ h
    return float(h.sum())


def spec_op_reference(layers: list[dict]) -> float:
    """Σ_l log ‖A_l‖₂², A_l the dense matrix of layer l's linear map at its input size."""
    return float(sum(math.log(np.linalg.norm(l["M"], 2) ** 2)
                     for l in layers if l["kind"] == "affine"))


def size_reference(model: nn.Module, layers: list[dict]) -> dict[str, float]:
    """ω (weights of the conv/linear layers), d, U (ReLU outputs for one input)."""
    omega = sum(m.weight.numel() for m in model.modules() if isinstance(m, CONV + (nn.Linear,)))
    d = sum(1 for l in layers if l["kind"] == "affine")
    units = sum(l["units"] for l in layers if l["kind"] == "relu")
    return {"params": float(omega), "vc_wl_log_w": omega * d * math.log(omega),
            "vc_wu": float(omega * units)}


# -- the loss as a function of the flat parameter vector ----------------------------------

def flat_params(model: nn.Module) -> torch.Tensor:
    return parameters_to_vector(model.parameters()).detach().clone()


def loss_fn(model: nn.Module, x, y, dtype=None, reduction="mean"):
    """flat ↦ cross-entropy of ``model`` (eval mode, its own buffers) with parameters
    ``flat`` (in ``model.parameters()`` order), optionally cast to ``dtype``."""
    net = copy.deepcopy(model).eval()
    if dtype is not None:
        net = net.to(dtype)
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    buffers = dict(net.named_buffers())
    xx = x.to(dtype) if dtype is not None else x

    def f(flat):
        parts, i = {}, 0
        for n, s in zip(names, shapes):
            parts[n] = flat[i:i + s.numel()].view(s)
            i += s.numel()
        out = torch.func.functional_call(net, {**buffers, **parts}, (xx,))
        return F.cross_entropy(out, y, reduction=reduction)
    return f


def loss_and_grad(model, x, y, w: torch.Tensor) -> tuple[float, torch.Tensor]:
    t = w.detach().clone().requires_grad_(True)
    L = loss_fn(model, x, y)(t)
    (g,) = torch.autograd.grad(L, t)
    return L.item(), g


def explicit_hessian(model, x, y) -> np.ndarray:
    """∇²L(w) in float64, by torch.autograd.functional.hessian."""
    w = flat_params(model).double()
    f = loss_fn(model, x, y, dtype=torch.float64)
    return torch.autograd.functional.hessian(f, w, vectorize=True).numpy()


def hutchinson_sd(M: np.ndarray, k: int) -> float:
    """Standard error of the mean of vᵀMv over k Rademacher probes:
    Var(vᵀMv) = 2(‖M‖_F² − Σ M_ii²) for symmetric M."""
    return math.sqrt(2 * ((M ** 2).sum() - (np.diag(M) ** 2).sum()) / k)


def explicit_grads(model, x, y):
    """Per-example gradients by plain autograd, one example at a time."""
    rows = []
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    return torch.stack(rows).double().numpy()


def explicit_full_grad(model, x, y):
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone()


def keskar_lbfgsb(loss, w: torch.Tensor, eps: float, maxiter: int) -> float:
    """Keskar's ζ(w; ε) = 100 (max_{|v_i| ≤ ε(|w_i|+1)} L(w+v) − L(w)) / (1 + L(w)), the
    maximum by a separate scipy L-BFGS-B run (start v = 0); ``loss(flat)`` is L."""
    def neg(v):
        t = (w + torch.as_tensor(v, dtype=w.dtype)).requires_grad_(True)
        L = loss(t)
        (g,) = torch.autograd.grad(L, t)
        return -L.item(), -g.double().numpy()

    b = (eps * (w.abs() + 1)).double().numpy()
    res = scipy.optimize.minimize(neg, np.zeros(len(b)), jac=True, method="L-BFGS-B",
                                  bounds=list(zip(-b, b)), options={"maxiter": maxiter})
    L0 = -neg(np.zeros(len(b)))[0]
    return 100 * (max(-res.fun, L0) - L0) / (1 + L0)


# -- flatness: the criteria of the searched scales, by hand --------------------------------

def module_err(model, vec, x, y) -> float:
    m = copy.deepcopy(model)
    vector_to_parameters(vec, m.parameters())
    with torch.no_grad():
        return int((m(x).argmax(1) != y).sum()) / len(y)


def mc_mean_err(model, x, y, gen, samples, what, s) -> float:
    """Mean error over the M seeded draws: draw k is the k-th randn(ω_all) of ``gen``,
    u = s·z (σ) or u_i = z_i·sqrt(s²w_i² + ε²) (σ')."""
    return float(np.mean(mc_errs(model, x, y, gen, samples, what, s)))


def mc_rise_ucb(model, x, y, gen, samples, what, s, err0, z) -> float:
    """The σ criterion's upper confidence bound of the rise: mean(e_k) − err0 +
    z·sd(e_k)/√M over the M seeded draws' error rates e_k (sd with ddof = 1)."""
    e = np.asarray(mc_errs(model, x, y, gen, samples, what, s))
    sd = e.std(ddof=1) if samples > 1 else 0.0
    return float(e.mean() - err0 + z * sd / np.sqrt(samples))


def mc_errs(model, x, y, gen, samples, what, s) -> list[float]:
    """The M seeded draws' error rates (as `mc_mean_err` draws them)."""
    dt = next(model.parameters()).dtype
    w = flat_params(model).double().numpy()
    errs = []
    for _ in range(samples):
        z = torch.randn(w.size, generator=gen).double().numpy()
        std = s if what == "sigma" else np.sqrt(s * s * w * w + EPS * EPS)
        errs.append(module_err(model, torch.tensor(w + std * z, dtype=dt), x, y))
    return errs


def ascent_max_err(model, x, y, gen, steps, restarts, what, s) -> float:
    """Largest error visited by the seeded projected sign-gradient ascent in |v| ≤ b
    (b = s, or s(|w| + ε) for α' as MEASURES.md defines it, not Jiang's s|w| + ε):
    start t = 2·rand − 1, t ← clip(t + 2.5/steps·sign(∇L), −1, 1)."""
    w = flat_params(model)
    b = torch.full_like(w, s) if what == "alpha" else s * (w.abs() + EPS)
    worst = 0.0
    for _ in range(restarts):
        t = (2 * torch.rand(w.numel(), generator=gen) - 1).to(w.dtype)
        for it in range(steps + 1):
            m = copy.deepcopy(model)
            vector_to_parameters(w + b * t, m.parameters())
            logits = m(x)
            worst = max(worst, int((logits.argmax(1) != y).sum()) / len(y))
            if it < steps:
                F.cross_entropy(logits, y).backward()
                g = torch.cat([p.grad.reshape(-1) for p in m.parameters()])
                t = (t + 2.5 / max(steps, 1) * torch.sign(g)).clamp(-1, 1)
    return worst


def mag_term(d: np.ndarray, s: float, m: int) -> float:
    """¼ Σ_i log((ε² + (s²+1)‖d‖²/ω) / (ε² + s²d_i²)) + log(m/s) + 10."""
    num = EPS ** 2 + (s ** 2 + 1) * np.sum(d ** 2) / d.size
    return 0.25 * np.sum(np.log(num / (EPS ** 2 + s ** 2 * d ** 2))) + math.log(m / s) + 10


# -- sharpness: the same seeded draws, by hand -------------------------------------------

def minibatch_index(n: int, gen, batch_size: int, n_batches: int) -> torch.Tensor:
    """Consecutive slices of seeded permutations (a fresh one when one is used up); the
    whole set in every row when it is no larger than a batch."""
    if n <= batch_size:
        return torch.arange(n).repeat(n_batches, 1)
    rows = []
    while len(rows) < n_batches:
        perm = torch.randperm(n, generator=gen)
        rows += [perm[i * batch_size:(i + 1) * batch_size] for i in range(n // batch_size)]
    return torch.stack(rows[:n_batches])


def expected_sharpness(model, x, y, gen, draws, scale) -> float:
    """mean_d L(w + scale ⊙ z_d) − L(w), z_d the d-th randn(P) of ``gen``."""
    w = flat_params(model)
    f = loss_fn(model, x, y)
    with torch.no_grad():
        vals = [f(w + scale * torch.randn(w.numel(), generator=gen).to(w.dtype)).item()
                for _ in range(draws)]
        return float(np.mean(vals)) - f(w).item()


def adaptive_ascent(model, x, y, idx, p, rho, steps) -> list[float]:
    """Per mini-batch: the best gain L_B(w + |w|z) − L_B(w) along projected gradient ascent
    in z from 0 (step 2.5ρ/steps; sign of the gradient for p = ∞, normalised for p = 2)."""
    w = flat_params(model)
    c = w.abs()
    step = 2.5 * rho / max(steps, 1)
    gains = []
    for b in idx:
        z = torch.zeros_like(w)
        best, L0 = 0.0, None
        for t in range(steps + 1):
            L, g = loss_and_grad(model, x[b], y[b], w + c * z)
            L0 = L if L0 is None else L0
            best = max(best, L - L0)
            if t == steps:
                break
            gz = c * g
            if p == math.inf:
                z = (z + step * gz.sign()).clamp(-rho, rho)
            else:
                z = z + step * gz / max(gz.norm().item(), 1e-300)
                z = z * (rho / max(z.norm().item(), rho))
        gains.append(best)
    return gains


def random_feasible_gains(model, x, y, idx, p, rho, tries, seed=0) -> list[float]:
    """Per mini-batch, the largest gain over ``tries`` random points of the boundary of
    the adaptive ball (vertices for p = ∞): a lower bound on the true maximum."""
    g = torch.Generator().manual_seed(seed)
    w = flat_params(model)
    out = []
    for b in idx:
        f = loss_fn(model, x[b], y[b])
        with torch.no_grad():
            L0 = f(w).item()
            best = -math.inf
            for _ in range(tries):
                r = torch.randn(w.numel(), generator=g).to(w.dtype)
                r = rho * (r.sign() if p == math.inf else r / r.norm())
                best = max(best, f(w + w.abs() * r).item() - L0)
        out.append(best)
    return out


def filter_directions(model, k: int, gen) -> torch.Tensor:
    """k × P directions: per weight tensor (ndim ≥ 2) a randn tensor whose every filter
    (slice along dim 0) is rescaled to the norm of the same filter of w; 0 elsewhere."""
    rows = []
    for _ in range(k):
        parts = []
        for p in model.parameters():
            p = p.detach()
            if p.dim() < 2:
                parts.append(torch.zeros(p.numel(), dtype=p.dtype))
                continue
            d = torch.randn(*p.shape, generator=gen).to(p.dtype).reshape(len(p), -1)
            wn = p.reshape(len(p), -1).norm(dim=1, keepdim=True)
            parts.append((d * wn / d.norm(dim=1, keepdim=True)).reshape(-1))
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def sgld_local_energy(model, x, y, gen, gamma, temperature, steps, lr, burnin,
                      batch_size) -> float:
    """mean_{k > burnin} [L_{B_k}(w'_k) − L_{B_k}(w)] along w'_{k+1} = w'_k − η(∇L_{B_k}(w'_k)/T +
    γ(w'_k − w)) + √(2η) ξ_k from w'_0 = w: the batches first, then the noise, from ``gen``
    (the mini-batch loss at w subtracted batch by batch: the control variate)."""
    w = flat_params(model)
    idx = minibatch_index(len(x), gen, batch_size, steps + 1)
    v, total = w.clone(), 0.0
    for k in range(steps + 1):
        L, g = loss_and_grad(model, x[idx[k]], y[idx[k]], v)
        if k > burnin:
            with torch.no_grad():
                total += L - loss_fn(model, x[idx[k]], y[idx[k]])(w).item()
        if k < steps:
            xi = torch.randn(w.numel(), generator=gen).to(w.dtype)
            v = v - lr * (g / temperature + gamma * (v - w)) + math.sqrt(2 * lr) * xi
    return total / (steps - burnin)


# -- the optimised PAC-Bayes bound ---------------------------------------------------------

def kl_bern(q: float, p: float) -> float:
    """kl(q‖p) for Bernoulli rates, written out (0·log 0 = 0)."""
    out = 0.0
    if q > 0:
        out += q * math.log(q / p) if p > 0 else math.inf
    if q < 1:
        out += (1 - q) * math.log((1 - q) / (1 - p)) if p < 1 else math.inf
    return out


def kl_inv_grid(q: float, c: float, step: float = 1e-6) -> float:
    """max{p ∈ [q, 1] : kl(q‖p) ≤ c} over the grid q, q + step, …, 1 (brute force; kl(q‖·)
    need not be assumed monotone)."""
    grid = np.append(np.arange(q, 1.0, step), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = q * np.log(q / grid) if q > 0 else np.zeros_like(grid)
        b = (1 - q) * np.log((1 - q) / (1 - grid)) if q < 1 else np.zeros_like(grid)
    kl = np.nan_to_num(a + b, nan=np.inf, posinf=np.inf)
    return float(grid[kl <= c].max())


def kl_gauss_np(mean, var, prior_mean, lam) -> float:
    """KL(N(mean, diag var) ‖ N(prior_mean, λI)) as the sum over coordinates of the 1-D KLs
    ½(var/λ + (mean − prior)²/λ − 1 + log λ − log var)."""
    mean, var, prior_mean = (np.asarray(a, dtype=np.float64) for a in (mean, var, prior_mean))
    return float(np.sum(0.5 * (var / lam + (mean - prior_mean) ** 2 / lam - 1 + np.log(lam) - np.log(var))))
