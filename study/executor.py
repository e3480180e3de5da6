"""How a fan-out runs: one `Executor` (built once, from the command line) and one `fan_out`.

`fan_out` calls a task on every item, in this process one at a time or as Ray tasks, a bounded
number in flight, taken as they finish (`ray.wait`), and hands each task's small record to the
job's ``record``; it knows nothing of runs (`study.jobs` gives it the items, the task and what to
count). For every job it starts Ray (`_ray_init`), checks before submitting anything that some
node can hold one task (`check_feasible`: on a fixed cluster a task no node can hold is
`ClusterError`, exit 2; with an autoscaler a warning and a wait of up to ``node_wait_s``), handles
SIGTERM like Ctrl-C (the tasks in flight cancelled, the fan-out ``interrupted``; a local Ray
started here is shut down with its workers instead, nothing force-cancelled), shows the
progress bar (the job's counts and the tasks ``in_flight``: submitted and not finished), and
stops cleanly: ``record`` raising `StudyStopped` (the output refused a write, the lease was lost)
submits nothing more, the tasks in flight get up to `STOP_WAIT_S` to finish (their records are
taken), the rest are cancelled, and the fan-out ends ``stopped``, saying why. A task lost beyond
Ray's retries gives ``record(lost(item, error text))``. Tasks write their own results, so what
finished is kept however the driver ends.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tqdm import tqdm

from .errors import error_text
from .spec import Resources, StudyError

NODE_WAIT_S = 600.0  # with an autoscaler: how long to wait for a node that can hold one task
STOP_WAIT_S = 60.0   # after a stop: how long to wait for the tasks in flight
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # written by `ray up` on the head for its autoscaler

log = logging.getLogger("study.executor")


class ClusterError(StudyError):
    """The cluster can never run one task of the study (fix: its [resources]); the message
    says why."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


class StudyStopped(RuntimeError):
    """Raised by a job's ``record``: submit nothing more (the output refused a write, or the
    lease was lost); the message says why."""


@dataclass(frozen=True)
class Executor:
    """How a fan-out runs, each field the command line's flag of that name (``--node-wait``,
    ``--no-progress``; ``announce``: not ``-q``). None: ``address`` RAY_ADDRESS, else a fresh
    local Ray; ``max_in_flight`` ``[resources] max_in_flight``, else automatic; ``autoscaler``
    `has_autoscaler`; ``node_wait_s`` `NODE_WAIT_S`."""
    address: str | None = None
    serial: bool = False
    max_in_flight: int | None = None
    autoscaler: bool | None = None
    node_wait_s: float | None = None
    progress: bool = True
    announce: bool = True  # "starting Ray …" on stderr before Ray starts

    def __post_init__(self):
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {self.max_in_flight}")

    @property
    def local(self) -> bool:
        """Whether the tasks run on this machine (serial, or a fresh local Ray)."""
        return self.serial or ray_address(self.address) == "local"


@dataclass(kw_only=True)
class Ended:
    """How a fan-out ended; each job's summary extends it with its own counts."""
    seconds: float = 0.0
    interrupted: bool = False  # by Ctrl-C or SIGTERM
    signal: str = ""           # SIGINT or SIGTERM, when interrupted
    stopped: str = ""          # why the job stopped submitting (`StudyStopped`), when it did


@dataclass(frozen=True)
class Bar:
    """What the progress bar counts: ``total`` items of which ``initial`` were done before."""
    desc: str
    total: int
    unit: str = "net"
    initial: int = 0


