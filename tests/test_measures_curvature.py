"""Curvature measures against independent computations: explicit Hessians
(torch.autograd.functional.hessian → numpy eigvalsh), per-example gradients from a
plain autograd loop, and mini-batch gradients from an explicit loop."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from study.measures import MeasureContext, TrainLog, Undefined, core, measure_full, select
from study.measures import curvature as C
from tests import references as R
from tests.references import explicit_full_grad, explicit_grads
from tests.tinymlp import D, H, K, P, explicit_loss, flat_of  # noqa: F401

CURVATURE = {
    "keskar_sharpness_1e-3", "keskar_sharpness_5e-4", "hessian_max_eig", "hessian_trace",
    "hessian_fro", "hessian_near_zero_frac", "hessian_neg_frac", "fisher_trace", "fisher_fro",
    "fisher_max_eig", "grad_variance", "expected_sharpness", "expected_sharpness_mag",
    "adaptive_sharpness_linf", "adaptive_sharpness_l2", "filter_sharpness", "local_entropy",
}


def tiny(seed=0, n=40):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, H), nn.ReLU(), nn.Linear(H, K)).double()
    g = torch.Generator().manual_seed(seed + 100)
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, K, (n,), generator=g)
    return model, x, y


def explicit_hessian(model, x, y):
    w = flat_of(model)
    Hm = torch.autograd.functional.hessian(lambda f: explicit_loss(f, x, y), w)
    return Hm.numpy()


def test_family_is_complete():
    names = {m.name for m in select(["curvature"])}
    assert names == CURVATURE


def test_lanczos_finds_largest_algebraic_eigenvalue_of_negative_dominant_matrix():
    rng = np.random.default_rng(0)
    n = 60
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.concatenate([[-40.0, -25.0], rng.uniform(-5, 3, n - 3), [4.0]])
    A = torch.tensor((Q * lam) @ Q.T)
    v = torch.tensor(rng.choice([-1.0, 1.0], size=(2, n))) / math.sqrt(n)
    out = C.lanczos(lambda V: V @ A, v, v @ A, min_steps=1, max_steps=n, tol=1e-3)
    assert out["converged"]
    assert abs(out["lam_max"] - 4.0) <= 1e-3 * 4.0


def test_slq_shares_on_a_designed_spectrum():
    """Repeated eigenvalues on both sides of the ±1e-3·λ_max band edges: SLQ with many
    probes recovers the exact shares."""
    rng = np.random.default_rng(1)
    lam = np.repeat([0.0, 5e-4, -5e-4, 1.5e-3, -1.5e-3, -0.3, 0.5, 1.0], [10, 5, 5, 5, 5, 5, 4, 1])
    n, k = len(lam), 200
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = torch.tensor((U * lam) @ U.T)
    V = torch.tensor(rng.choice([-1.0, 1.0], size=(k, n))) / math.sqrt(n)
    out = C.lanczos(lambda X: X @ A, V, V @ A, min_steps=n, max_steps=n, tol=1e-3)
    assert abs(out["lam_max"] - 1.0) < 1e-9
    nodes, weights = C.slq_density(out["alpha"], out["beta"])
    near, neg = C.spectral_shares(nodes, weights, out["lam_max"])
    for sel, got in [(np.abs(lam) <= 1e-3, near), (lam < -1e-3, neg)]:
        Pi = U[:, sel] @ U[:, sel].T
        sd = math.sqrt(2 * ((Pi ** 2).sum() - (np.diag(Pi) ** 2).sum()) / n ** 2 / k)
        assert abs(got - sel.mean()) <= 4 * sd
    with pytest.raises(Undefined):
        C.spectral_shares(nodes, weights, -1.0)


def test_lanczos_stops_at_an_invariant_subspace():
    rng = np.random.default_rng(2)
    lam = np.repeat([-1.0, 0.0, 2.0, 5.0], [3, 20, 3, 4])
    U, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    A = torch.tensor((U * lam) @ U.T)
    V = torch.tensor(rng.choice([-1.0, 1.0], size=(3, 30))) / math.sqrt(30)
    out = C.lanczos(lambda X: X @ A, V, V @ A, min_steps=30, max_steps=30, tol=1e-3)
    assert out["steps"] == 4 and all(len(a) == 4 for a in out["alpha"])
    nodes, weights = C.slq_density(out["alpha"], out["beta"])
    assert np.allclose(np.unique(nodes.round(9)), [-1, 0, 2, 5])
    # each probe's weight on an eigenvalue is its squared projection on that eigenspace
    want = sum(((V.numpy() @ U[:, lam == e]) ** 2).sum(1).mean() for e in [0.0])
    assert weights[np.abs(nodes) < 1e-9].sum() == pytest.approx(want, rel=1e-9)


@pytest.fixture(scope="module")
def spectrum_case():
    model, x, y = tiny(0)
    Hm = explicit_hessian(model, x, y)
    knobs = dict(hessian_examples=0, hutchinson_probes=2000, slq_probes=60, slq_steps=P,
                 lanczos_max_steps=P)
    ctx = MeasureContext(model, x, y, knobs=knobs, seed=3)
    return ctx, Hm


def test_hessian_max_eig_trace_fro_against_explicit_hessian(spectrum_case):
    ctx, Hm = spectrum_case
    ev = np.linalg.eigvalsh(Hm)
    assert ev[0] < 0 < ev[-1]  # a mixed spectrum: the test is not vacuous
    assert abs(C.hessian_max_eig(ctx) - ev[-1]) <= 1e-6 * abs(ev[-1])
    k = ctx.knob("hutchinson_probes")
    # a ReLU MLP: hessian_trace is exact (tr H = tr GGN)
    assert C.hessian_trace(ctx) == pytest.approx(np.trace(Hm), rel=1e-12)
    assert ctx.methods == {"hessian_trace": "exact_ggn_backpack"}
    hutch = C.hessian_spectrum(ctx)["trace"]
    # deflated Hutchinson (the seeded probes: test_hessian_trace_fro_deflated_by_the_krylov_basis);
    # its variance is at most plain Hutchinson's with Rademacher probes, 2(‖M‖_F² − Σ M_ii²)/k
    sd_tr = math.sqrt(2 * ((Hm ** 2).sum() - (np.diag(Hm) ** 2).sum()) / k)
    assert abs(hutch - np.trace(Hm)) <= 4 * sd_tr
    H2 = Hm @ Hm
    sd_f2 = math.sqrt(2 * ((H2 ** 2).sum() - (np.diag(H2) ** 2).sum()) / k)
    assert abs(C.hessian_fro(ctx) ** 2 - (Hm ** 2).sum()) <= 4 * sd_f2


def deflated_reference(Hm: np.ndarray, V: np.ndarray, m: int) -> tuple[float, float]:
    """Hutch++ with the Krylov basis of V[0]: Q spans {v, Hv, …, H^(m−1)v} (QR of the
    explicit powers), tr H ≈ tr(QᵀHQ) + mean u·Hu and ‖H‖_F² ≈ ‖HQ‖_F² + mean ‖Hu‖², the
    rows u of V[1:] projected off Q."""
    K = [V[0]]
    for _ in range(m - 1):
        K.append(Hm @ K[-1])
    Q, _ = np.linalg.qr(np.stack(K, 1))
    U = V[1:] - (V[1:] @ Q) @ Q.T
    HU = U @ Hm
    HQ = Hm @ Q
    return (np.trace(Q.T @ HQ) + (U * HU).sum(1).mean(),
            math.sqrt((HQ ** 2).sum() + (HU ** 2).sum(1).mean()))


def test_hessian_trace_fro_deflated_by_the_krylov_basis():
    """hessian_spectrum's trace and ‖H‖_F: the 3-step Krylov basis of the first SLQ probe
    deflates the last hutchinson_probes seeded probes (Hutch++), against explicit powers
    of the explicit Hessian."""
    model, x, y = tanh_net()
    Hm = R.explicit_hessian(model, x, y)
    k, m = 5, 3
    ctx = MeasureContext(model, x, y, knobs=dict(hessian_examples=0, hutchinson_probes=k, slq_probes=1,
                                                 slq_steps=m, lanczos_max_steps=m), seed=5)
    got = C.hessian_spectrum(ctx)
    V = ctx.rademacher(ctx.generator("hessian"), 1 + k, Hm.shape[0]).double().numpy()
    tr, fro = deflated_reference(Hm, V, m)
    assert got["trace"] == pytest.approx(tr, rel=1e-9)
    assert got["fro"] == pytest.approx(fro, rel=1e-9)


def tanh_net(seed=0, n=40):
    """A tiny MLP with Tanh: its output is not linear in each single parameter."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(D, H), nn.Tanh(), nn.Linear(H, K)).double()
    g = torch.Generator().manual_seed(seed + 100)
    return model, torch.randn(n, D, generator=g, dtype=torch.float64), torch.randint(0, K, (n,), generator=g)


