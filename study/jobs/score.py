"""`analysis score`'s job: a user's function ``(model, (x, y), init) -> float`` on every stored
ok network with a checkpoint, fanned out like `study measure`. The value comes back to the
driver; no row is written. A failure on one network gives NaN there with its reason."""

from __future__ import annotations

import importlib.util
import math
import os
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


def score_one(run_id: str, out: str, study: str, target: str, num_gpus: float = 0) -> Scored:
    """The user's measure ``target`` (PATH.py:FUNCTION) on one stored network: ``fn(model,
    (x, y), init)`` with (x, y) the measure set of the run (training data or its subset, as
    the measures see it) and ``init`` its initial state dict; NaN with the reason when the
    function fails or returns nothing finite."""
    store = Store(out, study)
    fn = load_function(target)
    try:
        config = pq.read_table(store.run_path(run_id), filesystem=store.fs, columns=["config"])["config"][0]
        spec = RunSpec.from_json(config.as_py())
        model, init, _, data, _ = stored_network(store, spec, num_gpus)
        value = float(fn(model, measure_set(data.x_train, data.y_train, spec.measures.subset, spec.seed), init))
    except Exception as e:  # one failing network gives NaN with the reason
        return Scored(run_id, math.nan, error_text(e, limit=3))
    return Scored(run_id, value, "" if math.isfinite(value) else "not finite")


@dataclass(kw_only=True)
class ScoreSummary(Ended):
    values: dict[str, float] = field(default_factory=dict)   # run_id → value
    reasons: dict[str, str] = field(default_factory=dict)    # run_id → why it is NaN
    no_checkpoint: list[str] = field(default_factory=list)   # ok rows without a checkpoint


def score_runs(out: str, study: str, target: str, executor: Executor = Executor(),
               resources: Resources = Resources()) -> ScoreSummary:
    """The user's measure on every stored ok network with a checkpoint of ``study`` under
    ``out``. Ctrl-C raises KeyboardInterrupt (a part of the networks is no score)."""
    load_function(target)  # a missing file or function: one clear error before any work
    store = Store(out, study)
    ids = [r["run_id"] for r in store.ok_rows()]
    have = [i for i in ids if store.has_net(i)]
    s = ScoreSummary(no_checkpoint=[i for i in ids if i not in have])

    def record(r: Scored) -> None:
        s.values[r.run_id] = r.value
        if r.reason:
            s.reasons[r.run_id] = r.reason

    fan_out(have, score_one, lambda rid: (rid, out, study, target, resources.num_gpus), resources, record,
            executor, bar=Bar(f"{study} score", len(have)), ended=s,
            lost=lambda rid, error: Scored(rid, math.nan, error))
    if s.interrupted:
        raise KeyboardInterrupt
    return s
