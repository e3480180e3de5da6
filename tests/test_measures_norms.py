"""Norm and margin measures against numpy, brute force and dense convolution matrices."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from study.measures import REGISTRY, MeasureContext, core, measure_full, norms
from study.models import mlp, nin
from tests.references import (
    brute_force_path_norm,
    dense,
    fitted_labels,
    norm_reference,
    np_fold,
    np_fold_affine,
    np_gamma,
    randomise_bn,
)

MARGIN = ["inverse_margin", "log_prod_spec_over_margin", "log_sum_spec_over_margin",
          "log_spec_init_main", "log_spec_orig_main", "log_prod_fro_over_margin",
          "log_sum_fro_over_margin", "path_norm_over_margin"]
INIT = ["log_spec_init_main", "dist_spec_init", "fro_dist"]


@pytest.mark.parametrize("build,shape", [
    (lambda: nin((3, 8, 8), 5, depth=2, width=6, batchnorm=True), (3, 8, 8)),
    (lambda: nin((2, 6, 6), 3, depth=1, width=4), (2, 6, 6)),
    (lambda: mlp((5,), 3, depth=2, width=6, batchnorm=True), (5,)),
    (lambda: mlp((5,), 3, depth=3, width=4), (5,)),
])
def test_norm_measures_match_numpy(build, shape):
    torch.manual_seed(0)
    init = randomise_bn(build(), 1)
    model = randomise_bn(build(), 2)   # independent weights and BN statistics
    x = torch.randn(40, *shape)
    y = fitted_labels(model, x)
    ref = norm_reference(model, init.state_dict(), x, y)
    res = measure_full(model, (x, y), init=init, names=list(ref))
    assert not res.reasons, res.reasons
    for k, v in ref.items():
        assert res.values[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k


@pytest.mark.parametrize("batchnorm", [False, True])
def test_path_norm_is_the_sum_over_all_paths(batchnorm):
    torch.manual_seed(0)
    model = randomise_bn(mlp((3,), 2, depth=2, width=4, batchnorm=batchnorm), 5)
    if batchnorm:
        assert model[1].bias is None   # BN gives the hidden layers their only bias
    folded = np_fold_affine(model, model.state_dict())   # fold in numpy
    Ws, bs = [w for _, w, _ in folded], [b for _, _, b in folded]
    assert len(Ws) == 3
    x = torch.randn(30, 3)
    y = fitted_labels(model, x)
    ref = brute_force_path_norm(Ws, bs)
    res = measure_full(model, (x, y), names=["path_norm", "path_norm_over_margin"])
    assert res.values["path_norm"] == pytest.approx(ref, rel=1e-9)
    assert res.values["path_norm_over_margin"] == pytest.approx(
        ref / np_gamma(model, x, y) ** 2, rel=1e-6)


def test_path_norm_of_a_network_with_other_parametrised_modules_is_undefined():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(6, 3)
    res = measure_full(model, (x, fitted_labels(model, x)), names=["path_norm"])
    assert math.isnan(res.values["path_norm"]) and "LayerNorm" in res.reasons["path_norm"]


CONVS = [  # (module, input shape)
    (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 8, 8)),
    (lambda: nn.Conv2d(2, 3, 4, stride=2, padding=0), (2, 7, 7)),   # needs output_padding
    (lambda: nn.Conv2d(2, 4, 3, padding="same", dilation=2), (2, 6, 5)),
    (lambda: nn.Conv2d(4, 4, 3, padding=1, groups=2, padding_mode="circular"), (4, 5, 5)),
    (lambda: nn.Conv1d(2, 3, 5, stride=3, padding=2), (2, 11)),
    (lambda: nn.Conv3d(1, 2, 3, stride=2, padding=1), (1, 4, 4, 3)),
]


@pytest.mark.parametrize("build,in_shape", CONVS)
def test_conv_operator_norm_matches_dense_matrix(build, in_shape):
    torch.manual_seed(0)
    conv = build().double()
    ctx = MeasureContext(nn.Sequential(conv), torch.randn(2, *in_shape, dtype=torch.float64),
                         torch.zeros(2, dtype=torch.long))

    zero = torch.zeros(1, *in_shape, dtype=torch.float64)
    M = dense(lambda v: conv(v) - conv(zero), in_shape)   # the linear part of the layer
    # the adjoint used by the power iteration is the transpose of the dense matrix
    op = core.probe(ctx).conv_ops["0"]
    fwd, adj = norms.conv_maps(conv.weight.detach(), op)
    yv = torch.randn(1, *fwd(torch.zeros(1, *in_shape, dtype=torch.float64)).shape[1:],
                     dtype=torch.float64)
    np.testing.assert_allclose(adj(yv).reshape(-1).detach().numpy(),
                               M.T @ yv.reshape(-1).numpy(), rtol=1e-10, atol=1e-12)
    (spec2,) = norms.operator_spec2(ctx)
    assert spec2 == pytest.approx(np.linalg.norm(M, 2) ** 2, rel=1e-4)


def test_log_prod_spec_op_on_nin_with_batchnorm():
    torch.manual_seed(0)
    model = randomise_bn(nin((3, 8, 8), 4, depth=2, width=5, batchnorm=True), 6)
    x = torch.randn(10, 3, 8, 8)
    Ws = np_fold(model, model.state_dict())
    total, h, li = 0.0, x[:1].double(), 0
    for m in copy.deepcopy(model).double():
        if isinstance(m, nn.Conv2d):
            k = torch.from_numpy(Ws[li].reshape(m.weight.shape))
            M = dense(lambda v: F.conv2d(v, k, None, m.stride, m.padding), tuple(h.shape[1:]))
            total += math.log(np.linalg.norm(M, 2) ** 2)
            li += 1
        with torch.no_grad():
            h = m(h)
    res = measure_full(model, (x, fitted_labels(model, x)), names=["log_prod_spec_op"])
    assert res.values["log_prod_spec_op"] == pytest.approx(total, rel=1e-4)


def test_log_prod_spec_op_on_mlp_is_log_prod_spec():
    torch.manual_seed(0)
    model = mlp((4,), 3, depth=2, width=5)
    x = torch.randn(8, 4)
    res = measure_full(model, (x, fitted_labels(model, x)),
                       names=["log_prod_spec_op", "log_prod_spec"])
    ref = sum(math.log(np.linalg.norm(m.weight.detach().double().numpy(), 2) ** 2)
              for m in model if isinstance(m, nn.Linear))
    assert res.values["log_prod_spec_op"] == pytest.approx(ref, rel=1e-9)
    assert res.values["log_prod_spec"] == pytest.approx(ref, rel=1e-9)


def test_negative_margin_gives_nan_with_reason():
    torch.manual_seed(0)
    model, init = mlp((4,), 3, depth=1, width=5), mlp((4,), 3, depth=1, width=5)
    x = torch.randn(20, 4)
    with torch.no_grad():
        y = model(x).argmin(1)   # every margin < 0
    assert np_gamma(model, x, y) < 0
    res = measure_full(model, (x, y), init=init, names=MARGIN + ["param_norm"])
    for k in MARGIN:
        assert math.isnan(res.values[k]) and "γ" in res.reasons[k], k
    assert math.isfinite(res.values["param_norm"])


def test_missing_init_gives_nan_with_reason():
    torch.manual_seed(0)
    model = mlp((4,), 3, depth=1, width=5)
    x = torch.randn(10, 4)
    res = measure_full(model, (x, fitted_labels(model, x)), names=INIT + ["log_spec_orig_main"])
    for k in INIT:
        assert math.isnan(res.values[k]) and "initial weights" in res.reasons[k], k
    assert math.isfinite(res.values["log_spec_orig_main"])


def test_untrained_network_has_zero_distance_and_undefined_init_main():
    torch.manual_seed(0)
    model = mlp((4,), 3, depth=1, width=5)
    x = torch.randn(10, 4)
    res = measure_full(model, (x, fitted_labels(model, x)), init=model, names=INIT)
    assert res.values["fro_dist"] == 0.0 and res.values["dist_spec_init"] == 0.0
    assert math.isnan(res.values["log_spec_init_main"])
    assert "undefined" in res.reasons["log_spec_init_main"]


OVER_MARGIN = sorted(n for n in REGISTRY if n.endswith("_over_margin"))


def _rescaled(model: nn.Sequential, factors: list[float]) -> nn.Sequential:
    """A copy of the ReLU chain with linear layer l's weight times factors[l] and its bias
    times the product of factors[0..l]: the same function up to the factor Π factors on
    the logits (positive homogeneity of ReLU)."""
    out = copy.deepcopy(model)
    linears = [m for m in out if isinstance(m, nn.Linear)]
    assert len(linears) == len(factors)
    running = 1.0
    with torch.no_grad():
        for m, c in zip(linears, factors):
            running *= c
            m.weight.mul_(c)
            if m.bias is not None:
                m.bias.mul_(running)
    return out


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("factors", [[3.0, 3.0, 3.0], [0.5, 0.5, 0.5], [4.0, 0.25, 1.0], [1.0, 2.0, 0.5]])
def test_over_margin_measures_are_invariant_to_rescaling_the_layers(bias, factors):
    """Every *_over_margin measure (and the d·(Π ‖W_l‖²/γ²)^{1/d} it is the log of) is the
    same after scaling every layer by c, or layer l by c and layer l+1 by 1/c: Jiang et al.'s
    forms put γ² inside the 1/d power (version 1 of the log_sum_* ones did not)."""
    assert OVER_MARGIN == ["log_prod_fro_over_margin", "log_prod_spec_over_margin", "log_sum_fro_over_margin",
                           "log_sum_spec_over_margin", "path_norm_over_margin"]
    torch.manual_seed(0)
    model = mlp((5,), 4, depth=2, width=7, bias=bias).double()   # float64: only rounding at 1e-12
    x = torch.randn(60, 5, dtype=torch.float64)
    y = fitted_labels(model, x)
    scaled = _rescaled(model, factors)
    with torch.no_grad():
        assert torch.allclose(scaled(x), model(x) * math.prod(factors), rtol=1e-12, atol=1e-12)
    a = measure_full(model, (x, y), names=OVER_MARGIN)
    b = measure_full(scaled, (x, y), names=OVER_MARGIN)
    assert not a.reasons and not b.reasons
    for name in OVER_MARGIN:
        assert b.values[name] == pytest.approx(a.values[name], rel=1e-9, abs=1e-12), name
    d = 3  # the product form behind each log_sum_*: log d + (1/d)·log_prod_*
    for kind in ("spec", "fro"):
        for res in (a, b):
            assert res.values[f"log_sum_{kind}_over_margin"] == pytest.approx(
                math.log(d) + res.values[f"log_prod_{kind}_over_margin"] / d, rel=1e-9)
