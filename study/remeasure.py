"""Measures computed on stored networks, never training: `study measure` and `analysis score`.

`study measure` plans, per stored ok row, which measures to compute (`wanted`): those named
(``--measures``), or the study file's selection; of them the stale ones (held under other
settings than the study file's: `registry.outdated`), the missing ones, or both; ``force``:
all of them. Each row with work becomes one task (`measure_one`, fanned out like `study run`
by `fanout.fan_out`) that rebuilds the network from its checkpoint (`runner.load_network`),
measures it with the study file's knobs and subset (`runner.measure_network`, the one way a
network is measured) and rewrites the row atomically, merged (`merge_measures`). A task
re-reads its row and plans again, so a rerun after Ctrl-C, SIGKILL or a lost worker computes
only what is still to do. A row without a checkpoint (``keep_networks = false``) is skipped.

`score_one` is the task of `analysis score`: a user's function ``(model, (x, y), init) ->
float`` on one stored network; the value comes back to the driver, and no row is written.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from .errors import error_line, error_text
from .fanout import fan_out, stopped_cleanly
from .lease import LEASE_TIMEOUT_S, Lease
from .measures.registry import expected_settings, outdated, select
from .schema import (
    REMEASURED,
    REPEATS,
    arrow_type,
    artifact_col,
    cfg_col,
    measure_col,
    now,
    sd_col,
    seconds_col,
    stored_settings,
)
from .spec import MeasureSettings, Resources, RunSpec, Study, StudyError
from .storage import StorageError, Store


@dataclass(frozen=True)
class Want:
    """What `study measure` computes: ``names`` (measures or families; None: the study file's
    selection), of them the ``stale`` and/or ``missing`` ones (neither: both), or all (``force``)."""

    names: tuple[str, ...] | None = None
    stale: bool = False
    missing: bool = False
    force: bool = False

    def expected(self, measures: MeasureSettings) -> dict[str, str]:
        """name → settings hash under the study file's ``[measures]`` of every candidate."""
        if self.names is None:
            chosen = select(measures.include, measures.exclude)
        else:
            try:
                chosen = select(self.names)
            except ValueError as e:
                raise StudyError(str(e).replace(" in measures.include", " in --measures")) from None
        return expected_settings(chosen, measures.knobs, measures.subset, measures.repeats)


def wanted(row: dict, want: Want, expected: dict[str, str]) -> list[str]:
    """The measures to compute on the network of ``row`` (in registry order)."""
    if want.force:
        return list(expected)
    stale, missing = outdated(stored_settings(row), expected)
    both = not (want.stale or want.missing)
    todo = set(stale if want.stale or both else ()) | set(missing if want.missing or both else ())
    return [n for n in expected if n in todo]


def merge_measures(table: pa.Table, cols: dict, names: list[str], now: str) -> pa.Table:
    """The one-row ``table`` with the columns of `runner.measure_network` for ``names`` merged in:
    their values, settings hashes, seconds, artifacts and ``measure_sd`` (NaN where they were
    computed without repeats now) replace the old ones, their NaN reasons, methods and repeat
    counts replace theirs (the others' stay), ``measure_seconds`` loses the recomputed measures' old
    seconds and gains this computation's, and ``remeasured_at`` is ``now``. Other columns keep
    their values and types."""
    old = table.to_pylist()[0]

    def per_measure(col: str) -> str:  # a JSON {measure: …} column: the recomputed entries replaced
        kept = {k: v for k, v in json.loads(old.get(col) or "{}").items() if k not in names}
        return json.dumps({**kept, **json.loads(cols[col])}, sort_keys=True)
    before = old.get("measure_seconds")
    before = 0.0 if before is None or math.isnan(before) else before
    spent = sum(old.get(seconds_col(n)) or 0.0 for n in names)
    new = {k: v for k, v in cols.items() if k != "measure_seconds"}
    for n in names:  # a measure that no longer writes an artifact: its own columns only
        new.setdefault(measure_col(n), math.nan)
        new.setdefault(cfg_col(n), None)
        if sd_col(n) in table.column_names:  # an sd of earlier draws would not be this value's
            new.setdefault(sd_col(n), math.nan)
    new["nan_reasons"], new["measure_methods"] = per_measure("nan_reasons"), per_measure("measure_methods")
    if REPEATS in cols:
        new[REPEATS] = per_measure(REPEATS)
    new["measure_seconds"] = max(before - spent, 0.0) + cols["measure_seconds"]
    new[REMEASURED] = now
    for k, v in new.items():
        if k in table.column_names:
            i = table.column_names.index(k)
            kind = table.schema.field(k).type
            table = table.set_column(i, k, pa.array([v], type=arrow_type(k, v) if pa.types.is_null(kind)
                                                    else kind))
        else:
            table = table.append_column(k, pa.array([v], type=arrow_type(k, v)))
    return table


