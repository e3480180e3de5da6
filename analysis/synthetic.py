"""Synthetic runs tables in the row schema (DESIGN.md), for tests and benchmarks.

The grid has ``n_axes`` axes of ``n_values`` values each; run ``r`` takes
configuration ``r mod C`` (``C = n_values ** n_axes``) and seed ``r div C``,
so ``n_runs = C`` is the full grid once and other sizes give an incomplete
last seed. The gap is a sum of per-axis effects plus seed noise, rounded to
a multiple of ``1/n_test`` (ties, as real accuracies have). Measures mix
gap-tracking ones at several noise levels, sign-flipped ones,
hyperparameter-only ones (correlated with the gap across the grid, not
within it), coarsely rounded ones (many ties), pure noise and a constant.
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

from study.schema import OUTCOMES, hp_col, is_measure, measure_col

_OPTIMIZERS = ["sgd", "adam", "momentum", "rmsprop", "adagrad", "adamw", "lamb", "lion"]


def _axis_values(name: str, v: int) -> list:
    k = np.arange(v)
    table = {
        "lr": [float(x) for x in 0.1 * 0.5 ** k],
        "depth": [int(x) for x in 2 + k],
        "width": [int(x) for x in 16 * 2 ** k],
        "batch_size": [int(x) for x in 32 * 2 ** k],
        "dropout": [float(x) for x in np.linspace(0.0, 0.5, v)],
        "weight_decay": [0.0] + [float(x) for x in 1e-4 * 2 ** k[:-1]],
        "optimizer": (_OPTIMIZERS + [f"opt{j}" for j in range(len(_OPTIMIZERS), v)])[:v],
    }
    return table.get(name, [int(x) for x in k])


def axis_names(n_axes: int) -> list[str]:
    """The axis names used for ``n_axes`` axes."""
    base = ["lr", "depth", "width", "batch_size", "dropout", "weight_decay", "optimizer"]
    return (base + [f"axis{j}" for j in range(len(base), n_axes)])[:n_axes]


def synthetic_runs(n_runs: int, n_measures: int = 50, *, n_axes: int = 7, n_values: int = 3, seed: int = 0,
                   nan_frac: float = 0.0, failed_frac: float = 0.0, unconverged_frac: float = 0.0,
                   n_test: int = 10_000, dataset: str = "synthetic", study: str = "synthetic") -> pl.DataFrame:
    """A runs table of ``n_runs`` rows (module docstring).

    ``nan_frac``: fraction of NaN values in every third measure;
    ``failed_frac``: rows with ``status = "failed"`` (NaN outcomes and
    measures); ``unconverged_frac``: ok rows with ``converged = False``.
    """
    if n_runs < 1 or n_axes < 1 or n_values < 1:
        raise ValueError("n_runs, n_axes and n_values must be positive")
    rng = np.random.default_rng(seed)
    names = axis_names(n_axes)
    n_conf = n_values ** n_axes
    r = np.arange(n_runs)
    conf = r % n_conf
    run_seed = r // n_conf
    idx = np.empty((n_runs, n_axes), dtype=np.int64)
    rest = conf.copy()
    for k in range(n_axes - 1, -1, -1):
        idx[:, k] = rest % n_values
        rest //= n_values
    effects = rng.normal(0.0, 0.04, size=(n_axes, n_values))
    seed_noise = rng.normal(0.0, 0.02, size=n_runs)
    gap = np.clip(0.15 + effects[np.arange(n_axes), idx].sum(axis=1) + seed_noise, 0.0, 0.9)
    gap = np.round(gap * n_test) / n_test
    train_acc = np.round((1.0 - np.abs(rng.normal(0.0, 0.005, n_runs))) * n_test) / n_test
    test_acc = train_acc - gap
    hp_part = effects[np.arange(n_axes), idx].sum(axis=1)

    cols: dict[str, object] = {
        "run_id": [hashlib.blake2b(f"{study}/{dataset}/{c}/{s}".encode(), digest_size=8).hexdigest()
                   for c, s in zip(conf.tolist(), run_seed.tolist())],
        "study": [study] * n_runs, "dataset": [dataset] * n_runs, "model": ["mlp"] * n_runs,
        "seed": run_seed.astype(np.int64),
    }
    for k, name in enumerate(names):
        vals = _axis_values(name, n_values)
        cols[hp_col(name)] = [vals[j] for j in idx[:, k].tolist()]
    cols.update({
        "train_acc": train_acc, "test_acc": test_acc, "gap": gap,
        "train_loss": np.abs(rng.normal(0.01, 0.002, n_runs)),
        "test_loss": np.abs(rng.normal(0.5, 0.1, n_runs)),
    })
    cols["loss_gap"] = cols["test_loss"] - cols["train_loss"]

    kinds = ["track", "flip", "hp", "round", "noise", "track", "constant", "track"]
    for q in range(n_measures):
        kind = kinds[q % len(kinds)]
        noise_sd = 0.01 * (1 + q % 5)
        if kind == "track":
            mu = gap + rng.normal(0.0, noise_sd, n_runs)
        elif kind == "flip":
            mu = -gap + rng.normal(0.0, noise_sd, n_runs)
        elif kind == "hp":
            mu = hp_part + rng.normal(0.0, 0.001, n_runs)
        elif kind == "round":
            mu = np.round((gap + rng.normal(0.0, noise_sd, n_runs)) * 20) / 20
        elif kind == "noise":
            mu = rng.normal(0.0, 1.0, n_runs)
        else:
            mu = np.ones(n_runs)
        if nan_frac > 0 and q % 3 == 0:
            mu = np.where(rng.random(n_runs) < nan_frac, np.nan, mu)
        cols[measure_col(f"m{q:02d}")] = mu.astype(np.float64)

    failed = rng.random(n_runs) < failed_frac
    unconv = (~failed) & (rng.random(n_runs) < unconverged_frac)
    status = np.where(failed, "failed", "ok")
    cols.update({
        "converged": ~(failed | unconv), "diverged": np.zeros(n_runs, dtype=bool),
        "n_train": np.full(n_runs, 5 * n_test, dtype=np.int64), "n_test": np.full(n_runs, n_test, dtype=np.int64),
        "status": status.tolist(),
        "error": [("RuntimeError: synthetic failure" if f else None) for f in failed.tolist()],
    })
    df = pl.DataFrame(cols)
    if failed.any():
        nan_cols = list(OUTCOMES) + [c for c in df.columns if is_measure(c)]
        fail = pl.Series(failed)
        df = df.with_columns([pl.when(fail).then(float("nan")).otherwise(pl.col(c)).alias(c) for c in nan_cols])
    return df
