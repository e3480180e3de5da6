"""Size and optimisation measures against closed forms recomputed by hand."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from study.measures import TrainLog, measure_full
from study.models import mlp, nin

SIZE = ["params", "vc_wl_log_w", "vc_wu"]
OPT = ["steps_to_loss_0.1", "steps_loss_0.1_to_target", "sum_train_loss", "lr_over_batch",
       "step_size_sum"]


def data(shape, n=4):
    return torch.randn(n, *shape), torch.zeros(n, dtype=torch.long)


@pytest.mark.parametrize("depth,width,bias,batchnorm", [(2, 6, True, False), (3, 4, False, False),
                                                         (1, 5, True, True)])
def test_size_of_mlp(depth, width, bias, batchnorm):
    n_in, k = 7, 3
    model = mlp((n_in,), k, depth=depth, width=width, bias=bias, batchnorm=batchnorm)
    w = n_in * width + (depth - 1) * width * width + width * k   # biases and BN excluded
    d = depth + 1
    u = depth * width
    res = measure_full(model, data((n_in,)), names=SIZE)
    assert not res.reasons
    assert res.values["params"] == w
    assert res.values["vc_wl_log_w"] == pytest.approx(w * d * np.log(w), rel=1e-12)
    assert res.values["vc_wu"] == w * u


@pytest.mark.parametrize("batchnorm", [False, True])
def test_size_of_nin(batchnorm):
    c, h, k, wd, depth = 3, 8, 4, 5, 2
    model = nin((c, h, h), k, depth=depth, width=wd, batchnorm=batchnorm)
    # per block: a 3×3 conv, two 1×1 convs; then the 1×1 classifier conv
    w = (wd * c * 9 + 2 * wd * wd) + (wd * wd * 9 + 2 * wd * wd) + k * wd
    d = 3 * depth + 1
    u = 3 * wd * (h // 2) ** 2 + 3 * wd * (h // 4) ** 2   # stride-2 convs halve the side
    res = measure_full(model, data((c, h, h)), names=SIZE)
    assert res.values["params"] == w
    assert res.values["vc_wl_log_w"] == pytest.approx(w * d * np.log(w), rel=1e-12)
    assert res.values["vc_wu"] == w * u


def test_vc_wu_without_relu_modules_is_undefined():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    res = measure_full(Functional(), data((3,)), names=["vc_wu", "params"])
    assert math.isnan(res.values["vc_wu"]) and "nn.ReLU" in res.reasons["vc_wu"]
    assert res.values["params"] == 3 * 4 + 4 * 2


def run_opt(log: TrainLog):
    return measure_full(mlp((3,), 2, depth=1, width=2), data((3,)), names=OPT, train_log=log)


def test_optimisation_measures_closed_forms():
    losses = [2.1, 0.7, 0.09, 0.02]
    log = TrainLog(optimizer="momentum", lr=0.05, batch_size=32, momentum=0.9, steps=400,
                   epochs=4, steps_to_loss_01=230, steps_to_target=390, epoch_losses=losses,
                   step_size_sum=17.5)
    res = run_opt(log)
    assert not res.reasons
    assert res.values["steps_to_loss_0.1"] == 230
    assert res.values["steps_loss_0.1_to_target"] == 390 - 230
    assert res.values["sum_train_loss"] == pytest.approx(np.sum(losses), rel=1e-12)
    assert res.values["lr_over_batch"] == pytest.approx(0.05 / (32 * 0.1), rel=1e-12)
    assert res.values["step_size_sum"] == 17.5


@pytest.mark.parametrize("optimizer,momentum", [("sgd", 0.0), ("adam", 0.9)])
def test_lr_over_batch_without_momentum_scaling(optimizer, momentum):
    log = TrainLog(optimizer=optimizer, lr=0.01, batch_size=64, momentum=momentum)
    assert run_opt(log).values["lr_over_batch"] == pytest.approx(0.01 / 64, rel=1e-12)


def test_loss_never_reached_0_1_or_target():
    log = TrainLog(optimizer="sgd", lr=0.1, batch_size=8, steps=50, epochs=2,
                   epoch_losses=[1.0, 0.5], step_size_sum=5.0)
    res = run_opt(log)
    for k in ["steps_to_loss_0.1", "steps_loss_0.1_to_target"]:
        assert math.isnan(res.values[k]) and "never reached 0.1" in res.reasons[k]
    log.steps_to_loss_01 = 40
    res = run_opt(log)
    assert res.values["steps_to_loss_0.1"] == 40
    assert math.isnan(res.values["steps_loss_0.1_to_target"])
    assert "target was not reached" in res.reasons["steps_loss_0.1_to_target"]


def test_empty_log_parts_are_undefined():
    log = TrainLog(optimizer="sgd", lr=0.1, batch_size=8, steps=10)
    res = run_opt(log)
    assert math.isnan(res.values["sum_train_loss"]) and "epoch losses" in res.reasons["sum_train_loss"]
    assert math.isnan(res.values["step_size_sum"]) and "step sizes" in res.reasons["step_size_sum"]


def test_missing_train_log_gives_nan_with_reason():
    res = measure_full(mlp((3,), 2, depth=1, width=2), data((3,)), names=OPT)
    for k in OPT:
        assert math.isnan(res.values[k]) and "training log" in res.reasons[k], k
