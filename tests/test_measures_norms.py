"""Norm and margin measures against numpy, brute force and dense convolution matrices."""

import copy
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from study.measures import MeasureContext, measure_full
from study.measures import core, norms
from study.models import mlp, nin

from tests.test_weights import np_fold, randomise_bn

MARGIN = ["inverse_margin", "log_prod_spec_over_margin", "log_sum_spec_over_margin",
          "log_spec_init_main", "log_spec_orig_main", "log_prod_fro_over_margin",
          "log_sum_fro_over_margin", "path_norm_over_margin"]
INIT = ["log_spec_init_main", "dist_spec_init", "fro_dist"]


def np_gamma(model, x, y) -> float:
    with torch.no_grad():
        z = model.eval()(x).double().numpy()
    y = y.numpy()
    true = z[np.arange(len(y)), y]
    z[np.arange(len(y)), y] = -np.inf
    return float(np.percentile(true - z.max(1), 10))


def fitted_labels(model, x):
    """Labels the network predicts: every margin ≥ 0, so γ > 0."""
    with torch.no_grad():
        return model.eval()(x).argmax(1)


def reference(model, init, x, y) -> dict[str, float]:
    """Every norm measure recomputed from its definition with numpy."""
    W = np_fold(model, model.state_dict())
    W0 = np_fold(init, init.state_dict())
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
        "log_sum_spec_over_margin": np.log(d) + np.mean(np.log(spec2 / g ** 2)),
        "log_spec_init_main": ls.sum() - 2 * np.log(g) + np.log(np.sum(dfro2 / spec2)),
        "log_spec_orig_main": ls.sum() - 2 * np.log(g) + np.log(np.sum(fro2 / spec2)),
        "fro_over_spec": np.sum(fro2 / spec2),
        "dist_spec_init": dspec2.sum(),
        "log_prod_fro": lf.sum(),
        "log_prod_fro_over_margin": lf.sum() - 2 * np.log(g),
        "log_sum_fro": np.log(d) + lf.mean(),
        "log_sum_fro_over_margin": np.log(d) + np.mean(np.log(fro2 / g ** 2)),
        "param_norm": fro2.sum(),
        "fro_dist": dfro2.sum(),
    }


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
    ref = reference(model, init, x, y)
    res = measure_full(model, (x, y), init=init, names=list(ref))
    assert not res.reasons, res.reasons
    for k, v in ref.items():
        assert res.values[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k


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


@pytest.mark.parametrize("batchnorm", [False, True])
def test_path_norm_is_the_sum_over_all_paths(batchnorm):
    torch.manual_seed(0)
    model = randomise_bn(mlp((3,), 2, depth=2, width=4, batchnorm=batchnorm), 5)
    if batchnorm:
        assert model[1].bias is None   # BN gives the hidden layers their only bias
    Ws, bs, mods = [], [], list(model)
    for i, m in enumerate(mods):   # fold in numpy
        if not isinstance(m, nn.Linear):
            continue
        w = m.weight.detach().double().numpy()
        b = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(w.shape[0])
        bn = mods[i + 1] if i + 1 < len(mods) else None
        if isinstance(bn, nn.BatchNorm1d):
            s = bn.weight.detach().double().numpy() / np.sqrt(
                bn.running_var.double().numpy() + bn.eps)
            w = w * s[:, None]
            b = s * (b - bn.running_mean.double().numpy()) + bn.bias.detach().double().numpy()
        Ws.append(w)
        bs.append(b)
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


def dense(fn, in_shape) -> np.ndarray:
    """The matrix of a linear map, column by column from the basis vectors."""
    n = math.prod(in_shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    with torch.no_grad():
        return fn(basis).reshape(n, -1).T.numpy()


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
