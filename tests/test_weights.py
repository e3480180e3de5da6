"""Weight extraction and BatchNorm folding (study.measures.weights), the one-example probe
(study.measures.core)."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from study.measures import MeasureContext, core, measure_full, weights
from study.models import mlp, nin
from tests.references import np_fold, randomise_bn


def ctx_for(model, x, init=None):
    y = torch.zeros(len(x), dtype=torch.long)
    return MeasureContext(model, x, y, init_state=None if init is None else init.state_dict())


@pytest.mark.parametrize("build,shape", [
    (lambda: nin((3, 8, 8), 5, depth=2, width=6, batchnorm=True), (3, 8, 8)),
    (lambda: mlp((2, 3, 2), 4, depth=2, width=7, batchnorm=True), (2, 3, 2)),
])
def test_folded_network_matches_original_in_eval_mode(build, shape):
    torch.manual_seed(0)
    model = randomise_bn(build(), 1)
    x = torch.randn(11, *shape)
    ctx = ctx_for(model, x)
    net = weights.folded_network(ctx)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-5)
    # the model itself is untouched
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in ctx.model.modules())


def test_layers_are_folded_matrices_in_forward_order():
    torch.manual_seed(0)
    model = randomise_bn(nin((3, 8, 8), 5, depth=2, width=6, batchnorm=True), 2)
    ctx = ctx_for(model, torch.randn(3, 3, 8, 8))
    ls = weights.layers(ctx)
    convs = [n for n, m in model.named_children() if isinstance(m, nn.Conv2d)]
    assert [l.name for l in ls] == convs
    assert [l.bn is not None for l in ls] == [True] * 6 + [False]
    ref = np_fold(model, model.state_dict())
    for l, r in zip(ls, ref, strict=True):
        assert tuple(l.matrix.shape) == r.shape
        np.testing.assert_allclose(l.matrix.double().numpy(), r, rtol=1e-5, atol=1e-7)
    assert core.omega(ctx) == sum(r.size for r in ref)


def test_init_is_folded_with_the_init_state_statistics():
    torch.manual_seed(0)
    init = randomise_bn(nin((3, 8, 8), 5, depth=1, width=4, batchnorm=True), 3)
    final = randomise_bn(copy.deepcopy(init), 4)   # same weights, other BN statistics
    with torch.no_grad():
        for p in final.parameters():
            p.add_(0.1)
    x = torch.randn(7, 3, 8, 8)
    ctx = ctx_for(final, x, init=init)
    for l, r in zip(weights.layers(ctx, "init"), np_fold(init, init.state_dict()), strict=True):
        np.testing.assert_allclose(l.matrix.double().numpy(), r, rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        np.testing.assert_allclose(weights.folded_network(ctx, "init")(x).numpy(),
                                   init(x).numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(weights.folded_network(ctx)(x).numpy(),
                                   final(x).numpy(), rtol=1e-4, atol=1e-5)


def test_init_without_bn_buffers_is_an_error():
    torch.manual_seed(0)
    model = nin((3, 8, 8), 5, depth=1, width=4, batchnorm=True)
    x, y = torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}  # no buffers
    res = measure_full(model, (x, y), init=init, names=["fro_dist"])
    assert np.isnan(res.values["fro_dist"]) and "running_mean" in res.reasons["fro_dist"]


def test_batchnorm_not_after_its_layer_gives_nan_with_reason():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.BatchNorm1d(3),
                          nn.Linear(3, 2)).eval()
    x, y = torch.randn(5, 4), torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError, match="does not directly follow"):
        weights.weight_modules(model)
    res = measure_full(model, (x, y), names=["param_norm"])
    assert np.isnan(res.values["param_norm"]) and "BatchNorm" in res.reasons["param_norm"]


def test_batchnorm_without_running_stats_is_an_error():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, track_running_stats=False))
    with pytest.raises(ValueError, match="running statistics"):
        weights.weight_modules(model)


def test_probe_records_conv_inputs_and_hidden_units():
    torch.manual_seed(0)
    w = 5
    model = nin((3, 8, 8), 4, depth=2, width=w, batchnorm=True)
    ctx = ctx_for(model, torch.randn(2, 3, 8, 8))
    pr = core.probe(ctx)
    # block 1: 3×3 stride-2 conv on 8×8, then 1×1 convs on 4×4; block 2 on 4×4, then 2×2
    expect = [(3, 8, 8), (w, 4, 4), (w, 4, 4), (w, 4, 4), (w, 2, 2), (w, 2, 2), (w, 2, 2)]
    names = [n for n, m in model.named_children() if isinstance(m, nn.Conv2d)]
    assert [pr.conv_ops[n].in_shape for n in names] == expect
    assert pr.conv_ops[names[0]].stride == (2, 2) and pr.conv_ops[names[0]].padding == (1, 1)
    assert pr.hidden_units == 3 * w * 16 + 3 * w * 4
    assert pr.activations == 6
