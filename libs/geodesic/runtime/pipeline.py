"""The consume -> process -> produce -> checkpoint -> commit loop every service runs.

On Tansu delivery is at-least-once (it refuses idempotent and transactional producers):
outputs are acknowledged by the broker before the service checkpoints its own state and
commits input offsets, so a crash can only repeat work, never lose it. Outputs carry
deterministic ids so consumers drop repeats.

On Apache Kafka (``transactional=True``) each batch is one transaction: its outputs and
the input offsets after it (``send_offsets_to_transaction``) commit together, then the
state is checkpointed. Downstream consumers read committed records only, so a crash
before the commit leaves nothing visible and the batch is redone. A crash after the
commit but before the checkpoint leaves state behind the committed offsets: on
assignment the loop seeks to the checkpoint as usual and *replays* the records up to the
committed offset, processing them to rebuild state but dropping their outputs (they are
already committed). Outputs are deterministic functions of state and input, so the
result is exactly-once; time-driven outputs (``on_idle``) are the exception and may
repeat, with the same deterministic ids.

Services with state keep it per input partition and checkpoint it together with the next
offset to read. On assignment the loop seeks to the checkpointed offset, which makes the
state and the stream position agree exactly; committed offsets are then used only for lag
monitoring and for stateless services. This sidesteps the broker's ListOffsets quirk (its
end offset can sit behind the newest records of a batch), which would make a changelog-
replay style of recovery silently stale.

A checkpointed offset is only meaningful in the log it was taken from. The embedded
broker (memory storage) forgets every record and every group offset when it restarts,
and it answers a fetch beyond the end of the new, empty log with no error, so a consumer
seeked to an old offset would wait until the new log grows past it and then skip what
came before. So each checkpoint carries a fingerprint of the record just before its
offset (:class:`Position`); on assignment the loop reads that record back and resumes
there only if it is the same record, otherwise it restarts the partition from the
beginning of the log it finds (state is kept: the new log continues the same streams).
A fetch high watermark that goes backwards, or a position beyond it, is treated the same
way (that catches a restart under a consumer that has not rejoined its group yet).
Recovery semantics are in docs/broker-notes.md ("Broker restart").

An output the broker will never take (larger than the producer's or the broker's message
limit) is replaced by a bounded dead letter (:mod:`geodesic.runtime.deadletters`) instead
of failing the batch: a failed batch is retried from the same offsets after a restart,
so one oversized record would stop the service for good.

The state store (Redis) may be unreachable for a while: a failed checkpoint is skipped
(offsets are then not committed either, so nothing runs ahead of the last checkpoint),
time-driven work that needs the store is retried later, and restoring state on
assignment waits for the store with fetching paused, so no record is ever processed on a
state that was not restored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import (
    CommitFailedError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.structs import OffsetAndMetadata
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

#: Failures of the state store that a later attempt can fix (Redis down, restarting,
#: loading its append-only file): retried or skipped, never fatal to the loop.
STATE_STORE_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)

#: The broker will never take these outputs, however often they are retried.
UNPRODUCIBLE_ERRORS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
)

_RESTORE_RETRY_MAX_S = 2.0
_WARN_EVERY_S = 5.0


class Position(int):
    """A next-offset-to-read that remembers the record before it.

    ``fingerprint`` identifies record ``self - 1`` (key, value and timestamp), so a
    restore can check that it resumes in the same log rather than at the same number in
    a log that was wiped and refilled. It is an int, so code that stores offsets keeps
    working; :class:`geodesic.runtime.checkpoint.CheckpointStore` persists the fingerprint.
    """

    fingerprint: str | None

    def __new__(cls, offset: int, fingerprint: str | None = None) -> Position:
        obj = super().__new__(cls, offset)
        obj.fingerprint = fingerprint
        return obj


def record_fingerprint(record: ConsumerRecord) -> str:
    """A short digest of one record's key, value and timestamp."""
    digest = hashlib.blake2b(digest_size=8)
    for part in (record.key or b"", record.value or b"", str(record.timestamp).encode()):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes


class DeadLetterHook(Protocol):
    """Turns an output the broker refuses into a dead letter (DeadLetterSink does)."""

    def unproducible(self, out: Output, exc: BaseException, context: str) -> Output: ...


