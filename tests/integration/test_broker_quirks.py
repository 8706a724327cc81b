"""Measured quirks of the Tansu broker, each shown handled by geodesic.runtime.kafka.

Figures and the commands that reproduce them: docs/broker-notes.md. Assertions here are
about behaviour, with wide margins, so a loaded 2-core CI box does not flake them.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from geodesic.runtime.kafka import (
    KafkaSettings,
    common_config,
    make_admin,
    make_consumer,
    make_producer,
    producer_config,
    read_to_end,
    true_end_offsets,
    wait_for_assignment,
)
from geodesic.stack.measure import measure_latency, measure_two_members, produce_batches

pytestmark = pytest.mark.integration


def _tansu_only(stack_external: frozenset[str]) -> None:
    if "kafka" in stack_external:
        pytest.skip("quirk of the embedded Tansu broker")


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


def test_tansu_flavor_shortens_the_session_timeout_that_decides_join_time():
    tansu, kafka = KafkaSettings(), KafkaSettings(broker_flavor="kafka")
    assert tansu.session_timeout_ms <= 3000 < 6000 <= kafka.session_timeout_ms
    assert tansu.heartbeat_interval_ms * 3 <= tansu.session_timeout_ms


# b. fetches are not woken by new data ------------------------------------------


async def test_produce_to_consume_p99_is_well_under_100ms_at_1000_msgs_per_s(
    kafka_settings: KafkaSettings, stack
):
    _tansu_only(stack.external)
    result = await measure_latency(kafka_settings, rate_per_s=1000, count=2000)
    assert result.count == 2000
    assert result.p50_ms < 25, result
    assert result.p99_ms < 100, result


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


async def test_new_data_waits_for_the_fetch_hold_so_fetch_max_wait_is_kept_low(
    kafka_settings: KafkaSettings, stack, fresh_topic
):
    """Tansu answers a waiting fetch only at its next re-check (half the wait, then
    halving), not when data arrives: with 400 ms a record sits ~200 ms unseen."""
    _tansu_only(stack.external)
    slow = kafka_settings.model_copy(update={"fetch_max_wait_ms": 400})
    assert await _delivery_delay_s(slow, await fresh_topic()) >= 0.1
    assert kafka_settings.fetch_max_wait_ms <= 20
    assert await _delivery_delay_s(kafka_settings, await fresh_topic()) < 0.05


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

    if "kafka" not in stack.external:
        assert listed == 7  # base offset of the last batch (6) + 1: records 7, 8 unseen
        assert len(naive) == 7
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


# d. idempotent / transactional producers are refused ----------------------------


@pytest.mark.parametrize("transactional", [False, True], ids=["idempotent", "transactional"])
async def test_broker_refuses_idempotent_and_transactional_producers(
    kafka_settings: KafkaSettings, stack, fresh_topic, transactional: bool
):
    _tansu_only(stack.external)
    topic = await fresh_topic()
    extra = {"transactional_id": f"tx-{topic}"} if transactional else {}
    producer = AIOKafkaProducer(
        **common_config(kafka_settings), acks="all", enable_idempotence=True, **extra
    )
    # InitProducerId answers error -1 (UnknownError) at start(), before any send.
    with pytest.raises(KafkaError, match="UnknownError"):
        await asyncio.wait_for(producer.start(), 15)
    await producer.stop()


@pytest.mark.parametrize(
    "override", [{"enable_idempotence": True}, {"transactional_id": "tx"}], ids=str
)
def test_make_producer_rejects_idempotence_and_transactions(override: dict):
    with pytest.raises(ValueError, match="refused"):
        producer_config(KafkaSettings(), **override)


def test_producer_config_is_acks_all_and_never_idempotent():
    config = producer_config(KafkaSettings())
    assert config["acks"] == "all"
    assert config["enable_idempotence"] is False
    assert "transactional_id" not in config


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
    _tansu_only(stack.external)
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
