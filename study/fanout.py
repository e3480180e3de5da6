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

Unattended and safe:

- Feasibility first: before submitting anything, a run's ``num_cpus`` / ``num_gpus`` are
  checked against the live nodes. On a fixed cluster (local Ray, or a cluster without an
  autoscaler) a run that no node can hold is `ClusterError` (exit 2), never a silent wait.
  An autoscaler is assumed when ``autoscaler=True`` (``--autoscaler``), ``STUDY_AUTOSCALER=1``,
  or ``~/ray_bootstrap_config.yaml`` exists (the file ``ray up`` puts on a head node for its
  autoscaler; the driver of ``ray submit`` and ``ray job submit`` runs there): then a warning,
  and a wait of up to ``node_wait_s`` (`NODE_WAIT_S`, ``--node-wait``) for such a node.
- Local Ray (no address, no RAY_ADDRESS) listens on 127.0.0.1 only, without a dashboard.
- SIGTERM (what schedulers and ``ray job stop`` send) is handled like Ctrl-C: the runs in
  flight are cancelled and `Terminated` (a KeyboardInterrupt) is raised.
- A write the output refuses (`storage.WriteError`: read-only, full, expired credentials)
  comes back from the task as a ``write_failed`` record; the driver submits nothing more,
  waits up to `STOP_WAIT_S` for the runs in flight (what they store is kept), cancels the
  rest and ends with `StudyStopped`. Rows are whole files, so nothing is half-written.
- One driver per study (`study.lease`): the lease is taken before any work, and only
  temporary files older than the lease timeout are removed.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tqdm import tqdm

from .errors import error_line, error_text
from .lease import LEASE_TIMEOUT_S, Lease
from .runner import execute, pick_device
from .spec import Resources, RunSpec, Study, StudyError
from .storage import Store

NODE_WAIT_S = 600.0  # with an autoscaler: how long to wait for a node that can hold one run
STOP_WAIT_S = 60.0   # after a write failure: how long to wait for the runs in flight
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # written by `ray up` on the head for its autoscaler

log = logging.getLogger("study.fanout")


