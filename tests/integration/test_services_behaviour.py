"""Scorer routing, hot reload, schema refusal; feature restart without loss (real stack)."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest
from pipeline_support import (
    TopicReader,
    Topics,
    build_pipeline,
    feature_settings,
    fit_model,
    runner_of,
)

from geodesic.contracts import Bar, FeatureVector, ScoredSignal
from geodesic.control import ControlPlane, Rollout, route_for
from geodesic.features import WARMUP_BARS
from geodesic.lifecycle.registry import sign_model
from geodesic.marketdata import load_dataset
from geodesic.marketdata.replay import ReplayConfig, backfill_start_ns, interleave, replay_ticks
from geodesic.runtime.kafka import make_producer
from lorentzcore.model import AnalogModel

pytestmark = pytest.mark.integration


def ticks(n_bars: int, start_bar: int, t0_ns: int, seq_start: int = 0):
    streams = [
        replay_ticks(
            load_dataset(name).take(slice(start_bar, start_bar + n_bars)),
            ReplayConfig(seed=i, ticks_per_bar=(6, 9), seq_start=seq_start),
            t0_ns=t0_ns,
        )
        for i, name in enumerate(("sp500", "nasdaq"))
    ]
    return list(interleave(*streams))


async def publish(kafka, topic: str, tick_list) -> None:
    producer = make_producer(kafka)
    await producer.start()
    try:
        futs = [await producer.send(topic, t.to_bytes(), key=t.symbol.encode()) for t in tick_list]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


def parse(records, model):
    return [model.model_validate_json(r.value) for r in records]


@pytest.fixture
async def env(tmp_path, kafka_settings, redis_url, redis_client, redis_prefix):
    topics = await Topics.create(kafka_settings)
    registry = tmp_path / "registry"
    fit_model(registry, "m-a", seed=1)
    fit_model(registry, "m-b", seed=2)
    plane = ControlPlane(redis_client, redis_prefix)
    await plane.promote("m-a", actor="test", reason="setup")
    pipe = build_pipeline(topics, kafka_settings, redis_url, redis_prefix, registry)
    services = [pipe.collector, pipe.feature, pipe.scorer]
    for svc in services:
        await svc.start()
    await asyncio.gather(*(svc.wait_ready(30) for svc in services))
    reader = TopicReader(kafka_settings, topics.signals, topics.features, topics.bars)
    await reader.start()
    try:
        yield pipe, topics, reader, plane, registry
    finally:
        await reader.stop()
        for svc in services:
            await svc.stop()
        await topics.delete(kafka_settings)


async def test_canary_routes_a_deterministic_fraction_and_a_promotion_hot_reloads(
    env, kafka_settings
):
    _pipe, topics, reader, plane, _ = env
    await plane.set_rollout(
        Rollout(mode="canary", canary_fraction=0.5, seed=11, candidate="m-b"),
        actor="test",
        reason="canary",
    )
    n = WARMUP_BARS + 30
    t0 = backfill_start_ns(time.time_ns(), 1, n + 20)
    await publish(kafka_settings, topics.raw, ticks(n, 2000, t0))
    expected = 2 * (n - WARMUP_BARS + 1)
    await reader.wait_for(lambda: len(reader.records[topics.signals]) >= expected, 60, "signals")
    signals = parse(reader.records[topics.signals], ScoredSignal)
    for s in signals:
        canary = route_for(11, s.symbol, s.bar_index, 0.5)
        assert s.route == ("canary" if canary else "active")
        assert s.model_id == ("m-b" if canary else "m-a")
    assert {s.route for s in signals} == {"active", "canary"}

    # promote m-b and stop the canary: later signals come from m-b without a restart
    await plane.set_rollout(Rollout(), actor="test", reason="end canary")
    await plane.promote("m-b", actor="test", reason="promote")
    flipped = time.time_ns()
    await publish(kafka_settings, topics.raw, ticks(6, 2000 + n, t0 + n * 10**9, seq_start=10**7))
    await reader.wait_for(
        lambda: len(reader.records[topics.signals]) >= expected + 2 * 5, 30, "after promote"
    )
    later = [
        s
        for s in parse(reader.records[topics.signals], ScoredSignal)
        if s.hops.get("scorer_in", 0) > flipped
    ]
    assert later and all(s.model_id == "m-b" and s.route == "active" for s in later)


async def test_scorer_refuses_a_model_whose_schema_differs_from_the_features(env, kafka_settings):
    pipe, topics, reader, plane, registry = env
    model = AnalogModel.load(registry / "m-a")
    other = model.spec.model_copy(update={"model_id": "m-bad", "schema_hash": "0000ffff0000ffff"})
    bad_dir = registry / "m-bad"
    shutil.copytree(registry / "m-a", bad_dir)
    (bad_dir / "model.json").write_text(other.model_dump_json(indent=2))
    sign_model(AnalogModel.load(bad_dir))  # validly signed, but for other features
    await plane.promote("m-bad", actor="test", reason="bad schema")
    n = WARMUP_BARS + 3
    t0 = backfill_start_ns(time.time_ns(), 1, n + 5)
    await publish(kafka_settings, topics.raw, ticks(n, 3000, t0))
    await reader.wait_for(lambda: len(reader.records[topics.signals]) >= 8, 30, "signals")
    signals = parse(reader.records[topics.signals], ScoredSignal)
    assert all(not s.tradable and "model_unavailable" in s.reasons for s in signals)
    failure = pipe.scorer.processor.models.failure("m-bad")  # type: ignore[union-attr]
    assert failure is not None and "schema_hash" in failure


async def test_feature_service_restarted_mid_stream_loses_no_bar(
    env, kafka_settings, redis_url, redis_prefix
):
    pipe, topics, reader, _plane, _ = env
    n = WARMUP_BARS + 40
    t0 = backfill_start_ns(time.time_ns(), 1, n + 10)
    stream = ticks(n, 4000, t0)
    half = len(stream) // 2
    await publish(kafka_settings, topics.raw, stream[:half])
    await reader.wait_for(lambda: len(reader.records[topics.bars]) >= 20, 30, "first bars")
    await pipe.feature.stop()  # mid-stream: open bars and feature history live in Redis
    from feature.app import FeatureService

    common = dict(kafka=kafka_settings, redis_url=redis_url, redis_prefix=redis_prefix, http_port=0)
    group = pipe.feature.settings.group_id.removesuffix("-feature")
    replacement = runner_of(FeatureService, feature_settings(topics, common, group, 1, 0.3))
    await replacement.start()
    try:
        await replacement.wait_ready(30)
        await publish(kafka_settings, topics.raw, stream[half:])
        await reader.wait_for(
            lambda: (
                len({(b.symbol, b.bar_index) for b in parse(reader.records[topics.bars], Bar)})
                >= 2 * n
            ),
            60,
            "all bars",
        )
        bars = parse(reader.records[topics.bars], Bar)
        by_key: dict = {}
        for b in bars:
            by_key.setdefault((b.symbol, b.bar_index), []).append(b)
        assert len(by_key) == 2 * n  # every bar of both symbols, none lost
        for copies in by_key.values():  # repeats, if any, are the same bar
            assert len({(c.open, c.high, c.low, c.close, c.n_ticks) for c in copies}) == 1
        expected_vectors = 2 * (n - WARMUP_BARS + 1)
        await reader.wait_for(
            lambda: (
                len(
                    {
                        (v.symbol, v.bar_index)
                        for v in parse(reader.records[topics.features], FeatureVector)
                    }
                )
                >= expected_vectors
            ),
            30,
            "vectors",
        )
    finally:
        await replacement.stop()
