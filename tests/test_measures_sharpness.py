"""Sharpness measures against independent computations: a separate scipy L-BFGS-B run
for Keskar's ζ, plain loops over the same seeded draws, feasibility and random
feasible points for adaptive sharpness, filter-by-filter norms, and an independent
SGLD on a quadratic whose stationary law is known in closed form."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from study.measures import REGISTRY, MeasureContext, select
from study.measures import sharpness as S
from tests.references import keskar_lbfgsb
from tests.tinymlp import D, H, K, P, explicit_loss, flat_of  # noqa: F401


def trained_tiny(seed=0, n=48):
    """The tiny MLP (float64) trained by full-batch gradient descent on a learnable labelling."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, H), nn.ReLU(), nn.Linear(H, K)).double()
    g = torch.Generator().manual_seed(seed + 100)
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    y = (x @ torch.randn(D, K, generator=g, dtype=torch.float64)).argmax(1)
    for _ in range(400):
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.5 * p.grad
    return model, x, y


@pytest.fixture(scope="module")
def net():
    return trained_tiny()


@pytest.mark.parametrize("name,eps", [("keskar_sharpness_1e-3", 1e-3), ("keskar_sharpness_5e-4", 5e-4)])
def test_keskar_against_independent_lbfgsb(net, name, eps):
    model, x, y = net
    want = keskar_lbfgsb(lambda t: explicit_loss(t, x, y), flat_of(model), eps, 10)
    ctx = MeasureContext(model, x, y)
    got = REGISTRY[name].fn(ctx)
    assert want > 0
    assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("memory_mb", [512, 0.001])  # all draws at once; one at a time
def test_expected_sharpness_against_plain_loop(net, memory_mb):
    model, x, y = net
    select(["curvature"])
    ctx = MeasureContext(model, x, y, seed=7, knobs=dict(
        expected_sharpness_draws=6, expected_sharpness_rho=0.05,
        expected_sharpness_mag_rho=0.2, memory_mb=memory_mb))
    w = flat_of(model)
    L0 = explicit_loss(w, x, y).item()
    for name, scale in [("expected_sharpness", 0.05 * torch.ones_like(w)),
                        ("expected_sharpness_mag", 0.2 * w.abs())]:
        gen = ctx.generator(name)
        vals = [explicit_loss(w + scale * torch.randn(P, generator=gen).double(), x, y).item()
                for _ in range(6)]
        got = REGISTRY[name].fn(ctx)
        assert got == pytest.approx(np.mean(vals) - L0, rel=1e-9, abs=1e-12)
        assert got > 0  # at a trained minimum noise raises the loss


@pytest.mark.parametrize("p,rho", [(math.inf, 0.05), (2, 0.3)])
def test_adaptive_sharpness_feasible_and_beats_random_feasible_points(net, p, rho):
    model, x, y = net
    ctx = MeasureContext(model, x, y, seed=2)
    value, Z, idx = S.adaptive_sharpness(ctx, p, rho, steps=20, n_batches=3, batch_size=16,
                                         name="test")
    w = flat_of(model)
    norms = Z.abs().max(1).values if p == math.inf else Z.norm(dim=1)
    assert torch.all(norms <= rho * (1 + 1e-12))
    g = torch.Generator().manual_seed(0)
    gains = []
    for z, b in zip(Z, idx):
        L0 = explicit_loss(w, x[b], y[b]).item()
        found = explicit_loss(w + w.abs() * z, x[b], y[b]).item() - L0
        gains.append(found)
        for _ in range(40):
            r = torch.randn(P, generator=g, dtype=torch.float64)
            r = rho * (r.sign() if p == math.inf else r / r.norm())
            assert found >= explicit_loss(w + w.abs() * r, x[b], y[b]).item() - L0
    assert value == pytest.approx(np.mean(gains), rel=1e-9)
    assert value > 0
    knob = "adaptive_rho_linf" if p == math.inf else "adaptive_rho_l2"
    ctx2 = MeasureContext(model, x, y, seed=2, knobs={knob: rho, "adaptive_batches": 3,
                                                       "adaptive_batch_size": 16})
    name = "adaptive_sharpness_linf" if p == math.inf else "adaptive_sharpness_l2"
    assert REGISTRY[name].fn(ctx2) >= 0


def test_filter_directions_are_normalised_filter_by_filter():
    from study.models import nin
    torch.manual_seed(0)
    model = nin((1, 6, 6), 3, depth=1, width=4, batchnorm=True).eval()
    x, y = torch.randn(10, 1, 6, 6), torch.randint(0, 3, (10,))
    ctx = MeasureContext(model, x, y, seed=1)
    Dirs = S.filter_directions(ctx, 3, ctx.generator("filter_sharpness"))
    assert Dirs.shape == (3, sum(p.numel() for p in model.parameters()))
    assert not torch.allclose(Dirs[0], Dirs[1])
    for d in Dirs:
        i = 0
        for name, p in model.named_parameters():
            part = d[i:i + p.numel()].view_as(p)
            i += p.numel()
            if p.dim() < 2:  # biases and BN parameters are not perturbed
                assert torch.all(part == 0), name
                continue
            for f in range(p.shape[0]):
                want = p.detach()[f].norm().item()
                assert part[f].norm().item() == pytest.approx(want, rel=1e-5), (name, f)