def test_hessian_trace_is_hutchinson_where_the_output_is_not_linear_in_each_parameter():
    model, x, y = tanh_net()
    Hm = R.explicit_hessian(model, x, y)
    k = 400
    ctx = MeasureContext(model, x, y, knobs=dict(hessian_examples=0, hutchinson_probes=k, slq_probes=1,
                                                 slq_steps=3, lanczos_max_steps=3), seed=5)
    got = C.hessian_trace(ctx)
    assert ctx.methods == {"hessian_trace": "hutchinson"}
    V = ctx.rademacher(ctx.generator("hessian"), 1 + k, Hm.shape[0]).double().numpy()
    # the seeded probes, deflated by the Krylov basis of the SLQ probe
    assert got == pytest.approx(deflated_reference(Hm, V, 3)[0], rel=1e-9)
    assert abs(got - np.trace(Hm)) <= 4 * R.hutchinson_sd(Hm, k)
    # the GGN trace differs from tr H here: the exact path would be wrong
    ggn = float(C.core.ggn_trace_terms(ctx, x).mean())
    assert abs(ggn - np.trace(Hm)) > 1e-3 * abs(np.trace(Hm))


def test_ggn_trace_terms_against_explicit_jacobians():
    """Per example, against tr(Jᵀ(diag p − ppᵀ)J) with J the logits' Jacobian from autograd."""
    model, x, _ = tanh_net(1, n=6)
    ctx = MeasureContext(model, x, torch.zeros(6, dtype=torch.long))
    w = flat_of(model)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]

    def logits(flat, xi):
        parts, i = {}, 0
        for n, sh in zip(names, shapes):
            parts[n] = flat[i:i + sh.numel()].view(sh)
            i += sh.numel()
        return torch.func.functional_call(model, parts, (xi[None],))[0]

    want = []
    for xi in x:
        J = torch.autograd.functional.jacobian(lambda v: logits(v, xi), w).numpy()
        p = torch.softmax(logits(w, xi), -1).detach().numpy()
        want.append(np.trace(J.T @ (np.diag(p) - np.outer(p, p)) @ J))
    got = C.core.ggn_trace_terms(ctx, x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("build, linear", [
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(D, H), nn.ReLU(), nn.Dropout(0.1),
                           nn.Linear(H, K)), True),
    (lambda: nn.Sequential(nn.Linear(D, H), nn.BatchNorm1d(H), nn.ReLU(), nn.Linear(H, K)), True),
    (lambda: nn.Sequential(nn.Linear(D, H), nn.BatchNorm1d(H, track_running_stats=False),
                           nn.ReLU(), nn.Linear(H, K)), False),   # batch statistics in eval
    (lambda: nn.Sequential(nn.Linear(D, H), nn.Tanh(), nn.Linear(H, K)), False),
    (lambda: nn.Sequential(nn.Linear(D, H), nn.GELU(), nn.Linear(H, K)), False),
    (lambda: (lambda lin: nn.Sequential(lin, nn.ReLU(), lin))(nn.Linear(D, D)), False),  # reused
    (lambda: nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Sequential(nn.Linear(H, K))), True),
])
def test_linear_in_each_parameter_is_conservative(build, linear):
    from study.measures import core
    model = build().double()
    x = torch.randn(8, D, dtype=torch.float64)
    ctx = MeasureContext(model, x, torch.zeros(8, dtype=torch.long))
    assert core.linear_in_each_parameter(ctx) is linear


