"""Checkpoints: each ok run stores its initial and final weights beside its row, and the
network rebuilt from them measures exactly as in the run itself."""

from __future__ import annotations

import json
import math

import polars as pl
import torch

from study.executor import Executor
from study.jobs.run import run_study
from study.runner import load_data, load_network, measure_network
from study.spec import RunSpec, load_study
from study.storage import Store, tensor_digest
from tests.studyfiles import write_study

ONE = "width = [16]\nlr = [0.1]\nbatch_size = [64]"


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def test_a_checkpoint_round_trips_to_identical_measures(tmp_path):
    # BatchNorm (buffers in the state dict), every family, a measure subset: the whole path
    p = write_study(tmp_path, grid=ONE, include='["all"]', extra="""
        exclude = ["keskar_sharpness_5e-4", "adaptive_sharpness_l2", "local_entropy"]
        subset = 150

        [measures.knobs]
        keskar_maxiter = 3
        flat_depth = 8
        slq_steps = 16
        adaptive_steps = 5
        fisher_examples = 64

        [model]
        batchnorm = true
        """)
    study = load_study(p)
    assert run_study(study, Executor(serial=True, progress=False)).ok == 1
    store = Store(study.out, study.name)
    row = pl.read_parquet(store.run_path(study.runs()[0].run_id)).to_dicts()[0]
    spec = RunSpec.from_json(row["config"])

    init, final, meta = store.read_net(spec.run_id)
    assert meta["config"] == row["config"]
    assert any(k.endswith("running_mean") for k in final) and any(k.endswith("num_batches_tracked") for k in final)
    assert set(init) == set(final) and any(not torch.equal(init[k], final[k]) for k in init)
    assert json.loads(meta["train_log"])["steps"] == row["steps"]

    device = torch.device("cpu")
    data = load_data(spec, device)
    model, init_state, train_log = load_network(store, spec, device, data)
    cols = measure_network(spec, model, init_state, train_log, data, device)
    measured = [k for k in cols if k.startswith(("measure.", "measure_cfg.", "artifact."))]
    assert len([k for k in measured if k.startswith("measure.")]) > 20
    bad = {k: (cols[k], row[k]) for k in measured
           if not (all(map(_same, cols[k], row[k])) if isinstance(cols[k], list) else _same(cols[k], row[k]))}
    assert not bad
    assert json.loads(cols["nan_reasons"]) == json.loads(row["nan_reasons"])
    assert json.loads(cols["measure_methods"]) == json.loads(row["measure_methods"])
    if "measure.hessian_trace" in row:   # a BN-MLP: linear in each single parameter, BackPACK
        assert json.loads(row["measure_methods"])["hessian_trace"] == "exact_ggn_backpack"
    # the rebuilt network is the trained one: same outcomes
    from study.train import evaluate
    assert evaluate(model, data.x_train, data.y_train) == (row["train_loss"], row["train_acc"])


def test_store_write_net_read_net(tmp_path):
    store = Store(str(tmp_path / "out"), "s")
    a = {"w": torch.randn(3, 4), "bn.num_batches_tracked": torch.tensor(7)}
    b = {"w": torch.randn(3, 4)[:, :2].t(), "bn.num_batches_tracked": torch.tensor(9)}  # not contiguous
    path = store.write_net("abc", a, b, {"config": "{}", "train_log": "[]"})
    assert path.endswith("/s/nets/abc.safetensors") and store.has_net("abc")
    init, final, meta = store.read_net("abc")
    assert all(torch.equal(init[k], a[k]) for k in a) and all(torch.equal(final[k], b[k]) for k in b)
    assert meta == {"config": "{}", "train_log": "[]", "run_id": "abc", "digest": tensor_digest(
        {**{f"init/{k}": v for k, v in a.items()}, **{f"final/{k}": v for k, v in b.items()}})}
    assert not [f for f in (tmp_path / "out" / "s" / "nets").iterdir() if f.name != "abc.safetensors"]


def test_keep_networks_false_and_diverged_runs_store_no_checkpoint(tmp_path):
    p = write_study(tmp_path, name="off", grid=ONE, include='["size"]')
    p.write_text(p.read_text().replace("[study]\n", "[study]\nkeep_networks = false\n", 1))
    off = load_study(p)
    assert run_study(off, Executor(serial=True, progress=False)).ok == 1
    assert not (tmp_path / "out" / "off" / "nets").exists()
    on = load_study(write_study(tmp_path, name="on", grid=ONE, include='["size"]'))
    assert off.runs()[0].run_id == on.runs()[0].run_id  # keep_networks is in no run id
    diverged = load_study(write_study(tmp_path, name="div", include='["size"]',
                                      grid="width = [16]\nlr = [10000.0]\nbatch_size = [64]"))
    assert run_study(diverged, Executor(serial=True, progress=False)).diverged == 1
    assert not list((tmp_path / "out" / "div").glob("nets/*"))

