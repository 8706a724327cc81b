"""Measurements behind docs/broker-notes.md, reusable by the quirk tests.

Reproduce any figure with ``python -m bench.broker_measure <what>`` (starts a private
embedded stack unless GEODESIC_KAFKA_BOOTSTRAP is set). Figures are machine-dependent;
the tests assert behaviour with wide margins, the notes record what was seen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from geodesic.runtime.kafka import (
    KafkaSettings,
    common_config,
    make_consumer,
    make_producer,
    read_to_end,
    true_end_offsets,
    wait_for_assignment,
)
from geodesic.stack.kafka_broker import EmbeddedBroker
from geodesic.stack.topics import TopicShape, ensure_topics


async def scratch_topic(settings: KafkaSettings, partitions: int = 1, prefix: str = "m") -> str:
    name = f"{prefix}.{uuid.uuid4().hex[:10]}"
    await ensure_topics(settings, [TopicShape(name, partitions)])
    return name


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


# ------------------------------------------------------------------- joins


async def measure_join(settings: KafkaSettings, *, partitions: int = 4) -> float:
    """Seconds from consumer.start() to a partition assignment for a lone group member."""
    topic = await scratch_topic(settings, partitions, "join")
    consumer = make_consumer(settings, topics=[topic], group_id=f"g-{topic}")
    started = time.monotonic()
    await consumer.start()
    try:
        await wait_for_assignment(consumer, timeout_s=90)
        return time.monotonic() - started
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class TwoMembers:
    first_ready_s: float  # lone member A assigned
    split_s: float  # B started -> A and B own disjoint halves covering every partition
    takeover_s: float  # B stopped -> A owns every partition again
    a_partitions: int
    b_partitions: int


async def measure_two_members(settings: KafkaSettings, *, partitions: int = 4) -> TwoMembers:
    """A joins; then B joins the same group; then B leaves. Times each rebalance."""
    topic = await scratch_topic(settings, partitions, "two")
    group = f"g-{topic}"
    a = make_consumer(settings, topics=[topic], group_id=group, client_id="member-a")
    b = make_consumer(settings, topics=[topic], group_id=group, client_id="member-b")

    async def pump(consumer: AIOKafkaConsumer) -> None:
        while True:
            await consumer.getmany(timeout_ms=100)

    t0 = time.monotonic()
    await a.start()
    pumps = [asyncio.create_task(pump(a))]
    try:
        await wait_for_assignment(a, timeout_s=60)
        first = time.monotonic() - t0
        t0 = time.monotonic()
        await b.start()
        pumps.append(asyncio.create_task(pump(b)))
        while True:
            sa, sb = a.assignment(), b.assignment()
            if sa and sb and not sa & sb and len(sa | sb) == partitions:
                break
            if time.monotonic() - t0 > 60:
                raise TimeoutError(f"no split after 60s: a={sa} b={sb}")
            await asyncio.sleep(0.01)
        split = time.monotonic() - t0
        counts = (len(sa), len(sb))
        t0 = time.monotonic()
        pumps.pop().cancel()
        await b.stop()
        while len(a.assignment()) != partitions:
            if time.monotonic() - t0 > 60:
                raise TimeoutError("A did not take over B's partitions within 60s")
            await asyncio.sleep(0.01)
        return TwoMembers(first, split, time.monotonic() - t0, *counts)
    finally:
        for task in pumps:
            task.cancel()
        await a.stop()
        await b.stop()


# ----------------------------------------------------------------- latency


@dataclass(frozen=True)
class Latency:
    fetch_max_wait_ms: int
    rate_per_s: float
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def measure_latency(
    settings: KafkaSettings,
    *,
    rate_per_s: float = 1000,
    count: int = 3000,
    partitions: int = 4,
    **producer_overrides: Any,
) -> Latency:
    """Produce ``count`` keyed records at ``rate_per_s``; time each produce->consume hop.

    Producer and consumer share this process's clock (perf_counter_ns in the value).
    """
    topic = await scratch_topic(settings, partitions, "lat")
    consumer = make_consumer(settings, topics=[topic], group_id=f"g-{topic}")
    producer = make_producer(settings, **producer_overrides)
    await consumer.start()
    await producer.start()
    latencies: list[float] = []
    try:
        await wait_for_assignment(consumer, timeout_s=30, min_partitions=partitions)

        async def consume() -> None:
            while len(latencies) < count:
                batches = await consumer.getmany(timeout_ms=1000)
                now = time.perf_counter_ns()
                for records in batches.values():
                    latencies.extend((now - int(r.value)) / 1e6 for r in records)

        consuming = asyncio.create_task(consume())
        t0 = time.perf_counter()
        for i in range(count):
            delay = t0 + i / rate_per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            value = str(time.perf_counter_ns()).encode()
            await producer.send(topic, key=f"sym{i % 16}".encode(), value=value)
        await asyncio.wait_for(consuming, timeout=30)
    finally:
        await producer.stop()
        await consumer.stop()
    ordered = sorted(latencies)
    return Latency(
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        rate_per_s=rate_per_s,
        count=len(ordered),
        p50_ms=round(_quantile(ordered, 0.50), 2),
        p90_ms=round(_quantile(ordered, 0.90), 2),
        p99_ms=round(_quantile(ordered, 0.99), 2),
        max_ms=round(ordered[-1], 2),
    )


@dataclass(frozen=True)
class IdleCpu:
    fetch_max_wait_ms: int
    seconds: float
    consumer_pct: float  # of one core, this whole process
    broker_pct: float | None  # of one core, None when the broker PID is unknown


async def measure_idle_cpu(
    settings: KafkaSettings, *, broker_pid: int | None, seconds: float = 8.0, partitions: int = 4
) -> IdleCpu:
    """CPU burnt by one idle group consumer's fetch loop, and by the broker answering it."""
    topic = await scratch_topic(settings, partitions, "idle")
    consumer = make_consumer(settings, topics=[topic], group_id=f"g-{topic}")
    await consumer.start()

    async def pump() -> None:
        while True:
            await consumer.getmany(timeout_ms=1000)

    task = asyncio.create_task(pump())
    try:
        await wait_for_assignment(consumer, timeout_s=30)
        await asyncio.sleep(0.5)
        hz = os.sysconf("SC_CLK_TCK")
        me0, t0 = _cpu_ticks(os.getpid()), time.monotonic()
        broker0 = _cpu_ticks(broker_pid) if broker_pid else 0
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        me = (_cpu_ticks(os.getpid()) - me0) / hz / elapsed * 100
        broker = (_cpu_ticks(broker_pid) - broker0) / hz / elapsed * 100 if broker_pid else None
    finally:
        task.cancel()
        await consumer.stop()
    return IdleCpu(
        settings.fetch_max_wait_ms,
        seconds,
        round(me, 1),
        None if broker is None else round(broker, 1),
    )


