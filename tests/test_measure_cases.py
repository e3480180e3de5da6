"""Every registered measure, through `measure_full`, on every case of tests/cases.py
(the `case` fixture), against an independent reference computation of its definition
in MEASURES.md (tests/references.py).

Exact where the definition fixes the value: norms and spectra in numpy from the folded
weights, dense convolution matrices (stride and padding included), explicit Hessians,
per-example and mini-batch gradients from autograd loops, a separate scipy L-BFGS-B.
Where the measure is a search or a Monte-Carlo estimate, the defining property: a
searched scale meets its criterion and 1.2× it does not (the criterion recomputed by
hand on the same seeded draws or ascent starts); a Monte-Carlo mean equals the mean
over the same seeded draws recomputed by hand; Hutchinson and SLQ estimates lie within
four standard errors (computed from the explicit Hessian) of the exact value.

Every registered measure must have an entry in `CHECKS` (or, with the reason, in
`SKIP`): a new measure without a reference fails `test_every_measure_has_a_reference`
and its case tests.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from study.measures import KNOBS, REGISTRY, measure_full, select
from tests import references as R
from tests.cases import BATCH, LR, MOMENTUM, Case

select(["all"])          # imports every measure module, so REGISTRY is complete
NAMES = list(REGISTRY)

# Measures with no independent check possible, with the reason. Keep it tiny.
SKIP: dict[str, str] = {}

SLQ_PROBES, H_PROBES = 40, 1000


def knobs_for(case: Case) -> dict:
    """Cheap settings, except where a reference needs more: full-length Lanczos (so the
    SLQ quadrature of each probe is exact) and many Hutchinson probes."""
    P = case.n_params
    return dict(flat_rtol=0.005, flat_samples=10, flat_confidence=1.645, flat_steps=5, flat_restarts=1,
                keskar_maxiter=10, keskar_examples=0, hessian_examples=0,
                hutchinson_probes=H_PROBES, slq_probes=SLQ_PROBES, slq_steps=P,
                lanczos_max_steps=P, fisher_examples=0, grad_var_batches=64,
                expected_sharpness_draws=4, adaptive_steps=5, adaptive_batches=3,
                adaptive_batch_size=16, filter_directions=3, filter_radius=0.1,
                local_entropy_steps=6, local_entropy_burnin=2, local_entropy_batch_size=16,
                pacbayes_optimized_steps=40, pacbayes_optimized_draws=20, pacbayes_optimized_batch_size=8)


_MEMO: dict[tuple[str, str], object] = {}


def memo(case: Case, key: str, fn):
    """One computation per case and key for the whole session."""
    k = (case.id, key)
    if k not in _MEMO:
        _MEMO[k] = fn()
    return _MEMO[k]


def measured(case: Case):
    """Every registered measure, those computed only where named included."""
    return memo(case, "measure_full", lambda: measure_full(
        case.model, (case.x, case.y), init=case.init, train_log=case.train_log,
        seed=case.seed, knobs=knobs_for(case), names=NAMES))


def knob(case: Case, name: str):
    """A knob's value in these tests: ours where set, else its declared default."""
    return knobs_for(case).get(name, KNOBS[name].default)


def rtol(case: Case) -> float:
    """Agreement expected of two computations of the same number in the case's dtype."""
    if case.dtype == torch.float64:
        return 1e-9
    return 1e-4 if case.device.type == "cpu" else 1e-3   # cuDNN may convolve in TF32


def close(got, want, rel, abs_=0.0, what=""):
    assert got == pytest.approx(want, rel=rel, abs=abs_), what


# -- size and norms ------------------------------------------------------------------------

def dense_layers(case):
    model, x, _ = case.cpu()
    return memo(case, "dense", lambda: R.dense_layers(model, tuple(x.shape[1:])))