def test_linear_in_each_parameter_rejects_a_custom_forward():
    from study.measures import core

    class Square(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(D, K)

        def forward(self, x):
            return self.lin(x) ** 2

    ctx = MeasureContext(Square().double(), torch.randn(4, D, dtype=torch.float64),
                         torch.zeros(4, dtype=torch.long))
    assert not core.linear_in_each_parameter(ctx)


def test_hessian_spectral_shares_against_explicit_hessian(spectrum_case):
    ctx, Hm = spectrum_case
    ev, U = np.linalg.eigh(Hm)
    cut = 1e-3 * ev[-1]
    assert np.min(np.abs(np.abs(ev) - cut)) > 1e-9  # no eigenvalue on the band's edge
    k = ctx.knob("slq_probes")
    for sel, got in [(np.abs(ev) <= cut, C.hessian_near_zero_frac(ctx)),
                     (ev < -cut, C.hessian_neg_frac(ctx))]:
        exact = sel.mean()
        assert 0 < exact < 1
        # per probe the share is vᵀΠv/P, Π the projector on the selected eigenvectors
        Pi = U[:, sel] @ U[:, sel].T
        sd = math.sqrt(2 * ((Pi ** 2).sum() - (np.diag(Pi) ** 2).sum()) / P ** 2 / k)
        assert abs(got - exact) <= 4 * sd + 1e-9
    nodes = np.array(ctx.artifacts["hessian_density_nodes"])
    weights = np.array(ctx.artifacts["hessian_density_weights"])
    assert len(nodes) == len(weights) and abs(weights.sum() - 1) < 1e-9
    assert np.all(np.diff(nodes) >= 0)
    assert nodes.min() >= ev[0] - 1e-8 and nodes.max() <= ev[-1] + 1e-8


def test_hessian_max_eig_stops_at_tolerance():
    model, x, y = tiny(1)
    ev = np.linalg.eigvalsh(explicit_hessian(model, x, y))
    ctx = MeasureContext(model, x, y, seed=0, knobs=dict(
        hessian_examples=0, slq_probes=1, slq_steps=1, lanczos_max_steps=P))
    assert abs(C.hessian_max_eig(ctx) - ev[-1]) <= 1e-3 * abs(ev[-1])


def test_hessian_on_conv_bn_float32_against_explicit_hessian():
    from study.models import nin
    torch.manual_seed(0)
    model = nin((1, 6, 6), 3, depth=1, width=3, batchnorm=True)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 1, 6, 6, generator=g), torch.randint(0, 3, (30,), generator=g)
    ev = np.linalg.eigvalsh(R.explicit_hessian(model, x, y))   # float64
    ctx = MeasureContext(model.float(), x, y, seed=0, knobs=dict(hessian_examples=0))
    assert abs(C.hessian_max_eig(ctx) - ev[-1]) <= 2e-3 * abs(ev[-1])


