"""Run a nogil numba kernel over index ranges on a few threads.

The kernels are compiled serial (``nogil=True``) and split over threads
here: ``parallel=True`` compiles several times slower, and compile time is
paid on every fresh install. ``ANALYSIS_THREADS`` sets the thread count
(default: the CPUs this process may use).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable


def n_threads() -> int:
    """Threads to use: ``ANALYSIS_THREADS`` or the CPUs available to this process."""
    env = os.environ.get("ANALYSIS_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def ranges(n_items: int, n_parts: int) -> list[tuple[int, int]]:
    """``n_parts`` contiguous, near-equal ranges covering ``0..n_items`` (empty ones dropped)."""
    n_parts = max(1, min(n_parts, n_items))
    bounds = [n_items * p // n_parts for p in range(n_parts + 1)]
    return [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]


def run_ranges(fn: Callable[[int, int], object], n_items: int, per_thread: int = 4) -> list:
    """``fn(lo, hi)`` over ranges of ``0..n_items`` (``per_thread`` ranges a thread), results in order."""
    threads = n_threads()
    parts = ranges(n_items, threads * per_thread)
    if threads == 1 or len(parts) <= 1:
        return [fn(lo, hi) for lo, hi in parts]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda r: fn(*r), parts))
