"""Learning-rate schedules: the rates against their formulas, the rates training uses and
sums, and the run ids they leave alone."""

from __future__ import annotations

import math

import pytest
import torch

from study.data import load_dataset
from study.models import build_model
from study.spec import parse_study
from study.train import TrainOptions, learning_rate, train

ETA = 0.2


def direct(kind: str, t: float, period: float, decay: float, low: float) -> float:
    """The schedules written out once more, by cases, as the papers give them."""
    if kind == "constant":
        return ETA
    if kind == "step":
        return ETA * decay ** (t // period)
    eta_min = low * ETA
    if kind == "cosine_restarts":  # SGDR: T_cur epochs since the last restart, T_i = period
        t_cur = t - period * math.floor(t / period)
        return eta_min + 0.5 * (ETA - eta_min) * (1 + math.cos(math.pi * t_cur / period))
    # Smith 2017: cycle = floor(1 + t/(2s)), x = |t/s - 2 cycle + 1|, lr = lo + (hi - lo) max(0, 1 - x)
    cycle = math.floor(1 + t / (2 * period))
    x = abs(t / period - 2 * cycle + 1)
    return eta_min + (ETA - eta_min) * max(0.0, 1 - x)


@pytest.mark.parametrize("kind, t, want", [
    ("constant", 7.3, ETA),
    ("step", 0.0, ETA), ("step", 3.99, ETA), ("step", 4.0, ETA * 0.5), ("step", 9.5, ETA * 0.25),
    ("cosine_restarts", 0.0, ETA), ("cosine_restarts", 2.0, 0.1 * ETA + 0.45 * ETA),
    ("cosine_restarts", 4.0, ETA), ("cosine_restarts", 5.0, None),
    ("triangular", 0.0, 0.1 * ETA), ("triangular", 2.0, 0.55 * ETA), ("triangular", 4.0, ETA),
    ("triangular", 6.0, 0.55 * ETA), ("triangular", 8.0, 0.1 * ETA), ("triangular", 13.0, None),
])
def test_schedule_rates_match_the_formulas(kind, t, want):
    o = TrainOptions(lr=ETA, lr_schedule=kind, lr_period=4, lr_decay=0.5, lr_min=0.1)
    got = learning_rate(o, t)
    assert got == pytest.approx(direct(kind, t, 4.0, 0.5, 0.1), rel=1e-12, abs=1e-15)
    if want is not None:  # the values worked out by hand
        assert got == pytest.approx(want, rel=1e-12)
    assert 0 < got <= ETA


@pytest.mark.parametrize("kind", ["constant", "step", "cosine_restarts", "triangular"])
def test_training_uses_and_sums_the_scheduled_rates(kind, monkeypatch):
    d = load_dataset("digits", train_size=100)
    torch.manual_seed(0)
    model = build_model("mlp", d.input_shape, d.num_classes, width=8)
    used: list[float] = []
    step = torch.optim.SGD.step

    def spy(self, *a, **k):  # the rate the optimiser really steps with
        used.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    # 100 examples, batch 32: 4 steps an epoch, so the rates move within the epoch
    o = TrainOptions(lr=ETA, batch_size=32, target_loss=1e-4, max_epochs=5, lr_schedule=kind,
                     lr_period=1.5, lr_decay=0.5, lr_min=0.1)
    res = train(model, d.x_train, d.y_train, o, seed=0)
    assert res.log.steps == 20 and not res.converged
    want = [direct(kind, k / 4, 1.5, 0.5, 0.1) for k in range(20)]
    assert used == pytest.approx(want, rel=1e-12)
    assert res.log.step_size_sum == pytest.approx(math.fsum(want), rel=1e-12)
    assert res.log.lr == ETA  # lr_over_batch reads the base rate
    if kind != "constant":
        assert len(set(used)) > 1


def base(**train):
    return {"study": {"name": "s", "dataset": "digits", "model": "mlp", "seeds": [0, 1]},
            "train": {"target_loss": 0.05, **train},
            "grid": {"lr": [0.1, 0.01], "depth": [1, 2], "width": [8]}}


def ids(doc) -> list[str]:
    return [r.run_id for r in parse_study(doc).runs()]


def test_a_constant_schedule_keeps_the_run_ids():
    plain = ids(base())
    assert ids(base(lr_schedule="constant")) == plain
    # options of a schedule not in use change no network, so no id
    assert ids(base(lr_schedule="constant", lr_decay=0.1, lr_period=3, lr_min=0.2)) == plain
    stepped = ids(base(lr_schedule="step"))
    assert not set(stepped) & set(plain)
    assert ids(base(lr_schedule="step", lr_min=0.3)) == stepped      # lr_min: not step's option
    assert not set(ids(base(lr_schedule="step", lr_decay=0.1))) & set(stepped)
    # as a grid axis: the constant points are the networks of the plain study
    doc = base()
    doc["grid"] = {**doc["grid"], "lr_schedule": ["constant", "cosine_restarts", "triangular"]}
    runs = parse_study(doc).runs()
    assert [r.run_id for r in runs if r.hp["lr_schedule"] == "constant"] == plain
    assert len({r.run_id for r in runs}) == len(runs)
