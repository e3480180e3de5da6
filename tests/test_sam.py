"""SAM (Foret et al. 2021): one step of `train.sam_step` and of `train` against the step
written by hand on flat parameters; the option enters a run id only when SAM is used; the
learning rate of the last step is recorded."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

import study.train as training
from study.spec import parse_study


def tiny(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).double()


def hand_sam_step(model: nn.Module, x, y, lr: float, rho: float, wd: float) -> dict[str, torch.Tensor]:
    """w − lr·(∇L(w + ρ g/‖g‖) + wd·w), g = ∇L(w), L the mean cross-entropy on (x, y)."""
    names = [n for n, _ in model.named_parameters()]
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    shapes = [p.shape for p in model.parameters()]

    def loss(v):
        parts, i = {}, 0
        for n, s in zip(names, shapes):
            k = math.prod(s)
            parts[n] = v[i:i + k].reshape(s)
            i += k
        return nn.functional.cross_entropy(functional_call(model, parts, (x,)), y)

    g = torch.func.grad(loss)(w)
    g2 = torch.func.grad(loss)(w + rho * g / g.norm())
    new = w - lr * (g2 + wd * w)
    out, i = {}, 0
    for n, s in zip(names, shapes):
        k = math.prod(s)
        out[n] = new[i:i + k].reshape(s)
        i += k
    return out


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_sam_step_is_the_hand_written_step(wd):
    model = tiny()
    x = torch.randn(16, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (16,))
    want = hand_sam_step(model, x, y, lr=0.3, rho=0.2, wd=wd)
    opt = training.make_optimizer("sam", model.parameters(), 0.3, wd)
    loss = training.sam_step(model, opt, x, y, rho=0.2)
    assert loss.item() == pytest.approx(nn.functional.cross_entropy(tiny()(x), y).item(), rel=1e-12)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), want[n], rtol=1e-12, atol=1e-12)
    # not plain SGD: the ascent moved the gradient
    sgd = tiny()
    o = torch.optim.SGD(sgd.parameters(), lr=0.3, weight_decay=wd)
    nn.functional.cross_entropy(sgd(x), y).backward()
    o.step()
    assert any((p - q).abs().max() > 1e-6 for p, q in zip(model.parameters(), sgd.parameters()))


def test_training_with_sam_takes_the_hand_written_steps_and_records_the_last_rate():
    x = torch.randn(12, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (12,))
    model, ref = tiny(), tiny()
    opts = training.TrainOptions(optimizer="sam", lr=0.5, batch_size=12, sam_rho=0.1, target_loss=1e-6,
                                 max_epochs=3)
    res = training.train(model, x, y, opts, seed=0)   # one full batch per epoch: 3 SAM steps
    assert res.log.steps == 3 and res.log.final_lr == 0.5 and res.log.optimizer == "sam"
    for _ in range(3):
        state = hand_sam_step(ref, x, y, lr=0.5, rho=0.1, wd=0.0)
        with torch.no_grad():
            for n, p in ref.named_parameters():
                p.copy_(state[n])
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-10, atol=1e-10)


def test_final_lr_is_the_scheduled_rate_of_the_last_step():
    torch.manual_seed(0)
    x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    opts = training.TrainOptions(lr=0.2, batch_size=10, lr_schedule="triangular", lr_period=1.0,
                                 target_loss=1e-6, max_epochs=3)
    res = training.train(model, x, y, opts, seed=0)
    last = res.log.steps - 1
    assert res.log.final_lr == pytest.approx(training.learning_rate(opts, last / 4))


def _ids(**train) -> list[str]:
    doc = {"study": {"name": "s", "dataset": "digits", "model": "mlp"},
           "train": {"target_loss": 0.05, **train}, "grid": {"lr": [0.1, 0.01], "width": [8]}}
    return [r.run_id for r in parse_study(doc).runs()]


def test_sam_rho_enters_the_run_id_only_with_sam():
    plain = _ids()
    assert _ids(sam_rho=0.3) == plain                  # SGD with sam_rho: the same networks
    sam = _ids(optimizer="sam")
    assert not set(sam) & set(plain)
    assert _ids(optimizer="sam", sam_rho=0.05) == sam  # the default, written out
    assert not set(_ids(optimizer="sam", sam_rho=0.2)) & set(sam)
