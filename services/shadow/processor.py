"""Shadow scoring: the shadow-slot model scores every feature vector, observe-only.

It writes only to signals.shadow and never to signals.scored; it runs in its own
process and consumer group, so nothing it does (or fails to do) can touch the scorer.
It joins its scores with the live signals by the live signal_id, which it can compute
itself because canary routing is a deterministic hash, and reports the match rate (same
side) and score deltas. When the shadow model is the live model, any difference is a
parity failure: the same model on the same input must give the same score.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError

from geodesic.contracts import FeatureVector, ScoredSignal, ShadowScore, Side, make_signal_id
from geodesic.contracts.reasons import RejectReason, SignalReason
from geodesic.control import ControlWatcher
from geodesic.runtime.deadletters import DeadLetterSink
from geodesic.runtime.pipeline import Output, StatelessProcessor
from geodesic.serving import ModelCache
from geodesic.serving.decision import side_for

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LiveSide:
    """What the join needs of a live signal: kept instead of the whole ScoredSignal, whose
    hops and reasons made each of up to ``join_capacity`` waiting entries ~4 KB (the
    shadow process grew 70 MB in a 30-minute soak with no shadow model to join)."""

    signal_id: str
    prob_up: float
    side: Side
    model_id: str
    scored: bool  # False: the live model did not score, nothing to compare

    @classmethod
    def of(cls, sig: ScoredSignal) -> LiveSide:
        return cls(
            sig.signal_id,
            sig.prob_up,
            sig.side,
            sig.model_id,
            not _NOT_SCORED.intersection(sig.reasons),
        )


class ShadowMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.scores = Counter("shadow_scores_total", "shadow scores published", registry=r)
        self.skipped = Counter("shadow_skipped_total", "not scored", ["reason"], registry=r)
        self.joined = Counter("shadow_joined_total", "shadow/live pairs compared", registry=r)
        self.match_rate = Gauge("shadow_match_rate", "rolling same-side rate", registry=r)
        self.delta = Histogram(
            "shadow_score_delta",
            "|prob_up shadow - live|",
            buckets=(1e-9, 1e-6, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.parity_fail = Counter("parity_fail_total", "same model, different score", registry=r)
        self.model_shadow = Gauge("model_shadow_id", "shadow model", ["model_id"], registry=r)


class ShadowProcessor(StatelessProcessor):
    def __init__(
        self,
        *,
        watcher: ControlWatcher,
        models: ModelCache,
        features_topic: str,
        live_topic: str,
        out_topic: str,
        metrics: ShadowMetrics,
        dead_letters: DeadLetterSink,
        match_window: int = 500,
        join_capacity: int = 20_000,
        parity_tolerance: float = 1e-9,
        stats_writer: Callable[[dict[str, Any]], Awaitable[object]] | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.watcher = watcher
        self.models = models
        self.features_topic = features_topic
        self.live_topic = live_topic
        self.out_topic = out_topic
        self.metrics = metrics
        self.dead_letters = dead_letters
        self.parity_tolerance = parity_tolerance
        self.join_capacity = join_capacity
        self.clock = clock
        self.stats_writer = stats_writer
        self._shadow: OrderedDict[str, ShadowScore] = OrderedDict()
        self._live: OrderedDict[str, LiveSide] = OrderedDict()
        self._matches: deque[bool] = deque(maxlen=match_window)
        self._deltas: deque[float] = deque(maxlen=match_window)
        self.counts = {"scored": 0, "joined": 0, "matches": 0, "parity_fail": 0, "errors": 0}

    async def process(self, tp: TopicPartition, records: Sequence[ConsumerRecord]) -> list[Output]:
        out: list[Output] = []
        for rec in records:
            try:
                if tp.topic == self.features_topic:
                    out.extend(self._on_features(rec.value or b""))
                elif tp.topic == self.live_topic:
                    self._on_live(ScoredSignal.model_validate_json(rec.value or b""))
            except Exception as exc:
                # observe-only: a bad record (or one the model cannot score, e.g. a bar
                # index beyond int64) is dead-lettered, never retried forever
                self.counts["errors"] += 1
                if isinstance(exc, ValidationError):
                    reason = RejectReason.INVALID_RECORD
                else:
                    reason = RejectReason.PROCESSING_ERROR
                    log.exception("shadow failed on %s@%d", tp, rec.offset)
                out.append(self.dead_letters.reject_record(reason, _first_line(exc), tp, rec))
        return out

    def _on_features(self, raw: bytes) -> list[Output]:
        fv = FeatureVector.model_validate_json(raw)
        snap = self.watcher.current() or self.watcher.last_snapshot
        if snap is None or not snap.shadow:
            self.metrics.skipped.labels(reason="no_shadow_model").inc()
            return []
        scorer = self.models.get(snap.shadow)
        if scorer is None:
            self.metrics.skipped.labels(reason="model_unavailable").inc()
            return []
        if scorer.spec.schema_hash != fv.schema_hash:
            self.metrics.skipped.labels(reason="schema_mismatch").inc()
            return []
        result = scorer.score(np.asarray(fv.values, dtype=np.float64), fv.bar_index)
        live_model, _route = snap.route(fv.symbol, fv.bar_index)
        p = scorer.params
        side: Side = (
            "flat"
            if result.abstain
            else side_for(result.prob_up, p.long_threshold, p.short_threshold)
        )
        score = ShadowScore(
            signal_id=make_signal_id(fv.symbol, fv.bar_index, scorer.model_id),
            live_signal_id=make_signal_id(fv.symbol, fv.bar_index, live_model or "none"),
            symbol=fv.symbol,
            bar_index=fv.bar_index,
            ts_ns=fv.ts_ns,
            prob_up=result.prob_up,
            side=side,
            model_id=scorer.model_id,
            eff_k=result.eff_k,
            emitted_ts_ns=self.clock(),
        )
        self.counts["scored"] += 1
        self.metrics.scores.inc()
        self.metrics.model_shadow.clear()
        self.metrics.model_shadow.labels(model_id=scorer.model_id).set(1)
        live = self._live.pop(score.live_signal_id, None)
        if live is not None:
            self._compare(score, live)
        else:
            self._remember(self._shadow, score.live_signal_id, score)
        return [Output(self.out_topic, fv.symbol.encode(), score.to_bytes())]

    def _on_live(self, sig: ScoredSignal) -> None:
        live = LiveSide.of(sig)
        shadow = self._shadow.pop(sig.signal_id, None)
        if shadow is not None:
            self._compare(shadow, live)
        else:
            self._remember(self._live, sig.signal_id, live)

    def _remember(self, buf: OrderedDict[str, Any], key: str, value: object) -> None:
        buf[key] = value
        while len(buf) > self.join_capacity:
            buf.popitem(last=False)

    def _compare(self, shadow: ShadowScore, live: LiveSide) -> None:
        if not live.scored:
            return  # the live side did not score: nothing to compare
        delta = abs(shadow.prob_up - live.prob_up)
        match = shadow.side == live.side
        self._matches.append(match)
        self._deltas.append(delta)
        self.counts["joined"] += 1
        self.counts["matches"] += int(match)
        self.metrics.joined.inc()
        self.metrics.delta.observe(delta)
        self.metrics.match_rate.set(sum(self._matches) / len(self._matches))
        if shadow.model_id == live.model_id and delta > self.parity_tolerance:
            self.counts["parity_fail"] += 1
            self.metrics.parity_fail.inc()
            log.error(
                "parity failure: %s scored %.9f live vs %.9f shadow",
                live.signal_id,
                live.prob_up,
                shadow.prob_up,
            )

    def stats(self) -> dict[str, Any]:
        n = len(self._matches)
        return {
            "match_rate": (sum(self._matches) / n) if n else None,
            "window": n,
            "mean_abs_delta": (float(np.mean(self._deltas)) if self._deltas else None),
            **self.counts,
        }

    async def checkpoint(self, positions: dict[TopicPartition, int]) -> None:
        if self.stats_writer is not None:
            await self.stats_writer(self.stats())


#: Live signals whose model did not score: nothing to compare a shadow score with.
_NOT_SCORED = frozenset({SignalReason.MODEL_UNAVAILABLE, SignalReason.SCHEMA_MISMATCH})


def _first_line(exc: Exception) -> str:
    text = str(exc)
    return text.splitlines()[0][:200] if text else type(exc).__name__


def stats_json(stats: dict[str, Any]) -> str:
    return json.dumps(stats, sort_keys=True)
