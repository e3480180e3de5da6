"""Conditional mutual information between a measure and the gap (Jiang et al. 2020, §5; ANALYSIS.md).

Over ordered pairs of distinct runs ``(i, j)``: ``V_g = 1[g_i > g_j]``,
``V_μ = 1[μ_i > μ_j]`` (a tie counts as 0) and, for a set ``S`` of axes,
``U_S = (θ_S(i), θ_S(j))``. With ``p`` the empirical distribution over all
ordered pairs, ``Î_S = Σ_u p(u) I(V_μ; V_g | u)``, ``Ĥ_S = Σ_u p(u) H(V_g | u)``
and the score of ``S`` is ``Î_S / Ĥ_S`` (0 where ``Ĥ_S = 0``).

Method. Group ``a`` of ``S`` is one value of ``θ_S``; ``u = (a, b)``. Per
ordered group pair the four cells follow from three counts,
``D[a,b] = #{i∈a, j∈b: g_i > g_j, μ_i > μ_j}``, ``G[a,b] = #{… g_i > g_j}``,
``Mu[a,b] = #{… μ_i > μ_j}``, and the pair count ``N_u = n_a n_b − [a=b] n_a``.

``D`` is a 2-D dominance count. The runs are swept in increasing ``g`` (a
block of tied ``g`` is queried before any of it is inserted). The ``μ`` order
is cut into buckets of about ``BUCKET`` runs (tie groups whole); a Fenwick
tree over the buckets holds, in each node, the count of inserted runs per
group of every conditioning set at once (a vector of ``F`` counts, ``F = 211``
for 7 axes of 3 values up to ``|S| = 2``). A run adds the prefix below its
bucket and, from the runs already inserted in its own bucket, those with a
smaller ``μ``. The sum goes to the run's row of an accumulator indexed by
its values on the chunk's axes, folded into the ``D`` tables at the end (or,
when there are nearly as many such keys as runs, straight into the tables).
``G`` and ``Mu`` are running counts along the ``g`` and ``μ`` orders. All
conditioning sets share one sweep: ``O(n log n · F)`` per measure; pairs
are never materialised. Measures are split over threads.

Integer run weights (bootstrap multiplicities) are supported: a run of
weight ``c`` is ``c`` copies, which pair with each other as ties.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numba as nb
import numpy as np

from ._parallel import run_ranges
from ._ranks import Ranked, axis_codes, rank_inputs, row_codes

TREE_BYTES = 128 * 2**20  # Fenwick tree budget per thread; sets are split into chunks to fit
ACC_BYTES = 64 * 2**20  # accumulator budget per thread
BUCKET = 16  # runs per bucket of the μ order (the Fenwick tree has one node per bucket)
DIRECT_RATIO = 4  # accumulate per key only when there are more than this many runs per key


@nb.njit(cache=True, nogil=True)
def _fold(acc, kgrp, goff, gsz, doff, out):
    """out[doff_s + a·G_s + b] += Σ over keys k in group a of set s of acc[k, goff_s + b]."""
    n_key = acc.shape[0]
    for k in range(n_key):
        for s in range(kgrp.shape[1]):
            G = gsz[s]
            fo = goff[s]
            base = doff[s] + kgrp[k, s] * G
            for b in range(G):
                out[base + b] += acc[k, fo + b]


@nb.njit(cache=True, nogil=True)
def _buckets(mr, order, K, bucket, bk, bstart, pure):
    """Cut the μ order into buckets; returns their number.

    Runs are taken in increasing μ (``order[:K]``), tie groups whole; a bucket
    closes once it holds ``bucket`` runs, and a tie group of ``bucket`` runs
    or more is a bucket of its own (``pure``: no strict μ order inside).
    ``bk[t]``: the bucket of run ``t``; bucket ``β`` spans ``bstart[β]:bstart[β+1]``.
    """
    B = 0
    cur = 0
    s0 = 0
    bstart[0] = 0
    while s0 < K:
        e0 = s0
        rcur = mr[order[s0]]
        while e0 < K and mr[order[e0]] == rcur:
            e0 += 1
        if e0 - s0 >= bucket:
            if cur > 0:
                B += 1
                bstart[B] = s0
                cur = 0
            pure[B] = True
            for t in range(s0, e0):
                bk[order[t]] = B
            B += 1
            bstart[B] = e0
        else:
            for t in range(s0, e0):
                bk[order[t]] = B
            cur += e0 - s0
            if cur >= bucket:
                B += 1
                bstart[B] = e0
                cur = 0
        s0 = e0
    if cur > 0:
        B += 1
        bstart[B] = K
    return B


@nb.njit(cache=True, nogil=True)
def _scatter(vec, w, ft, goff, gsz, doff, out):
    """out[doff_s + a_s·G_s + b] += w · vec[goff_s + b] for every set s, a_s the run's group in s."""
    for s in range(ft.shape[0]):
        G = gsz[s]
        fo = goff[s]
        base = doff[s] + (ft[s] - fo) * G
        for b in range(G):
            out[base + b] += w * vec[fo + b]


