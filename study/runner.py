"""One network's work: data → model → training → measures → one row (a dict in the row
schema); and a stored network rebuilt from its checkpoint and measured again.

`execute` never raises for a failure of the run itself (only `WriteError`, for a
checkpoint the output refused): a failed run gives
a row with ``status = "failed"`` and the error text; a diverged one,
``status = "diverged"``. Both are stored so that a rerun is a choice.

`measure_network` is the one way a trained network is measured: by `execute`
right after training, and later from a checkpoint (`load_network`) without
training.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import platform
import socket
import sys
import time
from dataclasses import asdict, replace

import torch

from . import SCHEMA_VERSION, __version__
from .data import Dataset, load_dataset
from .errors import error_text
from .measures import MeasureContext, measure_set, select, stable_seed
from .measures.compute import compute_repeated
from .measures.registry import settings_hash
from .models import family
from .schema import OUTCOMES, REPEATS, artifact_col, cfg_col, hp_col, measure_col, now, sd_col, seconds_col
from .spec import RunSpec
from .storage import CheckpointError, Store, WriteError
from .train import WEIGHT_LIMIT, TrainLog, evaluate, largest_weight, train
from .version import git_commit

log = logging.getLogger("study.runner")


def pick_device(num_gpus: float = 0) -> torch.device:
    """CUDA when this process was given a GPU and one is visible, else CPU."""
    if num_gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


LIBRARIES = ("torch", "numpy", "torchvision", "ray", "polars", "pyarrow", "numba")


@functools.lru_cache(maxsize=1)
def _library_versions() -> tuple[tuple[str, str], ...]:
    from importlib import metadata
    out = []
    for name in LIBRARIES:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:  # an optional one (numba): absent
            continue
    return tuple(out)


def versions() -> dict:
    """Versions of the code and libraries that made a row: the package, its git commit, the
    run-id schema, Python and `LIBRARIES` (those installed; numba is optional)."""
    return {"study": __version__, "git": git_commit(), "schema": SCHEMA_VERSION,
            "python": sys.version.split()[0], **dict(_library_versions())}


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo, else `platform`), with the logical core count."""
    name = ""
    try:
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    return f"{name} × {os.cpu_count() or 1} cores"


def device_name(device: torch.device) -> str:
    """What ran a row: ``cpu (<model> × N cores)``, or ``cuda (<GPU name> × count)``."""
    if device.type == "cuda" and torch.cuda.is_available():
        n = torch.cuda.device_count()
        return f"{device} ({torch.cuda.get_device_name(device)} × {n})"
    if device.type == "cpu":
        return f"cpu ({cpu_model()})"
    return str(device)


def base_row(spec: RunSpec) -> dict:
    """The identity columns and grid point of a run, the ``hp.*`` columns in the order of their
    names (the analysis names axes and conditioning sets in column order)."""
    row = {"run_id": spec.run_id, "study": spec.study, "dataset": spec.dataset,
           "model": spec.model, "seed": spec.seed}
    for axis, value in sorted(spec.hp.items()):
        row[hp_col(axis)] = value
    return row


def failed_row(spec: RunSpec, error: str) -> dict:
    """The row of a run that failed before it could say so itself (its task lost beyond Ray's
    retries): identity, grid point, ``failed`` and the error text."""
    return {**base_row(spec), "status": "failed", "error": error, "config": spec.to_json()}


def execute(spec: RunSpec, device: torch.device | None = None, progress=None,
            store: Store | None = None) -> dict:
    """Train and measure one network; the row always comes back. ``store``: write the run's
    checkpoint there (an ok run only, before the caller writes the row)."""
    device = device or torch.device("cpu")
    row = base_row(spec)
    row.update({"status": "ok", "error": "", "config": spec.to_json(),
                "versions": json.dumps(versions()), "device": device_name(device),
                "host": socket.gethostname(), "started_at": now()})
    try:
        _train_and_measure(spec, device, row, progress, store)
    except WriteError:  # the output failing is no failure of the run: the driver stops
        raise
    except Exception as e:  # the row records the failure; nothing is lost
        log.exception("run %s failed", spec.run_id)
        row["status"] = "failed"
        row["error"] = error_text(e)
    row["finished_at"] = now()
    return row