def check_dense_layers(case):
    """The dense maps are the network: the folded dense forward gives its logits."""
    def run():
        model, x, _ = case.cpu()
        with torch.no_grad():
            want = model(x).double().numpy()
        got = R.dense_forward(dense_layers(case), x.double().numpy())
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        return True
    memo(case, "dense_ok", run)


def check_size(case, res, name):
    check_dense_layers(case)
    ref = R.size_reference(case.cpu()[0], dense_layers(case))
    close(res.values[name], ref[name], 1e-12)


def check_norm(case, res, name):
    def ref():
        model, x, y = case.cpu()
        return R.norm_reference(model, {k: v.cpu() for k, v in case.init.items()}, x, y)
    close(res.values[name], memo(case, "norms", ref)[name], 1e-6, 1e-9)


def path_norm(case):
    def ref():
        check_dense_layers(case)
        value = R.path_norm_dense(dense_layers(case))
        model = case.cpu()[0]
        if not any(isinstance(m, R.CONV) for m in model.modules()):
            folded = R.np_fold_affine(model, model.state_dict())
            brute = R.brute_force_path_norm([w for _, w, _ in folded], [b for _, _, b in folded])
            assert value == pytest.approx(brute, rel=1e-10)   # the two references agree
        return value
    return memo(case, "path_norm", ref)


def check_path_norm(case, res, name):
    close(res.values[name], path_norm(case), 1e-9)


def check_path_norm_over_margin(case, res, name):
    model, x, y = case.cpu()
    close(res.values[name], path_norm(case) / R.np_gamma(model, x, y) ** 2, 1e-6)


def check_spec_op(case, res, name):
    check_dense_layers(case)
    close(res.values[name], R.spec_op_reference(dense_layers(case)), 0, 1e-4)


# -- flatness: searched scales ---------------------------------------------------------------

_SCALE_OF = {"sigma": "pacbayes_flatness", "sigma_mag": "pacbayes_mag_flatness",
             "alpha": "sharpness_flatness", "alpha_mag": "sharpness_mag_flatness"}


def searched_scale(case, res, what) -> tuple[float, float]:
    """The scale read from its `*_flatness` measure (1/s²), checked against its criterion
    by hand: the perturbed error rises by at most δ at s and by more at 1.2 s (same
    seeded draws / ascent starts; for σ, σ' the rise's upper confidence bound). Returns (s, the perturbed error at s)."""
    def run():
        model, x, y = case.cpu()
        s = 1 / math.sqrt(res.values[_SCALE_OF[what]])
        k = knobs_for(case)
        e0 = R.module_err(model, R.flat_params(model), x, y)

        def gen():
            return R.generator(case.seed, f"flatness.{what}")

        def rise(scale):  # σ, σ': the upper confidence bound of the mean rise
            if what.startswith("sigma"):
                return R.mc_rise_ucb(model, x, y, gen(), k["flat_samples"], what, scale, e0,
                                     k["flat_confidence"])
            return R.ascent_max_err(model, x, y, gen(), k["flat_steps"], k["flat_restarts"],
                                    what, scale) - e0

        assert rise(s) <= R.DELTA + 1e-9, f"{what} = {s:.4g}: error rises by {rise(s):.4g} > δ"
        assert rise(1.2 * s) > R.DELTA, f"{what}: 1.2× the scale still meets the criterion"
        at = (R.mc_mean_err(model, x, y, gen(), k["flat_samples"], what, s)
              if what.startswith("sigma") else rise(s) + e0)
        return s, at
    return memo(case, f"scale.{what}", run)


def flat_vectors(case):
    """(w, w0) over all trainable parameters; (weights, weights at init) over those with
    ndim ≥ 2, in float64 numpy."""
    model = case.cpu()[0]
    names = [n for n, _ in model.named_parameters()]
    w = {n: p.detach().double().numpy() for n, p in model.named_parameters()}
    w0 = {n: case.init[n].detach().cpu().double().numpy() for n in names}
    cat = lambda d, ns: np.concatenate([d[n].ravel() for n in ns])  # noqa: E731
    wt = [n for n in names if w[n].ndim >= 2]
    return cat(w, names), cat(w0, names), cat(w, wt), cat(w0, wt)