@pytest.mark.parametrize("factored", [True, False])
@pytest.mark.parametrize("backpack", [True, False])
@pytest.mark.parametrize("memory_mb", [512, 0.0005])  # one block; one example per block
def test_fisher_against_explicit_per_example_gradients(memory_mb, backpack, factored, monkeypatch):
    monkeypatch.setattr(core, "BACKPACK", backpack)
    monkeypatch.setattr(core, "FACTORED_GRAM", factored)
    model, x, y = tiny(2, n=25)
    Gs = explicit_grads(model, x, y)
    F_ = Gs.T @ Gs / len(x)
    ctx = MeasureContext(model, x, y, knobs=dict(fisher_examples=0, memory_mb=memory_mb))
    assert C.fisher_trace(ctx) == pytest.approx(np.trace(F_), rel=1e-10)
    assert C.fisher_fro(ctx) == pytest.approx(np.linalg.norm(F_, "fro"), rel=1e-10)
    assert C.fisher_max_eig(ctx) == pytest.approx(np.linalg.eigvalsh(F_)[-1], rel=1e-9)
    method = "backpack" if backpack else "torch.func"
    gram = "factored_linear" if factored else method
    assert ctx.methods == {"fisher_trace": method, "fisher_fro": gram, "fisher_max_eig": gram}


