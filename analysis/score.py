"""`analysis score PATH.py:FUNCTION RUNS`: a user's own measure on every stored network, ranked
with the study's measures (the PGDL workflow, offline).

The function is ``fn(model, (x, y), init) -> float``: ``model`` the trained network rebuilt
from its checkpoint (eval mode), ``(x, y)`` the run's training data as the measures see it
(the ``[measures] subset`` included), ``init`` its initial state dict. It runs on every stored
ok network with a checkpoint, fanned out like `study measure` (`study.jobs.score`);
a failure on one network gives NaN and its reason. The values become the column
``measure.<NAME>`` of the runs table in memory (nothing is written to the rows), ranked with
the rest by `analysis.table.rank_table`.

Computing needs torch and the study package: they are imported inside `score` only, so that
importing this module, like the rest of `analysis`, imports neither torch nor Ray.
"""

from __future__ import annotations

import math
import os

import polars as pl

from study.schema import measure_col

from .load import RunsError, load_runs


def study_location(runs: str) -> tuple[str, str]:
    """(out, study name) of a runs folder ``OUT/<study>/runs``, a study folder ``OUT/<study>`` or
    its ``runs.parquet``, as a path or a URI (whose ``?options`` are kept on ``out``)."""
    base, _, query = str(runs).partition("?")
    if "://" not in base:
        base = os.path.abspath(os.path.expanduser(base))
    base = base.rstrip("/")
    for tail in ("/runs.parquet", "/runs"):
        if base.endswith(tail):
            base = base[:-len(tail)]
            break
    if base.endswith(".parquet"):
        raise RunsError(f"{runs}: score computes from the study's checkpoints: give its study folder "
                        "(OUT/<study>), its runs/ folder or its runs.parquet, not another Parquet file")
    out, _, name = base.rpartition("/")
    if not name or not out:
        raise RunsError(f"{runs}: not a study's runs (OUT/<study>/runs, OUT/<study> or its runs.parquet)")
    return out + (f"?{query}" if query else ""), name


def score(target: str, runs: str, *, name: str | None = None, executor=None, timeout: float | None = None,
          skip_corrupt: bool = False) -> tuple[pl.DataFrame, dict[str, str], list[str]]:
    """The runs table of ``runs`` with the column ``measure.<name>`` (default: the function's
    name) of the user's measure ``target`` (``PATH.py:FUNCTION``), computed as ``executor``
    (a `study.executor.Executor`; None: the default, local Ray) says, each call limited to
    ``timeout`` seconds (None: `study.jobs.score.TIMEOUT_S`; 0: no limit); ``skip_corrupt``:
    unreadable run files left out. Also run_id → reason of each NaN it gave, and the run ids
    without a checkpoint (NaN). Raises `study.jobs.score.ScoreError` (a ValueError) for a
    missing file or function, or a name that a measure of the study or the registry has;
    RunsError for runs that cannot be read (a `study.storage.StorageError` made one line)."""
    from study.executor import Executor
    from study.jobs.score import TIMEOUT_S, ScoreError, load_function, score_runs
    from study.measures import REGISTRY
    from study.storage import StorageError

    fn = load_function(target)
    name = name or getattr(fn, "__name__", None) or target.rpartition(":")[2]
    df = load_runs(runs, include_unconverged=True, include_failed=True,
                   on_corrupt="skip" if skip_corrupt else "error")
    col = measure_col(name)
    if name in REGISTRY or col in df.columns:
        raise ScoreError(f"{target}: {name!r} is the name of a {'built-in ' if name in REGISTRY else ''}"
                         f"measure ({col}{' is a column of ' + str(runs) if col in df.columns else ''}); "
                         f"name yours apart with --name (e.g. --name my_{name})")
    out, study = study_location(runs)
    try:
        s = score_runs(out, study, target, executor or Executor(),
                       timeout=TIMEOUT_S if timeout is None else timeout, skip_corrupt=skip_corrupt)
    except StorageError as e:
        raise RunsError(str(e).splitlines()[0]) from None
    reasons = {**s.reasons, **{rid: "no checkpoint (deleted, or stored with keep_networks = false or "
                                    "before checkpoints existed)" for rid in s.no_checkpoint}}
    ids = df["run_id"].to_list()
    df = df.with_columns(pl.Series(col, [s.values.get(i, math.nan) for i in ids], dtype=pl.Float64))
    return df, reasons, s.no_checkpoint