def _network(store: Store, row: dict, measures: MeasureSettings, num_gpus: float):
    """(spec with the study file's ``measures``, model, init state, train log, data, device)."""
    from .runner import load_data, load_network, pick_device
    spec = replace(RunSpec.from_json(row["config"]), measures=measures)
    device = pick_device(num_gpus)
    data = load_data(spec, device)
    model, init, log = load_network(store, spec, device, data)
    return spec, model, init, log, data, device


def measure_one(run_id: str, out: str, study: str, measures: MeasureSettings, want: Want,
                expected: dict[str, str], num_gpus: float = 0) -> dict:
    """Compute what is still wanted of one stored network (``expected``: `Want.expected` of the
    study file's ``[measures]``) and rewrite its row merged; returns a small record
    (``computed``: how many measures; ``status`` ok / failed, ``error``; ``seconds``)."""
    from .runner import measure_network
    t0 = time.perf_counter()
    store = Store(out, study)
    try:
        table = pq.read_table(store.run_path(run_id), filesystem=store.fs)
        row = table.to_pylist()[0]
        names = wanted(row, want, expected)
        if not names:
            return {"run_id": run_id, "status": "ok", "computed": 0, "error": ""}
        spec, model, init, log, data, device = _network(store, row, measures, num_gpus)
        cols = measure_network(spec, model, init, log, data, device, names=names, hashes=expected)
        curve = artifact_col("train_loss_curve")  # not in rows written before the runner stored it
        if row.get(curve) is None and log is not None and log.epoch_losses:
            cols[curve] = [float(v) for v in log.epoch_losses]
        store.write_row_table(merge_measures(table, cols, names, now().isoformat()))
    except Exception as e:  # the row stays as it was; the summary names the failure
        return {"run_id": run_id, "status": "failed", "computed": 0,
                "error": error_line(e)}
    return {"run_id": run_id, "status": "ok", "computed": len(names), "error": "",
            "seconds": time.perf_counter() - t0}


@dataclass
class MeasureSummary:
    rows: int                  # stored ok rows
    todo: int                  # rows with something to compute and a checkpoint
    pairs: int                 # (row, measure) pairs planned
    up_to_date: int            # rows with nothing to compute
    no_checkpoint: list[str] = field(default_factory=list)  # rows with work but no checkpoint
    done: int = 0
    computed: int = 0
    task_seconds: float = 0.0  # summed over the tasks that computed: checkpoint, data and measures
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    signal: str = ""           # SIGINT or SIGTERM, when interrupted
    runs_dir: str = ""


def _ok_rows(store: Store, study_file: str) -> list[dict]:
    store.check_schema(study_file)
    if not store.run_files():
        raise StorageError(f"no stored runs in {store.uri(store.runs_dir)}: nothing to measure "
                           f"(train them first with `study run {study_file}`)")
    return [r for r in store.read_all().to_pylist() if r.get("status") == "ok"]


def measure_study(study: Study, want: Want = Want(), *, address: str | None = None,
                  serial: bool = False, max_in_flight: int | None = None,
                  progress: bool = True, autoscaler: bool | None = None,
                  node_wait_s: float | None = None, announce: bool = True) -> MeasureSummary:
    """`study measure`: compute what ``want`` asks on every stored ok network, from its
    checkpoint, fanned out like `study run`; returns counts. Ctrl-C stops cleanly (rows are
    rewritten whole). Raises StudyError for unknown names, StorageError (OldSchemaError)
    for no stored runs or an old-schema output, before any work."""
    store = Store(study.out, study.name)
    expected = want.expected(study.measures)
    rows = _ok_rows(store, study.path or "STUDY.toml")
    store.check_writable()
    with Lease(store, "study measure"):
        store.clean_tmp(LEASE_TIMEOUT_S)
        return _measure_study(study, store, want, expected, rows, address=address, serial=serial,
                              max_in_flight=max_in_flight, progress=progress,
                              autoscaler=autoscaler, node_wait_s=node_wait_s, announce=announce)