def test_filter_sharpness_against_plain_loop(net):
    model, x, y = net
    ctx = MeasureContext(model, x, y, seed=4, knobs=dict(filter_directions=3, filter_radius=0.2))
    got = REGISTRY["filter_sharpness"].fn(ctx)
    Dirs = S.filter_directions(ctx, 3, ctx.generator("filter_sharpness"))
    w = flat_of(model)
    L0 = explicit_loss(w, x, y).item()
    at_r = [explicit_loss(w + 0.2 * d, x, y).item() for d in Dirs]
    assert got == pytest.approx(np.mean(at_r) - L0, rel=1e-9)
    t = np.array(ctx.artifacts["filter_sharpness_t"])
    curves = np.array(ctx.artifacts["filter_sharpness_curves"]).reshape(3, len(t))
    assert np.allclose(t, 0.2 * np.array(S.FILTER_T))
    want = [[explicit_loss(w + tj * d, x, y).item() for tj in t] for d in Dirs]
    assert np.allclose(curves, want, rtol=1e-9)


# -- local entropy -------------------------------------------------------------------


def quadratic(a, c):
    def loss_grad(v, k):
        return (0.5 * a * (v - c) ** 2).sum(-1).mean(), a * (v - c)
    return loss_grad


def test_sgld_update_matches_independent_reimplementation():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(5, generator=g, dtype=torch.float64) + 0.5
    c = torch.randn(5, generator=g, dtype=torch.float64)
    w0 = torch.randn(5, generator=g, dtype=torch.float64)
    gamma, T, steps, lr, burnin = 3.0, 0.2, 30, 0.01, 4
    noise_gen = torch.Generator().manual_seed(1)
    got = S.sgld_mean_loss(quadratic(a, c), w0, gamma, T, steps, lr, burnin,
                           lambda k: torch.randn(5, generator=noise_gen, dtype=torch.float64))
    ref_gen = torch.Generator().manual_seed(1)
    states = [w0.clone()]
    for _ in range(steps):
        v = states[-1]
        drift = a * (v - c) / T + gamma * (v - w0)
        states.append(v - lr * drift + math.sqrt(2 * lr) * torch.randn(5, generator=ref_gen,
                                                                       dtype=torch.float64))
    want = np.mean([float((0.5 * a * (s - c) ** 2).sum()) for s in states[burnin + 1:]])
    assert got == pytest.approx(want, rel=1e-12)


def test_sgld_samples_the_local_entropy_measure_on_a_quadratic():
    """L(v) = ½ Σ a_i (v_i − c_i)²: the chain is a linear AR(1) whose stationary law is
    Gaussian with mean (a c/T + γ w)/λ and variance 2η/(1 − (1 − ηλ)²), λ = a/T + γ."""
    d, chains = 8, 200
    g = torch.Generator().manual_seed(3)
    a = torch.rand(d, generator=g, dtype=torch.float64) * 4 + 0.5
    c = torch.randn(d, generator=g, dtype=torch.float64)
    w0 = c + torch.randn(d, generator=g, dtype=torch.float64)
    gamma, T, lr, steps, burnin = 2.0, 0.5, 0.01, 1500, 300
    noise_gen = torch.Generator().manual_seed(4)
    W = w0.expand(chains, d).clone()  # independent chains, updated together
    got = S.sgld_mean_loss(quadratic(a, c), W, gamma, T, steps, lr, burnin,
                           lambda k: torch.randn(chains, d, generator=noise_gen, dtype=torch.float64))
    lam = a / T + gamma
    mean = (a * c / T + gamma * w0) / lam
    var = 2 * lr / (1 - (1 - lr * lam) ** 2)
    want = float((0.5 * a * (var + (mean - c) ** 2)).sum())
    assert got == pytest.approx(want, rel=0.04)


def test_sgld_flags_an_unstable_step_as_diverged():
    """With a flat loss the chain is v − w ← (1 − ηγ)(v − w) + √(2η)ξ, whose stationary
    E‖v − w‖² is 2P/(γ(2 − ηγ)): P/γ as η → 0, 20·P/γ at ηγ = 1.9, growing as |1 − ηγ|^k
    beyond 2. Kept up to 4·P/γ (ηγ ≤ 1.5)."""
    P, gamma, steps = 50, 1e4, 30
    w0 = torch.zeros(P, dtype=torch.float64)

    def flat(v, k):
        return torch.zeros((), dtype=torch.float64), torch.zeros_like(v)

    def run(lr):
        gen = torch.Generator().manual_seed(0)
        return S.sgld_mean_loss(flat, w0, gamma, 1.0, steps, lr, 5,
                                lambda k: torch.randn(P, generator=gen, dtype=torch.float64))
    assert run(0.5 / gamma) == 0.0 and run(1.0 / gamma) == 0.0  # stable: the (zero) mean loss
    assert math.isnan(run(1.9 / gamma))  # stable, but 20× the target's spread
    assert math.isnan(run(2.5 / gamma))  # |1 − ηγ| = 1.5: ‖v − w‖² ~ 1.5^60·P/γ, finite yet flagged


