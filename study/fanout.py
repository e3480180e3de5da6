"""The driver: run every missing network of a study, on Ray or serially in-process.

The driver expands the grid, lists what is stored, and submits only what is
missing, keeping a bounded number of Ray tasks in flight and taking results
as they finish (`ray.wait`). Each task trains, measures and writes its own
row (so a dying driver loses nothing that finished) and returns a small
record. Ray retries a task lost with its worker or node; a task finding its
row already stored does nothing, so retries and reruns never run a network
twice. Run the same command again to resume after any interruption. With
``[study] keep_networks`` (the default) each ok run writes its checkpoint
before its row. Rows of an older run-id schema stop the driver before any
work (`study migrate` rewrites them). The loop itself (`fan_out`: serial or
Ray, bounded in flight, `ray.wait`) is shared with `study measure` and
`analysis score` (`study.remeasure`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field

from tqdm import tqdm

from .runner import error_text, execute, pick_device
from .spec import RunSpec, Study
from .storage import Store

log = logging.getLogger("study.fanout")


@dataclass
class Summary:
    total: int
    stored_before: int
    ran: int = 0
    ok: int = 0               # ok and converged
    unconverged: int = 0      # ok, but max_epochs ran out before the target loss
    failed: int = 0
    diverged: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    runs_dir: str = ""
    failures: list[str] = field(default_factory=list)

    @property
    def left(self) -> int:
        return self.total - self.stored_before - self.ran


def plan(study: Study, store: Store, retry_failed: bool = False) -> tuple[list[RunSpec], dict]:
    """The runs still to do, and the stored statuses."""
    stored = store.statuses()
    todo = [s for s in study.runs()
            if s.run_id not in stored or (retry_failed and stored[s.run_id] != "ok")]
    return todo, stored


def run_one(spec_json: str, out: str, study: str, num_gpus: float, retry_failed: bool,
            keep_networks: bool = True) -> dict:
    """Train, measure and store one run (its checkpoint, then its row), unless its row is
    already stored."""
    spec = RunSpec.from_json(spec_json)
    store = Store(out, study)
    prior = store.statuses_of([spec.run_id]).get(spec.run_id)
    if prior is not None and (prior == "ok" or not retry_failed):
        return {"run_id": spec.run_id, "status": prior, "error": "", "skipped": True}
    t0 = time.perf_counter()
    row = execute(spec, pick_device(num_gpus), store=store if keep_networks else None)
    store.write_row(row)
    return {"run_id": spec.run_id, "status": row["status"], "converged": row.get("converged"),
            "error": row["error"].splitlines()[0] if row["error"] else "", "skipped": False,
            "seconds": time.perf_counter() - t0}


def _failed_row(spec: RunSpec, error: str) -> dict:
    from .runner import base_row
    row = base_row(spec)
    row.update(status="failed", error=error, config=spec.to_json())
    return row


def run_study(study: Study, *, address: str | None = None, retry_failed: bool = False,
              serial: bool = False, max_in_flight: int | None = None,
              progress: bool = True, announce: bool = True) -> Summary:
    """Run what is missing; returns counts. Ctrl-C stops cleanly (rows are whole files).
    Raises OldSchemaError, before any work, when rows of an older run-id schema are stored.
    ``progress``: a progress bar on stderr whose postfix counts the outcomes, the networks in
    flight (submitted and not finished: training or measuring, or waiting for a worker slot)
    and the mean seconds a network took (training and measuring, from the finished ones);
    ``announce``: say "starting Ray …" before starting it."""
    store = Store(study.out, study.name)
    store.check_schema(study.path or "STUDY.toml")
    store.check_writable()
    store.clean_tmp()
    todo, stored = plan(study, store, retry_failed)
    total = len(study.runs())
    summary = Summary(total=total, stored_before=total - len(todo), runs_dir=store.uri(store.runs_dir))
    if not todo:
        return summary
    bar = tqdm(total=total, initial=summary.stored_before, unit="run", file=sys.stderr,
               disable=not progress, dynamic_ncols=True, mininterval=0.5,
               desc=f"{study.name}")
    t0 = time.perf_counter()
    state = {"in_flight": 0, "seconds": 0.0, "timed": 0}

    def postfix() -> None:
        mean = f"{state['seconds'] / state['timed']:.1f}" if state["timed"] else "–"
        bar.set_postfix(ok=summary.ok, unconverged=summary.unconverged, failed=summary.failed,
                        diverged=summary.diverged, in_flight=state["in_flight"], s_per_net=mean,
                        refresh=False)

    def in_flight(n: int) -> None:
        if n != state["in_flight"]:
            state["in_flight"] = n
            postfix()
            bar.refresh()

    def record(res: dict) -> None:
        summary.ran += 1
        if res.get("seconds") is not None:
            state["seconds"] += res["seconds"]
            state["timed"] += 1
        status = res["status"]
        if status == "ok" and res.get("converged") is False:
            summary.unconverged += 1
        elif status == "ok":
            summary.ok += 1
        elif status == "diverged":
            summary.diverged += 1
        else:
            summary.failed += 1
            summary.failures.append(f"{res['run_id']}: {(res['error'].splitlines() or [''])[0]}")
        postfix()
        bar.update(1)

    def lost(spec: RunSpec, error: str) -> dict:  # beyond Ray's retries: store the failure, whole
        store.write_row(_failed_row(spec, error))
        return {"run_id": spec.run_id, "status": "failed", "error": error}

    try:
        fan_out(todo, run_one, lambda spec: (spec.to_json(), study.out, study.name,
                                             study.resources["num_gpus"], retry_failed,
                                             study.keep_networks),
                study.resources, record, address=address, serial=serial,
                max_in_flight=max_in_flight, lost=lost, in_flight=in_flight,
                announce=(lambda line: bar.write(line, file=sys.stderr)) if announce else None)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - t0
    return summary


def print_stderr(line: str) -> None:
    """Print a line on stderr at once (the default announcer of `fan_out`)."""
    print(line, file=sys.stderr, flush=True)


def ray_address(address: str | None) -> str:
    """Where the driver's Ray is: ``address``, else the cluster of a Ray job (RAY_ADDRESS), else
    ``"local"`` (a fresh local Ray, never a cluster that `ray start` happened to leave on this
    machine)."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