@nb.njit(cache=True, nogil=True)
def _cmi_range(gr, mr, order_mu, nkept, feat, key, kgrp, goff, gsz, doff, c, bucket, direct,
               m_lo, m_hi, D, GT, MT, NW):
    """For measures ``m_lo..m_hi``: D, G, Mu (flattened per-set group-pair tables) and the group weights.

    Runs are indexed in increasing-gap order. ``gr[t]``: gap rank;
    ``mr[m, t]``: measure m's rank (-1: left out); ``order_mu[m, :nkept[m]]``:
    the kept runs by increasing μ; ``feat[t, s]``: run t's feature (its group
    in set s, offset into the feature vector); ``key[t]``: its row in the
    accumulators (its values on the axes of the chunk's sets); ``kgrp[k, s]``:
    the group of key k in set s; ``c[t]``: its weight. With ``direct`` there
    are no accumulators: every run adds its counts to the tables at once
    (cheaper when there are about as many keys as runs).
    """
    n = gr.shape[0]
    nS = feat.shape[1]
    n_key = kgrp.shape[0]
    n_feat = NW.shape[1]
    for m in range(m_lo, m_hi):
        K = nkept[m]
        mrm = mr[m]
        om = order_mu[m]
        bk = np.full(n, -1, dtype=np.int64)
        bstart = np.zeros(K + 2, dtype=np.int64)
        pure = np.zeros(K + 2, dtype=np.bool_)
        B = _buckets(mrm, om, K, bucket, bk, bstart, pure)
        tree = np.zeros((B + 1, n_feat), dtype=np.int32)
        in_t = np.empty(max(K, 1), dtype=np.int64)
        in_r = np.empty(max(K, 1), dtype=np.int64)
        bfill = bstart[:B].copy()
        below = np.zeros(n_feat, dtype=np.int64)
        acc_d = np.zeros((1 if direct else n_key, n_feat), dtype=np.int64)
        acc_g = np.zeros((1 if direct else n_key, n_feat), dtype=np.int64)
        Dm = D[m]
        Gm = GT[m]
        Mm = MT[m]
        # sweep in increasing g (a tie block is queried before any of it is inserted):
        # D from the Fenwick tree over buckets plus the pairs inside a bucket, G from running counts
        s0 = 0
        while s0 < n:
            e0 = s0
            while e0 < n and gr[e0] == gr[s0]:
                e0 += 1
            for t in range(s0, e0):
                r = mrm[t]
                ct = c[t]
                if r < 0 or ct == 0:
                    continue
                kt = 0 if direct else key[t]
                ad = acc_d[kt]
                ag = acc_g[kt]
                b = bk[t]
                p = b
                while p > 0:
                    row = tree[p]
                    for f in range(n_feat):
                        ad[f] += ct * row[f]
                    p -= p & (-p)
                if not pure[b]:
                    for u in range(bstart[b], bfill[b]):
                        if in_r[u] < r:
                            j = in_t[u]
                            w = ct * c[j]
                            fj = feat[j]
                            for s in range(nS):
                                ad[fj[s]] += w
                if direct:
                    _scatter(ad, 1, feat[t], goff, gsz, doff, Dm)
                    _scatter(below, ct, feat[t], goff, gsz, doff, Gm)
                    ad[:] = 0
                else:
                    for f in range(n_feat):
                        ag[f] += ct * below[f]
            for t in range(s0, e0):
                r = mrm[t]
                ct = c[t]
                if r < 0 or ct == 0:
                    continue
                ft = feat[t]
                for s in range(nS):
                    below[ft[s]] += ct
                b = bk[t]
                if not pure[b]:
                    in_t[bfill[b]] = t
                    in_r[bfill[b]] = r
                    bfill[b] += 1
                p = b + 1
                while p <= B:
                    row = tree[p]
                    for s in range(nS):
                        row[ft[s]] += ct
                    p += p & (-p)
            s0 = e0
        NW[m] = below
        if not direct:
            _fold(acc_d, kgrp, goff, gsz, doff, Dm)
            _fold(acc_g, kgrp, goff, gsz, doff, Gm)
        # sweep in increasing μ: Mu from running counts
        acc_d[:, :] = 0
        run = np.zeros(n_feat, dtype=np.int64)
        s0 = 0
        while s0 < K:
            e0 = s0
            while e0 < K and mrm[om[e0]] == mrm[om[s0]]:
                e0 += 1
            for u in range(s0, e0):
                t = om[u]
                ct = c[t]
                if ct == 0:
                    continue
                if direct:
                    _scatter(run, ct, feat[t], goff, gsz, doff, Mm)
                else:
                    am = acc_d[key[t]]
                    for f in range(n_feat):
                        am[f] += ct * run[f]
            for u in range(s0, e0):
                t = om[u]
                ft = feat[t]
                for s in range(nS):
                    run[ft[s]] += c[t]
            s0 = e0
        if not direct:
            _fold(acc_d, kgrp, goff, gsz, doff, Mm)


