"""StreamLoop under faults, with fake clients: a state store that fails, a log that was
replaced under a checkpoint (broker restart on memory storage), records left unread."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError
from redis.exceptions import ConnectionError as RedisConnectionError

from geodesic.contracts import DeadLetter
from geodesic.runtime.checkpoint import CheckpointStore
from geodesic.runtime.deadletters import DeadLetterSink
from geodesic.runtime.pipeline import (
    Output,
    Position,
    StreamLoop,
    _Rebalance,
    record_fingerprint,
)

TP = TopicPartition("in", 0)


def rec(offset: int, value: bytes = b"v", key: bytes = b"k", ts: int = 1) -> ConsumerRecord:
    return ConsumerRecord("in", 0, offset, ts, 0, key, value, None, len(key), len(value), ())


class FakeConsumer:
    def __init__(self) -> None:
        self.paused: set[TopicPartition] = set()
        self.events: list[tuple] = []
        self.highwaters: dict[TopicPartition, int] = {}
        self.committed: list[dict] = []
        self.batches: list[dict] = []

    def pause(self, *tps: TopicPartition) -> None:
        self.paused |= set(tps)
        self.events.append(("pause", set(tps)))

    def resume(self, *tps: TopicPartition) -> None:
        self.paused -= set(tps)
        self.events.append(("resume", set(tps)))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.events.append(("seek", tp, offset))

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        self.events.append(("beginning", set(tps)))

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters.get(tp)

    async def commit(self, offsets: dict) -> None:
        self.committed.append({tp: o.offset for tp, o in offsets.items()})

    def subscribe(self, topics: Sequence[str], listener: object) -> None:
        self.listener = listener

    async def getmany(self, **_: object) -> dict:
        await asyncio.sleep(0)
        return self.batches.pop(0) if self.batches else {}


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future:
        self.sent.append((topic, value))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


class FakeProcessor:
    def __init__(self) -> None:
        self.processed: list[int] = []
        self.checkpoints: list[dict] = []
        self.fail_checkpoints = 0
        self.fail_restores = 0
        self.fail_idle = 0
        self.restore_error: BaseException | None = None
        self.seeks: dict[TopicPartition, int] = {}
        self.batches_begun = 0

    async def on_assigned(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        if self.restore_error is not None:
            raise self.restore_error
        if self.fail_restores:
            self.fail_restores -= 1
            raise RedisConnectionError("redis down")
        return dict(self.seeks)

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        return None

    async def process(self, tp: TopicPartition, records: Sequence[ConsumerRecord]) -> list[Output]:
        self.processed += [r.offset for r in records]
        return [Output("out", r.key, r.value) for r in records]

    async def begin_batch(self) -> None:
        self.batches_begun += 1

    async def on_idle(self, now_ns: int) -> list[Output]:
        if self.fail_idle:
            self.fail_idle -= 1
            raise RedisConnectionError("redis down")
        return []

    async def checkpoint(self, positions: dict[TopicPartition, int]) -> None:
        if self.fail_checkpoints:
            self.fail_checkpoints -= 1
            raise RedisConnectionError("redis down")
        self.checkpoints.append(dict(positions))


def make_loop() -> tuple[StreamLoop, FakeConsumer, FakeProcessor]:
    consumer, processor = FakeConsumer(), FakeProcessor()
    loop = StreamLoop(consumer, FakeProducer(), processor, ["in"], commit_interval_ms=0)  # type: ignore[arg-type]
    return loop, consumer, processor


async def assign(loop: StreamLoop, *tps: TopicPartition) -> None:
    await _Rebalance(loop).on_partitions_assigned(set(tps or (TP,)))


async def test_a_failed_checkpoint_skips_the_commit_and_the_next_one_catches_up():
    loop, consumer, processor = make_loop()
    await assign(loop)
    processor.fail_checkpoints = 1
    consumer.highwaters[TP] = 2
    await loop.handle_batches({TP: [rec(0), rec(1)]})
    assert processor.processed == [0, 1] and consumer.committed == []
    assert loop.stats.state_store_errors == 1
    consumer.highwaters[TP] = 3
    await loop.handle_batches({TP: [rec(2)]})
    assert processor.checkpoints == [{TP: 3}] and consumer.committed == [{TP: 3}]


async def test_idle_work_that_needs_the_state_store_is_skipped_not_fatal():
    loop, _consumer, processor = make_loop()
    await assign(loop)
    processor.fail_idle = 1
    await loop.handle_batches({})
    assert loop.stats.state_store_errors == 1


async def test_restore_waits_for_the_state_store_with_fetching_paused_then_seeks():
    loop, consumer, processor = make_loop()
    processor.fail_restores = 2
    processor.seeks = {TP: 7}
    task = asyncio.create_task(assign(loop))
    await asyncio.sleep(0.05)
    assert loop.stats.restoring and TP in consumer.paused and not loop.stats.ready
    await task
    assert not loop.stats.restoring and loop.stats.ready and not consumer.paused
    assert [e[0] for e in consumer.events] == ["pause", "seek", "resume"]
    assert loop.stats.state_store_errors == 2


async def test_a_restore_failing_for_another_reason_stops_the_loop_instead_of_running_stateless():
    loop, consumer, processor = make_loop()
    processor.restore_error = ValueError("corrupt checkpoint")
    with pytest.raises(ValueError):
        await assign(loop)  # aiokafka would log and swallow this ...
    with pytest.raises(RuntimeError, match="assignment failed"):
        await loop.run()  # ... so the loop raises it itself
    assert TP in consumer.paused


async def test_checkpoint_positions_carry_the_fingerprint_of_the_last_record_processed():
    loop, consumer, processor = make_loop()
    await assign(loop)
    consumer.highwaters[TP] = 2
    last = rec(1, b"second")
    await loop.handle_batches({TP: [rec(0), last]})
    (positions,) = processor.checkpoints
    assert positions[TP] == 2 and positions[TP].fingerprint == record_fingerprint(last)


async def test_restore_in_the_same_log_checks_the_record_before_the_checkpoint_and_skips_it():
    loop, consumer, processor = make_loop()
    before = rec(4, b"four")
    processor.seeks = {TP: Position(5, record_fingerprint(before))}
    await assign(loop)
    assert ("seek", TP, 4) in consumer.events
    consumer.highwaters[TP] = 7
    await loop.handle_batches({TP: [before, rec(5), rec(6)]})
    assert processor.processed == [5, 6] and loop.stats.log_resets == 0


async def test_restore_in_a_replaced_log_restarts_the_partition_from_its_beginning():
    loop, consumer, processor = make_loop()
    processor.seeks = {TP: Position(5, record_fingerprint(rec(4, b"four")))}
    await assign(loop)
    consumer.highwaters[TP] = 9  # the new log already grew past the checkpoint
    await loop.handle_batches({TP: [rec(4, b"other"), rec(5)]})
    assert processor.processed == [] and loop.stats.log_resets == 1
    assert ("beginning", {TP}) in consumer.events


async def test_checkpoint_beyond_the_end_of_the_new_log_restarts_instead_of_waiting():
    loop, consumer, processor = make_loop()
    processor.seeks = {TP: Position(648, "f" * 16)}
    await assign(loop)
    consumer.highwaters[TP] = 0  # broker restarted on memory storage: empty log, no error
    await loop.handle_batches({})
    assert loop.stats.log_resets == 1 and ("beginning", {TP}) in consumer.events


async def test_a_high_watermark_that_goes_back_restarts_a_consumer_that_did_not_rejoin():
    loop, consumer, processor = make_loop()
    await assign(loop)
    consumer.highwaters[TP] = 100
    await loop.handle_batches({TP: [rec(0), rec(1), rec(2)]})
    consumer.highwaters[TP] = 40  # new log, still ahead of our position 3
    await loop.handle_batches({TP: [rec(3)]})
    assert processor.processed == [0, 1, 2] and loop.stats.log_resets == 1
    consumer.highwaters[TP] = 41
    await loop.handle_batches({TP: [rec(0, b"new")]})  # read from the start of the new log
    assert processor.processed == [0, 1, 2, 0] and loop.stats.log_resets == 1


async def test_a_plain_checkpoint_without_fingerprint_is_still_honoured():
    loop, consumer, processor = make_loop()
    processor.seeks = {TP: 5}
    await assign(loop)
    assert ("seek", TP, 5) in consumer.events
    consumer.highwaters[TP] = 7
    await loop.handle_batches({TP: [rec(5), rec(6)]})
    assert processor.processed == [5, 6]


async def test_behind_while_the_log_holds_records_not_yet_processed():
    loop, consumer, _processor = make_loop()
    await assign(loop)
    consumer.highwaters[TP] = 10
    await loop.handle_batches({TP: [rec(0), rec(1)]})
    assert loop.behind(TP)
    await loop.handle_batches({TP: [rec(i) for i in range(2, 10)]})
    assert not loop.behind(TP)


class FakeRedis:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self.data.get(key)

    async def set(self, key: str, value: str) -> None:
        self.data[key] = value

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.ops: list[tuple[str, str]] = []

    def set(self, key: str, value: str) -> None:
        self.ops.append((key, value))

    async def execute(self) -> None:
        self.redis.data.update(self.ops)


async def test_checkpoint_store_keeps_the_fingerprint_and_reads_old_checkpoints():
    redis = FakeRedis()
    store = CheckpointStore(redis, "svc")  # type: ignore[arg-type]
    await store.save_many({TP: (Position(12, "abc"), {"n": 1})})
    offset, state = await store.load(TP)  # type: ignore[misc]
    assert (offset, offset.fingerprint, state) == (12, "abc", {"n": 1})  # type: ignore[attr-defined]
    redis.data[store.key(TP)] = json.dumps({"offset": 3, "state": {}})  # before fingerprints
    offset, _ = await store.load(TP)  # type: ignore[misc]
    assert offset == 3 and offset.fingerprint is None  # type: ignore[attr-defined]
    await store.save_global("g", {TP: Position(4, "def")}, {"s": 2})
    offsets, state = await store.load_global("g")  # type: ignore[misc]
    assert offsets[TP] == 4 and offsets[TP].fingerprint == "def" and state == {"s": 2}  # type: ignore[attr-defined]


async def test_a_revoked_partition_forgets_a_pending_verification():
    loop, consumer, processor = make_loop()
    processor.seeks = {TP: Position(5, "f" * 16)}
    await assign(loop)
    await _Rebalance(loop).on_partitions_revoked({TP})
    processor.seeks = {}  # reassigned later with no checkpoint: nothing to verify
    await assign(loop)
    consumer.highwaters[TP] = 3
    await loop.handle_batches({TP: [rec(0), rec(1), rec(2)]})
    assert processor.processed == [0, 1, 2] and loop.stats.log_resets == 0


class LimitedProducer(FakeProducer):
    """Refuses values over ``limit`` the two ways a real one does: on send (the client's
    max_request_size) or on the acknowledgement (the broker's message.max.bytes)."""

    def __init__(self, limit: int, *, at_broker: bool) -> None:
        super().__init__()
        self.limit = limit
        self.at_broker = at_broker

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future:
        if len(value) <= self.limit:
            return await super().send(topic, value, key)
        if not self.at_broker:
            raise MessageSizeTooLargeError("too large for max_request_size")
        fut = asyncio.get_running_loop().create_future()
        fut.set_exception(RecordTooLargeError("too large for the broker"))
        return fut


@pytest.mark.parametrize("at_broker", [False, True])
async def test_an_output_the_broker_refuses_for_its_size_is_dead_lettered_and_the_loop_goes_on(
    at_broker: bool,
):
    consumer, processor = FakeConsumer(), FakeProcessor()
    producer = LimitedProducer(200 * 1024, at_broker=at_broker)
    sink = DeadLetterSink("dlq", None, service="test")
    loop = StreamLoop(
        consumer,  # type: ignore[arg-type]
        producer,  # type: ignore[arg-type]
        processor,
        ["in"],
        commit_interval_ms=0,
        dead_letters=sink,
    )
    await assign(loop)
    huge = b"x" * (2 * 1024 * 1024)
    await loop.handle_batches({TP: [rec(0), rec(1, huge), rec(2)]})
    assert sorted(t for t, _ in producer.sent) == ["dlq", "out", "out"]
    letter = DeadLetter.model_validate_json(next(v for t, v in producer.sent if t == "dlq"))
    assert letter.reason == "output_too_large" and letter.truncated
    assert letter.raw_len == len(huge) and letter.source_topic == "out"
    assert "in:0@0" in letter.detail
    assert processor.checkpoints[-1][TP] == 3  # the batch completed: nothing is retried
    assert consumer.committed[-1][TP] == 3


async def test_without_a_dead_letter_sink_an_unproducible_output_still_fails_loudly():
    consumer, processor = FakeConsumer(), FakeProcessor()
    loop = StreamLoop(
        consumer,  # type: ignore[arg-type]
        LimitedProducer(10, at_broker=False),  # type: ignore[arg-type]
        processor,
        ["in"],
        commit_interval_ms=0,
    )
    await assign(loop)
    with pytest.raises(MessageSizeTooLargeError):
        await loop.handle_batches({TP: [rec(0, b"y" * 100)]})
    assert processor.checkpoints == []


async def test_batch_work_runs_once_per_fetched_batch_not_once_per_partition():
    loop, consumer, processor = make_loop()
    other = TopicPartition(TP.topic, TP.partition + 1)
    await assign(loop, TP, other)
    consumer.highwaters.update({TP: 2, other: 1})
    await loop.handle_batches({TP: [rec(0), rec(1)], other: [rec(0)]})
    assert processor.batches_begun == 1 and processor.processed == [0, 1, 0]
    await loop.handle_batches({})  # an empty poll: nothing to begin
    assert processor.batches_begun == 1
