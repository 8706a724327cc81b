"""The scoring pipeline: whiten -> search -> Lorentz re-rank -> kernels -> prob_up.

For one event (`score`) and for a batch (`score_batch`), with identical results: the
batch path whitens row by row through the same code, hnswlib answers each query of a
batch exactly as it would alone, and the re-rank and vote run for all rows in two compiled
passes that do `_finish`'s arithmetic in its order (a test holds them equal bit for bit).

float32 fast path: whitening and the HNSW search run in float32. Any non-finite value
recomputes that stage in float64 and increments `fallback_count[stage]`; the re-rank is
always float64 (the cancellation-free Lorentz distance), because float32 loses the
distance entirely at the radii whitened data reaches.

Probabilities: a model that records a base rate and prior strength (ScorerParams) serves
the vote shrunk toward the base rate by its effective neighbours
(kernels.shrink_to_base_rate); an older model without them serves the raw vote.

Degrade ladder (DESIGN.md 3.8), applied per event from the DegradeController:
  1: K_cand halved (not below K);  2: also no periodic kernel;
  3: also no re-rank: HNSW's top K, weighted by their Lorentz distances.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from lorentzcore.constants import ACOSH_CLAMP_EPS, ACOSH_SERIES_THRESHOLD
from lorentzcore.degrade import DegradeController
from lorentzcore.hyperbolic import _njit_distances_to_query, lorentz_distances_to_query
from lorentzcore.kernels import SinCache, shrink_to_base_rate
from lorentzcore.model import AnalogModel

STAGES = ("whiten", "search", "rerank", "kernel")


@numba.njit(cache=True, nogil=True)
def _njit_weighted_vote(
    d: NDArray[np.float64],
    sin_values: NDArray[np.float64],
    tau: NDArray[np.int64],
    labels: NDArray[np.float64],
    rbf_l: float,
    periodic_l: float,
    local_l: float,
    use_periodic: bool,
    locally_periodic: bool,
    floor: float,
) -> tuple[float, float, bool, bool]:
    """Fused kernels.kernel_weights + kernels.weighted_prob for the hot path.

    Same formulas (tests hold it equal to the reference functions); one pass, no temporaries.
    Returns (prob_up, eff_k, abstain, all_finite).
    """
    total = 0.0
    total_sq = 0.0
    vote = 0.0
    wmax = 0.0
    finite = True
    n = d.shape[0]
    w = np.empty(n)
    for i in range(n):
        wi = np.exp(-(d[i] * d[i]) / (2.0 * rbf_l * rbf_l))
        if use_periodic:
            s = sin_values[i]
            wi *= np.exp(-2.0 * (s * s) / (periodic_l * periodic_l))
            if locally_periodic:
                t = float(tau[i])
                wi *= np.exp(-(t * t) / (2.0 * local_l * local_l))
        if not np.isfinite(wi):
            finite = False
            wi = 0.0
        w[i] = wi
        total += wi
        vote += wi * labels[i]
        if wi > wmax:
            wmax = wi
    if total == 0.0:
        return 0.5, 0.0, True, finite
    for i in range(n):
        r = w[i] / wmax
        total_sq += r * r
    eff_k = (total / wmax) ** 2 / total_sq
    if total < floor:
        return 0.5, eff_k, True, finite
    prob = vote / total
    return min(max(prob, 0.0), 1.0), eff_k, False, finite


@numba.njit(cache=True, nogil=True)
def _njit_rerank_rows(
    Zq: NDArray[np.float64],
    Zn: NDArray[np.float32],
    cand_ids: NDArray[np.int64],
    T: NDArray[np.int64],
    times: NDArray[np.int64],
    labels: NDArray[np.float64],
    k: int,
    rerank: bool,
    ids: NDArray[np.int64],
    d: NDArray[np.float64],
    tau: NDArray[np.int64],
    lab: NDArray[np.float64],
    clamp_eps: float,
    series_threshold: float,
) -> NDArray[np.bool_]:
    """Per row i: Lorentz distances from Zq[i] to its candidates Zn[i], the k nearest
    (stable order, as np.argsort(kind="stable")) into ids[i] / d[i] with their bar lags
    |T[i] - t| and labels; with ``rerank`` off, HNSW's first k. Returns the rows with any
    non-finite distance: those are recomputed by the reference path, which owns the NaN
    ordering and the fallback count."""
    sel = np.empty(k, dtype=np.int64)
    n = Zq.shape[0]
    K = Zn.shape[1]
    bad = np.zeros(n, dtype=np.bool_)
    d_all = np.empty(K)
    for i in range(n):
        if rerank:
            _njit_distances_to_query(Zq[i], Zn[i], d_all, clamp_eps, series_threshold)
            for j in range(K):
                if not np.isfinite(d_all[j]):
                    bad[i] = True
            order = np.argsort(d_all, kind="mergesort")
            for j in range(k):
                sel[j] = order[j]
                d[i, j] = d_all[order[j]]
        else:
            _njit_distances_to_query(Zq[i], Zn[i, :k], d[i], clamp_eps, series_threshold)
            for j in range(k):
                sel[j] = j
                if not np.isfinite(d[i, j]):
                    bad[i] = True
        for j in range(k):
            c = cand_ids[i, sel[j]]
            ids[i, j] = c
            tau[i, j] = abs(T[i] - times[c])
            lab[i, j] = labels[c]
    return bad


@numba.njit(cache=True, nogil=True)
def _njit_vote_rows(
    d: NDArray[np.float64],
    sin_values: NDArray[np.float64],
    tau: NDArray[np.int64],
    labels: NDArray[np.float64],
    rbf_l: float,
    periodic_l: float,
    local_l: float,
    use_periodic: bool,
    locally_periodic: bool,
    floor: float,
    has_prior: bool,
    base_rate: float,
    prior_strength: float,
    prob: NDArray[np.float64],
    eff_k: NDArray[np.float64],
    abstain: NDArray[np.bool_],
    finite: NDArray[np.bool_],
) -> None:
    """_njit_weighted_vote for every row (sin_values is (n, 0) without the periodic
    kernel), then kernels.shrink_to_base_rate's formula, same operation order."""
    for i in range(d.shape[0]):
        prob[i], eff_k[i], abstain[i], finite[i] = _njit_weighted_vote(
            d[i],
            sin_values[i],
            tau[i],
            labels[i],
            rbf_l,
            periodic_l,
            local_l,
            use_periodic,
            locally_periodic,
            floor,
        )
        if has_prior and not abstain[i]:
            e = eff_k[i]
            prob[i] = (e * prob[i] + prior_strength * base_rate) / (e + prior_strength)


