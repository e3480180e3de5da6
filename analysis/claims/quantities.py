"""What a claim reads from the runs table: settings, quantities, row filters, regimes and axes.

- A *setting* (``lr``, ``batch_size``, ``optimizer``, ``label_noise``, ``depth``, ``dim`` …) is
  the ``hp.<name>`` column where the row has one, else the plain column (``dataset``, ``model``,
  ``study``), else the value in the row's ``config`` (JSON text or a decoded struct; sections
  ``train``, ``data``, ``model_options``, ``hp``, in that order). Studies stacked together: one
  study's axis is another's fixed setting, so a null ``hp.<name>`` falls back to the config.
- A *quantity* is a derived quantity of :data:`DERIVED`, an outcome or column of the row
  (``gap``, ``test_acc``, ``train_acc``, ``n_train``, ``n_test``, ``final_lr``), a numeric setting,
  or a measure (``measure.<name>``); NaN where undefined.
- ``binary_task``: the row's ``data.binary`` setting is true, or its dataset has two classes
  (:data:`BINARY_DATASETS`).
"""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl

from study.schema import hp_col, is_hp, measure_col, name_of

from ..table import codes
from .catalogue import Condition

OUTCOME_COLS = ("gap", "test_acc", "train_acc", "n_train", "n_test", "final_lr")
SETTINGS = ("lr", "batch_size", "width", "depth", "label_noise", "train_size", "optimizer", "bias",
            "lr_schedule", "weight_decay", "dataset", "model", "dim", "binary")
BINARY_DATASETS = ("xor",)
CONFIG_SECTIONS = ("train", "data", "model_options", "hp")


class NotTestable(Exception):
    """The statistic cannot be computed on these rows; the message says what it needs."""


def setting(df: pl.DataFrame, name: str) -> list:
    """Each row's value of the setting ``name`` (module docstring), None where unknown."""
    if name in df.columns and name in ("dataset", "model", "study"):
        return df[name].to_list()
    hp = df[hp_col(name)].to_list() if hp_col(name) in df.columns else [None] * df.height
    if "config" not in df.columns or all(v is not None for v in hp):
        return hp
    out = []
    for given, text in zip(hp, df["config"].to_list()):
        if given is not None:
            out.append(given)
            continue
        v = None
        try:
            cfg = text if isinstance(text, dict) else json.loads(text) if text else {}
        except (TypeError, ValueError):
            cfg = {}
        for sec in CONFIG_SECTIONS:
            # a struct holds every row's keys, null where this row lacks one
            if isinstance(cfg.get(sec), dict) and cfg[sec].get(name) is not None:
                v = cfg[sec][name]
                break
        out.append(v)
    return out


def _floats(vals: list) -> np.ndarray:
    out = np.full(len(vals), np.nan)
    for i, v in enumerate(vals):
        if isinstance(v, (bool, int, float, np.integer, np.floating)):
            out[i] = float(v)
    return out


def measure(df: pl.DataFrame, name: str) -> np.ndarray:
    """The measure column ``name`` as float64; NotTestable if absent or never finite."""
    col = measure_col(name)
    if col not in df.columns:
        raise NotTestable(f"needs measure {name}")
    x = df[col].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
    if not np.isfinite(x).any():
        raise NotTestable(f"needs measure {name} (no finite value)")
    return x


def _setting_num(df: pl.DataFrame, name: str) -> np.ndarray:
    x = _floats(setting(df, name))
    if not np.isfinite(x).any():
        raise NotTestable(f"needs the setting {name} of the runs")
    return x


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.nan)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, 1.0), np.nan)


def _binary_task(df: pl.DataFrame) -> np.ndarray:
    flag = setting(df, "binary")
    ds = setting(df, "dataset") if "dataset" in df.columns else [None] * df.height
    return np.array([1.0 if (f is True or str(d).lower() in BINARY_DATASETS) else 0.0 for f, d in zip(flag, ds)])


DERIVED = {
    "lr/√batch_size": (lambda df: _setting_num(df, "lr") / np.sqrt(_setting_num(df, "batch_size")), []),
    "lr·hessian_fro/√batch_size": (lambda df: _setting_num(df, "lr") * measure(df, "hessian_fro")
                                   / np.sqrt(_setting_num(df, "batch_size")), ["hessian_fro"]),
    "fisher_trace/hessian_trace": (lambda df: _ratio(measure(df, "fisher_trace"), measure(df, "hessian_trace")),
                                   ["fisher_trace", "hessian_trace"]),
    "log hessian_max_eig": (lambda df: _log(measure(df, "hessian_max_eig")), ["hessian_max_eig"]),
    "binary_task": (_binary_task, []),
}


