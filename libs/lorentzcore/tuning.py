"""Recall auto-tuning for the candidate stage.

Truth is the exact top-k in the index's metric (``AnnIndex.exact_search``: squared L2 in
whitened space, or on a Lorentz-MIPS index the exact Lorentz top-k); the candidate stage
"recalls" a true neighbour when it is among the K_cand ids the HNSW search returns. When
measured recall@k is below target the tuner raises ``ef_search`` (geometrically) and, once
ef has reached ``max_ef``, ``k_cand``. Once a model serves, it never lowers either: a tuner
that oscillates would make latency and recall both unpredictable, and lowering is a
deliberate operator decision (``calibrate``, which starts from the floor, is that decision
for a new model, taken offline).
The values are set on the :class:`~lorentzcore.ann.AnnIndex`, so ``index.save`` persists
them with the model.

Three ways in:

* :meth:`RecallTuner.calibrate` - offline, for a new model: the *cheapest* point that
  holds the target, searched upward from the floor (K_cand = k on a Lorentz-MIPS index,
  ef_search = K_cand) in fine steps, judged by the lower confidence bound of recall.
* :meth:`RecallTuner.tune` - offline, on a sample of queries, until the target is met.
* :meth:`RecallTuner.observe` / :meth:`RecallTuner.maybe_bump` - online. ``observe`` is
  on the scoring hot path, so it only samples and enqueues (a few hundred ns); the exact
  search (milliseconds on 200k vectors) runs in :meth:`evaluate_pending`, which
  ``maybe_bump`` calls and which a service should drive from a timer or background task.
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lorentzcore.ann import AnnIndex, recall_at_k, recall_lower_bound

__all__ = ["RecallTuner", "TuneReport", "TuneStep"]


@dataclass(frozen=True, slots=True)
class TuneStep:
    """One measurement: the parameters in effect and the recall they gave."""

    ef_search: int
    k_cand: int
    recall: float


@dataclass(frozen=True, slots=True)
class TuneReport:
    """Outcome of :meth:`RecallTuner.tune`; ``reached`` is False when the caps stopped it."""

    recall: float
    ef_search: int
    k_cand: int
    bumps: int
    history: tuple[TuneStep, ...]
    target: float
    reached: bool


@dataclass(frozen=True, slots=True)
class _Pending:
    query: NDArray[np.float32]
    candidate_ids: NDArray[np.int64] | None
    generation: int


class RecallTuner:
    """Measures recall@k of an :class:`AnnIndex` against exact search and raises its params.

    Args:
        index: the index to tune (its ef_search / k_cand are changed in place).
        target: recall@k to reach (design: 0.95).
        k: the final neighbour count whose recall matters (the re-ranked top K).
        sample_size: queries used by :meth:`tune`.
        max_ef: ef_search cap; past it the tuner raises k_cand instead.
        max_k_cand: k_cand cap (also capped at the index size).
        growth: multiplicative step (> 1), applied to the *effective* ef,
            ``max(ef_search, k_cand)``, because hnswlib searches with ``max(ef, k)`` and a
            smaller ef changes nothing.
        sample_rate: fraction of live queries :meth:`observe` keeps.
        window: rolling-recall window, in sampled queries.
        min_window: sampled queries needed before :meth:`maybe_bump` acts.
        max_pending: cap on queries waiting for exact search (oldest dropped).
        seed: seeds both the tune sample and the live sampling.
        z: standard errors in the confidence bounds: :meth:`calibrate`'s default, and
            :meth:`maybe_bump` bumps only when the rolling mean plus z standard errors
            is still below target.
    """

    def __init__(
        self,
        index: AnnIndex,
        target: float = 0.95,
        *,
        k: int = 10,
        sample_size: int = 256,
        max_ef: int = 1024,
        max_k_cand: int = 1024,
        growth: float = 2.0,
        sample_rate: float = 0.01,
        window: int = 512,
        min_window: int = 64,
        max_pending: int = 1024,
        seed: int = 0,
        z: float = 2.0,
    ) -> None:
        checks = {
            "target": 0.0 < target <= 1.0,
            "k": 1 <= k <= len(index),
            "sample_size": sample_size >= 1,
            "max_ef": max_ef >= 1,
            "max_k_cand": max_k_cand >= 1,
            "growth": growth > 1.0,
            "sample_rate": 0.0 <= sample_rate <= 1.0,
            "window": window >= 1,
            "min_window": 1 <= min_window <= window,
            "max_pending": max_pending >= 1,
            "z": z >= 0.0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid RecallTuner argument(s): {', '.join(bad)}")
        self.index = index
        self.target = float(target)
        self.k = int(k)
        self.sample_size = int(sample_size)
        self.max_ef = int(max_ef)
        self.max_k_cand = int(max_k_cand)
        self.growth = float(growth)
        self.sample_rate = float(sample_rate)
        self.min_window = int(min_window)
        self.z = float(z)
        self._seed = int(seed)
        self._sampler = random.Random(seed)
        self._pending: deque[_Pending] = deque(maxlen=max_pending)
        self._window: deque[float] = deque(maxlen=window)
        self._generation = 0
        self._lock = threading.Lock()
        self.param_bumps = 0

    # ------------------------------------------------------------------ offline
    def tune(self, queries: ArrayLike, k: int | None = None) -> TuneReport:
        """Raise ef_search, then k_cand, until recall@k on a query sample meets the target.

        ``k_cand`` below ``k`` cannot reach full recall, so it is first raised to ``k``
        (counted as a bump).
        """
        k = self.k if k is None else int(k)
        Q, exact_ids = self._sample_truth(queries, k)
        bumps = 0
        if self.index.k_cand < k:
            self.index.set_k_cand(k)
            bumps += 1
        history: list[TuneStep] = []
        while True:
            recall = self._measure(Q, exact_ids)
            history.append(TuneStep(self.index.ef_search, self.index.k_cand, recall))
            if recall >= self.target or not self._bump():
                break
            bumps += 1
        return self._settle(recall, bumps, history, reached=recall >= self.target)

    def calibrate(
        self,
        queries: ArrayLike,
        k: int | None = None,
        *,
        k_cand: int | None = None,
        step: float = 1.25,
        z: float | None = None,
    ) -> TuneReport:
        """The cheapest (ef_search, k_cand) whose recall@k lower bound meets the target.

        Search cost grows with hnswlib's beam, ``max(ef_search, k_cand)``, so the search
        starts at the floor and climbs in steps of ``step`` (finer than ``growth``: every
        step past the needed beam is paid on every event):

        * ``k_cand`` (unless given): k on a Lorentz-MIPS index, whose graph already ranks
          by Lorentz distance, so a K_cand above k buys no recall that the same beam with
          K_cand = k does not (bench/core_scoring.py, docs/performance.md). On an L2 index
          the current k_cand is kept: its headroom for the Lorentz re-rank is judged
          against exact Lorentz k-NN (geodesic certify), which this tuner's L2 truth
          cannot see.
        * ``ef_search``: from k_cand upward until ``recall_lower_bound(.., z)`` >= target;
          past ``max_ef``, k_cand rises as in :meth:`tune`.

        ``queries`` must not be rows of the index (each would find itself): use held-out
        vectors. The index is left at the chosen point; ``reached`` says whether it holds.
        """
        if step <= 1.0:
            raise ValueError(f"step must be > 1; got {step}")
        z = self.z if z is None else float(z)
        k = self.k if k is None else int(k)
        Q, exact_ids = self._sample_truth(queries, k)
        if k_cand is not None:
            self.index.set_k_cand(max(k, min(int(k_cand), len(self.index))))
        elif self.index.metric == "lorentz_mips" or self.index.k_cand < k:
            self.index.set_k_cand(k)
        self.index.set_ef(min(self.index.k_cand, self.max_ef))
        history: list[TuneStep] = []
        bumps = 0
        while True:
            approx_ids, _ = self.index.search(Q, min(self.index.k_cand, len(self.index)))
            bound = recall_lower_bound(approx_ids, exact_ids, z)
            recall = recall_at_k(approx_ids, exact_ids)
            history.append(TuneStep(self.index.ef_search, self.index.k_cand, recall))
            if bound >= self.target or not self._bump(step):
                break
            bumps += 1
        return self._settle(recall, bumps, history, reached=bound >= self.target)

    def _settle(
        self, recall: float, bumps: int, history: list[TuneStep], *, reached: bool
    ) -> TuneReport:
        """Count an offline search's bumps, restart the live window at the chosen point."""
        with self._lock:
            self.param_bumps += bumps
            self._generation += 1
            self._window.clear()
        return TuneReport(
            recall=recall,
            ef_search=self.index.ef_search,
            k_cand=self.index.k_cand,
            bumps=bumps,
            history=tuple(history),
            target=self.target,
            reached=reached,
        )

    def _sample_truth(
        self, queries: ArrayLike, k: int
    ) -> tuple[NDArray[np.floating], NDArray[np.int64]]:
        """At most ``sample_size`` of the queries (seeded) and their exact top-k."""
        if not 1 <= k <= len(self.index):
            raise ValueError(f"k must be in [1, {len(self.index)}]; got {k}")
        Q = np.asarray(queries)
        if Q.ndim != 2 or Q.shape[0] == 0 or Q.shape[1] != self.index.dim:
            raise ValueError(f"queries must be (n, {self.index.dim}); got {Q.shape}")
        rng = np.random.default_rng(self._seed)
        if Q.shape[0] > self.sample_size:
            Q = Q[np.sort(rng.choice(Q.shape[0], self.sample_size, replace=False))]
        exact_ids, _ = self.index.exact_search(Q, k)
        return Q, exact_ids

    def _measure(self, Q: NDArray[np.floating], exact_ids: NDArray[np.int64]) -> float:
        approx_ids, _ = self.index.search(Q, min(self.index.k_cand, len(self.index)))
        return recall_at_k(approx_ids, exact_ids)

    def _bump(self, growth: float | None = None) -> bool:
        """One step up: ef first, k_cand once ef is capped. False when both are capped."""
        growth = self.growth if growth is None else growth
        ef, k_cand = self.index.ef_search, self.index.k_cand
        if ef < self.max_ef:
            effective = max(ef, k_cand)
            self.index.set_ef(min(self.max_ef, max(ef + 1, math.ceil(effective * growth))))
            return True
        k_cap = min(self.max_k_cand, len(self.index))
        if k_cand < k_cap:
            self.index.set_k_cand(min(k_cap, max(k_cand + 1, math.ceil(k_cand * growth))))
            return True
        return False

    # ------------------------------------------------------------------ online
    def observe(self, query: ArrayLike, candidate_ids: ArrayLike | None = None) -> bool:
        """Maybe keep a live query (with probability ``sample_rate``) for recall measurement.

        Pass the ids the scorer already got from the index (at the configured k_cand, not a
        degraded one) to avoid a second ANN query; otherwise the candidates are recomputed
        at evaluation time. Returns whether the query was kept.
        """
        if self._sampler.random() >= self.sample_rate:
            return False
        q = np.array(query, dtype=np.float32).reshape(-1)
        if q.size != self.index.dim:
            raise ValueError(f"query must have {self.index.dim} values; got {q.size}")
        ids = None if candidate_ids is None else np.array(candidate_ids, dtype=np.int64).reshape(-1)
        self._pending.append(_Pending(q, ids, self._generation))
        return True

    def evaluate_pending(self) -> int:
        """Exact-search the queued samples and add their recall to the window (off hot path).

        Samples taken before the last parameter change are discarded. Returns how many
        samples were evaluated.
        """
        with self._lock:
            items = [p for p in self._pending if p.generation == self._generation]
            self._pending.clear()
            generation = self._generation
        if not items:
            return 0
        Q = np.stack([p.query for p in items])
        exact_ids, _ = self.index.exact_search(Q, self.k)
        k_cand = min(self.index.k_cand, len(self.index))
        missing = [i for i, p in enumerate(items) if p.candidate_ids is None]
        fresh = self.index.search(Q[missing], k_cand)[0] if missing else None
        fresh_rows = iter(fresh if fresh is not None else ())
        recalls = [
            recall_at_k(
                (p.candidate_ids if p.candidate_ids is not None else next(fresh_rows))[None, :],
                exact_ids[i : i + 1],
            )
            for i, p in enumerate(items)
        ]
        with self._lock:
            if generation == self._generation:
                self._window.extend(recalls)
        return len(items)

    @property
    def rolling_recall(self) -> float | None:
        """Mean recall@k over the window, or None before any sample was evaluated."""
        with self._lock:
            return float(np.mean(self._window)) if self._window else None

    @property
    def window_size(self) -> int:
        return len(self._window)

    def maybe_bump(self) -> bool:
        """Evaluate pending samples; raise the params once if rolling recall is below target
        beyond its noise: the upper confidence bound of the window's mean (``z`` standard
        errors) under the target.

        A calibrated point sits only a little above the target (its lower bound meets it),
        and the tuner never lowers: a bump on a noisy dip of a 32-sample window would raise
        the search cost for good. Needs ``min_window`` samples first, and clears the window
        after a bump so the next decision is made on measurements taken with the new
        parameters.
        """
        self.evaluate_pending()
        with self._lock:
            n = len(self._window)
            if n < self.min_window:
                return False
            w = np.fromiter(self._window, dtype=np.float64, count=n)
            se = float(w.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0
            if float(w.mean()) + self.z * se >= self.target:
                return False
            if not self._bump():
                return False
            self.param_bumps += 1
            self._generation += 1
            self._window.clear()
            return True

    def metrics(self) -> dict[str, float]:
        """The gauges/counters the design asks the scorer to export."""
        rolling = self.rolling_recall
        return {
            "ann_recall": math.nan if rolling is None else rolling,
            "ef_search": float(self.index.ef_search),
            "k_cand": float(self.index.k_cand),
            "param_bumps_total": float(self.param_bumps),
        }
