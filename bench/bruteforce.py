"""The statistics of ANALYSIS.md by their definitions, over all pairs (O(n²)), for benchmarks.

Plain numpy: every pair of runs is materialised as an ``n × n`` matrix.
Inputs are the runs of one measure where the gap and the measure are finite;
``ax`` holds integer axis codes ``(n, K)``.
"""

from __future__ import annotations

import itertools

import numpy as np


def bf_tau(g: np.ndarray, mu: np.ndarray) -> float:
    """τ-a = 2/(n(n−1)) Σ_{i<j} sign(μ_i − μ_j) sign(g_i − g_j)."""
    n = len(g)
    if n < 2:
        return np.nan
    s = np.sign(mu[:, None] - mu[None, :]) * np.sign(g[:, None] - g[None, :])
    return float(s.sum() / (n * (n - 1)))  # every unordered pair is counted twice


def bf_psi(g: np.ndarray, mu: np.ndarray, ax: np.ndarray, keys: np.ndarray) -> tuple[float, list[float]]:
    """ψ_k = mean τ over the groups agreeing on every other axis and key; Ψ over axes with ≥ 2 values."""
    K = ax.shape[1]
    psi_k, multi = [], []
    for k in range(K):
        multi.append(len(np.unique(ax[:, k])) >= 2)
        other = np.column_stack([np.delete(ax, k, axis=1), keys])
        groups: dict[bytes, list[int]] = {}
        for i in range(len(g)):
            groups.setdefault(other[i].tobytes(), []).append(i)
        taus = [bf_tau(g[idx], mu[idx]) for idx in map(np.array, groups.values()) if len(idx) >= 2]
        psi_k.append(float(np.mean(taus)) if taus and multi[-1] else np.nan)
    vals = [p for p, m in zip(psi_k, multi) if m and not np.isnan(p)]
    return (float(np.mean(vals)) if vals else np.nan), psi_k


def bf_cmi(g: np.ndarray, mu: np.ndarray, ax: np.ndarray, S: tuple[int, ...]) -> float:
    """Î_S/Ĥ_S over all ordered pairs i ≠ j, with U_S = (θ_S(i), θ_S(j))."""
    n = len(g)
    if n < 2:
        return np.nan
    grp = np.unique(ax[:, list(S)], axis=0, return_inverse=True)[1].reshape(-1) if S else np.zeros(n, int)
    G = int(grp.max()) + 1
    off = ~np.eye(n, dtype=bool)
    u = (grp[:, None] * G + grp[None, :])[off]
    vg = (g[:, None] > g[None, :])[off]
    vm = (mu[:, None] > mu[None, :])[off]
    cells = np.bincount(u * 4 + vg * 2 + vm, minlength=G * G * 4).reshape(G * G, 2, 2).astype(float)
    nu = cells.sum(axis=(1, 2))
    used = nu > 0
    p = cells[used] / nu[used, None, None]
    pu = nu[used] / nu.sum()
    pg, pm = p.sum(axis=2), p.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        info = np.where(p > 0, p * np.log(p / (pg[:, :, None] * pm[:, None, :])), 0.0).sum(axis=(1, 2))
        ent = np.where(pg > 0, -pg * np.log(pg), 0.0).sum(axis=1)
    I, H = float((pu * info).sum()), float((pu * ent).sum())
    return 0.0 if H == 0 else max(I, 0.0) / H


def bf_cmi_all(g, mu, ax, max_cond: int = 2) -> dict[tuple[int, ...], float]:
    """The score of every set of at most ``max_cond`` axes."""
    sets = [s for k in range(max_cond + 1) for s in itertools.combinations(range(ax.shape[1]), k)]
    return {s: bf_cmi(g, mu, ax, s) for s in sets}


def bf_robust(g, mu, ax, n_test: float, min_ess: float = 12.0) -> tuple[float, float, float, int]:
    """(mean, p90, max, kept) of the environment losses over all axes (Dziugaite et al. 2020)."""
    conf, cid = np.unique(ax, axis=0, return_inverse=True)
    cid = cid.reshape(-1)
    members = [np.flatnonzero(cid == c) for c in range(len(conf))]
    losses = []
    for a in range(len(conf)):
        for b in range(a + 1, len(conf)):
            if (conf[a] != conf[b]).sum() != 1:
                continue
            i, j = np.meshgrid(members[a], members[b], indexing="ij")
            dg = g[i] - g[j]
            v = np.maximum(0.0, 1 - 2 * np.exp(-2 * n_test * (np.abs(dg) / 2) ** 2)) ** 2
            w = np.maximum(0.0, v - 0.5)
            e = (1 - np.sign(mu[i] - mu[j]) * np.sign(dg)) / 2
            sw, sw2 = w.sum(), (w * w).sum()
            if sw2 > 0 and sw * sw / sw2 >= min_ess:
                losses.append(float((w * e).sum() / sw))
    if not losses:
        return np.nan, np.nan, np.nan, 0
    x = np.array(losses)
    return float(x.mean()), float(np.percentile(x, 90)), float(x.max()), len(x)