class PartitionProcessor(Protocol):
    """What a service plugs into the loop; pure logic lives behind these calls."""

    async def on_assigned(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        """Restore state for newly owned partitions; return offsets to seek to (if any)."""
        ...

    async def on_revoked(self, partitions: set[TopicPartition]) -> None: ...

    async def begin_batch(self) -> None:
        """Called once per fetched batch, before its partitions' process() calls: work that
        must happen at batch boundaries but not once per partition (the scorer's control
        plane read was ~2 ms a call, paid for every partition in the batch)."""
        ...

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

    async def begin_batch(self) -> None:
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
    restoring: bool = False
    state_store_errors: int = 0
    log_resets: int = 0
    replayed: int = 0  # records re-processed after a restart with their outputs dropped
    transactions: int = 0


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
            self._loop._verify.pop(tp, None)
            self._loop._fingerprints.pop(tp, None)
            self._loop._fetched.pop(tp, None)
            self._loop._replay_until.pop(tp, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Restore state, then seek; fetching stays paused until both are done.

        aiokafka swallows an exception raised here and keeps consuming from the committed
        offsets, which would run the partitions on empty state; so a state store that is
        down is waited for instead (the service reports not ready meanwhile).
        """
        loop = self._loop
        assigned = set(assigned)
        if not assigned:
            loop.stats.ready = True
            return
        loop.consumer.pause(*assigned)
        try:
            seeks = await loop.restore(assigned)
            for tp, offset in seeks.items():
                loop.seek_checkpoint(tp, offset)
            await loop.plan_replay(seeks)
        except Exception as exc:
            loop.fail(exc)  # stop the loop: never consume on state that was not restored
            raise
        loop.stats.assigned |= assigned
        loop.stats.ready = True
        loop.consumer.resume(*assigned)
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
        dead_letters: DeadLetterHook | None = None,
        transactional: bool = False,
        group_id: str | None = None,
    ) -> None:
        if transactional and not group_id:
            raise ValueError("transactional=True needs the consumer's group_id")
        self.consumer = consumer
        self.transactional = transactional
        self.group_id = group_id
        self._in_txn = False
        # partition -> committed offset the checkpointed state has not caught up with
        self._replay_until: dict[TopicPartition, int] = {}
        # partition -> the consumer's fetch position, which (unlike the last record's
        # offset + 1) steps over transaction markers; read before each batch
        self._fetched: dict[TopicPartition, int] = {}
        self.dead_letters = dead_letters
        self.producer = producer
        self.processor = processor
        self.topics = list(topics)
        self.max_records = max_records
        self.poll_timeout_ms = poll_timeout_ms
        self.stats = LoopStats()
        self.commit_interval_s = commit_interval_ms / 1000.0
        self._positions: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._fingerprints: dict[TopicPartition, str] = {}
        self._highwater: dict[TopicPartition, int] = {}  # highest fetch high watermark seen
        # partition -> (checkpointed offset, fingerprint of the record before it)
        self._verify: dict[TopicPartition, tuple[int, str]] = {}
        self._last_commit = 0.0
        self._last_warning = float("-inf")
        self._stopping = asyncio.Event()
        self._fatal: BaseException | None = None

    def subscribe(self) -> None:
        self.consumer.subscribe(self.topics, listener=_Rebalance(self))

    def stop(self) -> None:
        self._stopping.set()

    def position(self, tp: TopicPartition) -> int | None:
        """Next offset to process in ``tp`` (None before the first record or seek).

        On a transactional topic the log ends with a commit marker, which no record
        carries: the consumer's position past it counts once every record before it has
        been processed.
        """
        processed = self._positions.get(tp)
        fetched = self._fetched.get(tp)
        if processed is None or fetched is None:
            return processed
        return max(processed, fetched)

    def behind(self, tp: TopicPartition) -> bool:
        """True while ``tp`` has records in the log that this loop has not processed yet.

        Time-driven work (closing an idle symbol's bar) must wait for them: after a stall
        the wall clock has moved on, but the records that would have closed the bar the
        normal way are already there.
        """
        highwater = self.consumer.highwater(tp)
        position = self.position(tp)
        if highwater is None or position is None:
            return tp in self._verify
        return position < highwater or tp in self._verify

    def fail(self, exc: BaseException) -> None:
        """Make run() raise ``exc`` (from callbacks whose exceptions aiokafka swallows)."""
        self._fatal = exc

    async def run(self) -> None:
        self.subscribe()
        try:
            while not self._stopping.is_set():
                batches = await self.consumer.getmany(
                    timeout_ms=self.poll_timeout_ms, max_records=self.max_records
                )
                if self._fatal is not None:
                    raise RuntimeError("partition assignment failed") from self._fatal
                await self.handle_batches(batches)
        finally:
            if self._stopping.is_set():
                await self.commit(force=True)

    async def restore(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        """The processor's on_assigned, retried while the state store is unreachable."""
        delay = 0.1
        self.stats.restoring = True
        try:
            while True:
                try:
                    return await self.processor.on_assigned(partitions)
                except STATE_STORE_ERRORS as exc:
                    self.stats.state_store_errors += 1
                    log.warning("cannot restore state (%s); retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _RESTORE_RETRY_MAX_S)
        finally:
            self.stats.restoring = False

    async def plan_replay(self, seeks: dict[TopicPartition, int]) -> None:
        """Transactional only: where the committed offset is ahead of the checkpoint (a
        crash between the transaction commit and the checkpoint), replay up to it."""
        if not self.transactional:
            return
        for tp, offset in seeks.items():
            committed = await self.consumer.committed(tp)
            if committed is not None and committed > int(offset):
                self._replay_until[tp] = committed
                log.info("%s: replaying %d..%d without outputs", tp, offset, committed)
            else:
                self._replay_until.pop(tp, None)

    def seek_checkpoint(self, tp: TopicPartition, offset: int) -> None:
        """Seek to a checkpointed offset; with a fingerprint, to the record before it so
        the first fetch proves (or disproves) that this is still the same log."""
        fingerprint = getattr(offset, "fingerprint", None)
        if fingerprint and offset > 0:
            self.consumer.seek(tp, offset - 1)
            self._verify[tp] = (int(offset), fingerprint)
            self._fingerprints[tp] = fingerprint
        else:
            self.consumer.seek(tp, offset)
            self._verify.pop(tp, None)
            self._fingerprints.pop(tp, None)
        self._positions[tp] = int(offset)

    async def _restart_partition(self, tp: TopicPartition, why: str) -> None:
        """The log under a checkpoint or position is gone: read what the log holds now."""
        self.stats.log_resets += 1
        log.warning("%s: %s; resuming from the beginning of the log it now holds", tp, why)
        self._verify.pop(tp, None)
        self._positions.pop(tp, None)
        self._fingerprints.pop(tp, None)
        await self.consumer.seek_to_beginning(tp)

    async def _check_logs(
        self, batches: dict[TopicPartition, list[ConsumerRecord]]
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Restart partitions whose log was replaced; drop verified probe records.

        A log was replaced when its fetch high watermark went backwards, when a restored
        position lies beyond it, or when the record before a checkpoint is not the one
        the checkpoint remembers. Records fetched from such a partition are dropped: they
        are read again from the beginning of the new log.
        """
        restarted: set[TopicPartition] = set()
        for tp in list(self.stats.assigned):
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                continue
            seen = self._highwater.get(tp, 0)
            self._highwater[tp] = max(seen, highwater)
            reason = None
            if highwater < seen:
                reason = f"log end went back from {seen} to {highwater}"
            elif tp in self._verify and not batches.get(tp):
                if highwater < self._verify[tp][0]:
                    reason = f"checkpoint {self._verify[tp][0]} beyond the log end {highwater}"
            elif tp not in self._verify:
                position = self._positions.get(tp)
                if position is not None and position > highwater:
                    reason = f"position {position} beyond the log end {highwater}"
            if reason is not None:
                self._highwater[tp] = highwater
                restarted.add(tp)
                await self._restart_partition(tp, reason)
        checked: dict[TopicPartition, list[ConsumerRecord]] = {}
        for tp, records in batches.items():
            if tp in restarted:
                continue
            expected = self._verify.get(tp)
            if expected is None or not records:
                checked[tp] = records
                continue
            offset, fingerprint = expected
            first = records[0]
            if first.offset == offset - 1 and record_fingerprint(first) == fingerprint:
                del self._verify[tp]
                checked[tp] = records[1:]
            else:
                await self._restart_partition(
                    tp, f"record {offset - 1} is not the one checkpointed (log replaced)"
                )
        return checked

    def _state_store_failed(self, what: str, exc: BaseException) -> None:
        self.stats.state_store_errors += 1
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            log.warning(
                "%s failed (%s); state store errors so far: %d",
                what,
                exc,
                self.stats.state_store_errors,
            )

    async def commit(self, *, force: bool = False) -> None:
        """Commit positions at most every commit_interval (and always when forced).

        Offset commits are requests the broker must serve; stateful services resume from
        their checkpoints anyway, and for stateless ones a later commit only widens the
        window a crash replays (outputs carry deterministic ids, so replays are harmless).
        """
        if self.transactional:
            return  # offsets are committed inside each batch's transaction
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

    async def _begin(self) -> None:
        if self.transactional and not self._in_txn:
            await self.producer.begin_transaction()
            self._in_txn = True

    async def _commit_transaction(self, positions: dict[TopicPartition, int]) -> None:
        """Commit this batch's outputs together with the input offsets after it."""
        due = {tp: int(o) for tp, o in positions.items() if self._committed.get(tp) != o}
        if not self._in_txn and not due:
            return
        await self._begin()
        try:
            if due:
                await self.producer.send_offsets_to_transaction(
                    {tp: OffsetAndMetadata(o, "") for tp, o in due.items()}, self.group_id
                )
            await self.producer.commit_transaction()
        finally:
            self._in_txn = False
        self._committed.update(due)
        self.stats.transactions += 1

    async def _abort_transaction(self) -> None:
        if self._in_txn:
            self._in_txn = False
            try:
                await self.producer.abort_transaction()
            except Exception as exc:  # the batch fails anyway; the broker times it out
                log.warning("aborting the transaction failed: %s", exc)

    async def _process(self, tp: TopicPartition, records: list[ConsumerRecord]) -> list[Output]:
        """The processor's outputs, minus those of records being replayed (already
        committed in a transaction the checkpoint did not see)."""
        until = self._replay_until.get(tp)
        if until is None:
            return await self.processor.process(tp, records)
        replay = [r for r in records if r.offset < until]
        fresh = [r for r in records if r.offset >= until]
        if replay:
            await self.processor.process(tp, replay)
            self.stats.replayed += len(replay)
        if fresh or (replay and replay[-1].offset + 1 >= until):
            del self._replay_until[tp]
        return await self.processor.process(tp, fresh) if fresh else []

    async def _send(self, out: Output, context: str) -> asyncio.Future[Any]:
        await self._begin()
        try:
            fut: asyncio.Future[Any] = await self.producer.send(out.topic, out.value, key=out.key)
        except UNPRODUCIBLE_ERRORS as exc:
            if self.dead_letters is None:
                raise
            letter = self.dead_letters.unproducible(out, exc, context)
            log.warning("output for %s refused (%s): dead-lettered", out.topic, exc)
            fut = await self.producer.send(letter.topic, letter.value, key=letter.key)
        return fut

    async def _acknowledged(self, pending: list[tuple[Output, str, asyncio.Future[Any]]]) -> None:
        """Wait for every output; one the broker refuses for its size is dead-lettered."""
        results = await asyncio.gather(*(f for _, _, f in pending), return_exceptions=True)
        retry: list[tuple[Output, str, asyncio.Future[Any]]] = []
        for (out, context, _), result in zip(pending, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            if not isinstance(result, UNPRODUCIBLE_ERRORS) or self.dead_letters is None:
                raise result
            letter = self.dead_letters.unproducible(out, result, context)
            log.warning("broker refused an output for %s (%s): dead-lettered", out.topic, result)
            retry.append((letter, context, await self._send(letter, context)))
        if retry:
            await self._acknowledged(retry)

    async def handle_batches(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        try:
            await self._handle_batches(batches)
        except BaseException:
            await self._abort_transaction()
            raise

    async def _note_fetch_positions(self) -> None:
        """Remember where the consumer fetches next in partitions it has fetched from and
        whose returned records have all been processed (see :meth:`position`)."""
        for tp in self.stats.assigned:
            if self.consumer.highwater(tp) is None or tp in self._verify:
                self._fetched.pop(tp, None)
                continue
            try:
                self._fetched[tp] = await asyncio.wait_for(self.consumer.position(tp), 1.0)
            except (TimeoutError, AssertionError, KafkaError):
                self._fetched.pop(tp, None)

    async def _handle_batches(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        pending: list[tuple[Output, str, asyncio.Future[Any]]] = []
        n_out = 0
        batches = await self._check_logs(batches)
        if any(batches.values()):
            await self.processor.begin_batch()
        for tp, records in batches.items():
            if not records:
                continue
            context = f"while processing {tp.topic}:{tp.partition}@{records[0].offset}"
            for out in await self._process(tp, records):
                pending.append((out, context, await self._send(out, context)))
                n_out += 1
            self._positions[tp] = records[-1].offset + 1
            self._fingerprints[tp] = record_fingerprint(records[-1])
            self.stats.records += len(records)
        if self.transactional:
            await self._note_fetch_positions()
        try:
            idle = await self.processor.on_idle(time.time_ns())
        except STATE_STORE_ERRORS as exc:
            self._state_store_failed("idle work", exc)
            idle = []
        for out in idle:
            pending.append((out, "from idle work", await self._send(out, "from idle work")))
            n_out += 1
        if pending:
            await self._acknowledged(pending)
        if not batches and not n_out:
            await self.commit()
            return
        positions: dict[TopicPartition, int] = {
            tp: Position(o, self._fingerprints.get(tp))
            for tp, o in self._positions.items()
            if tp in self.stats.assigned
        }
        if self.transactional:
            await self._commit_transaction(positions)
        try:
            await self.processor.checkpoint(positions)
        except STATE_STORE_ERRORS as exc:
            # Outputs are acknowledged; the next checkpoint covers these records too. No
            # commit meanwhile, so committed offsets never run ahead of the checkpoint.
            self._state_store_failed("checkpoint", exc)
        else:
            await self.commit()
        self.stats.batches += 1
        self.stats.outputs += n_out
        self.stats.last_batch_ns = time.time_ns()
