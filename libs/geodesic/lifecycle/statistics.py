"""Statistics a sceptical reader asks for before believing a forecast has skill.

Why each choice:

* **Per-group mean AUC, not pooled.** Out-of-fold scores come from different models (one
  per fold or walk-forward step) whose score levels differ; pooling them mixes levels, so
  the constant prior (AUC 0.5 in every fold) pooled to 0.476 on the default data. Each
  group's AUC uses one model's scores only; the figure is their mean.
* **Date-block permutation null.** Hanley-McNeil assumes independent samples; correlated
  symbols on the same day and autocorrelated labels make it optimistic (0.0070 vs a 0.0084
  spread over random walks). Shuffling whole blocks of dates of labels within each group,
  with the predictions held fixed, keeps that dependence and breaks only the link between
  score and label. The p-value is (1 + #null >= observed) / (1 + n_permutations).
* **Paired date-block bootstrap** of the mean-AUC lift over a baseline: the same resampled
  blocks for both forecasters, so their shared noise cancels; the gate reads its lower
  quantile.
* **Skill scores** (Brier, log-loss) against the prior forecast on the same samples: a
  probability is only worth serving if it beats the base rate.
* **Reliability with quantile bins**: equal-count bins, because probabilities concentrate
  near the base rate and equal-width bins would leave most bins empty.
* **Trading**: position = the called direction, held one horizon; cost is charged on
  position *changes* (|delta position| x half the round-trip cost), not on every bar held.
* **Deflated Sharpe ratio** (Bailey & Lopez de Prado 2014): the probability that the true
  Sharpe exceeds the best one expected from N configurations of no skill.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

_NORMAL = NormalDist()

__all__ = [
    "TradingSeries",
    "auc_fast",
    "block_ids",
    "block_permutation_null",
    "brier",
    "deflated_sharpe",
    "group_mean_auc",
    "log_loss",
    "paired_block_bootstrap_lift",
    "reliability_bins",
    "trading_series",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


def auc_fast(y: FloatArray, score: FloatArray) -> float | None:
    """Mann-Whitney AUC with average ranks for ties; None without both classes."""
    n_pos = int(np.sum(y == 1))
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inv, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inv]  # average ranks of ties
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def group_mean_auc(
    y: FloatArray, score: FloatArray, groups: IntArray, labeled: BoolArray
) -> tuple[float | None, list[float | None]]:
    """(mean of the per-group AUCs that are defined, the per-group AUCs in group order)."""
    per = []
    for g in np.unique(groups):
        m = (groups == g) & labeled
        per.append(auc_fast(y[m], score[m]) if m.any() else None)
    defined = [a for a in per if a is not None]
    return (float(np.mean(defined)) if defined else None), per


def block_ids(times: IntArray, groups: IntArray, block_bars: int) -> IntArray:
    """A block id per sample: runs of ``block_bars`` consecutive bar times within a group.

    Samples of one date (all symbols) always share a block, so the shuffle keeps the
    cross-section together.
    """
    out = np.empty(times.shape[0], dtype=np.int64)
    for g in np.unique(groups):
        m = groups == g
        t = times[m]
        out[m] = g * 1_000_000 + (t - t.min()) // block_bars
    return out


def _block_index_lists(blocks: IntArray, groups: IntArray) -> list[list[IntArray]]:
    lists = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        b = blocks[idx]
        lists.append([idx[b == u] for u in np.unique(b)])
    return lists


def block_permutation_null(
    y: FloatArray,
    scores: Mapping[str, FloatArray],
    groups: IntArray,
    labeled: BoolArray,
    blocks: IntArray,
    n_permutations: int,
    seed: int,
) -> dict[str, FloatArray]:
    """Null distribution of each forecaster's group-mean AUC under date-block shuffles.

    The labels (with their labelled mask) are moved block by block within each group;
    the scores stay where they are. Every forecaster sees the same permutations.
    """
    rng = np.random.default_rng(seed)
    lists = _block_index_lists(blocks, groups)
    out = {name: np.empty(n_permutations) for name in scores}
    for p in range(n_permutations):
        y_p = y.copy()
        lab_p = labeled.copy()
        for blocks_g in lists:
            dest = np.concatenate(blocks_g)
            src = np.concatenate([blocks_g[i] for i in rng.permutation(len(blocks_g))])
            y_p[dest] = y[src]
            lab_p[dest] = labeled[src]
        for name, s in scores.items():
            mean, _ = group_mean_auc(y_p, s, groups, lab_p)
            out[name][p] = np.nan if mean is None else mean
    return out


def null_p_value(observed: float | None, null: FloatArray) -> float | None:
    """One-sided permutation p-value, never 0: (1 + #{null >= observed}) / (1 + n)."""
    if observed is None:
        return None
    null = null[np.isfinite(null)]
    return float((1 + np.sum(null >= observed)) / (1 + null.shape[0]))


def paired_block_bootstrap_lift(
    y: FloatArray,
    a: FloatArray,
    b: FloatArray,
    groups: IntArray,
    labeled: BoolArray,
    blocks: IntArray,
    n_boot: int,
    seed: int,
) -> FloatArray:
    """Bootstrap distribution of group-mean AUC(a) - AUC(b), blocks resampled per group."""
    rng = np.random.default_rng(seed)
    lists = _block_index_lists(blocks, groups)
    out = np.empty(n_boot)
    for r in range(n_boot):
        diffs = []
        for blocks_g in lists:
            pick = np.concatenate(
                [blocks_g[i] for i in rng.integers(0, len(blocks_g), len(blocks_g))]
            )
            pick = pick[labeled[pick]]
            aa, bb = auc_fast(y[pick], a[pick]), auc_fast(y[pick], b[pick])
            if aa is not None and bb is not None:
                diffs.append(aa - bb)
        out[r] = np.mean(diffs) if diffs else np.nan
    return out


def brier(y: FloatArray, p: FloatArray) -> float:
    return float(np.mean((p - y) ** 2))


def log_loss(y: FloatArray, p: FloatArray, eps: float = 1e-6) -> float:
    q = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(q) + (1.0 - y) * np.log1p(-q)))


