"""Measures that are one measure twice: equal values on every analysed row (``log_prod_spec`` and
``log_prod_spec_op`` on MLPs). The report shows the first of each such group (in ranking order) and
names the others beside it ("= log_prod_spec") instead of repeating its figures."""

from __future__ import annotations

import numpy as np
import polars as pl

from study.schema import measure_col

RTOL = 1e-9  # equal up to rounding: two routes to one number (an exact and an iterative spectral norm)


def _values(pop: pl.DataFrame, measure: str) -> np.ndarray | None:
    col = measure if measure in pop.columns else measure_col(measure)
    return pop[col].cast(pl.Float64).to_numpy() if col in pop.columns else None


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two value columns are equal on every row: the same rows non-finite (NaN or ±inf alike), the
    finite ones within `RTOL`, and at least one finite."""
    fa, fb = np.isfinite(a), np.isfinite(b)
    if not fa.any() or not np.array_equal(fa, fb):
        return False
    return bool(np.allclose(a[fa], b[fb], rtol=RTOL, atol=0.0))


def duplicates(pop: pl.DataFrame, measures: list[str]) -> dict[str, str]:
    """Each measure of ``measures`` (in that order) whose values on ``pop`` equal an earlier one's → that
    earlier measure (the first of its group); measures not folded are absent."""
    kept: list[tuple[str, np.ndarray]] = []
    out: dict[str, str] = {}
    for m in measures:
        v = _values(pop, m)
        if v is None:
            continue
        first = next((k for k, kv in kept if same(kv, v)), None)
        if first is None:
            kept.append((m, v))
        else:
            out[m] = first
    return out


def folded_into(dups: dict[str, str]) -> dict[str, list[str]]:
    """The inverse of `duplicates`: kept measure → the measures folded into it, in order."""
    out: dict[str, list[str]] = {}
    for m, first in dups.items():
        out.setdefault(first, []).append(m)
    return out
