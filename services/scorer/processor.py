"""The scorer's stream logic: features.v1 -> signals.scored, routed, guarded and traced.

Per feature vector: read the control snapshot (fail closed if stale), route to the active
or the canary model by a deterministic hash, score with lorentzcore, and decide side and
tradability from the symbol's trading state. The signal_id is a hash of (symbol,
bar_index, model_id), so a redelivered feature vector yields the same id and executors
can drop the repeat.

Every signal carries its decision age: wall-clock ms from the collector accepting the
tick that closed its bar (the feature service closing an idle bar, when no tick did) to
the decision. Past ``max_signal_age_ms`` it is ``stale_input`` and not tradable, so a
backlog (scorer restart, broker or Redis outage, slow feature service) never comes out
as tradable signals about a market that has moved on.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError

from geodesic.contracts import FeatureVector, ScoredSignal, make_signal_id
from geodesic.contracts.reasons import RejectReason, SignalReason
from geodesic.control import ControlWatcher
from geodesic.runtime.deadletters import DeadLetterSink
from geodesic.runtime.pipeline import Output, StatelessProcessor
from geodesic.serving import ModelCache, decide
from lorentzcore.scorer import STAGES, NonFiniteInputError, Score, Scorer
from lorentzcore.tuning import RecallTuner

log = logging.getLogger(__name__)
LATENCY_BUCKETS_MS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 1000, 5000)


class ScorerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.signals = Counter(
            "signals_total", "signals published", ["route", "side", "tradable"], registry=r
        )
        self.latency = Histogram(
            "stage_latency_ms",
            "per-stage latency",
            ["stage"],
            buckets=LATENCY_BUCKETS_MS,
            registry=r,
        )
        self.e2e = Histogram(
            "e2e_latency_ms",
            "collector ingest of the closing tick -> signal published",
            buckets=LATENCY_BUCKETS_MS,
            registry=r,
        )
        self.fallback = Counter("fallback_total", "float64 recomputes", ["stage"], registry=r)
        self.degrade_level = Gauge("degrade_level", "current degrade level", registry=r)
        self.eff_k = Histogram(
            "eff_k", "effective neighbours", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r
        )
        self.d_l = Histogram(
            "dl_nearest",
            "Lorentz distance to the nearest analog",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8),
            registry=r,
        )
        self.abstain = Counter("abstain_total", "abstentions", registry=r)
        self.stale = Counter(
            "stale_signals_total", "signals past max_signal_age_ms (not tradable)", registry=r
        )
        self.decision_age = Histogram(
            "decision_age_ms",
            "closing tick accepted -> decision",
            buckets=LATENCY_BUCKETS_MS,
            registry=r,
        )
        self.kill_switch = Gauge("kill_switch_active", "global kill switch on", registry=r)
        self.control_stale = Gauge("control_plane_stale", "1 when failing closed", registry=r)
        self.model_active = Gauge("model_active_id", "active model", ["model_id"], registry=r)
        self.ann_recall = Gauge("ann_recall", "rolling recall@K", ["model_id"], registry=r)
        self.ef_search = Gauge("ef_search", "HNSW ef_search", ["model_id"], registry=r)
        self.k_cand = Gauge("k_cand", "candidates re-ranked", ["model_id"], registry=r)
        self.param_bumps = Counter(
            "param_bumps_total", "recall tuner bumps", ["model_id"], registry=r
        )


class ScorerProcessor(StatelessProcessor):
    def __init__(
        self,
        *,
        watcher: ControlWatcher,
        models: ModelCache,
        out_topic: str,
        dead_letters: DeadLetterSink,
        metrics: ScorerMetrics,
        max_signal_age_ms: float = 500.0,
        recall_sample_rate: float = 0.01,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.watcher = watcher
        self.models = models
        self.out_topic = out_topic
        self.dead_letters = dead_letters
        self.max_signal_age_ms = max_signal_age_ms
        self.metrics = metrics
        self.sample_rate = recall_sample_rate
        self.clock = clock
        self.tuners: dict[str, RecallTuner] = {}
        self.counts: dict[str, int] = {"in": 0, "out": 0, "rejected": 0, "stale": 0}
        self._rng = random.Random(0)
        self._reported: dict[tuple[str, str], int] = {}  # (model, what) -> count exported
        # Labelled children, looked up once: labels() costs ~10 us and ran ~9 times a record
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        key = (str(id(metric)), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    async def begin_batch(self) -> None:
        await self.watcher.ensure_fresh()  # a flip applies from the next batch at the latest

    async def process(self, tp: TopicPartition, records: Sequence[ConsumerRecord]) -> list[Output]:
        out: list[Output] = []
        for rec in records:
            try:
                out.append(self.handle(tp, rec))
            except Exception as exc:  # one bad event must never stop the scorer
                log.exception("scorer failed on %s@%s", tp, rec.offset)
                out.append(self._reject(RejectReason.PROCESSING_ERROR, repr(exc), tp, rec))
        return out

    def handle(self, tp: TopicPartition, rec: ConsumerRecord) -> Output:
        t_in = self.clock()
        self.counts["in"] += 1
        raw = rec.value or b""
        try:
            fv = FeatureVector.model_validate_json(raw)
        except ValidationError as exc:
            return self._reject(RejectReason.INVALID_RECORD, str(exc), tp, rec)
        snap = self.watcher.current()
        fallback = self.watcher.last_snapshot
        view = snap or fallback
        if view is None:
            return self._reject(RejectReason.NO_CONTROL_PLANE, "control plane never read", tp, rec)
        model_id, route = view.route(fv.symbol, fv.bar_index)
        state = snap.trading_state(fv.symbol) if snap is not None else None
        scorer = self.models.get(model_id)
        reasons: list[SignalReason] = []
        prob, eff_k, abstain, level = 0.5, 0.0, True, 0
        latency: dict[str, float] = {}
        if scorer is None:
            reasons.append(SignalReason.MODEL_UNAVAILABLE)
        elif scorer.spec.schema_hash != fv.schema_hash:
            reasons.append(SignalReason.SCHEMA_MISMATCH)
        else:
            try:
                x = np.asarray(fv.values, dtype=np.float64)
                result = scorer.score(x, fv.bar_index)
            except (NonFiniteInputError, ValueError) as exc:
                return self._reject(RejectReason.UNSCORABLE_FEATURES, str(exc), tp, rec)
            prob, eff_k, abstain, level = (
                result.prob_up,
                result.eff_k,
                result.abstain,
                result.degrade_level,
            )
            latency = {k: v / 1e3 for k, v in result.timings_us.items()}
            self._observe_model(scorer, result, x)
        params = scorer.params if scorer is not None else None
        hops = dict(fv.hops)
        t_out = self.clock()
        age_ms = decision_age_ms(hops, t_out)
        decision = decide(
            prob_up=prob,
            abstain=abstain,
            long_threshold=params.long_threshold if params else 1.0,
            short_threshold=params.short_threshold if params else 0.0,
            state=state,
            extra_reasons=tuple(reasons),
            age_ms=age_ms,
            max_age_ms=self.max_signal_age_ms,
            degrade_level=level,
        )
        hops["scorer_in"] = t_in
        hops["scorer_out"] = t_out
        latency["score_total"] = (t_out - t_in) / 1e6
        if "feature_out" in hops:
            latency["feature_to_scorer"] = (t_in - hops["feature_out"]) / 1e6
        if "collector" in hops:
            latency["e2e"] = (t_out - hops["collector"]) / 1e6
            self.metrics.e2e.observe(latency["e2e"])
        if age_ms is not None:
            self.metrics.decision_age.observe(age_ms)
        if SignalReason.STALE_INPUT in decision.reasons:
            self.counts["stale"] += 1
            self.metrics.stale.inc()
        signal = ScoredSignal(
            signal_id=make_signal_id(fv.symbol, fv.bar_index, model_id or "none"),
            symbol=fv.symbol,
            bar_index=fv.bar_index,
            ts_ns=fv.ts_ns,
            prob_up=prob,
            side=decision.side,
            model_id=model_id or "none",
            route=route,
            eff_k=eff_k,
            degrade_level=level,
            halted=decision.halted,
            tradable=decision.tradable,
            reasons=list(decision.reasons),
            latency_ms=latency,
            hops=hops,
            emitted_ts_ns=t_out,
            control_version=view.version,
            decision_age_ms=None if age_ms is None else max(0.0, age_ms),
        )
        self._count(signal, snap is None)
        return Output(self.out_topic, fv.symbol.encode(), signal.to_bytes())

    def _observe_model(self, scorer: Scorer, result: Score, x: np.ndarray) -> None:
        m = self.metrics
        for stage in STAGES:
            if stage in result.timings_us:
                self._child(m.latency, stage).observe(result.timings_us[stage] / 1e3)
            self._export_total(
                self._child(m.fallback, stage),
                (scorer.model_id, f"fallback:{stage}"),
                scorer.fallback_count[stage],
            )
        m.degrade_level.set(result.degrade_level)
        m.eff_k.observe(result.eff_k)
        if len(result.distances):
            m.d_l.observe(float(result.distances[0]))
        if result.abstain:
            m.abstain.inc()
        if self.sample_rate > 0 and self._rng.random() < self.sample_rate:
            tuner = self.tuner_for(scorer)
            tuner.observe(scorer.whiten(x))

    def tuner_for(self, scorer: Scorer) -> RecallTuner:
        tuner = self.tuners.get(scorer.model_id)
        if tuner is None:
            tuner = RecallTuner(
                scorer.model.index, k=scorer.params.k, sample_rate=1.0, min_window=32
            )
            self.tuners[scorer.model_id] = tuner
        return tuner

    def refresh_tuning(self) -> None:
        """Evaluate sampled queries and bump ef if recall sagged (runs in a worker thread)."""
        for model_id, tuner in list(self.tuners.items()):
            tuner.maybe_bump()
            met = tuner.metrics()
            if met.get("ann_recall") is not None and not np.isnan(met["ann_recall"]):
                self.metrics.ann_recall.labels(model_id=model_id).set(met["ann_recall"])
            self.metrics.ef_search.labels(model_id=model_id).set(met["ef_search"])
            self.metrics.k_cand.labels(model_id=model_id).set(met["k_cand"])
            self._export_total(
                self.metrics.param_bumps.labels(model_id=model_id),
                (model_id, "param_bumps"),
                int(met["param_bumps_total"]),
            )

    def _export_total(self, counter: Counter, key: tuple[str, str], total: int) -> None:
        """Advance a Prometheus counter to a running total kept by the core."""
        seen = self._reported.get(key, 0)
        if total > seen:
            counter.inc(total - seen)
        self._reported[key] = max(seen, total)

    def _count(self, signal: ScoredSignal, stale: bool) -> None:
        self.counts["out"] += 1
        self._child(
            self.metrics.signals, signal.route, signal.side, str(signal.tradable).lower()
        ).inc()
        self.metrics.control_stale.set(1 if stale else 0)

    def _reject(
        self, reason: RejectReason, detail: str, tp: TopicPartition, rec: ConsumerRecord
    ) -> Output:
        self.counts["rejected"] += 1
        return self.dead_letters.reject_record(reason, detail, tp, rec)


def decision_age_ms(hops: dict[str, int], now_ns: int) -> float | None:
    """Ms from the tick that closed the bar entering the pipeline (the collector's clock)
    or, for a bar closed idle, from the feature service closing it; None if neither hop."""
    start = hops.get("collector", hops.get("feature_in"))
    if start is None:
        return None
    return (now_ns - start) / 1e6
