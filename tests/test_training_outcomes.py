"""What a run's row says when training cannot give a network trained to the target: a
target met untrained fails the run, weights that blow up while the loss stays finite mark it
diverged, and runs that stop at max_epochs are reported as not converged, not as done."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

import study.train as training
from study.cli import main as study_main
from study.data import load_dataset
from study.models import build_model
from study.runner import execute, failed_row
from study.spec import load_study, parse_study
from study.storage import Store
from tests.studyfiles import write_study


def spec_of(**train):
    doc = {"study": {"name": "s", "dataset": "digits", "model": "mlp"}, "data": {"train_size": 300},
           "model": {"depth": 3}, "train": {"target_loss": 0.05, "max_epochs": 15},
           "grid": {"width": [64]}, "measures": {"include": ["params"]}}
    spec = parse_study(doc).runs()[0]
    return replace(spec, train=spec.train.model_copy(update=train))


def test_a_target_met_at_initialisation_fails_the_run():
    # a study file cannot ask for it (tests/test_spec.py); a spec or a caller of train can
    row = execute(spec_of(target_loss=math.inf))
    assert row["status"] == "failed" and row.get("converged") is not True
    assert "TargetMetAtInit: the training loss at initialisation" in row["error"]
    assert "give a smaller target_loss" in row["error"]
    d = load_dataset("digits", train_size=100)
    torch.manual_seed(0)
    model = build_model("mlp", d.input_shape, d.num_classes, width=8)
    with pytest.raises(training.TargetMetAtInit, match=r"already at or below target_loss = 2\.9"):
        training.train(model, d.x_train, d.y_train, training.TrainOptions(target_loss=2.9), seed=0)


# heavy-ball SGD at lr 10: the ReLUs die, the loss stays finite (~7), the weights reach ~2e9
BLOWS_UP = {"optimizer": "momentum", "lr": 10.0}


def test_weights_that_blow_up_with_a_finite_loss_mark_the_run_diverged(monkeypatch):
    spec = spec_of(**BLOWS_UP)
    row = execute(spec)
    assert row["status"] == "diverged" and row["diverged"] and not row["converged"]
    assert "the weights blew up (largest |w| = " in row["error"] and "above 1e+08" in row["error"]
    assert math.isnan(row["train_loss"])
    # the case itself: without the weight check the loss is finite all along
    monkeypatch.setattr(training, "WEIGHT_LIMIT", math.inf)
    from study.measures import stable_seed
    from study.runner import build_network, load_data
    data = load_data(spec, torch.device("cpu"))
    model = build_network(spec, data, torch.device("cpu"))
    res = training.train(model, data.x_train, data.y_train, spec.train,
                         seed=stable_seed(spec.seed, "order"))
    assert not res.diverged and math.isfinite(res.final_train_loss)
    assert all(math.isfinite(v) for v in res.log.epoch_losses)
    assert 1e8 < training.largest_weight(model) < math.inf


def test_unconverged_runs_are_reported_as_not_converged(tmp_path, capsys):
    # max_epochs = 1 stops short of the target; 300 reaches it; lr 1e4 diverges
    p = write_study(tmp_path, grid="width = [16]\nlr = [0.2, 10000.0]\nmax_epochs = [1, 300]",
                    include='["params"]')
    p.write_text(p.read_text().replace("max_epochs = 300\n", ""))  # an axis here
    assert study_main(["run", str(p), "--serial", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ran 4 (1 ok, 1 not converged, 0 failed, 2 diverged)" in out
    assert "1 not converged: max_epochs ran out before target_loss" in out
    assert study_main(["status", str(p)]) == 0
    out = capsys.readouterr().out
    assert "4 runs: 1 done, 1 not converged, 0 failed, 2 diverged, 0 left" in out
    lines = {line.split("  ")[1].strip(): line.split()[-5:] for line in out.splitlines()
             if line.startswith("  max_epochs = ")}
    assert lines == {"max_epochs = 1": ["0", "1", "0", "1", "0"],
                     "max_epochs = 300": ["1", "0", "0", "1", "0"]}
    # outcomes reads rows of other columns too: a failed row has no `converged`
    store = Store(str(tmp_path / "out"), "tiny")
    other = load_study(write_study(tmp_path, name="other", grid="width = [8]\nlr = [0.3]"))
    store.write_row(failed_row(other.runs()[0], "lost"))
    got = store.outcomes()
    assert sorted(got.values()) == ["diverged", "diverged", "failed", "ok", "unconverged"]
    assert got[other.runs()[0].run_id] == "failed"