def fan_out(items: Iterable, task: Callable, args_of: Callable, resources: Resources,
            record: Callable, executor: Executor = Executor(), *, bar: Bar | None = None,
            ended: Ended | None = None, lost: Callable | None = None) -> Ended:
    """Call ``task(*args_of(item))`` for every item (a generator is taken as needed) and hand
    each result to ``record`` as it finishes, as ``executor`` says (module docstring); returns
    ``ended`` (a fresh `Ended` if None) with how it ended and the seconds it took.

    ``record(result)`` returns the job's counts for the bar (a dict, or None) and may raise
    `StudyStopped`. ``lost(item, text)``: the record of a task lost beyond Ray's retries (None:
    the error is raised). ``bar``: the progress bar (None: none). Raises `ClusterError` before
    submitting anything when no node can ever hold one task."""
    ended, t0, b = ended if ended is not None else Ended(), time.perf_counter(), bar or Bar("", 0)
    shown = tqdm(total=b.total, initial=b.initial, unit=b.unit, desc=b.desc, file=sys.stderr,
                 disable=bar is None or not executor.progress, dynamic_ncols=True, mininterval=0.5)
    counts = {"in_flight": 0}
    _sigterm_as_interrupt.received = False

    def flying(n: int) -> None:
        counts["in_flight"] = n
        shown.set_postfix(counts, refresh=True)

    def take(res) -> None:
        counts.update(record(res) or {})
        shown.set_postfix(counts, refresh=False)
        shown.update(1)

    try:
        with _sigterm_as_interrupt():
            if executor.serial:
                with _threads_of(resources):
                    for item in items:
                        flying(1)
                        res = task(*args_of(item))
                        flying(0)
                        take(res)
            else:
                _on_ray(items, task, args_of, resources, take, executor, lost, flying,
                        (lambda line: shown.write(line, file=sys.stderr)) if executor.announce else None)
    except KeyboardInterrupt as e:  # Ray may re-raise our Terminated as a plain KeyboardInterrupt
        sigterm = isinstance(e, Terminated) or _sigterm_as_interrupt.received
        ended.interrupted, ended.signal = True, "SIGTERM" if sigterm else "SIGINT"
    except StudyStopped as e:
        ended.stopped = str(e)
    finally:
        shown.close()
        ended.seconds = time.perf_counter() - t0
    return ended


def _on_ray(items, task, args_of, resources: Resources, take, executor: Executor, lost, flying,
            say) -> None:
    started_here = not ("ray" in sys.modules and sys.modules["ray"].is_initialized())
    address = ray_address(executor.address)
    if started_here and say:  # importing and starting Ray take seconds: say so first
        say(f"starting Ray … ({'local' if address == 'local' else address})")
    import ray

    try:
        if started_here:
            with _sigterm_deferred(ray) as deferred:
                _ray_init(ray, address)
            if deferred.received:
                raise Terminated()
        with _sigterm_as_interrupt():  # again: ray.init installs its own SIGTERM handler
            check_feasible(ray, resources, local=started_here and address == "local",
                           autoscaler=executor.autoscaler, wait_s=executor.node_wait_s)
            most = executor.max_in_flight or resources.max_in_flight or _auto_in_flight(ray, resources)
            # a local Ray started here dies with it (ray.shutdown below): no task is cancelled one
            # by one there, so none can be force-cancelled while its result arrives
            _loop(ray, items, task, args_of, resources, take, most, lost, flying,
                  cancel=not (started_here and address == "local"))
    finally:
        if started_here:
            ray.shutdown()


_END = object()


def _loop(ray, items, task, args_of, resources: Resources, take, most: int, lost, flying,
          cancel: bool = True) -> None:
    remote = ray.remote(task).options(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus,
                                      max_retries=3, retry_exceptions=False)
    pending: dict = {}
    queue = iter(items)  # items may be a generator over a large grid: taken as needed
    nxt = next(queue, _END)
    stop: StudyStopped | None = None
    deadline = 0.0
    try:
        while pending or (nxt is not _END and stop is None):
            while nxt is not _END and stop is None and len(pending) < most:
                pending[remote.remote(*args_of(nxt))] = nxt
                nxt = next(queue, _END)
            flying(len(pending))
            if stop is not None and time.monotonic() > deadline:
                break
            done, _ = ray.wait(list(pending), num_returns=1, timeout=5.0)
            for ref in done:
                item = pending.pop(ref)
                flying(len(pending))
                try:
                    res = ray.get(ref)
                except ray.exceptions.RayError as e:
                    if lost is None:
                        raise
                    res = lost(item, error_text(e))
                try:
                    take(res)
                except StudyStopped as e:
                    if stop is None:
                        stop, deadline = e, time.monotonic() + STOP_WAIT_S
                        log.warning("%s; submitting nothing more, waiting up to %.0f s for the %d "
                                    "tasks in flight", e, STOP_WAIT_S, len(pending))
    except KeyboardInterrupt:
        if cancel:
            _cancel(ray, pending)
        raise
    if stop is not None:
        if cancel:
            _cancel(ray, pending)
        raise stop


