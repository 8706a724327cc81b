"""Ticks in, scored signals out: all five services on the real embedded broker and Redis."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from pipeline_support import Pipeline, TopicReader, Topics, build_pipeline, fit_model

from geodesic.contracts import DeadLetter, FeatureVector, Outcome, ScoredSignal, ShadowScore
from geodesic.control import ControlPlane
from geodesic.features import WARMUP_BARS
from geodesic.marketdata import load_dataset
from geodesic.marketdata.replay import (
    ReplayConfig,
    backfill_start_ns,
    inject_faults,
    interleave,
    replay_ticks,
)
from geodesic.runtime.kafka import make_producer

pytestmark = pytest.mark.integration

N_BARS = 70
SYMBOLS = ("sp500", "nasdaq")


def replay_stream(n_bars: int, start_bar: int, t0_ns: int, seed: int, seq_start: int = 0):
    streams = []
    for i, name in enumerate(SYMBOLS):
        series = load_dataset(name)
        part = series.take(slice(start_bar, start_bar + n_bars))
        streams.append(
            replay_ticks(
                part,
                ReplayConfig(seed=seed + i, ticks_per_bar=(8, 12), seq_start=seq_start),
                t0_ns=t0_ns,
            )
        )
    return interleave(*streams)


async def send_all(producer, topic: str, messages) -> int:
    futures = [await producer.send(topic, value, key=key) for key, value in messages]
    await asyncio.gather(*futures)
    return len(futures)


@pytest.fixture
async def pipeline(tmp_path, kafka_settings, redis_url, redis_client, redis_prefix):
    topics = await Topics.create(kafka_settings)
    registry = tmp_path / "registry"
    fit_model(registry, "m-active", seed=1)
    plane = ControlPipelineState(redis_client, redis_prefix)
    await plane.plane.promote("m-active", actor="test", reason="e2e setup")
    await plane.plane.set_slot("shadow", "m-active", actor="test", reason="parity shadow")
    pipe = build_pipeline(topics, kafka_settings, redis_url, redis_prefix, registry)
    for svc in pipe.all():
        await svc.start()
    await asyncio.gather(*(svc.wait_ready(30) for svc in pipe.all()))
    reader = TopicReader(
        kafka_settings,
        topics.signals,
        topics.dlq,
        topics.features,
        topics.shadow,
        topics.outcomes,
        topics.control,
    )
    await reader.start()
    try:
        yield pipe, topics, reader, plane
    finally:
        await reader.stop()
        for svc in pipe.all():
            await svc.stop()
        await topics.delete(kafka_settings)


class ControlPipelineState:
    def __init__(self, redis, prefix: str) -> None:
        self.plane = ControlPlane(redis, prefix)


def decoded(records, model):
    return [model.model_validate_json(r.value) for r in records]


async def test_ticks_flow_to_scored_signals_with_dlq_reconciled_and_kill_switch_honoured(
    pipeline, kafka_settings
):
    pipe, topics, reader, plane = pipeline
    pipe_: Pipeline = pipe
    now = time.time_ns()
    t0 = backfill_start_ns(now, 1, N_BARS + 10)
    faults = inject_faults(
        ((t.symbol.encode(), t.to_bytes()) for t in replay_stream(N_BARS, 1000, t0, seed=3)),
        dup_rate=0.02,
        malformed_rate=0.02,
        seed=5,
    )
    producer = make_producer(kafka_settings)
    await producer.start()
    try:
        sent = await send_all(producer, topics.raw, faults)
    finally:
        await producer.stop()
    expected = faults.tally.expected_collector_counts()
    vectors_expected = len(SYMBOLS) * (N_BARS - WARMUP_BARS + 1)

    await reader.wait_for(
        lambda: len(reader.records[topics.signals]) >= vectors_expected, 60, "signals"
    )
    counts = pipe_.collector.processor.counts  # type: ignore[union-attr]
    assert counts["received"] == sent
    assert counts["received"] == counts["accepted"] + counts["duplicates"] + counts["dlq"]
    assert counts["accepted"] == expected["accepted"]
    assert counts["duplicates"] == expected["duplicates"]
    assert counts["dlq"] == expected["dlq"]
    letters = decoded(reader.records[topics.dlq], DeadLetter)
    assert Counter(d.reason for d in letters) == Counter(faults.tally.expected_dlq_reasons())

    signals = decoded(reader.records[topics.signals], ScoredSignal)
    vectors = decoded(reader.records[topics.features], FeatureVector)
    assert len(vectors) == vectors_expected
    assert {(s.symbol, s.bar_index) for s in signals} == {(v.symbol, v.bar_index) for v in vectors}
    assert all(s.model_id == "m-active" and s.route == "active" for s in signals)
    assert all(s.tradable and not s.halted for s in signals), Counter(
        r for s in signals for r in s.reasons
    )
    # every bar closed by a later tick is traced end to end; idle-flushed last bars have no tick
    traced = [s for s in signals if "e2e" in s.latency_ms]
    assert len(traced) >= len(signals) - len(SYMBOLS)

    # kill switch: flipped, then the very next bars must come out non-tradable
    await plane.plane.set_kill_switch(True, actor="test", reason="e2e kill")
    flip_done = time.time_ns()
    more = replay_stream(
        8, 1000 + N_BARS, t0 + N_BARS * 1_000_000_000, seed=4, seq_start=10_000_000
    )
    producer = make_producer(kafka_settings)
    await producer.start()
    try:
        await send_all(producer, topics.raw, ((t.symbol.encode(), t.to_bytes()) for t in more))
    finally:
        await producer.stop()
    await reader.wait_for(
        lambda: len(reader.records[topics.signals]) >= vectors_expected + 2 * 8,
        30,
        "post-kill signals",
    )
    after = [
        s
        for s in decoded(reader.records[topics.signals], ScoredSignal)
        if s.hops.get("scorer_in", 0) > flip_done
    ]
    assert after and all(not s.tradable and s.halted and "halted" in s.reasons for s in after)

    # shadow runs the same model: every joined pair must match exactly (parity)
    await reader.wait_for(
        lambda: pipe_.shadow.processor.counts["joined"] >= vectors_expected, 30, "shadow join"
    )
    shadow_stats = pipe_.shadow.processor.stats()  # type: ignore[union-attr]
    assert shadow_stats["parity_fail"] == 0 and shadow_stats["match_rate"] == 1.0
    assert len(decoded(reader.records[topics.shadow], ShadowScore)) >= vectors_expected

    # outcomes are labelled from later bars; the audit trail reaches control.events
    await reader.wait_for(lambda: len(reader.records[topics.outcomes]) > 10, 30, "outcomes")
    outcomes = decoded(reader.records[topics.outcomes], Outcome)
    assert all(o.horizon_bars == 1 for o in outcomes)
    await reader.wait_for(lambda: len(reader.records[topics.control]) >= 3, 30, "control")