# ------------------------------------------------------------- ListOffsets


@dataclass(frozen=True)
class EndOffsets:
    batches: tuple[int, ...]  # records per produced batch
    produced: int
    list_offsets_end: int  # what end_offsets() (ListOffsets latest) answers
    true_end: int  # true_end_offsets(): fetch high watermark
    read_to_end_count: int
    naive_read_count: int  # records with offset < list_offsets_end


async def produce_batches(
    producer: AIOKafkaProducer, topic: str, sizes: Sequence[int], partition: int = 0
) -> None:
    """Send each group of records as one multi-record batch (what linger_ms produces)."""
    for n, size in enumerate(sizes):
        batch = producer.create_batch()
        for i in range(size):
            batch.append(key=b"k", value=f"{n}-{i}".encode(), timestamp=None)
        await (await producer.send_batch(batch, topic, partition=partition))


async def measure_end_offsets(
    settings: KafkaSettings, sizes: Sequence[int] = (5, 1, 3)
) -> EndOffsets:
    topic = await scratch_topic(settings, 1, "lo")
    tp = TopicPartition(topic, 0)
    producer = make_producer(settings)
    await producer.start()
    try:
        await produce_batches(producer, topic, sizes)
    finally:
        await producer.stop()
    consumer = make_consumer(settings)
    await consumer.start()
    try:
        listed = (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()
    records = await read_to_end(settings, topic)
    true_end = (await true_end_offsets(settings, [tp]))[tp]
    return EndOffsets(
        batches=tuple(sizes),
        produced=sum(sizes),
        list_offsets_end=listed,
        true_end=true_end,
        read_to_end_count=len(records),
        naive_read_count=sum(1 for r in records if r.offset < listed),
    )


# ------------------------------------------------------------- idempotence


async def idempotent_producer_error(settings: KafkaSettings, *, transactional: bool) -> str:
    """Start a raw idempotent (or transactional) producer; return the error it gets."""
    topic = await scratch_topic(settings, 1, "idem")
    extra = {"transactional_id": f"tx-{topic}"} if transactional else {}
    producer = AIOKafkaProducer(
        **common_config(settings), acks="all", enable_idempotence=True, **extra
    )
    try:
        await asyncio.wait_for(producer.start(), 15)
        if transactional:
            async with producer.transaction():
                await asyncio.wait_for(producer.send_and_wait(topic, b"x"), 15)
        else:
            await asyncio.wait_for(producer.send_and_wait(topic, b"x"), 15)
    except (KafkaError, TimeoutError) as exc:
        return f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
    finally:
        await producer.stop()
    return "accepted"


# ---------------------------------------------------------------- lifecycle


def measure_lifecycle(broker: EmbeddedBroker | None) -> dict[str, Any]:
    """Seconds for the launcher's start (both servers + every topics.yaml topic), a broker
    restart with the topics ensured again, and stop; plus the broker's RSS when idle."""
    from geodesic.stack.embedded import EmbeddedStack

    stack = EmbeddedStack(use_env=False, broker=broker)
    started = time.monotonic()
    info = stack.start()
    start_s = time.monotonic() - started
    try:
        rss_kib = _rss_kib(info.pids["broker"])
        started = time.monotonic()
        stack.restart_broker()
        restart_s = time.monotonic() - started
    finally:
        started = time.monotonic()
        stack.stop()
        stop_s = time.monotonic() - started
    return {
        "broker": stack.broker,
        "start_s": round(start_s, 2),
        "restart_s": round(restart_s, 2),
        "stop_s": round(stop_s, 2),
        "idle_broker_rss_mib": round(rss_kib / 1024),
    }


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --------------------------------------------------------------------- CLI


async def _main(
    args: argparse.Namespace, settings: KafkaSettings, broker_pid: int | None
) -> dict[str, Any]:
    if args.what == "join":
        out: dict[str, Any] = {}
        for session_ms in args.session_timeout_ms or [settings.session_timeout_ms]:
            tuned = settings.model_copy(
                update={
                    "session_timeout_ms": session_ms,
                    "heartbeat_interval_ms": min(settings.heartbeat_interval_ms, session_ms // 3),
                    # JoinGroup is held for session/2: the request must outlive that.
                    "request_timeout_ms": max(settings.request_timeout_ms, session_ms + 5000),
                }
            )
            out[f"session_timeout_ms={session_ms}"] = round(await measure_join(tuned), 2)
        return out
    if args.what == "rebalance":
        out = {}
        for beat_ms in args.heartbeat_interval_ms or [settings.heartbeat_interval_ms]:
            tuned = settings.model_copy(update={"heartbeat_interval_ms": beat_ms})
            out[f"heartbeat_interval_ms={beat_ms}"] = asdict(await measure_two_members(tuned))
        return out
    if args.what in ("latency", "idle-cpu"):
        out = {}
        if args.what == "latency" and args.warmup_count:  # a fresh JVM runs cold at first
            await measure_latency(settings, rate_per_s=args.rate, count=args.warmup_count)
        for wait_ms in args.fetch_max_wait_ms or [settings.fetch_max_wait_ms]:
            tuned = settings.model_copy(update={"fetch_max_wait_ms": wait_ms})
            result: Latency | IdleCpu
            if args.what == "latency":
                result = await measure_latency(
                    tuned,
                    rate_per_s=args.rate,
                    count=args.count,
                    **({"enable_idempotence": False} if args.plain_producer else {}),
                )
            else:
                result = await measure_idle_cpu(tuned, broker_pid=broker_pid, seconds=args.seconds)
            out[f"fetch_max_wait_ms={wait_ms}"] = asdict(result)
        return out
    if args.what == "end-offsets":
        return asdict(await measure_end_offsets(settings))
    if args.what == "idempotence":
        return {
            "idempotent": await idempotent_producer_error(settings, transactional=False),
            "transactional": await idempotent_producer_error(settings, transactional=True),
        }
    raise SystemExit(f"unknown measurement {args.what}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.broker_measure")
    parser.add_argument(
        "what",
        choices=[
            "join",
            "rebalance",
            "latency",
            "idle-cpu",
            "end-offsets",
            "idempotence",
            "lifecycle",
        ],
    )
    parser.add_argument(
        "--session-timeout-ms", type=int, nargs="+", help="default: the broker flavor's"
    )
    parser.add_argument(
        "--heartbeat-interval-ms", type=int, nargs="+", help="default: the broker flavor's"
    )
    parser.add_argument(
        "--fetch-max-wait-ms", type=int, nargs="+", help="default: the broker flavor's"
    )
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--warmup-count",
        type=int,
        default=0,
        help="latency: records sent (and not counted) before measuring, e.g. to warm a JVM",
    )
    parser.add_argument(
        "--plain-producer",
        action="store_true",
        help="latency: a non-idempotent producer (Kafka's default here is idempotent)",
    )
    parser.add_argument(
        "--broker",
        choices=("kafka", "tansu"),
        default=None,
        help="embedded broker to measure (default: as `geodesic up` chooses)",
    )
    args = parser.parse_args(argv)

    from geodesic.stack.embedded import EmbeddedStack

    if args.what == "lifecycle":
        print(json.dumps(measure_lifecycle(args.broker), indent=2))
        return 0
    stack = EmbeddedStack(topics={}, use_env=False, broker=args.broker)
    with stack as info:
        # the broker's own flavor timings; the options above override them per run
        stack_settings = stack.kafka_settings
        result = asyncio.run(_main(args, stack_settings, info.pids.get("broker")))
    print(json.dumps({"broker": stack.broker, **result}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
