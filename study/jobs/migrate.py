"""`study migrate`: rewrite rows stored under an older run-id schema under their new ids, and
rows whose time columns are text as timestamps.

Schema 1 hashed the measure selection into the run id; schema 2 names the
network only. Each old row's ``config`` holds its spec, so its new id is
`RunSpec.from_json(config).run_id`. Rows of one network (old rows that
differed only in their measures, and a new-id row already stored) become one
row: per column the value of the preferred row that has it, where ok rows are
preferred to failed ones and then the later ``finished_at``; no column is
lost, and ``nan_reasons`` and ``measure_methods`` are merged per measure the same way.

A row of this schema whose `schema.TIMES` columns (``started_at``, ``finished_at``,
``remeasured_at``) hold ISO 8601 strings, as rows written before each was a timestamp do, is
rewritten with them as timestamps (`schema.normalize_times`), every other column kept; merged
rows get timestamps too. Readers cast such strings anyway; migrating makes the files uniform.

Atomic and resumable: the merged row is written whole (`Store.write_row_table`)
before any old file is deleted, so a kill leaves old files beside a complete
new row, and a rerun merges them again to the same row (then only deletes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq

from .. import SCHEMA_VERSION
from ..lease import LEASE_TIMEOUT_S, Lease
from ..schema import normalize_times
from ..spec import RunSpec, Study
from ..storage import Store, config_schema


@dataclass
class Migration:
    old_rows: int = 0             # old-schema rows found
    written: int = 0              # new-id rows written
    merged: int = 0               # new-id rows made of more than one stored row
    deleted: int = 0              # old files deleted
    skipped: list[str] = field(default_factory=list)  # old files that cannot be migrated, and why
    retyped: int = 0              # rows of this schema rewritten with timestamp time columns
    runs_dir: str = ""
    stored: int = 0               # runs of the study file stored after it


def _preference(table: pa.Table) -> tuple:
    """Ok rows first, then the later ``finished_at`` (a timestamp: `normalize_times`)."""
    done = table["finished_at"][0].as_py() if "finished_at" in table.column_names else None
    return (table["status"][0].as_py() == "ok" if "status" in table.column_names else False,
            done is not None, done or datetime.min.replace(tzinfo=timezone.utc))


_PER_MEASURE_JSON = ("nan_reasons", "measure_methods")  # JSON {measure: ...} columns


def merge_rows(tables: list[pa.Table], run_id: str, config: str) -> pa.Table:
    """One row from rows of one network: per column, the most preferred row's non-null value."""
    ordered = sorted(tables, key=_preference)  # least preferred first; later ones overwrite
    cols: dict[str, pa.ChunkedArray] = {}
    per_measure: dict[str, dict] = {c: {} for c in _PER_MEASURE_JSON}
    for t in ordered:
        for name in t.column_names:
            if t[name][0].is_valid or name not in cols:
                cols[name] = t[name]
        for c, merged in per_measure.items():
            if c in t.column_names and t[c][0].is_valid:
                merged.update(json.loads(t[c][0].as_py()))
    cols["run_id"] = pa.chunked_array([pa.array([run_id])])
    cols["config"] = pa.chunked_array([pa.array([config])])
    for c, merged in per_measure.items():
        if c in cols:
            cols[c] = pa.chunked_array([pa.array([json.dumps(merged, sort_keys=True)])])
    return pa.table(cols)


def _same_row(a: pa.Table, b: pa.Table) -> bool:
    """Same columns, types and values, in any column order (NaN equal to NaN)."""
    if set(a.column_names) != set(b.column_names):
        return False
    a = a.select(b.column_names)
    return a.schema.equals(b.schema) and \
        json.dumps(a.to_pylist(), default=str) == json.dumps(b.to_pylist(), default=str)


def migrate_study(study: Study) -> Migration:
    """`study migrate`: `migrate` the study's output under its lease (no `study run` or `study
    measure` meanwhile), then count the study file's runs that are stored."""
    store = Store(study.out, study.name)
    if not store.run_files():  # nothing stored: nothing to migrate, and no folder made for it
        return Migration(runs_dir=store.uri(store.runs_dir))
    with Lease(store, "study migrate"):
        report = migrate(store)
    if report.old_rows:
        stored = store.statuses()
        report.stored = sum(1 for s in study.runs() if s.run_id in stored)
    return report


def migrate(store: Store) -> Migration:
    """Rewrite every old-schema row of ``store`` under its new id; see the module docstring."""
    store.clean_tmp(LEASE_TIMEOUT_S)
    report = Migration(runs_dir=store.uri(store.runs_dir))
    groups: dict[str, list[tuple[str, pa.Table]]] = {}
    for path in store.run_files():
        try:
            read = pq.read_table(path, filesystem=store.fs)
            table = normalize_times(read)
            config = table["config"][0].as_py()
            schema = config_schema(config)
        except Exception as e:  # unreadable: left alone, and said
            report.skipped.append(f"{path}: unreadable ({type(e).__name__})")
            continue
        if schema is None or schema >= SCHEMA_VERSION:
            if table is not read:  # a time column held text: the same row, typed
                store.write_row_table(table)
                report.retyped += 1
            continue
        report.old_rows += 1
        try:
            spec = RunSpec.from_json(config)
        except Exception as e:
            report.skipped.append(f"{path}: its config is no run spec ({type(e).__name__}: {e})")
            continue
        groups.setdefault(spec.run_id, []).append((path, table))
    for run_id, olds in sorted(groups.items()):
        tables = [t for _, t in olds]
        current = None
        try:
            current = normalize_times(pq.read_table(store.run_path(run_id), filesystem=store.fs))
            tables.append(current)
        except FileNotFoundError:
            pass
        winner = max(tables, key=_preference)
        config = RunSpec.from_json(winner["config"][0].as_py()).to_json()
        row = merge_rows(tables, run_id, config)
        same = current is not None and _same_row(row, current)
        if not same:
            store.write_row_table(row)
            report.written += 1
            report.merged += len(tables) > 1
        for path, _ in olds:
            store.fs.delete_file(path)
            report.deleted += 1
    return report
