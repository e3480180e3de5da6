"""Study files: parsing, grid expansion, run identity, and every class of bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from study.spec import StudyError, load_study, parse_study
from tests.studyfiles import write_study

REPO = Path(__file__).resolve().parent.parent


def base(**over):
    doc = {"study": {"name": "s", "dataset": "digits", "model": "mlp", "seeds": [0, 1]},
           "train": {"target_loss": 0.05},
           "grid": {"lr": [0.1, 0.01], "depth": [1, 2], "width": [8]}}
    for k, v in over.items():
        doc[k] = v
    return doc


def test_grid_is_the_cartesian_product_times_seeds():
    runs = parse_study(base()).runs()
    assert len(runs) == 2 * 2 * 1 * 2
    assert len({r.run_id for r in runs}) == len(runs)
    points = {(r.hp["lr"], r.hp["depth"], r.hp["width"], r.seed) for r in runs}
    assert points == {(lr, d, 8, s) for lr in (0.1, 0.01) for d in (1, 2) for s in (0, 1)}
    r = runs[0]
    assert r.train.lr == r.hp["lr"] and r.model_options.depth == r.hp["depth"]


def test_run_id_names_the_network_only():
    a = parse_study(base()).runs()
    # output location, checkpoints kept or not and resources do not change the network: same ids
    b = parse_study({**base(), "study": {**base()["study"], "out": "elsewhere", "keep_networks": False},
                     "resources": {"num_cpus": 2}}).runs()
    assert [r.run_id for r in a] == [r.run_id for r in b]
    # ints and floats written either way give the same id; a real change gives another
    c = parse_study(base(grid={"lr": [0.1, 0.01], "depth": [1, 2], "width": [8]},
                         train={"target_loss": 0.05})).runs()
    assert [r.run_id for r in a] == [r.run_id for r in c]
    d = parse_study(base(train={"target_loss": 0.06})).runs()
    assert not {r.run_id for r in a} & {r.run_id for r in d}
    # the measures are computed on the network, not part of it: same ids, recorded in the config
    e = parse_study(base(measures={"include": ["size"], "knobs": {"eval_batch": 64}})).runs()
    assert [r.run_id for r in a] == [r.run_id for r in e]
    assert '"eval_batch": 64' in e[0].to_json() and "eval_batch" not in a[0].to_json()


def test_run_id_is_stable_across_processes():
    code = ("from study.spec import parse_study; import json,sys;"
            "print(parse_study(json.loads(sys.argv[1])).runs()[3].run_id)")
    import json
    out = {subprocess.run([sys.executable, "-c", code, json.dumps(base())], capture_output=True,
                          text=True, env={"PYTHONHASHSEED": str(h), "PATH": ""}, check=True).stdout
           for h in (1, 2)}
    assert out == {parse_study(base()).runs()[3].run_id + "\n"}


def test_spec_roundtrips_through_json():
    from study.spec import RunSpec
    r = parse_study(base()).runs()[5]
    assert RunSpec.from_json(r.to_json()) == r and RunSpec.from_json(r.to_json()).run_id == r.run_id


@pytest.mark.parametrize("doc, message", [
    (base(extra={"x": 1}), "unknown key(s) extra"),
    (base(train={"target_loss": 0.05, "epochs": 3}), "[train]: unknown key(s) epochs"),
    (base(grid={"lr": [0.1], "colour": [1]}), "[grid]: unknown key(s) colour"),
    (base(grid={}), "the grid is empty"),
    (base(grid={"lr": []}), "axis lr = [] must be a non-empty list"),
    (base(grid={"lr": [0.1, 0.1]}), "axis lr repeats a value"),
    (base(grid={"lr": [-1.0]}), "lr = -1.0 must be a number > 0"),
    (base(grid={"depth": [1.5]}), "depth = 1.5 must be an integer in [1, 1000]"),
    (base(grid={"optimizer": ["rmsprop"]}), "must be one of sgd, momentum, adam"),
    (base(train={"target_loss": 0}), "target_loss = 0 must be a number > 0"),
    (base(train={"max_epochs": 0}), "max_epochs = 0 must be an integer ≥ 1"),
    (base(study={"name": "s", "dataset": "imagenet", "model": "mlp"}), "unknown dataset 'imagenet'; datasets: digits"),
    (base(study={"name": "s", "dataset": "digits", "model": "resnet"}), "unknown model 'resnet'; models: nin, mlp"),
    (base(study={"name": "s", "dataset": "digits"}), "missing required key 'model'"),
    (base(study={"name": "a b", "dataset": "digits", "model": "mlp"}), "name = 'a b' must be"),
    *[(base(study={"name": name, "dataset": "digits", "model": "mlp"}), f"name = {name!r} must be a plain name")
      for name in ("..", ".", ".hidden", "a/b", "../x", "/abs", "a\\b", "", "a\nb", "a\x00", "x" * 101)],
    (base(study={"name": "s", "dataset": "digits", "model": "mlp", "seeds": []}), "seeds = [] must be a non-empty list"),
    (base(study={"name": "s", "dataset": "digits", "model": "nin"}, grid={"bias": [True, False]}), "model 'nin' has no option 'bias'"),
    (base(model={"depth": 2}), "depth is both fixed here and an axis of [grid]"),
    (base(measures={"include": ["sharpness_of_vibes"]}), "unknown measure or family 'sharpness_of_vibes'"),
    (base(measures={"include": []}), "include is empty"),
    (base(measures={"include": ["size"], "exclude": ["size"]}), "the selection is empty"),
    (base(measures={"knobs": {"no_such_knob": 1}}), "unknown measure knob(s) no_such_knob"),
    (base(data={"label_noise": 2.0}), "label_noise = 2.0 must be a number in [0, 1]"),
    (base(data={"train_size": 10**7}), "train_size"),
    (base(resources={"num_gpus": -1}), "num_gpus = -1 must be a number ≥ 0"),
    (base(train={"lr_schedule": "cyclic"}),
     "lr_schedule = 'cyclic' must be one of constant, step, cosine_restarts, triangular"),
    (base(grid={"lr": [0.1], "lr_schedule": ["step", "onecycle"]}), "must be one of constant, step"),
    (base(train={"lr_schedule": "step", "lr_period": 0}), "lr_period = 0 must be a number > 0"),
    (base(grid={"lr": [0.1], "lr_period": [5, -1.0]}), "lr_period = -1.0 must be a number > 0"),
    (base(train={"lr_schedule": "step", "lr_decay": 1.5}), "lr_decay = 1.5 must be a number in (0, 1)"),
    (base(train={"lr_min": 1.0}), "lr_min = 1.0 must be a number in [0, 1)"),
    # a target at or above chance's loss is met untrained: no study, and inf by any network
    (base(train={"target_loss": float("inf")}), "[train]: target_loss = inf must be below ln(10) = 2.303"),
    (base(train={"target_loss": float("nan")}), "target_loss = nan must be a number > 0"),
    (base(train={}, grid={"lr": [0.1], "target_loss": [0.01, 2.5]}), "[grid]: target_loss = 2.5 must be below"),
    (base(study={"name": "s", "dataset": "xor", "model": "mlp"}, train={"target_loss": 0.7}),
     "below ln(2) = 0.693, the loss of a uniform guess over the 2 classes of xor"),
])
def test_bad_input_names_the_problem(doc, message):
    with pytest.raises(StudyError) as e:
        parse_study(doc, "x.toml")
    assert message in str(e.value)
    assert str(e.value).startswith("x.toml")


def test_bad_toml_and_missing_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[study\nname=")
    with pytest.raises(StudyError, match="not valid TOML"):
        load_study(p)
    with pytest.raises(StudyError, match="no such study file"):
        load_study(tmp_path / "absent.toml")


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('model = "mlp"', 'model = "transformer"'), "unknown model 'transformer'"),
    (lambda t: t.replace("[grid]", "[grid]\nnonsense = [1]"), "unknown key(s) nonsense"),
    (lambda t: t.replace('include = ["size", "norm", "optimisation"]', 'include = ["nope"]'), "unknown measure or family 'nope'"),
])
def test_cli_rejects_bad_study_before_any_work(tmp_path, edit, message):
    p = write_study(tmp_path)
    p.write_text(edit(p.read_text()))
    r = subprocess.run([sys.executable, "-m", "study", "run", str(p)], capture_output=True, text=True)
    assert r.returncode == 2
    said = r.stderr.splitlines()  # the progress line said before the study file is read, then the error
    assert said[0].endswith("reading the study file …") and said[1].startswith("error: ") and message in said[1]
    assert len(said) == 2
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_cli_rejects_a_name_that_leaves_out(tmp_path):
    """A study named ".." would write its rows beside --out, not under it."""
    out = tmp_path / "a" / "out"
    p = write_study(tmp_path, out=out)
    p.write_text(p.read_text().replace('name = "tiny"', 'name = ".."'))
    r = subprocess.run([sys.executable, "-m", "study", "run", str(p), "--serial"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "name = '..' must be a plain name" in r.stderr
    assert not (tmp_path / "a").exists()


def test_cli_rejects_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    p = write_study(tmp_path, out=blocker / "sub")
    r = subprocess.run([sys.executable, "-m", "study", "run", str(p), "--serial"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "is not writable" in r.stderr and "--out" in r.stderr


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path):
    study = load_study(path)
    runs = study.runs()
    assert runs and len({r.run_id for r in runs}) == len(runs)
    if path.name == "mini.toml":  # the default must vary ≥ 4 axes and give ≥ 24 networks
        assert sum(len(v) > 1 for v in study.grid.values()) >= 4 and len(runs) >= 24


def _xor(data: dict, **train) -> dict:
    return {"study": {"name": "x", "dataset": "xor", "model": "mlp"}, "data": data,
            "train": {"target_loss": 0.1, **train}, "grid": {"width": [4, 8]}}


def test_new_data_options_keep_the_ids_at_their_defaults():
    plain = [r.run_id for r in parse_study(_xor({})).runs()]
    assert [r.run_id for r in parse_study(_xor({"dim": 2, "boolean": False})).runs()] == plain
    high = [r.run_id for r in parse_study(_xor({"dim": 20, "boolean": True, "test_size": 5000})).runs()]
    assert not set(high) & set(plain) and len(set(high)) == 2
    digits = {"study": {"name": "d", "dataset": "digits", "model": "mlp"}, "grid": {"width": [4]}}
    ids = [r.run_id for r in parse_study(digits).runs()]
    assert [r.run_id for r in parse_study({**digits, "data": {"binary": False}}).runs()] == ids
    assert [r.run_id for r in parse_study({**digits, "data": {"binary": True}}).runs()] != ids


def test_binary_data_bounds_the_target_by_ln_2_and_the_model_sees_two_classes():
    doc = {"study": {"name": "b", "dataset": "digits", "model": "mlp"}, "data": {"binary": True},
           "train": {"target_loss": 0.8}, "grid": {"width": [4]}}
    with pytest.raises(StudyError, match=r"target_loss = 0.8 must be below ln\(2\) = 0.693"):
        parse_study(doc)
    with pytest.raises(StudyError, match=r"\[data\]: dim is an option of xor, not of digits"):
        parse_study({**doc, "data": {"dim": 3}, "train": {}})
    spec = parse_study({**doc, "train": {"target_loss": 0.1}}).runs()[0]
    assert spec.identity()["data"] == {"label_noise": 0.0, "data_seed": 0, "binary": True}