def test_local_entropy_halves_a_diverging_step(net):
    """A step size the network's curvature makes unstable is halved until the chain holds;
    the value is the chain at that step (the same batches and noise), and the step is recorded."""
    model, x, y = net
    knobs = dict(local_entropy_gamma=1e4, local_entropy_temperature=1.0, local_entropy_steps=30,
                 local_entropy_batch_size=64)
    ctx = MeasureContext(model, x, y, seed=3, knobs={**knobs, "local_entropy_lr": 6e-4})  # ηγ = 6
    got = REGISTRY["local_entropy"].fn(ctx)
    halved = int(ctx.methods["local_entropy"].split("_")[-1].rstrip("x"))
    assert halved == 3  # ηγ = 6 → 3 (diverges) → 1.5 (4× the target's spread) → 0.75 (holds)
    direct = MeasureContext(model, x, y, seed=3, knobs={**knobs, "local_entropy_lr": 6e-4 / 8})
    assert got == REGISTRY["local_entropy"].fn(direct) and "local_entropy" not in direct.methods
    assert math.isfinite(got) and abs(got) < 1.0
    with pytest.raises(S.Undefined, match="diverged even at"):
        REGISTRY["local_entropy"].fn(MeasureContext(model, x, y, seed=3, knobs={**knobs, "local_entropy_lr": 1.0}))


def test_local_entropy_sanity_on_a_trained_network(net):
    model, x, y = net
    knobs = dict(local_entropy_batch_size=1000, local_entropy_lr=1e-24)
    frozen = REGISTRY["local_entropy"].fn(MeasureContext(model, x, y, knobs=knobs))
    assert abs(frozen) < 1e-9  # no movement, whole-set batches: E[L] = L(w)
    knobs = dict(local_entropy_gamma=100.0, local_entropy_temperature=0.05,
                 local_entropy_lr=1e-3, local_entropy_steps=30)
    one = REGISTRY["local_entropy"].fn(MeasureContext(model, x, y, seed=1, knobs=knobs))
    again = REGISTRY["local_entropy"].fn(MeasureContext(model, x, y, seed=1, knobs=knobs))
    other = REGISTRY["local_entropy"].fn(MeasureContext(model, x, y, seed=2, knobs=knobs))
    assert one == again and one != other
    assert one > 0 and other > 0  # thermal noise lifts the loss above the minimum


def test_loss_surface_against_independent_grid(net):
    """The optional 2-D surface (loss_surface_points = N): the same value of filter_sharpness,
    the grid a, and every point L(w + a_i·δ₁ + a_j·δ₂) with δ₁, δ₂ redrawn here by hand from the
    seeded stream and filter-normalised in numpy, the loss written out by hand."""
    from study.measures.context import stable_seed
    from study.measures.registry import settings

    model, x, y = net
    knobs = dict(filter_directions=3, filter_radius=0.2)
    plain = MeasureContext(model, x, y, seed=4, knobs=knobs)
    ctx = MeasureContext(model, x, y, seed=4, knobs={**knobs, "loss_surface_points": 5})
    assert REGISTRY["filter_sharpness"].fn(ctx) == REGISTRY["filter_sharpness"].fn(plain)
    assert "loss_surface" not in plain.artifacts and "loss_surface_t" not in plain.artifacts
    a = np.array(ctx.artifacts["loss_surface_t"])
    assert np.allclose(a, np.linspace(-0.4, 0.4, 5), rtol=0, atol=1e-15)
    surface = np.array(ctx.artifacts["loss_surface"]).reshape(5, 5)
    gen = torch.Generator().manual_seed(stable_seed(4, "loss_surface"))
    dirs = []
    for _ in range(2):
        parts = []
        for p in model.parameters():
            if p.dim() < 2:
                parts.append(np.zeros(p.numel()))
                continue
            d = torch.randn(*p.shape, generator=gen).double().numpy()
            w_f = p.detach().numpy()
            d = d * (np.linalg.norm(w_f, axis=1) / np.linalg.norm(d, axis=1))[:, None]
            parts.append(d.reshape(-1))
        dirs.append(torch.from_numpy(np.concatenate(parts)))
    w = flat_of(model)
    want = [[explicit_loss(w + ai * dirs[0] + bj * dirs[1], x, y).item() for bj in a] for ai in a]
    assert np.allclose(surface, want, rtol=1e-9)
    assert surface[2, 2] == pytest.approx(explicit_loss(w, x, y).item(), rel=1e-9)  # a = b = 0: L(w)
    # the knob enters the settings only when it asks for the surface (old hashes stay valid)
    assert "loss_surface_points" not in settings("filter_sharpness")["knobs"]
    assert "loss_surface_points" not in settings("filter_sharpness", {"loss_surface_points": 0})["knobs"]
    assert settings("filter_sharpness", {"loss_surface_points": 11})["knobs"]["loss_surface_points"] == 11
