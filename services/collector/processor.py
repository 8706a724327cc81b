"""The collector's stream logic: raw bytes in, validated ticks or dead letters out.

Every input record ends in exactly one of accepted (md.ticks), duplicate (dropped,
counted) or dead-lettered (md.ticks.dlq with a reason), so
received == accepted + duplicates + dlq holds by construction and is exported as metrics.

Sequence state is per input partition (it is checkpointed with the partition's offset),
so a symbol's ticks must all arrive on one partition: the one Kafka's default partitioner
gives its key. A tick elsewhere is dead-lettered as ``wrong_partition`` rather than
de-duplicated across partitions, which would need state shared between collector copies.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.typing import EncodableT, FieldT

from collector.validation import (
    Accepted,
    Rejected,
    ValidationPolicy,
    classify,
    expected_partition,
)
from geodesic.contracts.codec import encode_tick
from geodesic.contracts.reasons import RejectReason
from geodesic.marketdata.sequencing import SequenceTracker, SeqVerdict
from geodesic.runtime.checkpoint import CheckpointStore, saved_position
from geodesic.runtime.deadletters import DeadLetterSink
from geodesic.runtime.pipeline import Output


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter("collector_received_total", "raw ticks read", registry=registry)
        self.accepted = Counter("collector_accepted_total", "ticks published", registry=registry)
        self.duplicates = Counter(
            "collector_duplicates_total", "repeated seq dropped", registry=registry
        )
        self.tracked_keys = Gauge(
            "collector_tracked_keys", "(venue, symbol) pairs tracked", registry=registry
        )


class CollectorProcessor:
    def __init__(
        self,
        *,
        policy: ValidationPolicy,
        out_topic: str,
        dead_letters: DeadLetterSink,
        checkpoints: CheckpointStore | None,
        metrics: CollectorMetrics,
        max_keys: int = 100_000,
        reset_gap: int | None = None,
        partitions_for: Callable[[str], int | None] | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.policy = policy
        self.out_topic = out_topic
        self.dead_letters = dead_letters
        self.partitions_for = partitions_for
        self.checkpoints = checkpoints
        self.metrics = metrics
        self.max_keys = max_keys
        self.reset_gap = reset_gap
        self.clock = clock
        self.trackers: dict[TopicPartition, SequenceTracker] = {}
        self.counts = {"received": 0, "accepted": 0, "duplicates": 0, "dlq": 0}
        self.seen: dict[str, int] = {}  # symbol -> last accepted ns, flushed at checkpoint
        self._partition_of: dict[tuple[str, int], int] = {}  # murmur2 is ~6 us a call
        self._changed: set[TopicPartition] = set()
        self._saved: dict[TopicPartition, tuple[int, str | None]] = {}

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
                self._saved[tp] = saved_position(offset)
            else:
                self._saved.pop(tp, None)
            self._changed.discard(tp)
            self.trackers[tp] = tracker
        return seeks

    async def begin_batch(self) -> None:
        return None

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.trackers.pop(tp, None)
            self._saved.pop(tp, None)
            self._changed.discard(tp)

    async def on_idle(self, now_ns: int) -> list[Output]:
        return []

    async def checkpoint(self, positions: dict[TopicPartition, int]) -> None:
        if self.checkpoints is None:
            return
        # Incremental: a partition is written only when its tracker changed (records
        # processed) or its offset moved since the checkpoint Redis holds.
        entries = {
            tp: (o, self.trackers[tp].snapshot())
            for tp, o in positions.items()
            if tp in self.trackers
            and (tp in self._changed or self._saved.get(tp) != saved_position(o))
        }
        # the operator CLI warns about a kill switch for an unseen symbol
        seen, self.seen = self.seen, {}
        fields: dict[FieldT, EncodableT] = {k: v for k, v in seen.items()}
        try:
            await self.checkpoints.save_many(
                entries, hashes={self.checkpoints.keys.seen_symbols: fields}
            )
        except BaseException:
            self.seen = {**seen, **self.seen}  # written with the next checkpoint
            raise
        for tp, (offset, _state) in entries.items():
            self._saved[tp] = saved_position(offset)
            self._changed.discard(tp)
        self.metrics.tracked_keys.set(sum(len(t) for t in self.trackers.values()))

    async def process(self, tp: TopicPartition, records: Sequence[ConsumerRecord]) -> list[Output]:
        tracker = self.trackers.setdefault(tp, self._new_tracker())
        self._changed.add(tp)
        outputs: list[Output] = []
        before = dict(self.counts)
        try:
            for rec in records:
                outputs.extend(self.handle(tracker, tp, rec.value or b"", rec.key, rec.offset))
        finally:  # the counters advance once per batch: a Prometheus inc takes a lock
            self.metrics.received.inc(self.counts["received"] - before["received"])
            self.metrics.accepted.inc(self.counts["accepted"] - before["accepted"])
            self.metrics.duplicates.inc(self.counts["duplicates"] - before["duplicates"])
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
        verdict = classify(raw, key, now, self.policy)
        if isinstance(verdict, Rejected):
            return [self._dead_letter(verdict, raw, key, tp, offset, now)]
        assert isinstance(verdict, Accepted)
        misplaced = self._misplaced(tp, verdict.tick.symbol)
        if misplaced is not None:
            return [self._dead_letter(misplaced, raw, key, tp, offset, now)]
        seq = tracker.observe_tick(verdict.tick)
        if seq is SeqVerdict.DUPLICATE:
            self.counts["duplicates"] += 1
            return []
        if seq is SeqVerdict.OUT_OF_ORDER:
            last = tracker.last_seq(verdict.tick.venue, verdict.tick.symbol)
            rej = Rejected(
                RejectReason.OUT_OF_ORDER_SEQ, f"seq {verdict.tick.seq} < last accepted {last}"
            )
            return [self._dead_letter(rej, raw, key, tp, offset, now)]
        self.counts["accepted"] += 1
        tick = verdict.tick
        self.seen[tick.symbol] = now
        return [Output(self.out_topic, tick.symbol.encode(), encode_tick(tick))]

    def _misplaced(self, tp: TopicPartition, symbol: str) -> Rejected | None:
        if self.partitions_for is None:
            return None
        n = self.partitions_for(tp.topic)
        if not n:
            return None
        want = self._partition_of.get((symbol, n))
        if want is None:
            want = expected_partition(symbol.encode(), n)
            if len(self._partition_of) < self.max_keys:
                self._partition_of[(symbol, n)] = want
        if want == tp.partition:
            return None
        return Rejected(
            RejectReason.WRONG_PARTITION,
            f"symbol {symbol!r} belongs on partition {want} of {n} (murmur2 of the key), "
            f"not {tp.partition}: publish keyed by symbol with the default partitioner",
        )

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
        return self.dead_letters.reject(
            rej.reason,
            rej.detail,
            raw=raw,
            key=key,
            source_topic=tp.topic,
            partition=tp.partition,
            offset=offset,
        )