def build_network(spec: RunSpec, data: Dataset, device: torch.device) -> torch.nn.Module:
    """The run's network at its seeded initialisation, on ``device``."""
    torch.manual_seed(stable_seed(spec.seed, "init"))
    return family(spec.model).build(data.input_shape, data.num_classes, spec.model_options).to(device)


def load_data(spec: RunSpec, device: torch.device) -> Dataset:
    """The run's dataset with its tensors on ``device``."""
    data = load_dataset(spec.dataset, spec.data, root=spec.data_source.root, download=spec.data_source.download)
    return replace(data, x_train=data.x_train.to(device), y_train=data.y_train.to(device),
                   x_test=data.x_test.to(device), y_test=data.y_test.to(device))


def _train_and_measure(spec: RunSpec, device: torch.device, row: dict, progress,
                       store: Store | None) -> None:
    data = load_data(spec, device)
    xtr, ytr = data.x_train, data.y_train
    row.update(n_train=len(xtr), n_test=len(data.x_test))
    model = build_network(spec, data, device)
    res = train(model, xtr, ytr, spec.train, seed=stable_seed(spec.seed, "order"))
    row.update(converged=res.converged, diverged=res.diverged, steps=res.log.steps,
               epochs=res.log.epochs, train_seconds=res.seconds,
               final_lr=math.nan if res.log.final_lr is None else float(res.log.final_lr))
    row[artifact_col("train_loss_curve")] = [float(v) for v in res.log.epoch_losses]
    if res.diverged:
        row["status"] = "diverged"
        row["error"] = (f"{res.reason or 'training diverged'} after {res.log.steps} steps; "
                        "a smaller lr may train")
        for k in OUTCOMES:
            row[k] = math.nan
        for m in select(spec.measures.include, spec.measures.exclude):
            row[measure_col(m.name)] = math.nan
        return
    final_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    train_loss, train_acc = evaluate(model, xtr, ytr)
    test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
    row.update(train_acc=train_acc, test_acc=test_acc, train_loss=train_loss,
               test_loss=test_loss, gap=train_acc - test_acc, loss_gap=test_loss - train_loss)
    row.update(measure_network(spec, model, res.init_state, res.log, data, device, progress=progress))
    if store is not None:  # before the row: a stored row implies its checkpoint
        try:
            store.write_net(spec.run_id, res.init_state, final_state,
                            {"config": spec.to_json(), "train_log": json.dumps(asdict(res.log))})
        except Exception as e:
            raise WriteError(f"cannot write the checkpoint {store.uri(store.net_path(spec.run_id))}: "
                             f"{type(e).__name__}: {e}") from e


