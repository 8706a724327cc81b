"""Measured quirks of the embedded brokers, each shown handled by geodesic.runtime.kafka.

Each test states what the session's broker does: Tansu's quirk where it has one, Apache
Kafka's behaviour (the reason a Tansu workaround is not applied there) otherwise. CI runs
this file on both (``broker_compat``). Figures and the commands that reproduce them:
docs/broker-notes.md. Assertions are about behaviour, with wide margins, so a loaded
2-core CI box does not flake them.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from bench.broker_measure import measure_latency, measure_two_members, produce_batches
from geodesic.runtime.kafka import (
    KafkaSettings,
    common_config,
    make_admin,
    make_consumer,
    make_producer,
    read_to_end,
    true_end_offsets,
    wait_for_assignment,
)
from geodesic.stack import StackInfo

pytestmark = [pytest.mark.integration, pytest.mark.broker_compat]


def _embedded(stack: StackInfo) -> str:
    """The session's embedded broker ("kafka" or "tansu"); skip for an external one."""
    if stack.broker is None:
        pytest.skip("external broker: its behaviour is not the embedded one's")
    return stack.broker


# a. JoinGroup is held for half the session timeout -------------------------------


async def test_group_member_is_assigned_within_seconds_with_tuned_settings(
    kafka_settings: KafkaSettings, fresh_topic, fresh_group: str
):
    topic = await fresh_topic(partitions=4)
    consumer = make_consumer(kafka_settings, topics=[topic], group_id=fresh_group)
    started = time.monotonic()
    await consumer.start()
    try:
        assigned = await wait_for_assignment(consumer, timeout_s=5.0)
    finally:
        await consumer.stop()
    assert len(assigned) == 4
    assert time.monotonic() - started < 5.0


async def test_two_members_of_a_group_split_the_partitions_and_one_takes_over_on_leave(
    kafka_settings: KafkaSettings, stack
):
    result = await measure_two_members(kafka_settings, partitions=4)
    assert (result.a_partitions, result.b_partitions) == (2, 2)
    assert result.split_s < 10.0
    assert result.takeover_s < 10.0


# b. fetches are not woken by new data ------------------------------------------


async def test_a_steady_feed_is_delivered_whole_without_waiting_out_the_fetch(
    kafka_settings: KafkaSettings, stack
):
    """With each flavor's own fetch_max_wait_ms (Tansu 10 ms, Kafka 500 ms).

    Behaviour, not a latency budget (the figures: `python -m bench.broker_measure latency`):
    every record arrives, and on Kafka a parked fetch is answered when data arrives, so the
    median record waits far less than the fetch wait it would sit out otherwise.
    """
    flavor = _embedded(stack)
    if flavor == "kafka":  # a fresh JVM runs the first thousands of records cold
        await measure_latency(kafka_settings, rate_per_s=1000, count=3000)
    result = await measure_latency(kafka_settings, rate_per_s=1000, count=2000)
    assert result.count == 2000
    if flavor == "kafka":
        assert result.p50_ms < kafka_settings.fetch_max_wait_ms / 2, result


async def _delivery_delay_s(settings: KafkaSettings, topic: str) -> float:
    """Produce one record just after a fetch went out; seconds until it is consumed."""
    tp = TopicPartition(topic, 0)
    consumer = make_consumer(settings)
    producer = make_producer(settings)
    await consumer.start()
    await producer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        while consumer.highwater(tp) is None:  # first empty fetch answered...
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)  # ...and the next one is waiting at the broker
        started = time.monotonic()
        await producer.send_and_wait(topic, b"x", partition=0)
        while not await consumer.getmany(tp, timeout_ms=100):
            pass
        return time.monotonic() - started
    finally:
        await producer.stop()
        await consumer.stop()


async def test_new_data_waits_for_the_fetch_hold_on_tansu_but_not_on_kafka(
    kafka_settings: KafkaSettings, stack, fresh_topic
):
    """Tansu answers a waiting fetch only at its next re-check (half the wait, then
    halving), not when data arrives: with 400 ms a record sits ~200 ms unseen, so the
    tansu flavor keeps fetch_max_wait_ms low. Kafka answers as soon as data arrives."""
    broker = _embedded(stack)
    slow = kafka_settings.model_copy(update={"fetch_max_wait_ms": 400})
    if broker == "tansu":
        assert await _delivery_delay_s(slow, await fresh_topic()) >= 0.1
        assert kafka_settings.fetch_max_wait_ms <= 20
    else:  # answered when data arrives: far less than the 400 ms hold
        assert await _delivery_delay_s(slow, await fresh_topic()) < 0.2
        assert kafka_settings.fetch_max_wait_ms >= 400
    # with each flavor's own wait a record never sits out a whole hold (margin for a
    # loaded machine: the figures are in docs/broker-notes.md, from bench.broker_measure)
    wait_s = kafka_settings.fetch_max_wait_ms / 1000
    assert await _delivery_delay_s(kafka_settings, await fresh_topic()) < min(wait_s, 0.2) + 0.1


