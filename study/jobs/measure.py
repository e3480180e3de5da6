"""`study measure`: measures computed on stored networks from their checkpoints, never training.

The job plans, per stored ok row, which measures to compute (`wanted`): those named
(``--measures``), or the study file's selection; of them the stale ones (held under other
settings than the study file's: `registry.outdated`), the missing ones, or both; ``force``:
all of them. Each row with work becomes one task (`measure_one`, fanned out like `study run`)
that rebuilds the network from its checkpoint (`runner.stored_network`), measures it with the
study file's knobs and subset (`runner.measure_network`, the one way a network is measured) and
rewrites the row atomically, merged (`merge_measures`). A task re-reads its row and plans again,
so a rerun after Ctrl-C, SIGKILL or a lost worker computes only what is still to do. A row
without a checkpoint (``keep_networks = false``) is skipped.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import error_line
from ..executor import Bar, Ended, Executor, StudyStopped, fan_out
from ..lease import held
from ..measures.registry import expected_settings, outdated, select
from ..runner import measure_network, stored_network
from ..schema import (
    REMEASURED,
    REPEATS,
    arrow_type,
    artifact_col,
    cfg_col,
    measure_col,
    normalize_times,
    now,
    sd_col,
    seconds_col,
    stored_settings,
)
from ..spec import MeasureSettings, RunSpec, Study, StudyError
from ..storage import Store


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


def merge_measures(table: pa.Table, cols: dict, names: list[str], when: datetime) -> pa.Table:
    """The one-row ``table`` with the columns of `runner.measure_network` for ``names`` merged in:
    their values, settings hashes, seconds, artifacts and ``measure_sd`` (NaN where they were
    computed without repeats now) replace the old ones, their NaN reasons, methods and repeat
    counts replace theirs (the others' stay), ``measure_seconds`` loses the recomputed measures' old
    seconds and gains this computation's, and ``remeasured_at`` is ``when``. Other columns keep
    their values and types (a time column stored as text becomes a timestamp: `normalize_times`)."""
    table = normalize_times(table)
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
    new[REMEASURED] = when
    for k, v in new.items():
        if k in table.column_names:
            i = table.column_names.index(k)
            kind = table.schema.field(k).type
            table = table.set_column(i, k, pa.array([v], type=arrow_type(k, v) if pa.types.is_null(kind)
                                                    else kind))
        else:
            table = table.append_column(k, pa.array([v], type=arrow_type(k, v)))
    return table


@dataclass(frozen=True)
class Measured:
    """What a measure task returns."""
    run_id: str
    status: str = "ok"             # ok / failed (the row stays as it was); write_failed: the output refused it
    computed: int = 0              # measures computed
    error: str = ""
    seconds: float = 0.0           # checkpoint, data and measures
    unverified: bool = False       # its checkpoint carries no run id and digest (`runner.UNVERIFIED`)


def measure_one(run_id: str, out: str, study: str, measures: MeasureSettings, want: Want,
                expected: dict[str, str], num_gpus: float = 0) -> Measured:
    """Compute what is still wanted of one stored network (``expected``: `Want.expected` of the
    study file's ``[measures]``) and rewrite its row merged."""
    t0 = time.perf_counter()
    store = Store(out, study)
    try:
        table = pq.read_table(store.run_path(run_id), filesystem=store.fs)
        row = table.to_pylist()[0]
        names = wanted(row, want, expected)
        if not names:
            return Measured(run_id)
        spec = replace(RunSpec.from_json(row["config"]), measures=measures)
        notes: list[str] = []
        model, init, log, data, device = stored_network(store, spec, num_gpus, notes)
        cols = measure_network(spec, model, init, log, data, device, names=names, hashes=expected)
        curve = artifact_col("train_loss_curve")  # not in rows written before the runner stored it
        if row.get(curve) is None and log is not None and log.epoch_losses:
            cols[curve] = [float(v) for v in log.epoch_losses]
        merged = merge_measures(table, cols, names, now())
    except Exception as e:  # the row stays as it was; the summary names the failure
        return Measured(run_id, "failed", error=error_line(e))
    try:
        store.write_row_table(merged)
    except Exception as e:  # the output, not this network: the driver stops (`measure_study`)
        return Measured(run_id, "write_failed", error=error_line(e))
    return Measured(run_id, computed=len(names), seconds=time.perf_counter() - t0, unverified=bool(notes))


@dataclass(kw_only=True)
class MeasureSummary(Ended):
    rows: int                  # stored ok rows
    todo: int                  # rows with something to compute and a checkpoint
    pairs: int                 # (row, measure) pairs planned
    up_to_date: int            # rows with nothing to compute
    no_checkpoint: list[str] = field(default_factory=list)  # rows with work but no checkpoint
    done: int = 0
    computed: int = 0
    task_seconds: float = 0.0  # summed over the tasks that computed: checkpoint, data and measures
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # run files left out (--skip-corrupt), with why
    unverified: int = 0        # measured from checkpoints without run id and digest (`runner.UNVERIFIED`)
    runs_dir: str = ""


def measure_study(study: Study, want: Want = Want(), executor: Executor = Executor(), *,
                  skip_corrupt: bool = False) -> MeasureSummary:
    """`study measure`: compute what ``want`` asks on every stored ok network, from its
    checkpoint, fanned out like `study run`; returns counts. Ctrl-C and SIGTERM stop cleanly (rows
    are rewritten whole; ``interrupted``), and so do a write the output refuses and a lease taken
    over by another driver (``stopped``: nothing more is submitted). Raises StudyError for unknown names, StorageError (OldSchemaError)
    for no stored runs, an old-schema output or an unreadable run file (unless ``skip_corrupt``:
    left out), before any work."""
    store = Store(study.out, study.name)
    expected = want.expected(study.measures)
    rows = store.ok_rows(study.path or "STUDY.toml", skip_corrupt)
    with held(store, "study measure") as lease:
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
                           no_checkpoint=no_net, runs_dir=store.uri(store.runs_dir),
                           skipped=list(store.skipped))
        if not todo:
            return s

        def record(m: Measured) -> dict:
            if m.status == "write_failed":  # the row stays as it was: left for a rerun
                raise StudyStopped(f"writing to the output failed: {m.error}")
            s.done += 1
            s.computed += m.computed
            s.task_seconds += m.seconds
            s.unverified += m.unverified
            if m.status != "ok":
                s.failures.append(f"{m.run_id}: {m.error}")
            if lease.lost:
                raise StudyStopped(lease.lost)
            return {"failed": len(s.failures)}

        def lost(run_id: str, error: str) -> Measured:  # the row is untouched: a rerun does it
            return Measured(run_id, "failed", error=error.split("\n", 1)[0])

        r = study.resources
        return fan_out(todo, measure_one,
                       lambda rid: (rid, study.out, study.name, study.measures, want, expected, r.num_gpus),
                       r, record, executor, bar=Bar(f"{study.name} measure", len(todo)), ended=s, lost=lost)