def measure_network(spec: RunSpec, model: torch.nn.Module, init_state: dict, train_log: TrainLog,
                    data: Dataset, device: torch.device, names=None, progress=None,
                    hashes: dict[str, str] | None = None) -> dict:
    """The measure columns of the row of a trained network: ``measure.*``, ``measure_cfg.*``,
    ``seconds.*``, ``artifact.*``, ``measure_seconds``, ``nan_reasons``, ``measure_methods``,
    ``measure_repeats``, and with ``[measures] repeats`` = R > 1 ``measure_sd.*`` (each
    stochastic measure the mean of R independent draws, `measures.compute.compute_repeated`).
    ``names``: the measures (names or families) to compute; None: the spec's selection. The
    measure set is the training set, or its seeded ``subset``, as in the run itself, the same
    for every repeat. ``hashes``: the measures' settings hashes when the caller has them
    (`registry.expected_settings`), else computed."""
    m = spec.measures
    measures = select(names) if names is not None else select(m.include, m.exclude)
    mx, my = measure_set(data.x_train, data.y_train, m.subset, spec.seed)

    def make_ctx(seed: int) -> MeasureContext:
        return MeasureContext(model, mx, my, init_state=init_state, train_log=train_log, seed=seed,
                              knobs=m.knobs, n_train=len(data.x_train), device=device,
                              held_out=(data.x_test, data.y_test))

    t0 = time.perf_counter()
    result = compute_repeated(make_ctx, measures, spec.seed, m.repeats, progress=progress)
    cols = {"measure_seconds": time.perf_counter() - t0}
    for name, v in result.values.items():
        cols[measure_col(name)] = v
        cols[cfg_col(name)] = ((hashes or {}).get(name)
                               or settings_hash(name, m.knobs, m.subset, m.repeats))
    for name, sd in result.sds.items():
        cols[sd_col(name)] = sd
    for name, s in result.seconds.items():
        cols[seconds_col(name)] = s
    for name, arr in result.artifacts.items():
        cols[artifact_col(name)] = [float(a) for a in arr]
    cols["nan_reasons"] = json.dumps(result.reasons, sort_keys=True)
    cols["measure_methods"] = json.dumps(result.methods, sort_keys=True)
    cols[REPEATS] = json.dumps(result.repeats, sort_keys=True)
    return cols


UNVERIFIED = ("written before checkpoints carried their run id and digest: its identity was "
              "checked by its config only")


def stored_network(store: Store, spec: RunSpec, num_gpus: float = 0, notes: list[str] | None = None):
    """The stored network of ``spec`` on the device its task was given (`pick_device`), with
    its data: (model, initial state dict, training log, data, device); ``notes`` as in
    `load_network`."""
    device = pick_device(num_gpus)
    data = load_data(spec, device)
    model, init, log = load_network(store, spec, device, data, notes)
    return model, init, log, data, device


def load_network(store: Store, spec: RunSpec, device: torch.device, data: Dataset | None = None,
                 notes: list[str] | None = None) -> tuple[torch.nn.Module, dict, TrainLog]:
    """The trained network of a stored run rebuilt from its checkpoint and ``spec``, in eval
    mode on ``device``, with its initial state dict and training log: the arguments
    `measure_network` takes. ``data`` (for the input shape and classes): loaded if None.

    The checkpoint must be this run's network: its run id and digest (`Store.read_net`), its
    config's run id, and training's divergence check (every final weight finite and within
    `train.WEIGHT_LIMIT`); else `CheckpointError`. A checkpoint without run id and digest
    (written before they were stored) loads with `UNVERIFIED` appended to ``notes``."""
    init_state, final_state, meta = store.read_net(spec.run_id)
    where = store.uri(store.net_path(spec.run_id))
    try:
        held = RunSpec.from_json(meta["config"]).run_id
    except Exception:  # noqa: BLE001 - a config this code cannot read names no other run
        held = spec.run_id
    if held != spec.run_id:
        raise CheckpointError(f"{where} is not the checkpoint of run {spec.run_id}: its config is run "
                              f"{held}'s (files renamed or copied?); put each network back under its "
                              "own run id, or delete the file and rerun that network")
    if "digest" not in meta and notes is not None:
        notes.append(UNVERIFIED)
    if data is None:
        data = load_data(spec, device)
    model = build_network(spec, data, device)
    model.load_state_dict(final_state)
    model.eval()
    big = largest_weight(model)
    if not big <= WEIGHT_LIMIT:  # NaN too: training would have called these weights diverged
        raise CheckpointError(f"{where}: the weights blew up (largest |w| = {big:.3g}, above "
                              f"{WEIGHT_LIMIT:g}); training stores no such network: delete the file "
                              "and rerun that network")
    return model, {k: v.to(device) for k, v in init_state.items()}, TrainLog(**json.loads(meta["train_log"]))
