"""The consume -> process -> produce -> checkpoint -> commit loop every service runs.

Delivery is at-least-once (the broker refuses idempotent and transactional producers):
outputs are acknowledged by the broker before the service checkpoints its own state and
commits input offsets, so a crash can only repeat work, never lose it. Outputs carry
deterministic ids so consumers drop repeats.

Services with state keep it per input partition and checkpoint it together with the next
offset to read. On assignment the loop seeks to the checkpointed offset, which makes the
state and the stream position agree exactly; committed offsets are then used only for lag
monitoring and for stateless services. This sidesteps the broker's ListOffsets quirk (its
end offset can sit behind the newest records of a batch), which would make a changelog-
replay style of recovery silently stale.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError
from aiokafka.structs import OffsetAndMetadata

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes


class PartitionProcessor(Protocol):
    """What a service plugs into the loop; pure logic lives behind these calls."""

    async def on_assigned(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        """Restore state for newly owned partitions; return offsets to seek to (if any)."""
        ...

    async def on_revoked(self, partitions: set[TopicPartition]) -> None: ...

    async def process(
        self, tp: TopicPartition, records: Sequence[ConsumerRecord]
    ) -> list[Output]: ...

    async def on_idle(self, now_ns: int) -> list[Output]:
        """Called after every poll; emit time-driven outputs (e.g. bars of idle symbols)."""
        ...

    async def checkpoint(self, positions: dict[TopicPartition, int]) -> None:
        """Persist state after outputs are acknowledged; positions = next offset to read."""
        ...


class StatelessProcessor:
    """Defaults for processors with no state to restore, checkpoint or flush."""

    async def on_assigned(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        return {}

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        return None

    async def on_idle(self, now_ns: int) -> list[Output]:
        return []

    async def checkpoint(self, positions: dict[TopicPartition, int]) -> None:
        return None


@dataclass
class LoopStats:
    batches: int = 0
    records: int = 0
    outputs: int = 0
    last_batch_ns: int = 0
    assigned: set[TopicPartition] = field(default_factory=set)
    ready: bool = False


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, loop: StreamLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            await self._loop.processor.on_revoked(set(revoked))
        if revoked:
            await self._loop.commit(force=True)
        self._loop.stats.assigned -= set(revoked)
        for tp in revoked:
            self._loop._positions.pop(tp, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        assigned = set(assigned)
        seeks = await self._loop.processor.on_assigned(assigned) if assigned else {}
        for tp, offset in seeks.items():
            self._loop.consumer.seek(tp, offset)
            self._loop._positions[tp] = offset
        self._loop.stats.assigned |= assigned
        self._loop.stats.ready = True
        log.info("assigned %s (seeks %s)", sorted(assigned), seeks)


class StreamLoop:
    """Runs one consumer group member: fetch a batch, process per partition, ack, commit."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        processor: PartitionProcessor,
        topics: Sequence[str],
        *,
        max_records: int = 500,
        poll_timeout_ms: int = 100,
        commit_interval_ms: int = 250,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.processor = processor
        self.topics = list(topics)
        self.max_records = max_records
        self.poll_timeout_ms = poll_timeout_ms
        self.stats = LoopStats()
        self.commit_interval_s = commit_interval_ms / 1000.0
        self._positions: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        self._stopping = asyncio.Event()

    def subscribe(self) -> None:
        self.consumer.subscribe(self.topics, listener=_Rebalance(self))

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        self.subscribe()
        try:
            while not self._stopping.is_set():
                batches = await self.consumer.getmany(
                    timeout_ms=self.poll_timeout_ms, max_records=self.max_records
                )
                await self.handle_batches(batches)
        finally:
            if self._stopping.is_set():
                await self.commit(force=True)

    async def commit(self, *, force: bool = False) -> None:
        """Commit positions at most every commit_interval (and always when forced).

        Offset commits are requests the broker must serve; stateful services resume from
        their checkpoints anyway, and for stateless ones a later commit only widens the
        window a crash replays (outputs carry deterministic ids, so replays are harmless).
        """
        now = time.monotonic()
        if not force and now - self._last_commit < self.commit_interval_s:
            return
        due = {
            tp: o
            for tp, o in self._positions.items()
            if tp in self.stats.assigned and self._committed.get(tp) != o
        }
        self._last_commit = now
        if not due:
            return
        try:
            await self.consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in due.items()})
            self._committed.update(due)
        except CommitFailedError as exc:
            # partitions moved during the batch; the new owner resumes from checkpoints
            log.warning("commit failed after rebalance: %s", exc)

    async def handle_batches(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        pending: list[asyncio.Future] = []
        n_out = 0
        for tp, records in batches.items():
            if not records:
                continue
            for out in await self.processor.process(tp, records):
                pending.append(await self.producer.send(out.topic, out.value, key=out.key))
                n_out += 1
            self._positions[tp] = records[-1].offset + 1
            self.stats.records += len(records)
        for out in await self.processor.on_idle(time.time_ns()):
            pending.append(await self.producer.send(out.topic, out.value, key=out.key))
            n_out += 1
        if pending:
            await asyncio.gather(*pending)
        if not batches and not n_out:
            await self.commit()
            return
        positions = {tp: o for tp, o in self._positions.items() if tp in self.stats.assigned}
        await self.processor.checkpoint(positions)
        await self.commit()
        self.stats.batches += 1
        self.stats.outputs += n_out
        self.stats.last_batch_ns = time.time_ns()
