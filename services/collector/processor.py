"""The collector's stream logic: raw bytes in, validated ticks or dead letters out.

Every input record ends in exactly one of accepted (md.ticks), duplicate (dropped,
counted) or dead-lettered (md.ticks.dlq with a reason), so
received == accepted + duplicates + dlq holds by construction and is exported as metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge

from collector.validation import (
    Accepted,
    Rejected,
    RejectReason,
    ValidationPolicy,
    classify,
    make_dead_letter,
)
from geodesic.runtime.checkpoint import CheckpointStore
from geodesic.runtime.pipeline import Output
from geodesic.sequencing import SequenceTracker, SeqVerdict


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter("collector_received_total", "raw ticks read", registry=registry)
        self.accepted = Counter("collector_accepted_total", "ticks published", registry=registry)
        self.duplicates = Counter(
            "collector_duplicates_total", "repeated seq dropped", registry=registry
        )
        self.dlq = Counter("dlq_total", "messages dead-lettered", ["reason"], registry=registry)
        self.tracked_keys = Gauge(
            "collector_tracked_keys", "(venue, symbol) pairs tracked", registry=registry
        )


class CollectorProcessor:
    def __init__(
        self,
        *,
        policy: ValidationPolicy,
        out_topic: str,
        dlq_topic: str,
        checkpoints: CheckpointStore | None,
        metrics: CollectorMetrics,
        max_keys: int = 100_000,
        reset_gap: int | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.policy = policy
        self.out_topic = out_topic
        self.dlq_topic = dlq_topic
        self.checkpoints = checkpoints
        self.metrics = metrics
        self.max_keys = max_keys
        self.reset_gap = reset_gap
        self.clock = clock
        self.trackers: dict[TopicPartition, SequenceTracker] = {}
        self.counts = {"received": 0, "accepted": 0, "duplicates": 0, "dlq": 0}
        self.seen: dict[str, int] = {}  # symbol -> last accepted ns, flushed at checkpoint

    def _new_tracker(self) -> SequenceTracker:
        return SequenceTracker(max_keys=self.max_keys, reset_gap=self.reset_gap)

    async def on_assigned(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        seeks: dict[TopicPartition, int] = {}
        for tp in partitions:
            tracker = self._new_tracker()
            saved = await self.checkpoints.load(tp) if self.checkpoints else None
            if saved is not None:
                offset, state = saved
                tracker.restore(state)
                seeks[tp] = offset
            self.trackers[tp] = tracker
        return seeks

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.trackers.pop(tp, None)

    async def on_idle(self, now_ns: int) -> list[Output]:
        return []

    async def checkpoint(self, positions: dict[TopicPartition, int]) -> None:
        if self.checkpoints is None:
            return
        await self.checkpoints.save_many(
            {
                tp: (o, self.trackers[tp].snapshot())
                for tp, o in positions.items()
                if tp in self.trackers
            }
        )
        self.metrics.tracked_keys.set(sum(len(t) for t in self.trackers.values()))
        if self.seen:  # the operator CLI warns about a kill switch for an unseen symbol
            seen, self.seen = self.seen, {}
            await self.checkpoints.redis.hset(self.checkpoints.keys.seen_symbols, mapping=seen)

    async def process(self, tp: TopicPartition, records: Sequence[ConsumerRecord]) -> list[Output]:
        tracker = self.trackers.setdefault(tp, self._new_tracker())
        outputs: list[Output] = []
        for rec in records:
            outputs.extend(self.handle(tracker, tp, rec.value or b"", rec.key, rec.offset))
        return outputs

    def handle(
        self,
        tracker: SequenceTracker,
        tp: TopicPartition,
        raw: bytes,
        key: bytes | None,
        offset: int,
    ) -> list[Output]:
        now = self.clock()
        self.counts["received"] += 1
        self.metrics.received.inc()
        verdict = classify(raw, key, now, self.policy)
        if isinstance(verdict, Rejected):
            return [self._dead_letter(verdict, raw, key, tp, offset, now)]
        assert isinstance(verdict, Accepted)
        seq = tracker.observe_tick(verdict.tick)
        if seq is SeqVerdict.DUPLICATE:
            self.counts["duplicates"] += 1
            self.metrics.duplicates.inc()
            return []
        if seq is SeqVerdict.OUT_OF_ORDER:
            last = tracker.last_seq(verdict.tick.venue, verdict.tick.symbol)
            rej = Rejected(
                RejectReason.OUT_OF_ORDER_SEQ, f"seq {verdict.tick.seq} < last accepted {last}"
            )
            return [self._dead_letter(rej, raw, key, tp, offset, now)]
        self.counts["accepted"] += 1
        self.metrics.accepted.inc()
        tick = verdict.tick
        self.seen[tick.symbol] = now
        return [Output(self.out_topic, tick.symbol.encode(), tick.to_bytes())]

    def _dead_letter(
        self,
        rej: Rejected,
        raw: bytes,
        key: bytes | None,
        tp: TopicPartition,
        offset: int,
        now: int,
    ) -> Output:
        self.counts["dlq"] += 1
        self.metrics.dlq.labels(reason=rej.reason.value).inc()
        letter = make_dead_letter(
            rej,
            raw=raw,
            key=key,
            source_topic=tp.topic,
            partition=tp.partition,
            offset=offset,
            now_ns=now,
        )
        return Output(self.dlq_topic, key, letter.to_bytes())