@dataclass(frozen=True)
class ReliabilityBin:
    lo: float
    hi: float
    n: int
    mean_prob: float
    observed: float


def reliability_bins(y: FloatArray, p: FloatArray, bins: int = 10) -> list[ReliabilityBin]:
    """Equal-count bins of predicted probability: mean forecast vs observed frequency."""
    if y.shape[0] == 0:
        return []
    order = np.argsort(p, kind="stable")
    out = []
    for chunk in np.array_split(order, min(bins, y.shape[0])):
        if chunk.size == 0:
            continue
        out.append(
            ReliabilityBin(
                float(p[chunk].min()),
                float(p[chunk].max()),
                int(chunk.size),
                float(p[chunk].mean()),
                float(y[chunk].mean()),
            )
        )
    return out


def quantile_ece(rel: Sequence[ReliabilityBin]) -> float | None:
    n = sum(b.n for b in rel)
    if n == 0:
        return None
    return float(sum(b.n * abs(b.observed - b.mean_prob) for b in rel) / n)


@dataclass(frozen=True)
class TradingSeries:
    """Equal-weight portfolio of per-symbol positions, one value per date (in bp)."""

    gross_bp: FloatArray  # per date: mean over symbols of position x simple return
    turnover: FloatArray  # per date: mean over symbols of |delta position|
    exposure: float  # mean |position|
    periods_per_year: float

    def net_bp(self, round_trip_cost_bp: float) -> FloatArray:
        return self.gross_bp - 0.5 * round_trip_cost_bp * self.turnover

    def sharpe(self, round_trip_cost_bp: float, *, annualised: bool = True) -> float | None:
        net = self.net_bp(round_trip_cost_bp)
        if net.shape[0] < 2:
            return None
        sd = float(np.std(net, ddof=1))
        if sd == 0.0:
            return 0.0 if float(np.mean(net)) == 0.0 else None
        sr = float(np.mean(net)) / sd
        return sr * math.sqrt(self.periods_per_year) if annualised else sr


def trading_series(
    position: FloatArray,
    fwd_log: FloatArray,
    symbols: NDArray[np.str_],
    times: IntArray,
    dates: NDArray[np.datetime64],
) -> TradingSeries:
    """Per symbol in time order: P&L = pos_t * (e^fwd_t - 1); turnover = |pos_t - pos_t-1|
    (the first position is entered from flat). Symbols are averaged per bar time."""
    uniq_t, t_idx = np.unique(times, return_inverse=True)
    gross = np.zeros(uniq_t.shape[0])
    turn = np.zeros(uniq_t.shape[0])
    count = np.zeros(uniq_t.shape[0])
    for s in np.unique(symbols):
        m = np.flatnonzero(symbols == s)
        m = m[np.argsort(times[m], kind="stable")]
        pos = position[m]
        gross[t_idx[m]] += pos * np.expm1(fwd_log[m]) * 1e4
        turn[t_idx[m]] += np.abs(np.diff(pos, prepend=0.0))
        count[t_idx[m]] += 1
    gross /= np.maximum(count, 1)
    turn /= np.maximum(count, 1)
    d = np.asarray(dates, dtype="datetime64[ns]")
    span_years = float((d.max() - d.min()) / np.timedelta64(1, "D")) / 365.25 if d.size else 0.0
    ppy = uniq_t.shape[0] / span_years if span_years > 0 else 252.0
    return TradingSeries(gross, turn, float(np.mean(np.abs(position))), ppy)


def deflated_sharpe(
    sr: float, n_obs: int, skew: float, kurt: float, trial_srs: FloatArray, n_trials: int
) -> tuple[float | None, float]:
    """(DSR, SR0) for a per-period Sharpe ``sr`` after ``n_trials`` configurations.

    SR0 is the expected maximum Sharpe of N no-skill trials with the variance of the
    Sharpes we have (``trial_srs``, per period); kurt is the (non-excess) kurtosis;
    DSR = Phi((SR - SR0) sqrt(T - 1) / sqrt(1 - skew SR + (kurt - 1) / 4 SR^2)).
    """
    trials = trial_srs[np.isfinite(trial_srs)]
    n = max(int(n_trials), 1)
    gamma = 0.5772156649015329
    var = float(np.var(trials, ddof=1)) if trials.shape[0] > 1 else 0.0
    if n > 1:
        sr0 = math.sqrt(var) * (
            (1 - gamma) * _NORMAL.inv_cdf(1 - 1 / n) + gamma * _NORMAL.inv_cdf(1 - 1 / (n * math.e))
        )
    else:
        sr0 = 0.0
    denom = 1 - skew * sr + (kurt - 1) / 4.0 * sr * sr
    if n_obs < 2 or denom <= 0:
        return None, sr0
    return float(_NORMAL.cdf((sr - sr0) * math.sqrt(n_obs - 1) / math.sqrt(denom))), sr0
