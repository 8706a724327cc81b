"""Three-broker KRaft cluster: kill -9 one broker mid-stream, nothing acknowledged is lost.

Slow (~1-2 min: three JVMs start, then a timed stream), so outside the default run:
``.venv/bin/pytest -m slow -s tests/integration/test_kafka_cluster.py`` (``-s`` prints
the measured leadership-recovery and stall times).

Guarantees checked, and why each holds:
- In the log, exactly once and in order per key: the producer is the services' (acks=all,
  idempotent), so a send retried after the leader died is not written twice, and
  min.insync.replicas=2 means every acknowledged record was on two brokers before the ack.
- At the live consumer, at least once, first deliveries in order per key: a consumer's
  position survives a leader change, but a group coordinator move may rewind it to the
  last committed offset, so a redelivery is allowed (and counted); a loss is not.
- The collector service (in-process, its own settings) fed raw ticks across the kill:
  every tick reaches its output topic, in seq order per symbol; duplicates are counted.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from collector.app import CollectorService
from collector.settings import CollectorSettings
from geodesic.contracts import Tick
from geodesic.marketdata import load_dataset
from geodesic.marketdata.replay import ReplayConfig, backfill_start_ns, interleave, replay_ticks
from geodesic.runtime.kafka import make_consumer, make_producer, read_to_end, wait_for_assignment
from geodesic.runtime.service import ServiceRunner
from geodesic.stack.embedded import ENV_KAFKA_BOOTSTRAP, ENV_REDIS_URL, EmbeddedStack
from geodesic.stack.kafka_broker import kafka_available
from geodesic.stack.kafka_cluster import KafkaCluster
from geodesic.stack.topics import TopicShape

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = tuple(f"k{i}" for i in range(6))
PARTITIONS = 3


@pytest.fixture(scope="module")
def cluster(run_root: Path) -> Iterator[KafkaCluster]:
    if not kafka_available():
        pytest.skip("needs Java 17+ and the Kafka jars: run `make install`")
    # GEODESIC_CLUSTER_SESSION_TIMEOUT_MS=9000 measures Kafka's default fencing delay.
    session_ms = int(os.environ.get("GEODESIC_CLUSTER_SESSION_TIMEOUT_MS", "3000"))
    c = KafkaCluster(run_root / f"cluster-{uuid.uuid4().hex[:8]}", session_timeout_ms=session_ms)
    c.start()
    try:
        yield c
    finally:
        c.stop()


class Stream:
    """Keyed records ``key:seq`` sent at a steady pace; remembers when each was acked."""

    def __init__(self) -> None:
        self.next_seq: dict[str, int] = defaultdict(int)
        self.acked: dict[tuple[str, int], float] = {}
        self.failed: list[tuple[tuple[str, int], BaseException]] = []
        self.pending: list[asyncio.Future[object]] = []

    async def run(
        self, producer: AIOKafkaProducer, topic: str, seconds: float, per_tick: int = 6
    ) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for key in KEYS[:per_tick]:
                seq = self.next_seq[key]
                self.next_seq[key] += 1
                value = f"{key}:{seq}".encode()
                fut = await producer.send(topic, key=key.encode(), value=value)
                fut.add_done_callback(self._on_done((key, seq)))
                self.pending.append(fut)
            await asyncio.sleep(0.01)

    def _on_done(self, record: tuple[str, int]) -> Callable[[asyncio.Future[object]], None]:
        def done(fut: asyncio.Future[object]) -> None:
            error = fut.exception()
            if error is not None:
                self.failed.append((record, error))
            else:
                self.acked[record] = time.monotonic()

        return done

    def max_ack_gap(self, start: float, end: float) -> float:
        """The longest time without any ack inside [start, end]."""
        times = sorted(t for t in self.acked.values() if start <= t <= end)
        edges = [start, *times, end]
        return max(b - a for a, b in itertools.pairwise(edges))


async def _consume(
    consumer: AIOKafkaConsumer, out: list[tuple[str, int]], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=200)
        for records in batches.values():
            for r in records:
                out.append(_parse(r.value))


def _parse(value: bytes) -> tuple[str, int]:
    key, seq = value.decode().split(":")
    return key, int(seq)


async def test_kill9_of_a_partition_leader_mid_stream_production_continues_and_nothing_is_lost(
    cluster: KafkaCluster,
) -> None:
    await cluster.wait_ready(brokers=3)
    settings = cluster.kafka_settings()
    topic = f"cluster.{uuid.uuid4().hex[:8]}"
    await cluster.create_topics([TopicShape(topic, partitions=PARTITIONS)])
    before = await cluster.partition_leaders(topic)
    assert all(len(isr) == 3 for _, isr in before.values()), before

    consumer = make_consumer(
        settings, topics=[topic], group_id=f"g.{topic}", auto_offset_reset="earliest"
    )
    producer = make_producer(settings, client_id="cluster-test")
    await consumer.start()
    await producer.start()
    consumed: list[tuple[str, int]] = []
    stop = asyncio.Event()
    try:
        await wait_for_assignment(consumer, timeout_s=30, min_partitions=PARTITIONS)
        reader = asyncio.create_task(_consume(consumer, consumed, stop))
        stream = Stream()
        await stream.run(producer, topic, seconds=3.0)

        victim = before[0][0]
        t_kill = time.monotonic()
        cluster.kill(victim)  # SIGKILL: no clean shutdown, no leadership hand-off
        producing = asyncio.create_task(stream.run(producer, topic, seconds=8.0))
        while True:  # leadership recovery: every partition led by a live node again
            leaders = await cluster.partition_leaders(topic)
            if all(lead not in (victim, -1) for lead, _ in leaders.values()):
                break
            assert time.monotonic() - t_kill < 60, f"no new leaders within 60 s: {leaders}"
            await asyncio.sleep(0.05)
        t_recovered = time.monotonic()
        recovered_s = t_recovered - t_kill
        await producing
        await stream.run(producer, topic, seconds=3.0)  # still one broker down
        t_restart = time.monotonic()
        acked_while_down = sum(1 for t in stream.acked.values() if t_recovered < t < t_restart)
        stall_s = stream.max_ack_gap(t_kill, t_restart)

        cluster.restart(victim)
        await stream.run(producer, topic, seconds=3.0)
        await asyncio.gather(*stream.pending, return_exceptions=True)
        await cluster.wait_ready(brokers=3)
        while True:  # the restarted replica catches up and rejoins every ISR
            leaders = await cluster.partition_leaders(topic)
            if all(len(isr) == 3 for _, isr in leaders.values()):
                break
            assert time.monotonic() - t_restart < 90, f"ISR not back to 3: {leaders}"
            await asyncio.sleep(0.1)
        rejoined_s = time.monotonic() - t_restart

        deadline = time.monotonic() + 30
        while set(stream.acked) - set(consumed) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        await reader
    finally:
        stop.set()
        await producer.stop()
        await consumer.stop()

    sent = sum(stream.next_seq.values())
    assert not stream.failed, f"{len(stream.failed)} sends failed, first: {stream.failed[:3]}"
    assert len(stream.acked) == sent
    assert acked_while_down > 0, "nothing acked on the new leaders while one broker was down"
    assert recovered_s < 30, f"leadership took {recovered_s:.1f} s to move"

    # Live consumer: at least once, first deliveries in order per key.
    missing = set(stream.acked) - set(consumed)
    assert not missing, f"{len(missing)} acked records never consumed, e.g. {sorted(missing)[:5]}"
    first_seen: dict[str, list[int]] = defaultdict(list)
    seen: set[tuple[str, int]] = set()
    for record in consumed:
        if record not in seen:
            seen.add(record)
            first_seen[record[0]].append(record[1])
    for key, seqs in first_seen.items():
        assert seqs == sorted(seqs), f"key {key} delivered out of order"
    redelivered = len(consumed) - len(seen)

    # The log itself: every record exactly once, in order per key (a fresh reader).
    records = await read_to_end(settings, topic, timeout_s=30)
    per_key: dict[str, list[int]] = defaultdict(list)
    for r in records:
        key, seq = _parse(r.value)
        per_key[key].append(seq)
    for key in KEYS:
        assert per_key[key] == list(range(stream.next_seq[key])), f"log of {key} not 0..n-1"

    print(
        f"\ncluster kill -9 node {victim}: sent={sent} acked={len(stream.acked)} lost=0 "
        f"log_duplicates=0 consumer_redeliveries={redelivered} "
        f"leaders_recovered_s={recovered_s:.2f} longest_ack_gap_while_down_s={stall_s:.2f} "
        f"acked_while_down={acked_while_down} isr_rejoined_after_restart_s={rejoined_s:.2f}"
    )


@pytest.fixture
def redis_only(run_root: Path, cluster: KafkaCluster) -> Iterator[str]:
    """A Redis for the collector, without a second broker: the stack treats the cluster as
    its external Kafka and starts only redis-server."""
    patch = pytest.MonkeyPatch()
    patch.setenv(ENV_KAFKA_BOOTSTRAP, cluster.bootstrap)
    patch.delenv(ENV_REDIS_URL, raising=False)
    stack = EmbeddedStack(run_root=run_root, topics={}, kafka_settings=cluster.kafka_settings())
    try:
        yield stack.start().redis_url
    finally:
        stack.stop()
        patch.undo()


async def test_collector_keeps_publishing_across_a_broker_kill9_and_drops_no_tick(
    cluster: KafkaCluster, redis_only: str
) -> None:
    await cluster.wait_ready(brokers=3)
    settings = cluster.kafka_settings()
    tag = uuid.uuid4().hex[:8]
    raw, ticks, dlq = (f"cluster.{tag}.{k}" for k in ("raw", "ticks", "dlq"))
    await cluster.create_topics([TopicShape(t, partitions=2) for t in (raw, ticks, dlq)])
    collector = ServiceRunner(
        CollectorService(
            CollectorSettings(
                kafka=settings,
                redis_url=redis_only,
                redis_prefix=f"cluster-{tag}",
                http_port=0,
                group_id=f"g-{tag}-collector",
                in_topic=raw,
                out_topic=ticks,
                dlq_topic=dlq,
            )
        )
    )
    n_bars = 300
    t0 = backfill_start_ns(time.time_ns(), 1, n_bars + 10)
    streams = [
        replay_ticks(
            load_dataset(name).take(slice(0, n_bars)),
            ReplayConfig(seed=i, ticks_per_bar=(8, 12)),
            t0_ns=t0,
        )
        for i, name in enumerate(("sp500", "nasdaq"))
    ]
    sent = list(interleave(*streams))
    victim = (await cluster.partition_leaders(ticks))[0][0]
    producer = make_producer(settings, client_id="cluster-feed")
    await collector.start()
    await producer.start()
    try:
        await collector.wait_ready(60)
        futures: list[asyncio.Future[object]] = []
        third = len(sent) // 3
        for i, tick in enumerate(sent):
            if i == third:
                cluster.kill(victim)  # leader of a collector output partition
                t_kill = time.monotonic()
            if i == 2 * third:
                cluster.restart(victim)
            key = tick.symbol.encode()
            futures.append(await producer.send(raw, tick.to_bytes(), key=key))
            if i % 20 == 0:
                await asyncio.sleep(0.02)  # ~1,000 ticks/s, so the kill lands mid-stream
        feed_s = time.monotonic() - t_kill
        await asyncio.gather(*futures)
        want = {(t.symbol, t.seq) for t in sent}
        deadline = time.monotonic() + 60
        while True:
            out = [Tick.from_bytes(r.value) for r in await read_to_end(settings, ticks)]
            if want <= {(t.symbol, t.seq) for t in out} or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    finally:
        await producer.stop()
        await collector.stop()
    got = {(t.symbol, t.seq) for t in out}
    assert not want - got, f"{len(want - got)} ticks lost, e.g. {sorted(want - got)[:5]}"
    per_symbol: dict[str, list[int]] = defaultdict(list)
    for t in out:
        per_symbol[t.symbol].append(t.seq)
    for symbol, seqs in per_symbol.items():
        assert seqs == sorted(seqs), f"{symbol} ticks out of order"
    print(
        f"\ncollector across kill -9 of node {victim}: sent={len(sent)} out={len(out)} "
        f"lost=0 duplicates={len(out) - len(got)} feed_after_kill_s={feed_s:.1f}"
    )
