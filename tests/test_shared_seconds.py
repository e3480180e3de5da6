"""Per-measure seconds are honest for shared work: a cached computation is charged in
equal parts to the measures that asked for it (not to the first), nested shared work to
its own users, and a failed computation is not rerun for each sibling."""

from __future__ import annotations

import time

import pytest
import torch

from study.measures.compute import compute
from study.measures.context import MeasureContext
from study.measures.registry import Measure, Undefined


def _ctx():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    return MeasureContext(model, torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))


def _busy(seconds):
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        pass


def test_shared_work_is_split_among_its_users():
    calls = []

    def shared(ctx):      # 0.4 s, of which 0.1 s nested work used by "c" too
        def inner():
            _busy(0.1)
            return 1
        calls.append("shared")
        ctx.cached("inner", inner)
        _busy(0.3)
        return 2

    def a(ctx):
        _busy(0.05)
        return ctx.cached("shared", lambda: shared(ctx))

    def b(ctx):
        _busy(0.1)
        return ctx.cached("shared", lambda: shared(ctx))

    def c(ctx):
        return ctx.cached("inner", lambda: 0)

    ms = [Measure(n, "toy", f, "none") for n, f in (("a", a), ("b", b), ("c", c))]
    res = compute(_ctx(), ms)
    assert calls == ["shared"]
    s = res.seconds
    # a: 0.05 own + 0.3/2; b: 0.1 + 0.3/2; c: 0; "inner" (0.1) split among a, c
    want = {"a": 0.05 + 0.15 + 0.05, "b": 0.1 + 0.15, "c": 0.05}
    for n, w in want.items():
        assert s[n] == pytest.approx(w, abs=0.03), (n, s)
    assert sum(s.values()) == pytest.approx(0.55, abs=0.04)


def test_a_failed_shared_computation_is_not_rerun():
    calls = []

    def failing(ctx):
        calls.append(1)
        raise Undefined("search failed")

    ms = [Measure(n, "toy", lambda ctx: ctx.cached("k", lambda: failing(ctx)), "none")
          for n in ("x", "y", "z")]
    res = compute(_ctx(), ms)
    assert calls == [1]
    assert res.reasons == {n: "search failed" for n in ("x", "y", "z")}