class ClusterError(StudyError):
    """The cluster can never run one run of the study (fix: its [resources]); the message
    says why."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


class StudyStopped(RuntimeError):
    """The driver stopped submitting (the output refused a write, or the lease was lost)."""


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
    signal: str = ""          # SIGINT or SIGTERM, when interrupted
    stopped: str = ""         # why the driver stopped early (a write failure, a lost lease)
    runs_dir: str = ""
    failures: list[str] = field(default_factory=list)

    @property
    def left(self) -> int:
        return self.total - self.stored_before - self.ran


def plan(study: Study, store: Store, retry_failed: bool = False) -> tuple[Iterator[RunSpec], dict]:
    """The runs still to do, a generator over the grid (never a list of it), and the stored
    statuses, read once."""
    stored = store.statuses()
    return todo_of(study, stored, retry_failed), stored


def todo_of(study: Study, stored: dict, retry_failed: bool = False) -> Iterator[RunSpec]:
    """The runs of ``study`` not in ``stored`` (or not ok, with ``retry_failed``), streamed."""
    return (s for s in study.runs()
            if s.run_id not in stored or (retry_failed and stored[s.run_id] != "ok"))


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
    try:  # execute returns the run's own failures as rows: what raises here is the output
        row = execute(spec, pick_device(num_gpus), store=store if keep_networks else None)
        store.write_row(row)
    except Exception as e:
        return {"run_id": spec.run_id, "status": "write_failed", "skipped": False,
                "error": error_line(e)}
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
              progress: bool = True, autoscaler: bool | None = None,
              node_wait_s: float | None = None, announce: bool = True) -> Summary:
    """Run what is missing; returns counts. Ctrl-C and SIGTERM stop cleanly (rows are whole
    files; ``interrupted``), and so does a write the output refuses (``stopped``). Raises,
    before any work, OldSchemaError when rows of an older run-id schema are stored, LeaseHeld
    when another driver runs the study, ClusterError when no node can hold one run.
    ``progress``: a progress bar on stderr whose postfix counts the outcomes, the networks in
    flight (submitted and not finished: training or measuring, or waiting for a worker slot)
    and the mean seconds a network took (training and measuring, from the finished ones);
    ``announce``: say "starting Ray …" before starting it."""
    store = Store(study.out, study.name)
    store.check_schema(study.path or "STUDY.toml")
    store.check_writable()
    with Lease(store, "study run") as lease:
        store.clean_tmp(LEASE_TIMEOUT_S)
        return _run_study(study, store, lease, address=address, retry_failed=retry_failed,
                          serial=serial, max_in_flight=max_in_flight, progress=progress,
                          autoscaler=autoscaler, node_wait_s=node_wait_s, announce=announce)


def _run_study(study: Study, store: Store, lease: Lease, *, address, retry_failed, serial,
               max_in_flight, progress, autoscaler, node_wait_s, announce) -> Summary:
    todo, stored = plan(study, store, retry_failed)
    total = study.size
    n_todo = sum(1 for _ in todo)  # a counting pass; the runs are streamed again below
    todo = todo_of(study, stored, retry_failed)
    summary = Summary(total=total, stored_before=total - n_todo, runs_dir=store.uri(store.runs_dir))
    if not n_todo:
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
        status = res["status"]
        if status == "write_failed":  # not stored: left for a rerun
            summary.stopped = summary.stopped or f"writing to the output failed: {res['error']}"
            raise StudyStopped(summary.stopped)
        summary.ran += 1
        if res.get("seconds") is not None:
            state["seconds"] += res["seconds"]
            state["timed"] += 1
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
        if lease.lost:
            summary.stopped = summary.stopped or lease.lost
            raise StudyStopped(summary.stopped)

    def lost(spec: RunSpec, error: str) -> dict:  # beyond Ray's retries: store the failure, whole
        try:
            store.write_row(_failed_row(spec, error))
        except Exception as e:
            return {"run_id": spec.run_id, "status": "write_failed", "error": error_line(e)}
        return {"run_id": spec.run_id, "status": "failed", "error": error}

    with stopped_cleanly(summary, bar, t0):
        fan_out(todo, run_one, lambda spec: (spec.to_json(), study.out, study.name,
                                             study.resources.num_gpus, retry_failed,
                                             study.keep_networks),
                study.resources, record, address=address, serial=serial,
                max_in_flight=max_in_flight, lost=lost, autoscaler=autoscaler,
                node_wait_s=node_wait_s, in_flight=in_flight,
                announce=(lambda line: bar.write(line, file=sys.stderr)) if announce else None)
    return summary


@contextmanager
def stopped_cleanly(summary, bar, t0: float):
    """Around a fan-out: Ctrl-C / SIGTERM set ``summary.interrupted`` and ``.signal``,
    `StudyStopped` ends it (``summary.stopped`` says why); the bar is closed and
    ``summary.seconds`` set however it ends."""
    try:
        yield
    except KeyboardInterrupt as e:
        summary.interrupted = True
        summary.signal = "SIGTERM" if isinstance(e, Terminated) else "SIGINT"
    except StudyStopped:
        pass
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - t0


_END = object()


def print_stderr(line: str) -> None:
    """Print a line on stderr at once (the default announcer of `fan_out`)."""
    print(line, file=sys.stderr, flush=True)


def ray_address(address: str | None) -> str:
    """Where the driver's Ray is: ``address``, else the cluster of a Ray job (RAY_ADDRESS), else
    ``"local"`` (a fresh local Ray, never a cluster that `ray start` happened to leave on this
    machine)."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


