"""`analysis score`'s job: a user's function ``(model, (x, y), init) -> float`` on every stored
ok network with a checkpoint, fanned out like `study measure`. The value comes back to the
driver; no row is written. A failure on one network gives NaN there with its reason: the
function raising (or calling ``sys.exit``), returning something that is not a number (a
string or a bool is refused, not converted), or running past ``timeout`` seconds. The function
gets copies of the data and initial weights: what it changes, no later network sees."""

from __future__ import annotations

import importlib.util
import math
import numbers
import os
import signal
import threading
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from ..errors import error_text
from ..executor import Bar, Ended, Executor, fan_out
from ..measures import measure_set
from ..runner import stored_network
from ..spec import Resources, RunSpec
from ..storage import Store


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
    except SystemExit as e:
        raise ScoreError(f"{path} called sys.exit({e.code!r}) while being imported: a measure file "
                         "defines functions and exits nothing") from None
    except Exception as e:
        raise ScoreError(f"{path} failed to import: {type(e).__name__}: {e}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        have = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                      and getattr(v, "__module__", None) == module.__name__)
        raise ScoreError(f"{path} has no function {name!r}; functions: {', '.join(have) or 'none'}")
    return fn


@dataclass(frozen=True)
class Scored:
    """What a score task returns: the value, or NaN and why."""
    run_id: str
    value: float
    reason: str = ""


TIMEOUT_S = 600.0  # default per-network limit of the user's function (`--timeout`)


class ScoreTimeout(Exception):
    """The user's function ran past its time limit on one network."""


def as_number(value) -> float:
    """The user's return value as a float: a real number (Python, NumPy) or a one-element
    tensor or array; TypeError for anything else (a string, a bool, None, a container)."""
    if hasattr(value, "numel") and hasattr(value, "item"):  # a torch tensor
        if value.numel() != 1:
            raise TypeError(f"returned a tensor of {value.numel()} elements, not one number")
        value = value.item()
    elif hasattr(value, "size") and hasattr(value, "item") and not isinstance(value, numbers.Number):
        if value.size != 1:  # a NumPy array
            raise TypeError(f"returned an array of {value.size} elements, not one number")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"returned {type(value).__name__} {str(value)[:40]!r}, not a number")
    return float(value)


class _time_limit:
    """Within: `ScoreTimeout` raised in this (main) thread after ``seconds`` (SIGALRM); off the
    main thread, or for ``seconds`` ≤ 0, no limit."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.on = seconds > 0 and threading.current_thread() is threading.main_thread()

    def _raise(self, signum, frame):
        raise ScoreTimeout(f"ran past the time limit of {self.seconds:g} s (--timeout)")

    def __enter__(self):
        if self.on:
            self.prev = signal.signal(signal.SIGALRM, self._raise)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        if self.on:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.prev)


def score_one(run_id: str, out: str, study: str, target: str, num_gpus: float = 0,
              timeout: float = TIMEOUT_S) -> Scored:
    """The user's measure ``target`` (PATH.py:FUNCTION) on one stored network: ``fn(model,
    (x, y), init)`` with (x, y) copies of the measure set of the run (training data or its
    subset, as the measures see it) and ``init`` a copy of its initial state dict; NaN with the
    reason when the function fails, exits, runs past ``timeout`` seconds or returns no finite
    number."""
    store = Store(out, study)
    fn = load_function(target)
    try:
        config = pq.read_table(store.run_path(run_id), filesystem=store.fs, columns=["config"])["config"][0]
        spec = RunSpec.from_json(config.as_py())
        model, init, _, data, _ = stored_network(store, spec, num_gpus)
        x, y = measure_set(data.x_train, data.y_train, spec.measures.subset, spec.seed)
        # copies: the data are the worker's cached tensors, which the next network reads too
        args = (model, (x.clone(), y.clone()), {k: v.clone() for k, v in init.items()})
        with _time_limit(timeout):
            value = as_number(fn(*args))
    except SystemExit as e:  # the user's sys.exit: this network's failure, not the command's end
        return Scored(run_id, math.nan, f"the function called sys.exit({e.code!r})")
    except Exception as e:  # one failing network gives NaN with the reason
        return Scored(run_id, math.nan, error_text(e, limit=-6))
    return Scored(run_id, value, "" if math.isfinite(value) else f"returned {value}, not a finite number")


@dataclass(kw_only=True)
class ScoreSummary(Ended):
    values: dict[str, float] = field(default_factory=dict)   # run_id → value
    reasons: dict[str, str] = field(default_factory=dict)    # run_id → why it is NaN
    no_checkpoint: list[str] = field(default_factory=list)   # ok rows without a checkpoint


def score_runs(out: str, study: str, target: str, executor: Executor = Executor(),
               resources: Resources = Resources(), *, timeout: float = TIMEOUT_S,
               skip_corrupt: bool = False) -> ScoreSummary:
    """The user's measure on every stored ok network with a checkpoint of ``study`` under
    ``out``, each call limited to ``timeout`` seconds; ``skip_corrupt``: unreadable run files
    left out. Ctrl-C raises KeyboardInterrupt (a part of the networks is no score)."""
    load_function(target)  # a missing file or function: one clear error before any work
    store = Store(out, study)
    ids = [r["run_id"] for r in store.ok_rows(skip_corrupt=skip_corrupt)]
    have = [i for i in ids if store.has_net(i)]
    s = ScoreSummary(no_checkpoint=[i for i in ids if i not in have])

    def record(r: Scored) -> None:
        s.values[r.run_id] = r.value
        if r.reason:
            s.reasons[r.run_id] = r.reason

    fan_out(have, score_one, lambda rid: (rid, out, study, target, resources.num_gpus, timeout), resources, record,
            executor, bar=Bar(f"{study} score", len(have)), ended=s,
            lost=lambda rid, error: Scored(rid, math.nan, error))
    if s.interrupted:
        raise KeyboardInterrupt
    return s