def check_flatness(case, res, name):
    allw, all0, ww, ww0 = flat_vectors(case)
    m, omega = len(case.x), ww.size
    dist2, norm2 = np.sum((allw - all0) ** 2), np.sum(allw ** 2)
    what = {"pacbayes": "sigma", "pacbayes_mag": "sigma_mag", "sharpness": "alpha",
            "sharpness_mag": "alpha_mag"}[name.rsplit("_", 1)[0]]
    s, at = searched_scale(case, res, what)
    kind = name.rsplit("_", 1)[1]
    if name == "pacbayes_bound":
        want = at + math.sqrt((dist2 / (2 * s ** 2) + math.log(2 * math.sqrt(m) / 0.05)) / (2 * m))
    elif kind == "flatness":
        want = 1 / s ** 2
    elif what in ("sigma_mag", "alpha_mag"):
        want = R.mag_term(ww - ww0 if kind == "init" else ww, s, m)
    else:
        sq = dist2 if kind == "init" else norm2
        want = (sq / (4 * s ** 2) if what == "sigma" else sq * math.log(2 * omega) / (4 * s ** 2))
        want += math.log(m / s) + 10
    close(res.values[name], want, 1e-9)


# -- curvature -----------------------------------------------------------------------------

def hessian(case):
    def run():
        model, x, y = case.cpu()
        H = R.explicit_hessian(model, x, y)
        ev, U = np.linalg.eigh(H)
        return H, ev, U
    return memo(case, "hessian", run)


def h_slack(case, H) -> float:
    """Room for the network's own rounding in an HVP-based estimate."""
    return 0.0 if case.dtype == torch.float64 else 1e-4 * np.abs(H).sum()


def check_hessian_max_eig(case, res, name):
    _, ev, _ = hessian(case)
    close(res.values[name], ev[-1], 1e-6 if case.dtype == torch.float64 else 1e-3)


def check_hessian_trace(case, res, name):
    """Every case is piecewise linear in each single parameter: the exact GGN trace, which is
    the explicit Hessian's trace (the Hutchinson path: test_measures_curvature.py, Tanh)."""
    H, _, _ = hessian(case)
    assert res.methods["hessian_trace"] in ("exact_ggn", "exact_ggn_backpack")
    close(res.values[name], np.trace(H), 1e-10 if case.dtype == torch.float64 else 1e-5)


def check_hessian_fro(case, res, name):
    H, _, _ = hessian(case)
    sd = R.hutchinson_sd(H @ H, H_PROBES)
    assert abs(res.values[name] ** 2 - (H ** 2).sum()) <= 4 * sd + h_slack(case, H @ H)


def check_hessian_share(case, res, name):
    _, ev, U = hessian(case)
    P = len(ev)
    cut = 1e-3 * ev[-1]
    # no eigenvalue within rounding of the band's edge, else the share is ill-posed
    assert np.min(np.abs(np.abs(ev) - cut)) > 1e-3 * cut
    sel = np.abs(ev) <= cut if name == "hessian_near_zero_frac" else ev < -cut
    # per probe the share is vᵀΠv/P, Π the projector on the selected eigenvectors
    Pi = U[:, sel] @ U[:, sel].T
    sd = R.hutchinson_sd(Pi, SLQ_PROBES) / P
    assert abs(res.values[name] - sel.mean()) <= 4 * sd + 1e-9
    nodes = np.array(res.artifacts["hessian_density_nodes"])
    weights = np.array(res.artifacts["hessian_density_weights"])
    assert len(nodes) == len(weights) and abs(weights.sum() - 1) < 1e-6
    assert np.all(np.diff(nodes) >= 0)
    pad = 1e-6 * ev[-1] if case.dtype == torch.float64 else 1e-3 * ev[-1]
    assert nodes.min() >= ev[0] - pad and nodes.max() <= ev[-1] + pad