@dataclass(frozen=True, slots=True)
class _Rows:
    """What the re-rank and vote give for a block of queries."""

    prob_up: NDArray[np.float64]
    eff_k: NDArray[np.float64]
    abstain: NDArray[np.bool_]
    ids: NDArray[np.int64]
    distances: NDArray[np.float64]
    t_rerank_end: int


class NonFiniteInputError(ValueError):
    """The feature vector itself is not finite: nothing to score, in any precision."""


@dataclass(frozen=True, slots=True)
class Score:
    prob_up: float
    eff_k: float
    abstain: bool
    degrade_level: int
    neighbor_ids: NDArray[np.int64]
    distances: NDArray[np.float64]
    timings_us: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BatchScore:
    prob_up: NDArray[np.float64]
    eff_k: NDArray[np.float64]
    abstain: NDArray[np.bool_]
    degrade_level: int
    neighbor_ids: NDArray[np.int64]
    timings_us: dict[str, float]


class Scorer:
    def __init__(self, model: AnalogModel, degrade: DegradeController | None = None) -> None:
        self.model = model
        self.spec = model.spec
        self.params = model.spec.params
        self.kernel = model.spec.kernel
        self.degrade = degrade
        self.cache = SinCache(self.kernel.period)
        self.fallback_count: dict[str, int] = dict.fromkeys(STAGES, 0)
        self._labels = model.labels.astype(np.float64)
        self._times = model.times
        self._scale = float(self.params.lift_scale or 1.0)
        self._no_sin = np.zeros(0)
        mask = model.spec.feature_mask
        self._mask = None if mask is None else np.asarray(mask, dtype=bool)

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    def _level(self, level: int | None) -> int:
        if level is not None:
            if not 0 <= level <= 3:
                raise ValueError(f"degrade level must be 0..3, got {level}")
            return level
        return self.degrade.level if self.degrade is not None else 0

    def _k_cand(self, level: int) -> int:
        k, kc = self.params.k, self.params.k_cand
        if level >= 3:
            return k
        if level >= 1:
            return max(k, kc // 2)
        return kc

    def whiten(self, x: ArrayLike) -> NDArray[np.float32]:
        """The whitened (masked) query the index sees, e.g. for recall sampling."""
        return self._whiten(np.asarray(x, dtype=np.float64))

    def _whiten(self, x: NDArray[np.float64]) -> NDArray[np.float32]:
        if self._mask is not None:
            x = x[self._mask]
        with np.errstate(over="ignore", invalid="ignore"):
            z = self.model.whitener.transform(x.astype(np.float32, copy=False))
        if np.isfinite(z).all():
            return z
        self.fallback_count["whiten"] += 1
        z64 = self.model.whitener.transform(x.astype(np.float64))
        if not np.isfinite(z64).all():
            raise NonFiniteInputError("feature vector is not finite")
        # float32 overflowed where float64 did not: search on the clipped float32 vector
        return z64.clip(-3e38, 3e38).astype(np.float32)

    def score(self, x: ArrayLike, t_q: int, *, level: int | None = None) -> Score:
        """Score one feature vector x (d,) observed at bar index t_q."""
        t0 = time.perf_counter_ns()
        lvl = self._level(level)
        x_arr = np.asarray(x)
        if x_arr.shape != (self.spec.dim,):
            raise ValueError(f"expected a feature vector of shape ({self.spec.dim},)")
        z = self._whiten(x_arr)
        t1 = time.perf_counter_ns()
        ids, _base, Zn = self.model.index.search_with_vectors(z[None, :], self._k_cand(lvl))
        t2 = time.perf_counter_ns()
        # one event: the per-event path (as fast as the compiled rows at n = 1, ~29 us)
        score = self._finish(z, ids[0], Zn[0], int(t_q), lvl, t0, t1, t2)
        if self.degrade is not None:
            self.degrade.observe((time.perf_counter_ns() - t0) / 1e6)
        return score

    def score_batch(self, X: ArrayLike, T: ArrayLike, *, level: int | None = None) -> BatchScore:
        """Score rows of X (n, d) at bar indices T (n,); same values as `score` per row.

        Amortised: one HNSW query for the batch, then one compiled pass for the re-rank and
        one for the kernel vote over all rows. Whitening stays row by row, through the
        code `score` runs, so the float32 rounding is the single event's exactly.
        """
        t0 = time.perf_counter_ns()
        lvl = self._level(level)
        X_arr = np.asarray(X)
        T_arr = np.asarray(T, dtype=np.int64)
        if X_arr.ndim != 2 or X_arr.shape[1] != self.spec.dim or T_arr.shape != (len(X_arr),):
            raise ValueError(f"expected X (n, {self.spec.dim}) and T (n,)")
        n = len(X_arr)
        if n == 0:
            empty = np.empty(0)
            ids0 = np.empty((0, self.params.k), dtype=np.int64)
            return BatchScore(empty, empty, np.empty(0, dtype=bool), lvl, ids0, {})
        Z = np.stack([self._whiten(row) for row in X_arr])
        t1 = time.perf_counter_ns()
        ids, _base, Zn = self.model.index.search_with_vectors(Z, self._k_cand(lvl))
        t2 = time.perf_counter_ns()
        rows = self._finish_rows(Z, ids, Zn, T_arr, lvl)
        chosen = np.zeros((n, self.params.k), dtype=np.int64)
        chosen[:, : rows.ids.shape[1]] = rows.ids
        t3 = time.perf_counter_ns()
        timings = {"whiten": (t1 - t0) / 1e3, "search": (t2 - t1) / 1e3, "rest": (t3 - t2) / 1e3}
        return BatchScore(rows.prob_up, rows.eff_k, rows.abstain, lvl, chosen, timings)

    def _finish_rows(
        self,
        Z: NDArray[np.float32],
        cand_ids: NDArray[np.int64],
        Zn: NDArray[np.float32],
        T: NDArray[np.int64],
        lvl: int,
    ) -> _Rows:
        """Re-rank and vote for every row at once, with `_finish`'s arithmetic exactly.

        Rows with a non-finite distance go through `_finish` (the reference path) instead.
        """
        n, K = cand_ids.shape
        k = min(self.params.k, K)
        Zq = Z.astype(np.float64)
        Zn_scaled = Zn
        if self._scale != 1.0:
            Zq = Zq * self._scale
            Zn_scaled = Zn * np.float32(self._scale)
        ids = np.empty((n, k), dtype=np.int64)
        d = np.empty((n, k))
        tau = np.empty((n, k), dtype=np.int64)
        labels = np.empty((n, k))
        bad = _njit_rerank_rows(
            Zq,
            np.ascontiguousarray(Zn_scaled),
            np.ascontiguousarray(cand_ids),
            T,
            self._times,
            self._labels,
            k,
            lvl < 3,
            ids,
            d,
            tau,
            labels,
            ACOSH_CLAMP_EPS,
            ACOSH_SERIES_THRESHOLD,
        )
        t_rerank_end = time.perf_counter_ns()
        use_periodic = lvl < 2
        sin_values = self.cache.lookup(tau) if use_periodic else np.zeros((n, 0))
        prob = np.empty(n)
        eff = np.empty(n)
        abstain = np.empty(n, dtype=bool)
        finite = np.empty(n, dtype=bool)
        kc = self.kernel
        p0, m = self.params.base_rate, self.params.prior_strength
        has_prior = p0 is not None and m is not None
        _njit_vote_rows(
            d,
            sin_values,
            tau,
            labels,
            kc.rbf_length_scale,
            kc.periodic_length_scale,
            kc.local_length_scale,
            use_periodic,
            kc.locally_periodic,
            kc.weight_floor,
            has_prior,
            p0 if p0 is not None else 0.0,
            m if m is not None else 0.0,
            prob,
            eff,
            abstain,
            finite,
        )
        if not finite.all():
            self.fallback_count["kernel"] += int(np.count_nonzero(~finite & ~bad))
        if bad.any():
            for i in np.flatnonzero(bad):
                one = self._finish(Z[i], cand_ids[i], Zn[i], int(T[i]), lvl, 0, 0, 0)
                prob[i], eff[i], abstain[i] = one.prob_up, one.eff_k, one.abstain
                ids[i], d[i] = one.neighbor_ids, one.distances
        return _Rows(prob, eff, abstain, ids, d, t_rerank_end)

    def _finish(
        self,
        z: NDArray[np.float32],
        cand_ids: NDArray[np.int64],
        Zn: NDArray[np.float32],
        t_q: int,
        lvl: int,
        t0: int,
        t1: int,
        t2: int,
    ) -> Score:
        k = self.params.k
        zq = z.astype(np.float64)
        if self._scale != 1.0:
            zq = zq * self._scale
            Zn = Zn * np.float32(self._scale)
        if lvl >= 3:
            sel = np.arange(min(k, len(cand_ids)))
            d = lorentz_distances_to_query(zq, Zn[sel])
        else:
            d_all = lorentz_distances_to_query(zq, Zn)
            sel = np.argsort(d_all, kind="stable")[:k]
            d = d_all[sel]
        if not np.isfinite(d).all():
            self.fallback_count["rerank"] += 1
            d = np.nan_to_num(d, nan=np.inf, posinf=np.inf)
        ids = cand_ids[sel]
        t3 = time.perf_counter_ns()
        tau = np.abs(t_q - self._times[ids])
        use_periodic = lvl < 2
        sin_values = self.cache.lookup(tau) if use_periodic else self._no_sin
        kc = self.kernel
        prob, eff_k, abstain, finite = _njit_weighted_vote(
            d,
            sin_values,
            tau,
            self._labels[ids],
            kc.rbf_length_scale,
            kc.periodic_length_scale,
            kc.local_length_scale,
            use_periodic,
            kc.locally_periodic,
            kc.weight_floor,
        )
        if not finite:
            self.fallback_count["kernel"] += 1
        p0, m = self.params.base_rate, self.params.prior_strength
        if not abstain and p0 is not None and m is not None:
            prob = shrink_to_base_rate(prob, eff_k, p0, m)
        t4 = time.perf_counter_ns()
        timings = {
            "whiten": (t1 - t0) / 1e3,
            "search": (t2 - t1) / 1e3,
            "rerank": (t3 - t2) / 1e3,
            "kernel": (t4 - t3) / 1e3,
        }
        return Score(prob, eff_k, abstain, lvl, ids, d, timings)
