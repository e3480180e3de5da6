"""Run a selection of measures on one context: values, seconds and NaN reasons; and
`compute_repeated`, the same with each stochastic measure redrawn R times."""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import dataclass, field

from .context import MeasureContext, stable_seed, sync
from .registry import Measure, Undefined

log = logging.getLogger("study.measures")

_NEED_TEXT = {"init": "the initial weights", "train_log": "the training log"}


@dataclass
class MeasureResult:
    values: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # why a value is NaN
    artifacts: dict[str, list[float]] = field(default_factory=dict)  # arrays for plots
    methods: dict[str, str] = field(default_factory=dict)  # which method, where there are several
    # with repeats R > 1 (`compute_repeated`) only: each measure's sample sd over its draws
    # (0.0 for a deterministic one), and R for each stochastic one
    sds: dict[str, float] = field(default_factory=dict)
    repeats: dict[str, int] = field(default_factory=dict)


def compute(ctx: MeasureContext, measures: list[Measure], progress=None) -> MeasureResult:
    """Each measure in turn; a failure gives NaN and a logged reason, never an exception.

    ``seconds``: each measure's own time plus an equal share of every piece of shared
    work (`MeasureContext.cached`: a Lanczos run, per-example gradients, a searched
    scale) among the measures of this selection that asked for it, whichever came
    first; the seconds sum to the selection's wall time."""
    res = MeasureResult()
    before = dict(ctx.shared_seconds)
    for m in measures:
        value, reason = math.nan, None
        ctx.current = m.name
        shared0 = sum(ctx.shared_seconds.values())
        t0 = time.perf_counter()
        have = {"init": ctx.init_params is not None, "train_log": ctx.train_log is not None}
        missing = [n for n in m.needs if not have[n]]
        if missing:
            reason = "needs " + " and ".join(_NEED_TEXT[n] for n in missing)
        else:
            try:
                value = float(m.fn(ctx))
                if not math.isfinite(value):
                    reason = f"non-finite value {value}"
            except Undefined as e:
                reason = str(e)
            except Exception as e:  # isolate: the run and the other measures go on
                reason = f"{type(e).__name__}: {e}"
                log.warning("measure %s failed", m.name, exc_info=True)
        sync(ctx.device)
        ctx.current = None
        # own time: the shared work computed meanwhile is charged below
        res.seconds[m.name] = time.perf_counter() - t0 - (sum(ctx.shared_seconds.values()) - shared0)
        res.values[m.name] = value
        if reason is not None:
            res.reasons[m.name] = reason
            log.info("measure.%s is NaN: %s", m.name, reason)
        if progress is not None:
            progress(m.name)
    _charge_shared(ctx, res, before)
    res.artifacts = dict(ctx.artifacts)
    res.methods = dict(ctx.methods)
    return res


def _charge_shared(ctx: MeasureContext, res: MeasureResult, before: dict[str, float]) -> None:
    """Add each shared computation made during this `compute` to its users' seconds, in
    equal parts (to the measures of this selection that asked for it)."""
    for key, took in ctx.shared_seconds.items():
        if key in before:
            continue
        users = [u for u in ctx.shared_users.get(key, ()) if u in res.seconds]
        if not users:   # asked for outside any measure: charge nobody
            continue
        for u in users:
            res.seconds[u] += took / len(users)


def repeat_seed(seed: int, r: int) -> int:
    """The context seed of repeat ``r``: the run seed itself for r = 0 (so one repeat gives
    exactly the values of no repeats), ``stable_seed(seed, "repeat", r)`` after."""
    return seed if r == 0 else stable_seed(seed, "repeat", r)


def compute_repeated(make_ctx, measures: list[Measure], seed: int, repeats: int = 1,
                     progress=None) -> MeasureResult:
    """`compute` with each stochastic measure (``Measure.stochastic``) drawn ``repeats`` = R
    times. ``make_ctx(s)``: a fresh `MeasureContext` with context seed ``s``. Repeat 0 computes every
    measure on ``make_ctx(seed)``; repeat r ≥ 1 the stochastic ones only, on a
    fresh context (so shared cached work, a Hessian spectrum or a searched scale, is redrawn
    too) seeded by `repeat_seed`. The value is the mean of the R draws and ``sds`` their sample
    standard deviation (ddof = 1); NaN, with the first failing repeat's reason, when any draw
    is NaN. Deterministic measures are computed once, with sd 0.0 (NaN when the value is).
    ``seconds``: summed over the repeats; artifacts and methods: repeat 0's. R = 1 is `compute`
    exactly, with no ``sds``."""
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer ≥ 1, got {repeats!r}")
    res = compute(make_ctx(repeat_seed(seed, 0)), measures, progress=progress)
    if repeats == 1:
        return res
    noisy = [m for m in measures if m.stochastic]
    draws = {m.name: [res.values[m.name]] for m in noisy}
    for r in range(1, repeats):
        more = compute(make_ctx(repeat_seed(seed, r)), noisy)
        for name, v in more.values.items():
            draws[name].append(v)
            res.seconds[name] += more.seconds[name]
            if name in more.reasons and name not in res.reasons:
                res.reasons[name] = f"repeat {r}: {more.reasons[name]}"
    for m in measures:
        v = res.values[m.name]
        if m.name not in draws:
            res.sds[m.name] = 0.0 if math.isfinite(v) else math.nan
            continue
        d = draws[m.name]
        res.repeats[m.name] = repeats
        if all(math.isfinite(x) for x in d):
            res.values[m.name] = math.fsum(d) / len(d)
            res.sds[m.name] = statistics.stdev(d)
        else:
            res.values[m.name] = res.sds[m.name] = math.nan
    return res