# c. ListOffsets(latest) = last batch's base offset + 1 ---------------------------


async def test_end_offsets_miss_the_tail_of_a_batch_but_read_to_end_does_not(
    kafka_settings: KafkaSettings, stack, fresh_topic
):
    topic = await fresh_topic()
    tp = TopicPartition(topic, 0)
    producer = make_producer(kafka_settings)
    await producer.start()
    try:
        await produce_batches(producer, topic, [5, 1, 3])  # offsets 0-4, 5, 6-8
    finally:
        await producer.stop()

    consumer = make_consumer(kafka_settings)
    await consumer.start()
    try:
        listed = (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()
    records = await read_to_end(kafka_settings, topic)
    naive = [r for r in records if r.offset < listed]  # "read up to end_offsets()"

    if _embedded(stack) == "tansu":
        assert listed == 7  # base offset of the last batch (6) + 1: records 7, 8 unseen
        assert len(naive) == 7
    else:
        assert listed == 9 and len(naive) == 9  # Kafka: the true log end
    assert [r.value for r in records][-3:] == [b"2-0", b"2-1", b"2-2"]
    assert len(records) == 9
    assert (await true_end_offsets(kafka_settings, [tp]))[tp] == 9


async def test_read_to_end_covers_every_partition_and_start_offsets(
    kafka_settings: KafkaSettings, fresh_topic
):
    topic = await fresh_topic(partitions=3)
    producer = make_producer(kafka_settings, linger_ms=20)  # lingering makes batches
    await producer.start()
    try:
        sends = [await producer.send(topic, f"{i}".encode(), partition=i % 3) for i in range(30)]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    everything = await read_to_end(kafka_settings, topic)
    assert sorted(int(r.value) for r in everything) == list(range(30))
    tail = await read_to_end(kafka_settings, topic, start_offsets={0: 8, 1: 10})
    assert [(r.partition, r.offset) for r in tail] == [(0, 8), (0, 9)] + [(2, o) for o in range(10)]
    ends = await true_end_offsets(kafka_settings, [TopicPartition(topic, p) for p in range(3)])
    assert set(ends.values()) == {10}


# d. idempotent / transactional producers: refused by Tansu, accepted by Kafka ------


@pytest.mark.parametrize("transactional", [False, True], ids=["idempotent", "transactional"])
async def test_tansu_refuses_idempotent_and_transactional_producers_kafka_accepts_them(
    kafka_settings: KafkaSettings, stack, fresh_topic, transactional: bool
):
    broker = _embedded(stack)
    topic = await fresh_topic()
    extra = {"transactional_id": f"tx-{topic}"} if transactional else {}
    producer = AIOKafkaProducer(
        **common_config(kafka_settings), acks="all", enable_idempotence=True, **extra
    )
    if broker == "tansu":
        # InitProducerId answers error -1 (UnknownError) at start(), before any send.
        with pytest.raises(KafkaError, match="UnknownError"):
            await asyncio.wait_for(producer.start(), 15)
        await producer.stop()
        return
    await asyncio.wait_for(producer.start(), 30)
    try:
        if transactional:
            async with producer.transaction():
                await producer.send(topic, b"committed", partition=0)
        else:
            await producer.send_and_wait(topic, b"committed", partition=0)
    finally:
        await producer.stop()
    assert [r.value for r in await read_to_end(kafka_settings, topic)][-1:] == [b"committed"]


async def test_at_least_once_send_with_acks_all_is_acknowledged_and_readable(
    kafka_settings: KafkaSettings, fresh_topic
):
    topic = await fresh_topic(partitions=2)
    producer = make_producer(kafka_settings)
    await producer.start()
    try:
        acks = await asyncio.gather(
            *[
                await producer.send(topic, f"v{i}".encode(), key=f"sym{i % 4}".encode())
                for i in range(50)
            ]
        )
    finally:
        await producer.stop()
    assert all(md.offset >= 0 for md in acks)
    records = await read_to_end(kafka_settings, topic)
    assert sorted(r.value for r in records) == sorted(f"v{i}".encode() for i in range(50))
    by_key = {r.key: r.partition for r in records}
    assert all(by_key[r.key] == r.partition for r in records)  # keyed -> one partition


# e. topics are auto-created on any metadata request ------------------------------


async def test_unknown_topic_is_auto_created_by_a_producer_so_topics_are_ensured_first(
    kafka_settings: KafkaSettings, stack
):
    _embedded(stack)  # both: Tansu always, Kafka with auto.create.topics.enable (default)
    name = f"test.autocreate.{time.time_ns()}"
    producer = make_producer(kafka_settings)
    await producer.start()
    try:
        await producer.send_and_wait(name, b"x")
    finally:
        await producer.stop()
    admin = make_admin(kafka_settings)
    await admin.start()
    try:
        described = await admin.describe_topics([name])
        assert len(described[0]["partitions"]) == 4  # broker default, not topics.yaml
        await admin.delete_topics([name])
    finally:
        await admin.close()
