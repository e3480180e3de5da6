"""A new dataset and a new model family, added the documented way (one class; one builder
and its options type), run through a study file end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import Field
from torch import nn

from study import data, models
from study.options import Options
from study.runner import execute
from study.spec import StudyError, parse_study


@pytest.fixture
def toys():
    @data.register
    class Blobs(data.DatasetKind):
        """Three Gaussian blobs in the plane, generated at any training size."""
        name = "blobs"
        num_classes = 3

        def raw(self, train_size: int | None, data_seed: int):
            rng = np.random.default_rng(data_seed)

            def points(n):
                y = rng.integers(0, 3, n)
                x = rng.normal(size=(n, 2)) * 0.3 + np.eye(3, 2)[y] * 2
                return torch.tensor(x, dtype=torch.float32), torch.from_numpy(y)

            return *points(train_size or 120), *points(60)

    class TwoLayerOptions(Options):
        hidden: int = Field(8, ge=1)
        scale: float = Field(1.0, gt=0)

    @models.register("two_layer", TwoLayerOptions)
    def two_layer(input_shape, num_classes, o: TwoLayerOptions) -> nn.Sequential:
        net = nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], o.hidden), nn.ReLU(),
                            nn.Linear(o.hidden, num_classes))
        with torch.no_grad():
            net[1].weight.mul_(o.scale)
        return net

    yield two_layer
    del data.DATASETS["blobs"], models.MODELS["two_layer"]


def doc(**grid):
    return {"study": {"name": "toy", "dataset": "blobs", "model": "two_layer"},
            "train": {"target_loss": 0.3, "max_epochs": 50},
            "grid": grid, "measures": {"include": ["size"]}}


def test_a_toy_dataset_and_model_family_run_one_study_point(toys):
    assert toys((2,), 3, hidden=5)[1].out_features == 5  # the builder also takes keywords
    study = parse_study(doc(hidden=[16], scale=[0.5], train_size=[90], lr=[0.2]), "toy.toml")
    (spec,) = study.runs()
    assert spec.identity()["model_options"] == {"hidden": 16, "scale": 0.5} and spec.data.train_size == 90
    row = execute(spec)
    assert row["status"] == "ok", row["error"]
    assert row["n_train"] == 90 and row["n_test"] == 60 and row["converged"]
    assert row["train_acc"] > 0.8 and np.isfinite(row["measure.params"])


def test_the_new_options_are_checked_like_the_built_in_ones(toys):
    with pytest.raises(StudyError, match=r"toy.toml \[grid\]: hidden = 0 must be an integer ≥ 1"):
        parse_study(doc(hidden=[0]), "toy.toml")
    with pytest.raises(StudyError, match="model 'two_layer' has no option 'width'; options: hidden, scale"):
        parse_study({**doc(lr=[0.1]), "model": {"width": 3}}, "toy.toml")


def test_a_new_training_option_keeps_the_stored_run_ids():
    from study.spec import RunSpec
    from study.train import TrainOptions

    class WithClip(TrainOptions):  # TrainOptions with one option added
        grad_clip: float = Field(0.0, ge=0)

    old = TrainOptions().id_part()   # what today's run ids hash
    assert set(old) == set(TrainOptions.ID_ALWAYS)            # later options at their defaults: out
    assert WithClip().id_part() == old
    assert WithClip(grad_clip=1.0).id_part() == {**old, "grad_clip": 1.0}
    spec = parse_study({**doc(lr=[0.1]), "study": {"name": "t", "dataset": "digits", "model": "mlp"},
                        "data": {"train_size": 100}}, "t.toml").runs()[0]
    back = RunSpec.from_json(spec.to_json())
    assert back == spec and back.run_id == spec.run_id
