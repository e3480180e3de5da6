"""`study run`: train and measure every network of a study that is not yet stored.

Each task (`run_one`) trains, measures and writes its own row (with ``[study] keep_networks``
its checkpoint first) and returns a small record; one that finds its row stored does nothing,
so Ray's retries and reruns never run a network twice and the same command resumes after any
interruption. Rows of an older run-id schema (`study migrate`) and another driver's lease
(`study.lease`) stop the job before any work. A write the output refuses comes back as a
``write_failed`` record: the job stops submitting (the executor's clean stop).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import error_line
from ..executor import Bar, Ended, Executor, StudyStopped, fan_out
from ..lease import held
from ..runner import execute, failed_row, pick_device
from ..spec import RunSpec, Study
from ..storage import Store


@dataclass(kw_only=True)
class Summary(Ended):
    total: int
    stored_before: int
    ran: int = 0
    ok: int = 0               # ok and converged
    unconverged: int = 0      # ok, but max_epochs ran out before the target loss
    failed: int = 0
    diverged: int = 0
    runs_dir: str = ""
    failures: list[str] = field(default_factory=list)

    @property
    def left(self) -> int:
        return self.total - self.stored_before - self.ran


@dataclass(frozen=True)
class Done:
    """What a run task returns: its outcome, never the network."""
    run_id: str
    status: str                     # ok, failed, diverged; write_failed: nothing stored
    error: str = ""                 # the first line
    converged: bool | None = None
    seconds: float | None = None    # training and measuring; None: skipped or not stored
    skipped: bool = False           # already stored


def todo(study: Study, stored: dict[str, str], retry_failed: bool = False) -> Iterator[RunSpec]:
    """The runs of ``study`` not in ``stored`` (run_id → status), or not ok with
    ``retry_failed``, streamed over the grid (never a list of it)."""
    return (s for s in study.runs()
            if s.run_id not in stored or (retry_failed and stored[s.run_id] != "ok"))


def run_one(spec: RunSpec, out: str, retry_failed: bool, keep_networks: bool = True,
            num_gpus: float = 0) -> Done:
    """Train, measure and store one run (its checkpoint, then its row), unless its row is
    already stored."""
    store = Store(out, spec.study)
    prior = store.statuses_of([spec.run_id]).get(spec.run_id)
    if prior is not None and (prior == "ok" or not retry_failed):
        return Done(spec.run_id, prior, skipped=True)
    t0 = time.perf_counter()
    try:  # execute returns the run's own failures as rows: what raises here is the output
        row = execute(spec, pick_device(num_gpus), store=store if keep_networks else None)
        store.write_row(row)
    except Exception as e:
        return Done(spec.run_id, "write_failed", error_line(e))
    return Done(spec.run_id, row["status"], row["error"].split("\n", 1)[0], row.get("converged"),
                time.perf_counter() - t0)


def run_study(study: Study, executor: Executor = Executor(), *, retry_failed: bool = False) -> Summary:
    """Run what is missing; returns counts. Ctrl-C and SIGTERM stop cleanly (rows are whole
    files; ``interrupted``), and so does a write the output refuses (``stopped``). Raises,
    before any work, OldSchemaError when rows of an older run-id schema are stored, LeaseHeld
    when another driver runs the study, ClusterError when no node can hold one run. The
    progress bar counts the outcomes and ``s_per_net``, the mean seconds a finished network
    took (training and measuring)."""
    store = Store(study.out, study.name)
    store.check_schema(study.path or "STUDY.toml")
    with held(store, "study run") as lease:
        stored = store.statuses()
        n_todo = sum(1 for _ in todo(study, stored, retry_failed))  # counted; streamed again below
        s = Summary(total=study.size, stored_before=study.size - n_todo, runs_dir=store.uri(store.runs_dir))
        if not n_todo:
            return s
        timed = []

        def record(d: Done) -> dict:
            if d.status == "write_failed":  # not stored: left for a rerun
                raise StudyStopped(f"writing to the output failed: {d.error}")
            s.ran += 1
            if d.seconds is not None:
                timed.append(d.seconds)
            if d.status == "ok" and d.converged is False:
                s.unconverged += 1
            elif d.status == "ok":
                s.ok += 1
            elif d.status == "diverged":
                s.diverged += 1
            else:
                s.failed += 1
                s.failures.append(f"{d.run_id}: {d.error}")
            if lease.lost:
                raise StudyStopped(lease.lost)
            return {"ok": s.ok, "unconverged": s.unconverged, "failed": s.failed, "diverged": s.diverged,
                    "s_per_net": f"{sum(timed) / len(timed):.1f}" if timed else "–"}

        def lost(spec: RunSpec, error: str) -> Done:  # beyond Ray's retries: store the failure, whole
            try:
                store.write_row(failed_row(spec, error))
            except Exception as e:
                return Done(spec.run_id, "write_failed", error_line(e))
            return Done(spec.run_id, "failed", error.split("\n", 1)[0])

        r = study.resources
        return fan_out(todo(study, stored, retry_failed), run_one,
                       lambda spec: (spec, study.out, retry_failed, study.keep_networks, r.num_gpus),
                       r, record, executor, bar=Bar(study.name, study.size, "run", s.stored_before),
                       ended=s, lost=lost)
