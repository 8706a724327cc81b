"""Other Kafka clients against the embedded broker: what a producer or an executor that is
not written with aiokafka meets.

confluent-kafka (librdkafka) publishes ticks and, as an executor would, reads the scored
signals the five services make of them; Debian's kcat (librdkafka's CLI) lists and reads
the same topics. README ("Brokers") says which client works with which broker.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid

import pytest
from pipeline_support import Topics, build_pipeline, fit_model

from geodesic.contracts import ScoredSignal
from geodesic.control import ControlPlane
from geodesic.features import WARMUP_BARS
from geodesic.marketdata import load_dataset
from geodesic.marketdata.replay import ReplayConfig, backfill_start_ns, interleave, replay_ticks
from geodesic.stack import StackInfo

confluent_kafka = pytest.importorskip(
    "confluent_kafka", reason="pip install confluent-kafka (in the dev extra)"
)

pytestmark = [pytest.mark.integration, pytest.mark.broker_compat]

SYMBOLS = ("sp500", "nasdaq")
N_BARS = WARMUP_BARS + 20  # 21 signals per symbol


def _ticks(t0_ns: int) -> list[tuple[bytes, bytes]]:
    streams = [
        replay_ticks(
            load_dataset(name).take(slice(1000, 1000 + N_BARS)),
            ReplayConfig(seed=11 + i, ticks_per_bar=(6, 9)),
            t0_ns=t0_ns,
        )
        for i, name in enumerate(SYMBOLS)
    ]
    return [(t.symbol.encode(), t.to_bytes()) for t in interleave(*streams)]


def _produce_with_librdkafka(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]):
    """A producer as a feed handler in another language would write one (acks=all).

    ``murmur2_random`` is the Java client's partitioner; librdkafka's default
    (consistent_random) puts a key elsewhere, and the collector dead-letters such ticks
    as wrong_partition (one symbol's signals never came with it).
    """
    errors: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "partitioner": "murmur2_random",
        }
    )
    for key, value in messages:
        producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
        producer.poll(0)
    left = producer.flush(30)
    return left, errors


def _consume_with_librdkafka(
    bootstrap: str, topic: str, want: int, timeout_s: float
) -> list[ScoredSignal]:
    """An executor: its own consumer group, committed reads only, dedupe by signal_id."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"executor-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    by_id: dict[str, ScoredSignal] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(by_id) < want and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise RuntimeError(f"librdkafka consumer error: {msg.error()}")
            signal = ScoredSignal.model_validate_json(msg.value())
            by_id[signal.signal_id] = signal
        if by_id:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return list(by_id.values())


@pytest.fixture
async def services(tmp_path, kafka_settings, redis_url, redis_client, redis_prefix):
    topics = await Topics.create(kafka_settings)
    registry = tmp_path / "registry"
    fit_model(registry, "m-interop", seed=2)
    await ControlPlane(redis_client, redis_prefix).promote(
        "m-interop", actor="test", reason="interop setup"
    )
    pipe = build_pipeline(topics, kafka_settings, redis_url, redis_prefix, registry)
    for svc in pipe.all():
        await svc.start()
    try:
        await asyncio.gather(*(svc.wait_ready(30) for svc in pipe.all()))
        yield topics
    finally:
        for svc in pipe.all():
            await svc.stop()
        await topics.delete(kafka_settings)


async def test_librdkafka_producer_ticks_become_signals_a_librdkafka_executor_reads(
    services: Topics, stack: StackInfo
):
    topics = services
    t0 = backfill_start_ns(time.time_ns(), 1, N_BARS + 10)
    ticks = _ticks(t0)
    left, errors = await asyncio.to_thread(
        _produce_with_librdkafka, stack.bootstrap, topics.raw, ticks
    )
    assert (left, errors) == (0, [])

    want = len(SYMBOLS) * (N_BARS - WARMUP_BARS + 1)
    signals = await asyncio.to_thread(
        _consume_with_librdkafka, stack.bootstrap, topics.signals, want, 90.0
    )
    symbols = {key.decode() for key, _ in ticks}
    assert len(signals) == want
    assert {s.symbol for s in signals} == symbols
    assert all(s.model_id == "m-interop" and s.tradable for s in signals)
    per_symbol = {sym: sorted(s.bar_index for s in signals if s.symbol == sym) for sym in symbols}
    for bars in per_symbol.values():  # one signal per bar, no gaps
        assert bars == list(range(bars[0], bars[0] + len(bars)))


def _kcat(*args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kcat", *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


async def test_kcat_lists_and_reads_topics_on_kafka_but_cannot_talk_to_tansu(
    stack: StackInfo, fresh_topic
):
    if shutil.which("kcat") is None:
        pytest.skip("kcat not installed: apt-get install kcat")
    if stack.broker is None:
        pytest.skip("external broker")
    topic = await fresh_topic(partitions=1)
    listed = await asyncio.to_thread(_kcat, "-b", stack.bootstrap, "-L", "-J", timeout_s=15)
    if stack.broker == "tansu":
        # librdkafka 2.0.2's ApiVersion handling underflows on Tansu's reply (issue 14)
        assert listed.returncode != 0
        return
    assert listed.returncode == 0, listed.stderr
    assert topic in {t["topic"] for t in json.loads(listed.stdout)["topics"]}
    produced = await asyncio.to_thread(
        subprocess.run,
        ["kcat", "-b", stack.bootstrap, "-P", "-t", topic, "-K", ":"],
        input="AAPL:tick-1\nMSFT:tick-2\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert produced.returncode == 0, produced.stderr
    read = await asyncio.to_thread(
        _kcat, "-b", stack.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%k=%s\n"
    )
    assert read.returncode == 0, read.stderr
    assert read.stdout.split() == ["AAPL=tick-1", "MSFT=tick-2"]