def _cancel(ray, pending: dict) -> None:
    """Cancel the tasks still running, their workers killed; those already finished are left
    alone (force-cancelling a task whose result is arriving can abort Ray's core worker)."""
    running = list(pending)
    if running:
        _, running = ray.wait(running, num_returns=len(running), timeout=0)
    for ref in running:
        ray.cancel(ref, force=True)


class _threads_of:
    """Within: torch's intra-op threads as a Ray task of ``resources`` gets them (Ray sets
    OMP_NUM_THREADS to the task's CPUs, at least 1), so that ``--serial`` and Ray compute with
    the same thread count and give bit-identical values; restored on leaving. Nothing when
    torch is not imported (the jobs import it before fanning out) or OMP_NUM_THREADS is set
    (the user's choice, which Ray's workers inherit too)."""

    def __init__(self, resources: Resources):
        self.n = max(1, int(resources.num_cpus))
        self.torch = sys.modules.get("torch") if "OMP_NUM_THREADS" not in os.environ else None

    def __enter__(self):
        if self.torch is not None:
            self.prev = self.torch.get_num_threads()
            self.torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        if self.torch is not None:
            self.torch.set_num_threads(self.prev)


class _sigterm_as_interrupt:
    """Within: SIGTERM raises `Terminated` (a KeyboardInterrupt) in the main thread, and
    ``received`` says it came (Ray's wait turns an exception raised in a signal handler into a
    plain KeyboardInterrupt); the previous handler is restored on leaving. Elsewhere than the
    main thread: nothing."""
    received = False

    def __enter__(self):
        self.prev = None
        if threading.current_thread() is threading.main_thread():
            self.prev = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        _sigterm_as_interrupt.received = True
        raise Terminated()

    def __exit__(self, *exc):
        if self.prev is not None:
            signal.signal(signal.SIGTERM, self.prev)


class _sigterm_deferred:
    """Within (``ray.init``): SIGTERM only sets ``received``, and Ray does not install its own
    handler. Ray's (``sys.exit(SIGTERM)``) can run inside an at-fork hook of the processes it
    starts, where the exit is printed as an ignored exception with a traceback and the command
    goes on; raising `Terminated` there would be lost the same way. The caller raises it once
    ``ray.init`` has returned. Elsewhere than the main thread: nothing."""

    def __init__(self, ray):
        self.ray, self.received, self.prev = ray, False, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.prev = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._note)
            utils = self.ray._private.utils
            self.ray_set, utils.set_sigterm_handler = utils.set_sigterm_handler, lambda handler: None
        return self

    def _note(self, signum, frame):
        self.received = True

    def __exit__(self, *exc):
        if self.prev is not None:
            self.ray._private.utils.set_sigterm_handler = self.ray_set
            signal.signal(signal.SIGTERM, self.prev)


def ray_address(address: str | None) -> str:
    """Where the driver's Ray is: ``address``, else the cluster of a Ray job (RAY_ADDRESS), else
    ``"local"`` (a fresh local Ray, never a cluster that `ray start` happened to leave on this
    machine)."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


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
    """Raise ClusterError when no live node can ever hold one task: at once on a fixed
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