def check_fisher(case, res, name):
    def gram():
        model, x, y = case.cpu()
        G = R.explicit_grads(model, x, y)
        return G.T @ G / len(x)
    Fm = memo(case, "fisher", gram)
    want = {"fisher_trace": np.trace(Fm), "fisher_fro": np.linalg.norm(Fm, "fro"),
            "fisher_max_eig": np.linalg.eigvalsh(Fm)[-1]}[name]
    close(res.values[name], want, rtol(case) * 10)


def check_grad_variance(case, res, name):
    model, x, y = case.cpu()
    B = case.train_log.batch_size
    nb = min(len(x) // B, knobs_for(case)["grad_var_batches"])
    perm = torch.randperm(len(x), generator=R.generator(case.seed, "grad_variance"))
    gbar = R.explicit_full_grad(model, x, y)
    dev = [((R.explicit_full_grad(model, x[b], y[b]) - gbar) ** 2).sum().item()
           for b in perm[:nb * B].view(nb, B)]
    assert nb >= 2
    close(res.values[name], np.mean(dev), rtol(case) * 10)


def check_keskar(case, res, name):
    model, x, y = case.cpu()
    eps = float(name.rsplit("_", 1)[1])
    f = R.loss_fn(model, x, y, reduction="sum")
    want = R.keskar_lbfgsb(lambda t: f(t) / len(x), R.flat_params(model), eps,
                           knobs_for(case)["keskar_maxiter"])
    assert want > 0
    close(res.values[name], want, 1e-6 if case.dtype == torch.float64 else 1e-2)


def loss_abs(case) -> float:
    return 1e-12 if case.dtype == torch.float64 else 2e-6


def check_expected_sharpness(case, res, name):
    model, x, y = case.cpu()
    w = R.flat_params(model)
    rho = knob(case, name + "_rho")
    scale = rho * (w.abs() if name.endswith("_mag") else torch.ones_like(w))
    want = R.expected_sharpness(model, x, y, R.generator(case.seed, name),
                                knobs_for(case)["expected_sharpness_draws"], scale)
    close(res.values[name], want, rtol(case) * 10, loss_abs(case))
    assert res.values[name] > 0   # at a trained minimum noise raises the loss


def check_adaptive(case, res, name):
    model, x, y = case.cpu()
    k = knobs_for(case)
    p = math.inf if name.endswith("linf") else 2
    rho = knob(case, "adaptive_rho_" + name.rsplit("_", 1)[1])
    idx = R.minibatch_index(len(x), R.generator(case.seed, name), k["adaptive_batch_size"],
                            k["adaptive_batches"])
    gains = R.adaptive_ascent(model, x, y, idx, p, rho, k["adaptive_steps"])
    close(res.values[name], np.mean(gains), rtol(case) * 100, loss_abs(case))
    # the ascent beats random points of the same ball, batch by batch
    rand = R.random_feasible_gains(model, x, y, idx, p, rho, tries=10)
    assert all(g >= r for g, r in zip(gains, rand))
    assert res.values[name] >= np.mean(rand) - loss_abs(case)


def check_filter_sharpness(case, res, name):
    model, x, y = case.cpu()
    k = knobs_for(case)
    r = k["filter_radius"]
    D = R.filter_directions(model, k["filter_directions"], R.generator(case.seed, name))
    w = R.flat_params(model)
    f = R.loss_fn(model, x, y)
    with torch.no_grad():
        L0 = f(w).item()
        want = np.mean([f(w + r * d).item() for d in D]) - L0
        close(res.values[name], want, rtol(case) * 10, loss_abs(case))
        t = np.array(res.artifacts["filter_sharpness_t"])
        assert np.any(np.isclose(t, r, rtol=1e-12)) and np.any(t == 0)
        curves = np.array(res.artifacts["filter_sharpness_curves"]).reshape(len(D), len(t))
        ref = [[f(w + float(tj) * d).item() for tj in t] for d in D]
    np.testing.assert_allclose(curves, ref, rtol=rtol(case) * 10, atol=loss_abs(case))


def check_local_entropy(case, res, name):
    model, x, y = case.cpu()
    k = knobs_for(case)
    want = R.sgld_local_energy(model, x, y, R.generator(case.seed, name),
                               knob(case, "local_entropy_gamma"),
                               knob(case, "local_entropy_temperature"),
                               k["local_entropy_steps"], knob(case, "local_entropy_lr"),
                               k["local_entropy_burnin"], k["local_entropy_batch_size"])
    close(res.values[name], want, rtol(case) * 100, loss_abs(case))


# -- optimisation: from the raw training history ------------------------------------------

def check_optimisation(case, res, name):
    h = case.history
    per_epoch = np.cumsum([len(h["step_lr"]) // len(h["epoch_loss"])] * len(h["epoch_loss"]))
    first = lambda t: int(per_epoch[np.argmax(np.array(h["full_loss"]) <= t)])  # noqa: E731
    want = {
        "steps_to_loss_0.1": first(0.1),
        "steps_loss_0.1_to_target": first(h["full_loss"][-1]) - first(0.1),
        "sum_train_loss": float(np.sum(np.reshape(h["step_loss"], (len(h["epoch_loss"]), -1))
                                       .mean(1))),
        "lr_over_batch": LR / (BATCH * (1 - MOMENTUM)),
        "step_size_sum": float(np.sum(h["step_lr"])),
    }[name]
    close(res.values[name], want, 1e-12)


def check_pacbayes_optimized(case, res, name):
    """The parts give the bound (kl⁻¹ on a brute-force grid, λ of the grid index); ê_m is the
    mean error of the m draws of the optimised Q, recomputed from the seeded draws; KL is the
    sum of the coordinates' KLs."""
    from study.measures import MeasureContext
    from study.measures import pacbayes_optimized as po
    from study.schema import ARTIFACTS
    parts = dict(zip(ARTIFACTS["pacbayes_optimized_parts"].labels, res.artifacts["pacbayes_optimized_parts"]))
    n, m = len(case.x), knob(case, "pacbayes_optimized_draws")
    assert parts["n"] == n and parts["m"] == m
    assert parts["e_plus"] == pytest.approx(R.kl_inv_grid(parts["e_m"], math.log(2 / 0.01) / m), abs=1.01e-6)
    c = (parts["kl"] + math.log(math.pi ** 2 * n / (6 * 0.025)) + 2 * math.log(parts["j"])) / (n - 1)
    close(res.values[name], R.kl_inv_grid(parts["e_plus"], c), 0, 1.01e-6)
    ctx = MeasureContext(case.model, case.x, case.y, init_state=case.init, seed=case.seed, knobs=knobs_for(case))
    q = po.optimise(ctx)
    model, x, y = case.cpu()
    g = R.generator(case.seed, "pacbayes_optimized_bound.draws")
    mean, sd = q.mean.cpu(), q.var.sqrt().cpu()
    errs = [R.module_err(model, mean + sd * torch.randn(mean.numel(), generator=g).to(mean.dtype), x, y)
            for _ in range(m)]
    close(parts["e_m"], float(np.mean(errs)), 0, 1e-12)
    w0 = torch.cat([case.init[k].reshape(-1) for k, _ in model.named_parameters()]).cpu()
    close(parts["kl"], R.kl_gauss_np(mean, q.var.cpu(), w0, 0.1 * math.exp(-parts["j"] / 100)), 1e-6)


CHECKS = {
    "params": check_size, "vc_wl_log_w": check_size, "vc_wu": check_size,
    **{n: check_norm for n in [
        "inverse_margin", "log_prod_spec", "log_prod_spec_over_margin", "log_sum_spec",
        "log_sum_spec_over_margin", "log_spec_init_main", "log_spec_orig_main",
        "fro_over_spec", "dist_spec_init", "log_prod_fro", "log_prod_fro_over_margin",
        "log_sum_fro", "log_sum_fro_over_margin", "param_norm", "fro_dist"]},
    "path_norm": check_path_norm, "path_norm_over_margin": check_path_norm_over_margin,
    "log_prod_spec_op": check_spec_op,
    **{n: check_flatness for n in [
        "pacbayes_init", "pacbayes_orig", "pacbayes_flatness", "pacbayes_mag_init",
        "pacbayes_mag_orig", "pacbayes_mag_flatness", "sharpness_init", "sharpness_orig",
        "sharpness_flatness", "sharpness_mag_init", "sharpness_mag_orig",
        "sharpness_mag_flatness", "pacbayes_bound"]},
    "pacbayes_optimized_bound": check_pacbayes_optimized,
    "keskar_sharpness_1e-3": check_keskar, "keskar_sharpness_5e-4": check_keskar,
    "hessian_max_eig": check_hessian_max_eig, "hessian_trace": check_hessian_trace,
    "hessian_fro": check_hessian_fro, "hessian_near_zero_frac": check_hessian_share,
    "hessian_neg_frac": check_hessian_share,
    "fisher_trace": check_fisher, "fisher_fro": check_fisher, "fisher_max_eig": check_fisher,
    "grad_variance": check_grad_variance,
    "expected_sharpness": check_expected_sharpness,
    "expected_sharpness_mag": check_expected_sharpness,
    "adaptive_sharpness_linf": check_adaptive, "adaptive_sharpness_l2": check_adaptive,
    "filter_sharpness": check_filter_sharpness, "local_entropy": check_local_entropy,
    **{n: check_optimisation for n in [
        "steps_to_loss_0.1", "steps_loss_0.1_to_target", "sum_train_loss", "lr_over_batch",
        "step_size_sum"]},
}


def test_every_measure_has_a_reference():
    assert REGISTRY, "the registry is empty: the case matrix would test nothing"
    missing = [n for n in REGISTRY if n not in CHECKS and n not in SKIP]
    assert not missing, f"registered measures without a reference: {missing}"
    stale = sorted((set(CHECKS) | set(SKIP)) - set(REGISTRY))
    assert not stale, f"references for measures that are not registered: {stale}"


def test_hessian_trace_is_exact_on_piecewise_linear_networks(case):
    check_hessian_trace(case, measured(case), "hessian_trace")


BACKPACK_OR_TORCH_FUNC = ["hessian_trace", "fisher_trace", "fisher_fro", "fisher_max_eig"]


def test_torch_func_paths_against_reference(case, monkeypatch):
    """The exact traces and the Fisher Gram matrix without BackPACK (`core.BACKPACK` off, the
    fallback for networks BackPACK does not support) and without the factored Gram matrix
    (`core.FACTORED_GRAM` off) meet the same references."""
    from study.measures import core
    monkeypatch.setattr(core, "BACKPACK", False)
    monkeypatch.setattr(core, "FACTORED_GRAM", False)
    res = measure_full(case.model, (case.x, case.y), init=case.init, train_log=case.train_log,
                       seed=case.seed, knobs=knobs_for(case), names=BACKPACK_OR_TORCH_FUNC)
    assert res.methods == {"hessian_trace": "exact_ggn", "fisher_trace": "torch.func",
                           "fisher_fro": "torch.func", "fisher_max_eig": "torch.func"}
    for name in BACKPACK_OR_TORCH_FUNC:
        CHECKS[name](case, res, name)


@pytest.mark.parametrize("name", NAMES)
def test_measure_against_reference(case, name):
    if name in SKIP:
        pytest.skip(SKIP[name])
    if name not in CHECKS:
        pytest.fail(f"measure {name!r} has no reference: add one to CHECKS")
    res = measured(case)
    assert name not in res.reasons, res.reasons[name]
    assert math.isfinite(res.values[name])
    CHECKS[name](case, res, name)
