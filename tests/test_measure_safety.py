"""Inputs and networks the measures cannot be trusted on (issue 12): non-finite inputs,
labels out of range and non-finite parameters are refused or NaN before any measure runs;
a measure that assumes ReLU activations or a chain of layers is NaN, with the assumption
named, on a network that breaks it, and the other measures still run."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from study.measures import REGISTRY, MeasureContext, measure_full, select

D, H, K, N = 5, 8, 3, 40

# The measures that assume a chain of layers with ReLU activations (positive homogeneity:
# per-layer norms multiply to a bound on the network, the path norm is a squared network).
RELU_CHAIN = ("log_prod_spec", "log_prod_spec_over_margin", "log_sum_spec",
              "log_sum_spec_over_margin", "log_spec_init_main", "log_spec_orig_main",
              "log_prod_fro", "log_prod_fro_over_margin", "log_sum_fro",
              "log_sum_fro_over_margin", "path_norm", "path_norm_over_margin",
              "log_prod_spec_op")
# The VC bounds count ReLU units / hold for piecewise-linear networks of any graph.
RELU_ONLY = ("vc_wl_log_w", "vc_wu")
# Cheap measures that assume neither, to show they still run.
FREE = ("params", "fro_over_spec", "param_norm", "fro_dist", "dist_spec_init",
        "inverse_margin", "fisher_trace")


def data(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g, dtype=torch.float64), torch.arange(n) % K


def relu_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, H), nn.ReLU(),
                         nn.Linear(H, K)).double()


def gelu_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, H), nn.GELU(), nn.Linear(H, H), nn.GELU(),
                         nn.Linear(H, K)).double()


class ResidualMLP(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp, self.hid, self.out = nn.Linear(D, H), nn.Linear(H, H), nn.Linear(H, K)
        self.act = nn.ReLU()

    def forward(self, x):
        h = self.act(self.inp(x))
        return self.out(h + self.act(self.hid(h)))


class FunctionalGELU(nn.Module):
    """A chain in its modules, but a functional activation between them."""
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(D, H), nn.Linear(H, K)

    def forward(self, x):
        return self.b(torch.nn.functional.gelu(self.a(x)))


class Tied(nn.Module):
    """One hidden layer applied twice: the per-layer norms miss one of its factors."""
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.h, self.b = nn.Linear(D, H), nn.Linear(H, H), nn.Linear(H, K)
        self.r1, self.r2, self.r3 = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x):
        return self.b(self.r3(self.h(self.r2(self.h(self.r1(self.a(x)))))))


def run(model, names, **kw):
    model = model.double().eval()
    x, _ = data()
    with torch.no_grad():  # labels the network predicts: margins > 0, so γ is defined
        y = model(x).argmax(1) if all(p.isfinite().all() for p in model.parameters()) else _
    torch.manual_seed(1)
    init = {k: v + 0.1 * torch.randn_like(v) if v.is_floating_point() else v
            for k, v in model.state_dict().items()}
    return measure_full(model, (x, y), init=init, names=list(names), **kw)


# -- item 2: inputs, labels and parameters --------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_inputs_are_an_error_before_any_measure(bad, monkeypatch):
    x, y = data()
    x[3, 1] = bad
    x[7, 0] = bad
    called = []
    monkeypatch.setitem(REGISTRY, "params", dataclasses.replace(
        REGISTRY["params"], fn=lambda ctx: called.append(1) or 1.0))
    with pytest.raises(ValueError, match=r"2 non-finite entries"):
        measure_full(relu_mlp(), (x, y), names=["params", "log_prod_spec"])
    with pytest.raises(ValueError, match=r"2 non-finite entries"):
        MeasureContext(relu_mlp(), x, y)
    assert not called


def test_labels_out_of_range_are_an_error_naming_them_and_the_classes():
    x, y = data()
    y[2], y[5], y[9] = K, -1, K + 4
    with pytest.raises(ValueError, match=r"3 labels.*\[-1, 3, 7\].*3 classes"):
        measure_full(relu_mlp(), (x, y), names=["params"])
    with pytest.raises(ValueError, match=r"3 classes"):
        MeasureContext(relu_mlp(), x, y)


def test_labels_must_match_the_inputs():
    x, y = data()
    with pytest.raises(ValueError, match=r"40 inputs but 39 labels"):
        MeasureContext(relu_mlp(), x, y[:-1])


def test_non_finite_parameters_make_every_measure_nan_with_the_reason():
    model = relu_mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = math.nan
        model[4].bias[1] = math.inf
    res = run(model, ["params", "param_norm", "path_norm", "hessian_trace", "fisher_trace"])
    assert all(math.isnan(v) for v in res.values.values()), res.values
    for name, why in res.reasons.items():
        assert "2 non-finite parameter" in why and "2.weight" in why and "4.bias" in why, (name, why)


def test_a_relu_mlp_keeps_its_values_and_has_no_reasons():
    names = RELU_CHAIN + RELU_ONLY + FREE
    res = run(relu_mlp(), names)
    assert not res.reasons, res.reasons
    assert all(math.isfinite(v) for v in res.values.values())


# -- item 3: ReLU and chain assumptions ----------------------------------------------


def test_registry_declares_the_assumptions():
    needs = {m.name: set(m.requires) for m in select(["all"])}
    for name in RELU_CHAIN:
        assert needs[name] == {"relu", "chain"}, name
    for name in RELU_ONLY:
        assert needs[name] == {"relu"}, name
    for name in FREE:
        assert not needs[name], name


def test_gelu_mlp_assumption_measures_are_nan_naming_relu():
    res = run(gelu_mlp(), RELU_CHAIN + RELU_ONLY + FREE)
    for name in RELU_CHAIN + RELU_ONLY:
        assert math.isnan(res.values[name]), name
        assert "assumes ReLU" in res.reasons[name] and "GELU" in res.reasons[name], res.reasons[name]
    for name in FREE:
        assert math.isfinite(res.values[name]) and name not in res.reasons, (name, res.reasons)


@pytest.mark.parametrize("model", [ResidualMLP, FunctionalGELU, Tied])
def test_non_chain_assumption_measures_are_nan_naming_the_chain(model):
    res = run(model(), RELU_CHAIN + FREE)
    for name in RELU_CHAIN:
        assert math.isnan(res.values[name]), name
        assert "assumes a chain of layers" in res.reasons[name], res.reasons[name]
    for name in FREE:
        assert math.isfinite(res.values[name]) and name not in res.reasons, (name, res.reasons)


def test_residual_names_where_the_chain_breaks():
    res = run(ResidualMLP(), ["path_norm"])
    assert "'out'" in res.reasons["path_norm"], res.reasons


def test_batchnorm_is_folded_only_in_a_chain():
    class ResidualBN(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.a, self.bn, self.b = nn.Linear(D, H), nn.BatchNorm1d(H), nn.Linear(H, K)
            self.r = nn.ReLU()

        def forward(self, x):
            h = self.a(x)
            return self.b(self.r(self.bn(h)) + h)

    res = run(ResidualBN(), ["param_norm", "fro_dist", "params"])
    for name in ("param_norm", "fro_dist"):
        assert math.isnan(res.values[name]) and "BatchNorm" in res.reasons[name], res.reasons
    assert res.values["params"] == D * H + H * K


def test_chain_with_views_and_inplace_relu_is_a_chain():
    class Viewed(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.a, self.r, self.b = nn.Linear(D, H), nn.ReLU(inplace=True), nn.Linear(H, K)

        def forward(self, x):
            return self.b(self.r(self.a(x.view(len(x), -1))))

    res = run(Viewed(), RELU_CHAIN + RELU_ONLY)
    assert not res.reasons, res.reasons
