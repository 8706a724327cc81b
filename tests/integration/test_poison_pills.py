"""Poison pills: records far larger than any tick, on md.ticks.raw and on every internal
topic, stop no service; each becomes a bounded dead letter that still identifies it.

Before the fix, a 0.8 MB raw tick stopped the collector for good: its dead letter carried
the whole payload in base64, larger than a producer request may be, so the batch failed
and was retried (and failed) after every restart.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import AsyncIterator

import pytest
from pipeline_support import (
    Pipeline,
    TopicReader,
    Topics,
    running_pipeline,
)
from test_faults_hostile import alive_and_ready, replay

from geodesic.contracts import DeadLetter, ScoredSignal
from geodesic.contracts.models import DEAD_LETTER_RAW_MAX
from geodesic.features import WARMUP_BARS
from geodesic.marketdata.replay import backfill_start_ns
from geodesic.runtime.kafka import KafkaSettings, make_producer

pytestmark = pytest.mark.integration

SIZES = (900 * 1024, 2 * 1024 * 1024)
# Input topics accept the pills (a broker's limit is per topic); the services' producers
# keep the default 1 MiB max_request_size, as in production.
BIG_TOPIC = (("max.message.bytes", str(8 * 1024 * 1024)),)


def pill(size: int, tag: bytes) -> bytes:
    """Valid JSON, so it gets past the cheap checks and into the parsers."""
    head = b'{"v":1,"symbol":"ES","pad":"' + tag
    return head + b"x" * (size - len(head) - 2) + b'"}'


async def send_big(kafka: KafkaSettings, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = make_producer(kafka, max_request_size=16 * 1024 * 1024)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, v, key=k) for k, v in messages])
    finally:
        await producer.stop()


@pytest.fixture
async def pipeline(
    tmp_path, kafka_settings, redis_url, redis_client, redis_prefix
) -> AsyncIterator[tuple[Pipeline, Topics, TopicReader]]:
    async with running_pipeline(
        kafka_settings,
        redis_url,
        redis_client,
        redis_prefix,
        tmp_path / "registry",
        model_id="m-pill",
        seed=5,
        read=lambda t: (t.signals, t.dlq, t.pdlq),
        topic_configs=BIG_TOPIC,
    ) as running:
        yield running


async def test_huge_records_on_every_topic_become_bounded_dead_letters_and_nothing_stops(
    pipeline, kafka_settings
):
    pipe, topics, reader = pipeline
    targets = {
        topics.raw: ["collector"],
        topics.ticks: ["feature"],
        topics.features: ["scorer", "shadow", "risk-supervisor"],
        topics.bars: ["risk-supervisor"],
        topics.signals: ["shadow", "risk-supervisor"],
    }
    sent: dict[str, bytes] = {}  # sha256 -> the pill
    for topic in targets:
        pills = [pill(size, f"{topic}:{size}:".encode()) for size in SIZES]
        sent.update({hashlib.sha256(p).hexdigest(): p for p in pills})
        await send_big(kafka_settings, topic, [(b"ES", p) for p in pills])

    # then real traffic: the pipeline still turns every bar into a signal
    n_bars = WARMUP_BARS + 6
    ticks = replay(n_bars, backfill_start_ns(time.time_ns(), 1, n_bars + 10))
    await send_big(kafka_settings, topics.raw, [(t.symbol.encode(), t.to_bytes()) for t in ticks])
    n_vectors = 2 * (n_bars - WARMUP_BARS + 1)

    def real_signals() -> list[ScoredSignal]:
        return [
            ScoredSignal.model_validate_json(r.value)
            for r in reader.records[topics.signals]
            if len(r.value) < 100_000
        ]

    want_letters = sum(len(services) for services in targets.values()) * len(SIZES)
    letters_seen = lambda: len(reader.records[topics.dlq]) + len(reader.records[topics.pdlq])  # noqa: E731
    await reader.wait_for(lambda: len(real_signals()) >= n_vectors, 90, "real signals")
    await reader.wait_for(lambda: letters_seen() >= want_letters, 30, "dead letters")
    for svc in pipe.all():
        assert alive_and_ready(svc), f"{svc.name} stopped: {svc.ready()}"

    letters = [
        DeadLetter.model_validate_json(r.value)
        for r in reader.records[topics.dlq] + reader.records[topics.pdlq]
    ]
    by_target: dict[tuple[str, str], int] = {}
    for d in letters:
        service = d.detail.split("]")[0].lstrip("[")
        by_target[(d.source_topic, service)] = by_target.get((d.source_topic, service), 0) + 1
        assert d.truncated and d.raw_len in SIZES
        original = sent[d.raw_sha256]  # identifies exactly which pill it was
        head = base64.b64decode(d.raw_b64)
        assert len(head) == DEAD_LETTER_RAW_MAX and original.startswith(head)
    assert by_target == {
        (topic, service): len(SIZES) for topic, services in targets.items() for service in services
    }
    raw_letters = [d for d in letters if d.source_topic == topics.raw]
    assert {d.reason for d in raw_letters} == {"oversized"}