def start_ray(address: str | None) -> None:
    """``ray.init`` at `ray_address`, quiet: a local Ray starts without token authentication
    (RAY_AUTH_MODE=disabled, unless the environment sets it: the cluster lives in this machine
    and this process; a cluster joined by address keeps its own setting), Ray logs at WARNING,
    and the workers' output stays in Ray's session logs (``log_to_driver=False``: no worker
    lines interleaved with the progress bar, none of the ANSI-coloured log-deduplication
    notices; each run stores its own error)."""
    import ray

    address = ray_address(address)
    if address == "local":
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address=address, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING, configure_logging=True)


def fan_out(items: list, task, args_of, resources: dict, record, *, address: str | None = None,
            serial: bool = False, max_in_flight: int | None = None, lost=None,
            announce=print_stderr, in_flight=None) -> None:
    """Call ``task(*args_of(item))`` for every item and hand each result to ``record`` as it
    finishes: in this process one at a time (``serial``), else as Ray tasks with ``resources``
    (num_cpus, num_gpus, max_in_flight), a bounded number in flight, taken with `ray.wait`.
    A task lost beyond Ray's retries gives ``record(lost(item, error text))``, the text plain
    (`runner.error_text`: the cause's type and message, then the traceback; ``lost`` None:
    the error is raised). Ctrl-C cancels the tasks in flight and raises KeyboardInterrupt.
    Tasks write their own results and return small records: what finished is kept.
    ``announce``: called with the line "starting Ray …" before Ray starts (`start_ray`; None:
    nothing said); ``in_flight``: called
    with the number of tasks submitted and not yet finished, whenever it changes."""
    in_flight = in_flight or (lambda n: None)
    if serial:
        for item in items:
            in_flight(1)
            res = task(*args_of(item))
            in_flight(0)
            record(res)
        return
    started_here = not ("ray" in sys.modules and sys.modules["ray"].is_initialized())
    if started_here and announce:  # importing and starting Ray take seconds: say so first
        where = ray_address(address)
        announce(f"starting Ray … ({'local' if where == 'local' else where})")
    import ray

    if started_here:
        start_ray(address)
    try:
        remote = ray.remote(task).options(num_cpus=resources["num_cpus"], num_gpus=resources["num_gpus"],
                                          max_retries=3, retry_exceptions=False)
        if not max_in_flight:
            max_in_flight = resources["max_in_flight"] or _auto_in_flight(ray, resources)
        pending: dict = {}
        queue = list(items)
        try:
            while queue or pending:
                while queue and len(pending) < max_in_flight:
                    item = queue.pop(0)
                    pending[remote.remote(*args_of(item))] = item
                in_flight(len(pending))
                done, _ = ray.wait(list(pending), num_returns=1, timeout=5.0)
                for ref in done:
                    item = pending.pop(ref)
                    in_flight(len(pending))
                    try:
                        res = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        if lost is None:
                            raise
                        res = lost(item, error_text(e))
                    record(res)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started_here:
            ray.shutdown()


def _auto_in_flight(ray, res: dict) -> int:
    """Twice the number of tasks the cluster can run at once (at least 2)."""
    cluster = ray.cluster_resources()
    slots = []
    if res["num_cpus"]:
        slots.append(cluster.get("CPU", 1) / res["num_cpus"])
    if res["num_gpus"]:
        slots.append(cluster.get("GPU", 0) / res["num_gpus"])
    return max(2, int(2 * min(slots))) if slots else 8
