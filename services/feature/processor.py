"""The feature service's stream logic: ticks -> bars -> feature vectors, per partition.

State (sequence tracker, open bars, feature history) is kept per input partition and
checkpointed with the next offset, so a restart or a rebalance resumes exactly where the
state was taken: no bar is lost and no tick is counted twice. Ticks repeated by an
at-least-once upstream are dropped by seq before they can reach a bar.

Idle symbols: a bar normally closes when the symbol's first tick of a later bar arrives.
For symbols that go quiet, the bar is closed `grace` after its end on an event-time clock
that advances with the wall clock from the last tick seen, so replays at any speed and
live feeds both close idle bars without waiting for the next tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import ValidationError

from geodesic.contracts import Bar, Tick
from geodesic.contracts.codec import decode_tick
from geodesic.contracts.reasons import RejectReason
from geodesic.features import BarBuilder, FeatureEngine
from geodesic.features.bars import PriceSource
from geodesic.marketdata.sequencing import SequenceTracker
from geodesic.runtime.checkpoint import CheckpointStore, saved_position
from geodesic.runtime.deadletters import DeadLetterSink
from geodesic.runtime.pipeline import Output

log = logging.getLogger(__name__)
LATENCY_BUCKETS_MS = (0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 1000, 5000)


class FeatureMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.ticks = Counter("feature_ticks_total", "ticks consumed", registry=registry)
        self.duplicates = Counter(
            "feature_duplicate_ticks_total", "repeated ticks dropped", registry=registry
        )
        self.late = Counter("feature_late_ticks_total", "late ticks", ["reason"], registry=registry)
        self.bars = Counter("feature_bars_total", "bars closed", registry=registry)
        self.vectors = Counter("feature_vectors_total", "feature vectors", registry=registry)
        self.latency = Histogram(
            "stage_latency_ms",
            "per-stage latency",
            ["stage"],
            buckets=LATENCY_BUCKETS_MS,
            registry=registry,
        )


@dataclass
class _PartitionState:
    tracker: SequenceTracker
    bars: BarBuilder
    engine: FeatureEngine
    last_event_ns: int = 0
    last_wall_ns: int = 0


class FeatureProcessor:
    def __init__(
        self,
        *,
        bar_seconds: int,
        price_source: PriceSource,
        bars_topic: str,
        features_topic: str,
        idle_flush_grace_s: float | None,
        checkpoints: CheckpointStore | None,
        metrics: FeatureMetrics,
        dead_letters: DeadLetterSink,
        clock: Callable[[], int] = time.time_ns,
        is_behind: Callable[[TopicPartition], bool] | None = None,
    ) -> None:
        self.bar_seconds = bar_seconds
        self.price_source = price_source
        self.bars_topic = bars_topic
        self.features_topic = features_topic
        self.grace_ns = None if idle_flush_grace_s is None else int(idle_flush_grace_s * 1e9)
        self.checkpoints = checkpoints
        self.metrics = metrics
        self.clock = clock
        # Whether a partition still has unread records (the stream loop knows); idle bars
        # of such a partition are not flushed, since their closing ticks are in the log.
        self.is_behind = is_behind
        self.parts: dict[TopicPartition, _PartitionState] = {}
        self.dead_letters = dead_letters
        # Incremental checkpoints: a partition is written only when its state changed
        # (records processed, idle bars closed) or its offset moved since the checkpoint
        # Redis holds, so an unchanged partition is never re-encoded and re-sent.
        self._changed: set[TopicPartition] = set()
        self._saved: dict[TopicPartition, tuple[int, str | None]] = {}

    def _new_state(self) -> _PartitionState:
        return _PartitionState(
            tracker=SequenceTracker(),
            bars=BarBuilder(self.bar_seconds, self.price_source),
            engine=FeatureEngine(),
        )

    @property
    def schema_hash(self) -> str:
        return FeatureEngine().schema_hash

    async def on_assigned(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        seeks: dict[TopicPartition, int] = {}
        for tp in partitions:
            st = self._new_state()
            saved = await self.checkpoints.load(tp) if self.checkpoints else None
            if saved is not None:
                offset, state = saved
                st.tracker.restore(state["tracker"])
                st.bars.restore(state["bars"])
                st.engine.restore(state["engine"])
                st.last_event_ns = int(state.get("last_event_ns", 0))
                st.last_wall_ns = self.clock()
                seeks[tp] = offset
                self._saved[tp] = saved_position(offset)
            else:
                self._saved.pop(tp, None)
            self._changed.discard(tp)
            self.parts[tp] = st
        return seeks

    async def begin_batch(self) -> None:
        return None

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.parts.pop(tp, None)
            self._saved.pop(tp, None)
            self._changed.discard(tp)

    async def checkpoint(self, positions: dict[TopicPartition, int]) -> None:
        if self.checkpoints is None:
            return
        entries = {}
        for tp, offset in positions.items():
            st = self.parts.get(tp)
            if st is None:
                continue
            if tp not in self._changed and self._saved.get(tp) == saved_position(offset):
                continue  # Redis already holds exactly this state at this offset
            entries[tp] = (
                offset,
                {
                    "tracker": st.tracker.snapshot(),
                    "bars": st.bars.snapshot(),
                    "engine": st.engine.snapshot(),
                    "last_event_ns": st.last_event_ns,
                },
            )
        await self.checkpoints.save_many(entries)
        for tp, (offset, _state) in entries.items():
            self._saved[tp] = saved_position(offset)
            self._changed.discard(tp)

    async def process(self, tp: TopicPartition, records: Sequence[ConsumerRecord]) -> list[Output]:
        st = self.parts.get(tp)
        if st is None:
            st = self.parts[tp] = self._new_state()
        self._changed.add(tp)
        out: list[Output] = []
        for rec in records:
            now = self.clock()
            try:
                raw = rec.value or b""
                tick = decode_tick(raw) or Tick.model_validate_json(raw)
            except ValidationError as exc:
                # md.ticks is written by the collector only: a bug or an intruder
                out.append(self._reject(tp, rec, RejectReason.INVALID_RECORD, exc))
                continue
            self.metrics.ticks.inc()
            try:
                out.extend(self._on_tick(st, tick, now))
            except Exception as exc:  # kept in the DLQ with its traceback logged
                log.exception("feature failed on %s@%d", tp, rec.offset)
                out.append(self._reject(tp, rec, RejectReason.PROCESSING_ERROR, exc))
        return out

    def _reject(
        self, tp: TopicPartition, rec: ConsumerRecord, reason: RejectReason, exc: Exception
    ) -> Output:
        """Retrying a record that fails would wedge the partition: dead-letter it."""
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return self.dead_letters.reject_record(reason, detail, tp, rec)

    def _on_tick(self, st: _PartitionState, tick: Tick, now: int) -> list[Output]:
        if not st.tracker.observe_tick(tick).publish:
            self.metrics.duplicates.inc()
            return []
        st.last_event_ns = max(st.last_event_ns, tick.ts_ns)
        st.last_wall_ns = now
        result = st.bars.on_tick(tick, now)
        if result.late is not None:
            self.metrics.late.labels(reason=result.late.value).inc()
        if result.closed is None:
            return []
        hops = {"tick_ts": tick.ts_ns, "feature_in": now}
        if tick.ingest_ts_ns:
            hops["collector"] = tick.ingest_ts_ns
        return self._emit(st, result.closed, hops)

    async def on_idle(self, now_ns: int) -> list[Output]:
        if self.grace_ns is None:
            return []
        out: list[Output] = []
        for tp, st in self.parts.items():
            if not st.last_wall_ns:
                continue
            if self.is_behind is not None and self.is_behind(tp):
                continue
            event_now = st.last_event_ns + (now_ns - st.last_wall_ns)
            for bar in st.bars.flush_due(event_now, self.grace_ns):
                self._changed.add(tp)
                try:
                    out.extend(self._emit(st, bar, {"feature_in": now_ns}))
                except Exception as exc:  # a bar built from hostile ticks must not stop us
                    log.exception("feature could not emit %s bar %d", bar.symbol, bar.bar_index)
                    out.append(
                        self.dead_letters.reject(
                            RejectReason.PROCESSING_ERROR,
                            f"idle-closed bar {bar.bar_index}: {exc}",
                            raw=bar.to_bytes(),
                            key=bar.symbol.encode(),
                            source_topic=tp.topic,
                            partition=tp.partition,
                            offset=-1,
                        )
                    )
        return out

    def _emit(self, st: _PartitionState, bar: Bar, hops: dict[str, int]) -> list[Output]:
        key = bar.symbol.encode()
        self.metrics.bars.inc()
        out = [Output(self.bars_topic, key, bar.to_bytes())]
        values = st.engine.on_bar(bar)
        if values is not None:
            done = self.clock()
            hops["feature_out"] = done
            vec = st.engine.vector(bar, values, hops)
            self.metrics.vectors.inc()
            self.metrics.latency.labels(stage="feature").observe((done - hops["feature_in"]) / 1e6)
            out.append(Output(self.features_topic, key, vec.to_bytes()))
        return out

    def warmup(self) -> dict[str, int]:
        """Bars of history per symbol (a symbol scores from ``warmup_bars`` on)."""
        progress: dict[str, int] = {}
        for st in self.parts.values():
            progress.update(st.engine.warmup_progress())
        return progress