@pytest.mark.parametrize("memory_mb", [512, 0.0005])
def test_backpack_ggn_trace_equals_the_torch_func_one(memory_mb, monkeypatch):
    model, x, y = tiny(3, n=30)
    values = {}
    for backpack in (True, False):
        monkeypatch.setattr(core, "BACKPACK", backpack)
        ctx = MeasureContext(model, x, y, knobs=dict(hessian_examples=0, memory_mb=memory_mb))
        values[backpack] = C.hessian_trace(ctx), ctx.methods["hessian_trace"]
    assert values[True][1] == "exact_ggn_backpack" and values[False][1] == "exact_ggn"
    assert values[True][0] == pytest.approx(values[False][0], rel=1e-12)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(D, D), nn.Linear(D, K)

    def forward(self, x):
        return self.b(x + torch.relu(self.a(x)))


def test_backpack_only_where_every_module_is_supported_and_never_on_the_users_model():
    model, x, y = tiny(2, n=25)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = MeasureContext(model, x, y, knobs=dict(fisher_examples=0, hessian_examples=0))
    C.fisher_trace(ctx), C.fisher_fro(ctx), C.hessian_trace(ctx)
    assert ctx.methods["fisher_trace"] == "backpack"
    assert not any(hasattr(m, "_backpack_extend") for m in model.modules())
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    assert all(p.grad is None and not hasattr(p, "grad_batch") for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # a custom forward: the torch.func paths, the same values as explicit gradients
    torch.manual_seed(0)
    res = Residual().double()
    Gs = explicit_grads(res, x, y)
    ctx = MeasureContext(res, x, y, knobs=dict(fisher_examples=0))
    assert C.fisher_trace(ctx) == pytest.approx((Gs ** 2).sum() / len(x), rel=1e-10)
    assert ctx.methods == {"fisher_trace": "torch.func"}
    # ... its Gram matrix factored per layer all the same (each Linear used once on 2-D input)
    F_ = Gs.T @ Gs / len(x)
    assert C.fisher_fro(ctx) == pytest.approx(np.linalg.norm(F_, "fro"), rel=1e-10)
    assert ctx.methods["fisher_fro"] == "factored_linear"


def test_factored_gram_with_many_examples_against_backpack():
    """Beyond 256 examples fisher_max_eig takes ARPACK's Lanczos on G: the same λ_max."""
    model, x, y = tiny(4, n=300)
    ctx = MeasureContext(model, x, y, knobs=dict(fisher_examples=0))
    G = C.backpack_gram(ctx)
    assert C._gram(ctx, "fisher_fro") == pytest.approx(G, rel=1e-9, abs=1e-12 * np.abs(G).max())
    assert C.fisher_max_eig(ctx) == pytest.approx(np.linalg.eigvalsh(G)[-1] / len(G), rel=1e-9)
    assert ctx.methods["fisher_max_eig"] == "factored_linear"
    # Tanh: per-example gradients by BackPACK, the exact GGN path not taken
    ctx = MeasureContext(nn.Sequential(nn.Linear(D, H), nn.Tanh(), nn.Linear(H, K)).double(), x, y)
    assert core.backpack_supports(ctx, second_order=False)
    assert not core.backpack_supports(ctx, second_order=True)


def test_fisher_subset_is_a_seeded_subset():
    model, x, y = tiny(2, n=25)
    ctx = MeasureContext(model, x, y, seed=5, knobs=dict(fisher_examples=9))
    idx = torch.randperm(25, generator=ctx.generator("fisher"))[:9].sort().values
    Gs = explicit_grads(model, x[idx], y[idx])
    assert C.fisher_trace(ctx) == pytest.approx((Gs ** 2).sum() / 9, rel=1e-10)


@pytest.mark.parametrize("with_log", [True, False])
def test_grad_variance_against_explicit_loop(with_log):
    model, x, y = tiny(3, n=50)
    B = 7 if with_log else 8
    log = TrainLog(optimizer="sgd", lr=0.1, batch_size=7) if with_log else None
    ctx = MeasureContext(model, x, y, seed=11, train_log=log,
                         knobs=dict(grad_var_batch_size=8, grad_var_batches=5))
    got = C.grad_variance(ctx)
    perm = torch.randperm(50, generator=ctx.generator("grad_variance"))
    gbar = explicit_full_grad(model, x, y)
    nb = min(50 // B, 5)
    dev = [((explicit_full_grad(model, x[b], y[b]) - gbar) ** 2).sum().item()
           for b in perm[:nb * B].view(nb, B)]
    assert got == pytest.approx(np.mean(dev), rel=1e-10)
    assert got > 0


def test_grad_variance_undefined_without_a_full_batch():
    model, x, y = tiny(3, n=10)
    ctx = MeasureContext(model, x, y, train_log=TrainLog(optimizer="sgd", lr=0.1, batch_size=32))
    with pytest.raises(Undefined):
        C.grad_variance(ctx)


CHEAP = dict(hutchinson_probes=4, slq_probes=2, slq_steps=8, lanczos_max_steps=20,
             fisher_examples=20, expected_sharpness_draws=4, adaptive_steps=3,
             adaptive_batches=2, adaptive_batch_size=16, filter_directions=2,
             local_entropy_steps=6, local_entropy_burnin=2, local_entropy_batch_size=16,
             local_entropy_lr=1e-6)


def test_family_is_deterministic_and_seeded():
    model, x, y = tiny(4, n=40)
    log = TrainLog(optimizer="sgd", lr=0.1, batch_size=8)
    runs = [measure_full(model, (x, y), names=["curvature"], train_log=log, seed=s, knobs=CHEAP)
            for s in (0, 0, 1)]
    a, b, c = runs
    assert not a.reasons, a.reasons
    assert set(a.values) == CURVATURE
    assert a.values == b.values
    assert a.artifacts == b.artifacts
    assert {"hessian_density_nodes", "hessian_density_weights", "filter_sharpness_t",
            "filter_sharpness_curves"} <= set(a.artifacts)
    seeded = {"expected_sharpness", "expected_sharpness_mag", "filter_sharpness", "local_entropy",
              "hessian_fro", "grad_variance"}
    assert all(a.values[n] != c.values[n] for n in seeded)
    # exact on this ReLU MLP, on all 40 examples: no draw left to seed
    assert a.methods == {"hessian_trace": "exact_ggn_backpack", "fisher_trace": "backpack",
                         "fisher_fro": "factored_linear", "fisher_max_eig": "factored_linear"}
    assert a.values["hessian_trace"] == c.values["hessian_trace"]
