"""`study status` as data: what is stored of a study, per outcome and per axis value, the
unreadable run files, and the measures stale or missing under the study file's settings; and
the exit status that says it (`status_code`). No Ray: it reads the output only."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

from ..measures.registry import expected_settings, outdated, select
from ..schema import stored_settings
from ..spec import Study
from ..storage import Store

COMPLETE, INCOMPLETE, HAS_FAILURES = 0, 3, 4  # `study status` exit codes (README, "Commands")
OUTCOME_KEYS = ("ok", "unconverged", "failed", "diverged", "left", "unreadable")


@dataclass(frozen=True)
class Status:
    """What `study status` says (``--json``: `as_json`). ``counts``: per outcome (``ok``: done
    and converged; ``unconverged``; ``failed``; ``diverged``; ``left``; ``unreadable``); ``axes``:
    per axis, per value, the same counts; ``measures``: `stale`, None before any row is stored."""
    study: str
    runs_dir: str
    total: int
    counts: dict[str, int]
    axes: dict[str, list[dict]]
    unreadable: list[str]
    not_in_grid: int
    measures: dict | None
    exit_code: int
    complete: bool

    def as_json(self) -> dict:
        return asdict(self)


def status_code(counts: dict) -> int:
    """4 when a run failed (`HAS_FAILURES`), else 3 when runs are left or unreadable
    (`INCOMPLETE`), else 0 (`COMPLETE`: every run stored, ok, not converged or diverged)."""
    if counts.get("failed"):
        return HAS_FAILURES
    if counts.get("left") or counts.get("unreadable"):
        return INCOMPLETE
    return COMPLETE


def status(study: Study, study_file: str = "STUDY.toml") -> Status:
    """The `Status` of ``study``: one streamed pass over the grid, no list of the runs. Raises
    OldSchemaError when rows of an older run-id schema are stored."""
    store = Store(study.out, study.name)
    store.check_schema(study_file)
    stored, unreadable = store.scan(outcomes=True)
    for path in unreadable:  # named <run_id>.parquet: its run is neither done nor left
        stored.setdefault(path.rsplit("/", 1)[-1].removesuffix(".parquet"), "unreadable")
    count = Counter()
    by_value = {a: {i: Counter() for i in range(len(v))} for a, v in study.grid.items()}
    # the hp values are the grid's own objects: found by identity (values need not hash)
    index = {a: {id(v): i for i, v in enumerate(vals)} for a, vals in study.grid.items()}
    mine = 0
    for s in study.runs():
        outcome = stored.get(s.run_id, "left")
        count[outcome] += 1
        mine += outcome != "left"
        for a, v in s.hp.items():
            i = index[a].get(id(v))
            by_value[a][i if i is not None else study.grid[a].index(v)][outcome] += 1
    counts = {k: count[k] for k in OUTCOME_KEYS}
    code = status_code(counts)
    return Status(study.name, store.uri(store.runs_dir), study.size, counts,
                  {axis: [{"value": v, **{k: by_value[axis][i][k] for k in OUTCOME_KEYS}}
                          for i, v in enumerate(values)] for axis, values in study.grid.items()},
                  [store.uri(p) for p in unreadable], len(stored) - mine,
                  stale(study, store) if stored else None, code, code == COMPLETE)


def stale(study: Study, store: Store) -> dict:
    """Per measure of the study file, how many stored ok rows (all of them: analysis ranks every
    stored row) hold it under other settings (``stale``) or not at all (``missing``); ``outdated``:
    those measures, in the study file's order."""
    m = study.measures
    expected = expected_settings(select(m.include, m.exclude), m.knobs, m.subset, m.repeats)
    rows = [r for r in store.read_all(skip_corrupt=True).to_pylist() if r.get("status") == "ok"]
    old, missing = Counter(), Counter()
    for r in rows:
        s, miss = outdated(stored_settings(r), expected)
        old.update(s)
        missing.update(miss)
    return {"expected": len(expected), "ok_rows": len(rows), "outdated": [n for n in expected if old[n] or missing[n]],
            "stale": {n: old[n] for n in expected if old[n]}, "missing": {n: missing[n] for n in expected if missing[n]}}
