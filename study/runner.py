"""One run: data → model → training → measures → one row (a dict in the row schema).

`execute` never raises for a failure of the run itself: a failed run gives
a row with ``status = "failed"`` and the error text; a diverged one,
``status = "diverged"``. Both are stored so that a rerun is a choice.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import sys
import time
import traceback
from datetime import datetime, timezone

import torch

from . import SCHEMA_VERSION, __version__
from .data import load_dataset
from .measures import MeasureContext, compute, select, stable_seed
from .measures.registry import settings_hash
from .models import build_model
from .schema import OUTCOMES, artifact_col, cfg_col, hp_col, measure_col, seconds_col
from .spec import RunSpec
from .train import TrainOptions, evaluate, train

log = logging.getLogger("study.runner")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def pick_device(num_gpus: float = 0) -> torch.device:
    """CUDA when this process was given a GPU and one is visible, else CPU."""
    if num_gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def versions() -> dict:
    """Versions of the code and libraries that made a row."""
    import numpy
    return {"study": __version__, "schema": SCHEMA_VERSION, "python": sys.version.split()[0],
            "torch": torch.__version__, "numpy": numpy.__version__}


def base_row(spec: RunSpec) -> dict:
    """The identity columns and grid point of a run."""
    row = {"run_id": spec.run_id, "study": spec.study, "dataset": spec.dataset,
           "model": spec.model, "seed": spec.seed}
    for axis, value in spec.hp.items():
        row[hp_col(axis)] = value
    return row


def execute(spec: RunSpec, device: torch.device | None = None, progress=None) -> dict:
    """Train and measure one network; the row always comes back."""
    device = device or torch.device("cpu")
    row = base_row(spec)
    row.update({"status": "ok", "error": "", "config": spec.to_json(),
                "versions": json.dumps(versions()), "device": str(device),
                "host": socket.gethostname(), "started_at": _now()})
    try:
        _train_and_measure(spec, device, row, progress)
    except Exception as e:  # the row records the failure; nothing is lost
        log.exception("run %s failed", spec.run_id)
        row["status"] = "failed"
        row["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}"
    row["finished_at"] = _now()
    return row


def _train_and_measure(spec: RunSpec, device: torch.device, row: dict, progress) -> None:
    data = load_dataset(spec.dataset, **spec.data, **spec.data_source)
    xtr, ytr = data.x_train.to(device), data.y_train.to(device)
    xte, yte = data.x_test.to(device), data.y_test.to(device)
    row.update(n_train=len(xtr), n_test=len(xte))
    torch.manual_seed(stable_seed(spec.seed, "init"))
    model = build_model(spec.model, data.input_shape, data.num_classes, **spec.model_options).to(device)
    res = train(model, xtr, ytr, TrainOptions(**spec.train), seed=stable_seed(spec.seed, "order"))
    row.update(converged=res.converged, diverged=res.diverged, steps=res.log.steps,
               epochs=res.log.epochs, train_seconds=res.seconds)
    measures = select(spec.measures["include"], spec.measures["exclude"])
    if res.diverged:
        row["status"] = "diverged"
        row["error"] = f"training loss became NaN or infinite after {res.log.steps} steps"
        for k in OUTCOMES:
            row[k] = math.nan
        for m in measures:
            row[measure_col(m.name)] = math.nan
        return
    train_loss, train_acc = evaluate(model, xtr, ytr)
    test_loss, test_acc = evaluate(model, xte, yte)
    row.update(train_acc=train_acc, test_acc=test_acc, train_loss=train_loss,
               test_loss=test_loss, gap=train_acc - test_acc, loss_gap=test_loss - train_loss)
    mx, my = xtr, ytr
    subset = spec.measures["subset"]
    if subset and subset < len(xtr):
        g = torch.Generator().manual_seed(stable_seed(spec.seed, "measure_set"))
        idx = torch.randperm(len(xtr), generator=g)[:subset].to(device)
        mx, my = xtr[idx], ytr[idx]
    ctx = MeasureContext(model, mx, my, init_state=res.init_state, train_log=res.log,
                         seed=spec.seed, knobs=spec.measures["knobs"], n_train=len(xtr),
                         device=device)
    t0 = time.perf_counter()
    result = compute(ctx, measures, progress=progress)
    row["measure_seconds"] = time.perf_counter() - t0
    for name, v in result.values.items():
        row[measure_col(name)] = v
        row[cfg_col(name)] = settings_hash(name, spec.measures["knobs"], subset)
    for name, s in result.seconds.items():
        row[seconds_col(name)] = s
    for name, arr in result.artifacts.items():
        row[artifact_col(name)] = [float(a) for a in arr]
    row["nan_reasons"] = json.dumps(result.reasons, sort_keys=True)

