"""The optimised PAC-Bayes bound (Dziugaite & Roy 2017): its pieces against their definitions
(the closed-form KL against a Monte-Carlo estimate, kl⁻¹ and Langford & Caruana's sample
bound against a brute-force grid), and the whole bound on networks trained here: it bounds
the stochastic network's error on a large held-out set, and is above 0.5 on random labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from study.data import load_dataset
from study.measures import MeasureContext, measure_full, select
from study.measures import pacbayes_optimized as po
from study.models import build_model
from study.schema import ARTIFACTS
from study.train import TrainOptions, train
from tests import references as R

PARTS = ARTIFACTS["pacbayes_optimized_parts"].labels
CHEAP = {"pacbayes_optimized_steps": 400, "pacbayes_optimized_draws": 200, "pacbayes_optimized_batch_size": 50}


def test_closed_form_kl_matches_a_monte_carlo_estimate():
    g = torch.Generator().manual_seed(0)
    P = 6
    mean, w0 = torch.randn(P, generator=g, dtype=torch.float64), torch.randn(P, generator=g, dtype=torch.float64)
    var = torch.rand(P, generator=g, dtype=torch.float64) * 0.5 + 0.05
    lam = 0.7
    closed = float(po.kl_gaussians(mean, var, w0, lam))
    assert closed == pytest.approx(R.kl_gauss_np(mean, var, w0, lam), rel=1e-12)
    # E_Q[log q(w) − log p(w)] over 400,000 draws of Q
    w = mean + var.sqrt() * torch.randn(400_000, P, generator=g, dtype=torch.float64)
    log_q = torch.distributions.Normal(mean, var.sqrt()).log_prob(w).sum(1)
    log_p = torch.distributions.Normal(w0, math.sqrt(lam)).log_prob(w).sum(1)
    d = (log_q - log_p).numpy()
    assert abs(d.mean() - closed) < 4 * d.std() / math.sqrt(len(d)), (d.mean(), closed)


@settings(max_examples=60, deadline=None)
@given(q=st.floats(0, 1), c=st.floats(0, 3))
def test_kl_inverse_is_the_brute_force_grid(q, c):
    got = po.kl_inv(q, c)
    want = R.kl_inv_grid(q, c)
    assert want - 1e-9 <= got <= want + 1.01e-6          # the grid is 1e-6 apart
    assert po.kl_bernoulli(q, got) <= c + 1e-9 and got >= q


@pytest.mark.parametrize("e_m, m", [(0.0, 10), (0.02, 1000), (0.1, 200), (0.5, 50), (0.97, 1000), (1.0, 30)])
def test_langford_caruana_sample_bound_is_its_definition(e_m, m):
    """ê⁺ = max{p : kl(ê_m‖p) ≤ log(2/δ′)/m}, δ′ = 0.01."""
    want = R.kl_inv_grid(e_m, math.log(2 / 0.01) / m)
    assert po.sample_bound(e_m, m) == pytest.approx(want, abs=1.01e-6)
    assert R.kl_bern(e_m, po.sample_bound(e_m, m)) <= math.log(200) / m + 1e-9


def test_the_final_bound_is_kl_inverse_of_the_pac_bayes_term():
    for e_plus, kl, j, n in [(0.05, 1600.0, 470, 10000), (0.3, 12.0, 1, 500), (0.0, 0.0, 3, 100)]:
        c = (kl + math.log(math.pi ** 2 * n / (6 * 0.025)) + 2 * math.log(j)) / (n - 1)
        assert po.final_bound(e_plus, kl, j, n) == pytest.approx(R.kl_inv_grid(e_plus, c), abs=1.01e-6)
    assert po.lambda_of(100) == pytest.approx(0.1 * math.exp(-1))


def test_costly_measure_is_computed_only_where_named():
    names = {m.name for m in select(["all"])}
    assert "pacbayes_optimized_bound" not in names
    assert "pacbayes_optimized_bound" not in {m.name for m in select(["flatness"])}
    assert [m.name for m in select(["pacbayes_optimized_bound"])] == ["pacbayes_optimized_bound"]
    assert "pacbayes_optimized_bound" in {m.name for m in select(["all", "pacbayes_optimized_bound"])}


def _trained(noise: float, seed: int, dim: int, boolean: bool):
    d = load_dataset("xor", dim=dim, boolean=boolean, train_size=400, test_size=40_000, label_noise=noise,
                     data_seed=seed)
    torch.manual_seed(seed)
    net = build_model("mlp", d.input_shape, 2, depth=1, width=12)
    init = {k: v.clone() for k, v in net.state_dict().items()}
    train(net, d.x_train, d.y_train, TrainOptions(lr=0.2, batch_size=32, target_loss=0.1 if noise == 0 else 0.4,
                                                  max_epochs=150), seed=seed)
    return net, init, d


def _bound(net, init, d, seed):
    res = measure_full(net, (d.x_train, d.y_train), init=init, names=["pacbayes_optimized_bound"], seed=seed,
                       knobs=CHEAP, held_out=(d.x_test, d.y_test))
    assert not res.reasons, res.reasons
    return res.values["pacbayes_optimized_bound"], dict(zip(PARTS, res.artifacts["pacbayes_optimized_parts"]))


def test_the_bound_bounds_the_stochastic_networks_held_out_error_on_ten_networks():
    """On 10 small MLPs trained here (XOR in 2 or 6 dimensions, 400 examples), the bound is
    at least the posterior's mean error on 40,000 held-out points, and its parts are the ones
    it was computed from."""
    for seed in range(10):
        net, init, d = _trained(0.0, seed, 2 if seed % 2 else 6, boolean=False)
        bound, parts = _bound(net, init, d, seed)
        assert bound >= parts["test_error"], (seed, bound, parts)
        assert parts["e_m"] <= parts["e_plus"] <= bound <= 1
        assert parts["slack"] == pytest.approx(parts["e_plus"] - parts["e_m"])
        assert parts["n"] == 400 and parts["m"] == CHEAP["pacbayes_optimized_draws"]
        assert parts["lambda"] == pytest.approx(0.1 * math.exp(-parts["j"] / 100))
        c = (parts["kl"] + math.log(math.pi ** 2 * 400 / (6 * 0.025)) + 2 * math.log(parts["j"])) / 399
        assert bound == pytest.approx(R.kl_inv_grid(parts["e_plus"], c), abs=1.01e-6)


def test_the_bound_is_above_one_half_on_random_labels():
    for seed in range(2):
        net, init, d = _trained(1.0, seed, 2, boolean=False)
        bound, parts = _bound(net, init, d, seed)
        assert bound > 0.5, (seed, bound, parts)


def test_the_draws_and_the_kl_recomputed_by_hand():
    """ê_m is the mean error of the m draws w_Q + √s·z_k, z_k the k-th randn(P) of the measure's
    draw generator; KL is the sum of the coordinates' KLs at λ of the rounded grid index."""
    net, init, d = _trained(0.0, 0, 2, boolean=False)
    knobs = {**CHEAP, "pacbayes_optimized_draws": 30}
    ctx = MeasureContext(net, d.x_train, d.y_train, init_state=init, seed=3, knobs=knobs)
    q = po.optimise(ctx)
    g = R.generator(3, "pacbayes_optimized_bound.draws")
    sd = q.var.sqrt()
    errs = [R.module_err(net, q.mean + sd * torch.randn(q.mean.numel(), generator=g), d.x_train, d.y_train)
            for _ in range(30)]
    w0 = torch.cat([init[n].reshape(-1) for n, _ in net.named_parameters()])
    res = measure_full(net, (d.x_train, d.y_train), init=init, names=["pacbayes_optimized_bound"], seed=3,
                       knobs=knobs)
    parts = dict(zip(PARTS, res.artifacts["pacbayes_optimized_parts"]))
    assert parts["e_m"] == pytest.approx(float(np.mean(errs)), abs=1e-12)
    assert parts["kl"] == pytest.approx(R.kl_gauss_np(q.mean, q.var, w0, po.lambda_of(q.j)), rel=1e-9)
    assert math.isnan(parts["test_error"])   # no held-out set given