def fan_out(items: Iterable, task, args_of, resources: Resources, record, *, address: str | None = None,
            serial: bool = False, max_in_flight: int | None = None, lost=None,
            autoscaler: bool | None = None, node_wait_s: float | None = None,
            announce=print_stderr, in_flight=None) -> None:
    """Call ``task(*args_of(item))`` for every item and hand each result to ``record`` as it
    finishes: in this process one at a time (``serial``), else as Ray tasks with ``resources``
    (num_cpus, num_gpus, max_in_flight), a bounded number in flight, taken with `ray.wait`.
    A task lost beyond Ray's retries gives ``record(lost(item, error text))``, the text plain
    (`errors.error_text`: the cause's type and message, then the traceback; ``lost`` None: the
    error is raised). ``items`` may be a generator over a large grid: taken as needed. Before submitting, `check_feasible` (ClusterError: no node can ever
    hold one task). Ctrl-C or SIGTERM cancels the tasks in flight and raises KeyboardInterrupt
    (`Terminated` for SIGTERM). ``record`` raising `StudyStopped` stops the submitting: the
    tasks in flight get up to `STOP_WAIT_S` to finish (their records are taken), the rest are
    cancelled, and StudyStopped is raised. Tasks write their own results and return small
    records: what finished is kept. ``announce``: called with the line "starting Ray …"
    before Ray starts (`_ray_init`; None: nothing said); ``in_flight``: called with the number
    of tasks submitted and not yet finished, whenever it changes."""
    in_flight = in_flight or (lambda n: None)
    if max_in_flight is not None and max_in_flight < 1:
        raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
    with _sigterm_as_interrupt():
        if serial:
            for item in items:
                in_flight(1)
                res = task(*args_of(item))
                in_flight(0)
                record(res)
            return
        started_here = not ("ray" in sys.modules and sys.modules["ray"].is_initialized())
        if started_here:
            address = ray_address(address)
            if announce:  # importing and starting Ray take seconds: say so first
                announce(f"starting Ray … ({'local' if address == 'local' else address})")
        import ray

        if started_here:
            _ray_init(ray, address)
        try:
            with _sigterm_as_interrupt():  # again: ray.init installs its own SIGTERM handler
                check_feasible(ray, resources, local=started_here and address == "local",
                               autoscaler=autoscaler, wait_s=node_wait_s)
                _loop(ray, items, task, args_of, resources, record, max_in_flight, lost, in_flight)
        finally:
            if started_here:
                ray.shutdown()


def _loop(ray, items, task, args_of, resources, record, max_in_flight, lost, in_flight) -> None:
    remote = ray.remote(task).options(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus,
                                      max_retries=3, retry_exceptions=False)
    if not max_in_flight:
        max_in_flight = resources.max_in_flight or _auto_in_flight(ray, resources)
    pending: dict = {}
    queue = iter(items)  # items may be a generator over a large grid: taken as needed
    nxt = next(queue, _END)
    stop: StudyStopped | None = None
    deadline = 0.0
    try:
        while pending or (nxt is not _END and stop is None):
            while nxt is not _END and stop is None and len(pending) < max_in_flight:
                pending[remote.remote(*args_of(nxt))] = nxt
                nxt = next(queue, _END)
            in_flight(len(pending))
            if stop is not None and time.monotonic() > deadline:
                break
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
                try:
                    record(res)
                except StudyStopped as e:
                    if stop is None:
                        stop, deadline = e, time.monotonic() + STOP_WAIT_S
                        log.warning("%s; submitting nothing more, waiting up to %.0f s for the %d "
                                    "runs in flight", e, STOP_WAIT_S, len(pending))
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    if stop is not None:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise stop


class _sigterm_as_interrupt:
    """Within: SIGTERM raises `Terminated` (a KeyboardInterrupt) in the main thread; the
    previous handler is restored on leaving. Elsewhere than the main thread: nothing."""

    def __enter__(self):
        self.prev = None
        if threading.current_thread() is threading.main_thread():
            self.prev = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise Terminated()

    def __exit__(self, *exc):
        if self.prev is not None:
            signal.signal(signal.SIGTERM, self.prev)