def _measure_study(study, store, want, expected, rows, *, address, serial, max_in_flight,
                   progress, autoscaler, node_wait_s, announce) -> MeasureSummary:
    todo, no_net, pairs, up = [], [], 0, 0
    for r in rows:
        names = wanted(r, want, expected)
        if not names:
            up += 1
        elif not store.has_net(r["run_id"]):
            no_net.append(r["run_id"])
        else:
            todo.append(r["run_id"])
            pairs += len(names)
    s = MeasureSummary(rows=len(rows), todo=len(todo), pairs=pairs, up_to_date=up,
                       no_checkpoint=no_net, runs_dir=store.uri(store.runs_dir))
    if not todo:
        return s
    bar = tqdm(total=len(todo), unit="net", file=sys.stderr, disable=not progress,
               dynamic_ncols=True, mininterval=0.5, desc=f"{study.name} measure")
    t0 = time.perf_counter()

    def record(res: dict) -> None:
        s.done += 1
        s.computed += res.get("computed", 0)
        s.task_seconds += res.get("seconds", 0.0)
        if res["status"] != "ok":
            s.failures.append(f"{res['run_id']}: {res['error']}")
        bar.set_postfix(failed=len(s.failures), refresh=False)
        bar.update(1)

    def lost(run_id: str, error: str) -> dict:  # the row is untouched: a rerun does it
        return {"run_id": run_id, "status": "failed", "computed": 0, "error": error.splitlines()[0]}

    with stopped_cleanly(s, bar, t0):
        fan_out(todo, measure_one, lambda rid: (rid, study.out, study.name, study.measures, want,
                                                expected, study.resources.num_gpus),
                study.resources, record, address=address, serial=serial,
                max_in_flight=max_in_flight, lost=lost, autoscaler=autoscaler,
                node_wait_s=node_wait_s,
                announce=(lambda line: bar.write(line, file=sys.stderr)) if announce else None)
    return s


# ------------------------------------------------------------------ a user's measure


class ScoreError(ValueError):
    """The user's measure cannot be loaded; the message says why."""


def load_function(target: str):
    """The function named by ``PATH.py:FUNCTION`` (the file is run as a module)."""
    path, sep, name = target.rpartition(":")
    if not sep or not path or not name:
        raise ScoreError(f"{target!r}: give the measure as PATH.py:FUNCTION")
    if not os.path.isfile(path):
        raise ScoreError(f"{path}: no such file (the measure is given as PATH.py:FUNCTION)")
    spec = importlib.util.spec_from_file_location(f"_user_measure_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise ScoreError(f"{path} failed to import: {type(e).__name__}: {e}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        have = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                      and getattr(v, "__module__", None) == module.__name__)
        raise ScoreError(f"{path} has no function {name!r}; functions: {', '.join(have) or 'none'}")
    return fn


def score_one(run_id: str, out: str, study: str, target: str, num_gpus: float = 0) -> dict:
    """The user's measure ``target`` (PATH.py:FUNCTION) on one stored network: ``fn(model,
    (x, y), init)`` with (x, y) the measure set of the run (training data or its subset, as
    the measures see it) and ``init`` its initial state dict. Returns ``{"run_id", "value",
    "reason"}``: NaN and the error when the function fails or returns no finite-able number."""
    from .measures import measure_set
    store = Store(out, study)
    fn = load_function(target)
    try:
        row = pq.read_table(store.run_path(run_id), filesystem=store.fs,
                            columns=["config"]).to_pylist()[0]
        spec = RunSpec.from_json(row["config"])
        spec, model, init, _, data, device = _network(store, {"config": row["config"]},
                                                      spec.measures, num_gpus)
        x, y = measure_set(data.x_train, data.y_train, spec.measures.subset, spec.seed)
        value = float(fn(model, (x, y), init))
    except Exception as e:  # one failing network gives NaN with the reason
        return {"run_id": run_id, "value": math.nan, "reason": error_text(e, limit=3)}
    return {"run_id": run_id, "value": value, "reason": "" if math.isfinite(value) else "not finite"}


def score_runs(out: str, study: str, target: str, *, serial: bool = False,
               address: str | None = None, resources: Resources = Resources(),
               progress: bool = True) -> tuple[dict[str, float], dict[str, str], list[str]]:
    """The user's measure on every stored ok network with a checkpoint of ``study`` under
    ``out``: (run_id → value, run_id → NaN reason, run ids without a checkpoint)."""
    load_function(target)  # a missing file or function: one clear error before any work
    store = Store(out, study)
    rows = _ok_rows(store, "STUDY.toml")
    ids = [r["run_id"] for r in rows]
    have = [i for i in ids if store.has_net(i)]
    values, reasons = {}, {}
    bar = tqdm(total=len(have), unit="net", file=sys.stderr, disable=not progress,
               dynamic_ncols=True, mininterval=0.5, desc=f"{study} score")

    def record(r: dict) -> None:
        values[r["run_id"]] = r["value"]
        if r["reason"]:
            reasons[r["run_id"]] = r["reason"]
        bar.update(1)

    try:
        fan_out(have, score_one, lambda rid: (rid, out, study, target, resources.num_gpus), resources, record,
                address=address, serial=serial,
                lost=lambda rid, error: {"run_id": rid, "value": math.nan, "reason": error})
    finally:
        bar.close()
    return values, reasons, [i for i in ids if i not in have]
