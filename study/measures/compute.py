"""Run a selection of measures on one context: values, seconds and NaN reasons."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch

from .context import MeasureContext
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compute(ctx: MeasureContext, measures: list[Measure], progress=None) -> MeasureResult:
    """Each measure in turn; a failure gives NaN and a logged reason, never an exception."""
    res = MeasureResult()
    for m in measures:
        value, reason = math.nan, None
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
        _sync(ctx.device)
        res.seconds[m.name] = time.perf_counter() - t0
        res.values[m.name] = value
        if reason is not None:
            res.reasons[m.name] = reason
            log.info("measure.%s is NaN: %s", m.name, reason)
        if progress is not None:
            progress(m.name)
    res.artifacts = dict(ctx.artifacts)
    res.methods = dict(ctx.methods)
    return res