def _xlogratio(n: np.ndarray, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``n · log(num / den)``, 0 where ``n = 0``."""
    pos = n > 0
    ratio = np.where(pos, num / np.where(pos, den, 1.0), 1.0)
    return np.where(pos, n * np.log(ratio), 0.0)


def _scores_from_counts(D, GT, MT, nw):
    """Score Î/Ĥ of one set from its ``(M, G, G)`` counts and ``(M, G)`` group weights."""
    D, GT, MT = (x.astype(np.float64) for x in (D, GT, MT))
    na = nw.astype(np.float64)
    G = na.shape[1]
    N = na[:, :, None] * na[:, None, :] - np.eye(G)[None] * na[:, :, None]
    n11, n10, n01 = D, GT - D, MT - D
    n00 = N - GT - MT + D
    g1, g0, m1, m0 = GT, N - GT, MT, N - MT
    info = (_xlogratio(n11, n11 * N, g1 * m1) + _xlogratio(n10, n10 * N, g1 * m0)
            + _xlogratio(n01, n01 * N, g0 * m1) + _xlogratio(n00, n00 * N, g0 * m0)).sum(axis=(1, 2))
    ent = (_xlogratio(g1, N, g1) + _xlogratio(g0, N, g0)).sum(axis=(1, 2))
    info = np.maximum(info, 0.0)  # I ≥ 0; only rounding can make the sum negative
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ent > 0, info / np.where(ent > 0, ent, 1.0), 0.0)


def conditioning_sets(n_axes: int, max_cond: int) -> list[tuple[int, ...]]:
    """Every set of axis indices of size 0..max_cond, by size then lexicographically."""
    return [s for k in range(min(max_cond, n_axes) + 1) for s in itertools.combinations(range(n_axes), k)]


@dataclass
class CMIResult:
    """Score ``Î_S/Ĥ_S`` of every measure (rows) for every conditioning set (columns)."""

    sets: list[tuple[int, ...]]
    scores: np.ndarray
    n_kept: np.ndarray

    def min_over_size(self, size: int) -> np.ndarray:
        """Minimum over the sets of exactly ``size`` axes (NaN where there is none)."""
        cols = [q for q, s in enumerate(self.sets) if len(s) == size]
        if not cols:
            return np.full(self.scores.shape[0], np.nan)
        sub = self.scores[:, cols]
        with np.errstate(invalid="ignore"):
            return np.where(np.isnan(sub).all(axis=1), np.nan, np.nanmin(np.where(np.isnan(sub), np.inf, sub), axis=1))

    def best(self) -> tuple[np.ndarray, list[tuple[int, ...] | None]]:
        """Minimum over all sets and the minimising set (the first of the ties; None when undefined)."""
        vals = np.full(self.scores.shape[0], np.nan)
        which: list[tuple[int, ...] | None] = []
        for m in range(self.scores.shape[0]):
            row = self.scores[m]
            if np.isnan(row).all():
                which.append(None)
                continue
            q = int(np.nanargmin(row))
            vals[m] = row[q]
            which.append(self.sets[q])
        return vals, which


def _key_of(ax: np.ndarray, axes: list[int]) -> np.ndarray:
    """Dense codes of the runs' values on ``axes`` (all zero for no axes)."""
    if not axes or ax.shape[0] == 0:
        return np.zeros(ax.shape[0], dtype=np.int64)
    return row_codes(ax[:, axes])


@dataclass
class _Chunk:
    """The conditioning sets of one sweep and their layout (runs in gap order)."""

    sets: list[int]
    key: np.ndarray
    kgrp: np.ndarray
    gsz: np.ndarray
    goff: np.ndarray
    doff: np.ndarray
    feat: np.ndarray
    direct: bool


class CMIPlan:
    """Ranks, groups and sweep orders of one table, reusable for many weightings.

    The conditioning sets are split into chunks, each swept once, so that a
    thread's Fenwick tree (``ranks × groups`` int32) fits ``tree_bytes`` and its
    accumulators (``keys × groups`` int64, a key being a run's values on the
    chunk's axes) fit ``acc_bytes``.
    """

    def __init__(self, rk: Ranked, ax: np.ndarray, max_cond: int = 2, tree_bytes: int = TREE_BYTES,
                 acc_bytes: int = ACC_BYTES, axis_names: list[str] | None = None, bucket: int = BUCKET,
                 mode: str = "auto"):
        if max_cond < 0:
            raise ValueError(f"max_cond must be ≥ 0, got {max_cond}")
        if bucket < 1:
            raise ValueError(f"bucket must be ≥ 1, got {bucket}")
        if mode not in ("auto", "direct", "keyed"):
            raise ValueError(f"mode must be 'auto', 'direct' or 'keyed', got {mode!r}")
        self.mode = mode
        self.rk = rk
        self.bucket = bucket
        perm = rk.order_g
        inv = np.empty_like(perm)
        inv[perm] = np.arange(len(perm))
        self.perm = perm
        self.gr_s = np.ascontiguousarray(rk.gr[perm])
        self.mr_s = np.ascontiguousarray(rk.mr[perm].T)
        self.order_mu_s = np.ascontiguousarray(inv[rk.order_mu].T)
        self.sets = conditioning_sets(ax.shape[1], max_cond)
        names = axis_names or [f"axis {k}" for k in range(ax.shape[1])]
        grp = np.zeros((rk.n, len(self.sets)), dtype=np.int32)
        gsz = np.zeros(len(self.sets), dtype=np.int64)
        for q, s in enumerate(self.sets):
            codes = _key_of(ax, list(s))
            grp[:, q] = codes
            gsz[q] = int(codes.max()) + 1 if rk.n else 1
        self.grp, self.gsz = grp, gsz
        rows = (int(rk.nkept.max()) if rk.n_measures else 0) // bucket + 2
        self.chunks: list[_Chunk] = []
        cur: list[int] = []
        for q, s in enumerate(self.sets):
            trial = cur + [q]
            width = int(gsz[trial].sum())
            axes = sorted({k for j in trial for k in self.sets[j]})
            n_key = int(_key_of(ax, axes).max()) + 1 if rk.n else 1
            if rows * width * 4 <= tree_bytes and 2 * n_key * width * 8 <= acc_bytes:
                cur = trial
                continue
            if not cur:
                raise ValueError(
                    f"CMI: conditioning on {'+'.join(names[k] for k in s)} makes {gsz[q]} groups, too many "
                    f"to count within the memory budget; lower max_cond or give such axes fewer values")
            self._add_chunk(ax, cur)
            cur = [q]
            if rows * int(gsz[q]) * 4 > tree_bytes or 2 * int(gsz[q]) ** 2 * 8 > acc_bytes:
                raise ValueError(
                    f"CMI: conditioning on {'+'.join(names[k] for k in s)} makes {gsz[q]} groups, too many "
                    f"to count within the memory budget; lower max_cond or give such axes fewer values")
        if cur:
            self._add_chunk(ax, cur)

    def _add_chunk(self, ax: np.ndarray, sets: list[int]) -> None:
        """Prepare one sweep over ``sets``: feature offsets, table offsets, keys (all in gap order)."""
        axes = sorted({k for j in sets for k in self.sets[j]})
        key = _key_of(ax, axes)[self.perm]
        n_key = int(key.max()) + 1 if len(key) else 1
        gsz = self.gsz[sets]
        goff = np.r_[0, np.cumsum(gsz)[:-1]].astype(np.int64)
        doff = np.r_[0, np.cumsum(gsz * gsz)[:-1]].astype(np.int64)
        grp = self.grp[self.perm][:, sets]
        kgrp = np.zeros((n_key, len(sets)), dtype=np.int64)
        kgrp[key] = grp
        self.chunks.append(_Chunk(sets, np.ascontiguousarray(key), kgrp, gsz, goff, doff,
                                  np.ascontiguousarray((grp + goff[None, :]).astype(np.int32)),
                                  self.mode == "direct" or (self.mode == "auto" and n_key * DIRECT_RATIO > len(key))))

    def run(self, weights: np.ndarray | None = None) -> CMIResult:
        """Scores of every measure and set; ``weights`` are integer run multiplicities (default 1)."""
        rk = self.rk
        c = np.ones(rk.n, dtype=np.int64) if weights is None else np.asarray(weights, dtype=np.int64)
        c_s = np.ascontiguousarray(c[self.perm])
        scores = np.full((rk.n_measures, len(self.sets)), np.nan)
        M = rk.n_measures
        for ch in self.chunks:
            gsz, goff, doff = ch.gsz, ch.goff, ch.doff
            n_cells = int((gsz * gsz).sum())
            D, GT, MT = (np.zeros((M, n_cells), dtype=np.int64) for _ in range(3))
            NW = np.zeros((M, int(gsz.sum())), dtype=np.int64)
            run_ranges(lambda lo, hi: _cmi_range(self.gr_s, self.mr_s, self.order_mu_s, rk.nkept, ch.feat, ch.key,
                                                 ch.kgrp, goff, gsz, doff, c_s, self.bucket, ch.direct, lo, hi,
                                                 D, GT, MT, NW), M)
            for j, q in enumerate(ch.sets):
                G = int(gsz[j])
                cells = slice(doff[j], doff[j] + G * G)
                shape = (rk.n_measures, G, G)
                nw = NW[:, goff[j]:goff[j] + G]
                scores[:, q] = _scores_from_counts(D[:, cells].reshape(shape), GT[:, cells].reshape(shape),
                                                   MT[:, cells].reshape(shape), nw)
        kept = np.array([c[rk.mr[:, m] >= 0].sum() for m in range(rk.n_measures)])
        scores[kept < 2, :] = np.nan
        return CMIResult(self.sets, scores, kept)


def cmi_scores(g: np.ndarray, mu: np.ndarray, axes: np.ndarray, max_cond: int = 2,
               weights: np.ndarray | None = None) -> CMIResult:
    """Score ``Î_S/Ĥ_S`` for every set ``S`` of at most ``max_cond`` axes, for every measure.

    ``axes``: ``(n, K)`` axis values (any integer codes). NaN/inf measure
    values leave the run out for that measure; a non-finite gap leaves it out
    everywhere. Measures with fewer than two runs get NaN. ``weights``:
    integer run multiplicities. Summaries: ``result.min_over_size(k)`` and
    ``result.best()``.
    """
    rk = rank_inputs(g, mu)
    ax = axis_codes(axes, len(np.asarray(g).reshape(-1)))[rk.keep]
    if weights is not None:
        weights = np.asarray(weights, dtype=np.int64)[rk.keep]
    return CMIPlan(rk, ax, max_cond).run(weights)