def quantity(df: pl.DataFrame, name: str) -> np.ndarray:
    """The values of ``name`` on each row as float64 (NaN where undefined)."""
    if name in DERIVED:
        return DERIVED[name][0](df)
    if name in OUTCOME_COLS:
        if name not in df.columns:
            raise NotTestable(f"needs the column {name}")
        return df[name].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
    if name in SETTINGS:
        return _setting_num(df, name)
    return measure(df, name)


def measures_of(name: str) -> list[str]:
    """The measure names a quantity reads."""
    if name in DERIVED:
        return list(DERIVED[name][1])
    if name in OUTCOME_COLS or name in SETTINGS:
        return []
    return [name]


def same(v, want) -> bool:
    """Whether the setting value ``v`` is ``want`` (text case-insensitively, numbers to 1e-9)."""
    if v is None:
        return False
    if isinstance(want, str) or isinstance(v, str):
        return str(v).lower() == str(want).lower()
    try:
        return math.isclose(float(v), float(want), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return False


def _shown(v) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def select(df: pl.DataFrame, where) -> pl.DataFrame:
    """The rows whose settings match every ``(name, value)`` of ``where``; NotTestable naming the
    first one no row meets."""
    for name, want in where:
        vals = setting(df, name)
        if all(v is None for v in vals):
            raise NotTestable(f"needs the setting {name} of the runs")
        keep = pl.Series([same(v, want) for v in vals], dtype=pl.Boolean)
        if not keep.any():
            present = sorted({_shown(v) for v in vals if v is not None})
            raise NotTestable(f"needs runs with {name} = {_shown(want)} (the runs have {', '.join(present)})")
        df = df.filter(keep)
    return df


_OPS = {">=": np.greater_equal, ">": np.greater, "<": np.less, "<=": np.less_equal}


def _meets(df: pl.DataFrame, c: Condition) -> np.ndarray:
    if c.op == "==" and isinstance(c.value, str):
        return np.array([same(v, c.value) for v in setting(df, c.quantity)], dtype=bool)
    try:
        x = quantity(df, c.quantity)
        y = quantity(df, c.other) if c.other else np.full(df.height, float(c.value))
    except NotTestable:
        return np.zeros(df.height, dtype=bool)
    with np.errstate(invalid="ignore"):
        return (x == y) if c.op == "==" else _OPS[c.op](x, y)


def in_regime(df: pl.DataFrame, regime: tuple[Condition, ...]) -> pl.DataFrame:
    """The rows meeting every condition; NotTestable naming the conditions no row meets (or, when
    each is met by some row, that none meets all)."""
    if not regime:
        return df
    met = [_meets(df, c) for c in regime]
    fails = [c.words for c, m in zip(regime, met) if not m.any()]
    if fails:
        raise NotTestable("outside the paper's regime: no run has " + ", ".join(fails))
    every = np.logical_and.reduce(met)
    if not every.any():
        raise NotTestable("outside the paper's regime: no run has all of " + ", ".join(c.words for c in regime))
    return df.filter(pl.Series(every))


def varies(df: pl.DataFrame, axis: str) -> bool:
    """Whether ``hp.<axis>`` takes two or more values in ``df``."""
    return hp_col(axis) in df.columns and df[hp_col(axis)].n_unique() >= 2


def need_axes(df: pl.DataFrame, axes) -> None:
    """NotTestable unless every axis of ``axes`` varies."""
    for a in axes:
        if not varies(df, a):
            raise NotTestable(f"needs axis {a}")


def axis_codes(df: pl.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Axis codes ``(n, K)`` of the ``hp.*`` columns, their names, and key codes ``(n, E)`` (seed)."""
    axes = [c for c in df.columns if is_hp(c)]
    ax = np.column_stack([codes(df[c]) for c in axes]) if axes else np.zeros((df.height, 0), np.int64)
    keys = np.column_stack([codes(df["seed"])]) if "seed" in df.columns else np.zeros((df.height, 0), np.int64)
    return ax, [name_of(c) for c in axes], keys


def value_codes(x: np.ndarray, rel_tol: float = 1e-6) -> np.ndarray:
    """Integer codes of the finite values of ``x``, values within ``rel_tol`` of their neighbour
    sharing a code (-1 where not finite)."""
    out = np.full(len(x), -1, dtype=np.int64)
    idx = np.flatnonzero(np.isfinite(x))
    if not len(idx):
        return out
    order = idx[np.argsort(x[idx], kind="stable")]
    xs = x[order]
    new = np.r_[True, ~np.isclose(xs[1:], xs[:-1], rtol=rel_tol, atol=0.0)]
    out[order] = np.cumsum(new) - 1
    return out