def _ray_init(ray, address: str) -> None:
    """Connect to ``address``, quietly: Ray logs at WARNING and the workers' output stays in
    Ray's session logs (``log_to_driver=False``: no worker lines interleaved with the progress
    bar, none of the ANSI-coloured log-deduplication notices; each run stores its own error).
    "local": a fresh Ray of this machine that listens on 127.0.0.1 only (its node address, and
    so the GCS, raylet, workers and agents), no dashboard, and without token authentication
    (RAY_AUTH_MODE=disabled unless the environment sets it: the cluster lives in this machine
    and this process; a cluster joined by address keeps its own setting)."""
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                  configure_logging=True)
    if address != "local":
        ray.init(address=address, **kwargs)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Ray resolves a node address of 127.0.0.1 to the machine's outward address unless it
    # believes clusters are off (as on macOS and Windows): say so while this Ray starts.
    from ray._private import ray_constants
    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address="local", _node_ip_address="127.0.0.1", dashboard_host="127.0.0.1", **kwargs)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def has_autoscaler(autoscaler: bool | None = None) -> bool:
    """Whether the cluster is assumed to grow: ``autoscaler`` if given, else STUDY_AUTOSCALER
    (1/true/yes), else whether `BOOTSTRAP_CONFIG` exists (this is a `ray up` head)."""
    if autoscaler is not None:
        return autoscaler
    env = os.environ.get("STUDY_AUTOSCALER", "").strip().lower()
    if env:
        return env in ("1", "true", "yes")
    return os.path.exists(os.path.expanduser(BOOTSTRAP_CONFIG))


def _plural(n: float, what: str) -> str:
    return f"{n:g} {what}{'' if n == 1 else 's'}"


def infeasible(nodes: list[dict], num_cpus: float, num_gpus: float) -> str:
    """Why no node of ``nodes`` (their Ray resources) can hold one run; "" if one can."""
    if any(r.get("CPU", 0) >= num_cpus and r.get("GPU", 0) >= num_gpus for r in nodes):
        return ""
    asks = " and ".join(_plural(n, w) for n, w in ((num_cpus, "CPU"), (num_gpus, "GPU")) if n)
    most_cpu = max((r.get("CPU", 0) for r in nodes), default=0)
    most_gpu = max((r.get("GPU", 0) for r in nodes), default=0)
    if not nodes:
        has = "the cluster has no node"
    elif num_cpus > most_cpu and num_gpus > most_gpu:
        has = f"the largest node has {_plural(most_cpu, 'CPU')} and {_plural(most_gpu, 'GPU')}"
    elif num_cpus > most_cpu:
        has = f"the largest node has {_plural(most_cpu, 'CPU')}"
    elif num_gpus > most_gpu:
        has = f"the largest node has {_plural(most_gpu, 'GPU')}"
    else:
        has = "no node has both: " + ", ".join(
            f"{_plural(r.get('CPU', 0), 'CPU')} + {_plural(r.get('GPU', 0), 'GPU')}" for r in nodes)
    return f"each run asks for {asks}; {has}"


def check_feasible(ray, resources: Resources, *, local: bool = False, autoscaler: bool | None = None,
                   wait_s: float | None = None) -> None:
    """Raise ClusterError when no live node can ever hold one run: at once on a fixed
    cluster; with an autoscaler (`has_autoscaler`; never for a ``local`` Ray) after a
    warning and up to ``wait_s`` seconds of waiting for such a node."""
    def why() -> str:
        return infeasible([n["Resources"] for n in ray.nodes() if n.get("Alive")],
                          resources.num_cpus, resources.num_gpus)
    reason = why()
    if not reason:
        return
    fix = "lower [resources] num_cpus / num_gpus in the study file, or use a cluster with such nodes"
    if local or not has_autoscaler(autoscaler):
        raise ClusterError(f"{reason}, and this cluster does not grow (no autoscaler): nothing was "
                           f"run; {fix}")
    wait_s = NODE_WAIT_S if wait_s is None else wait_s
    log.warning("%s; waiting up to %.0f s for the autoscaler to add a node that can", reason, wait_s)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        reason = why()
        if not reason:
            return
    raise ClusterError(f"{reason}, and the autoscaler added no node that can within {wait_s:.0f} s: "
                       f"nothing was run; {fix} (or wait longer: --node-wait)")


def _auto_in_flight(ray, res: Resources) -> int:
    """Twice the number of tasks the cluster can run at once (at least 2)."""
    cluster = ray.cluster_resources()
    slots = []
    if res.num_cpus:
        slots.append(cluster.get("CPU", 1) / res.num_cpus)
    if res.num_gpus:
        slots.append(cluster.get("GPU", 0) / res.num_gpus)
    return max(2, int(2 * min(slots))) if slots else 8
