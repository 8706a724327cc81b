"""The feature service's and the collector's checkpoints on the real Redis: incremental (a
partition whose state did not change is not rewritten) and exact (a restart restores the
state it saved)."""

from __future__ import annotations

import redis.asyncio as aioredis
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry

from collector.processor import CollectorMetrics, CollectorProcessor
from collector.validation import ValidationPolicy
from feature.processor import FeatureMetrics, FeatureProcessor
from geodesic.contracts.services import COLLECTOR, FEATURE
from geodesic.features import WARMUP_BARS
from geodesic.marketdata.replay import ReplayConfig, replay_ticks
from geodesic.marketdata.synthetic import SyntheticConfig, generate_market
from geodesic.runtime.checkpoint import CheckpointStore
from geodesic.runtime.deadletters import DeadLetterSink
from geodesic.runtime.pipeline import Position

TP0, TP1 = TopicPartition("ticks", 0), TopicPartition("ticks", 1)
T0 = 1_700_000_000 * 10**9


def processor(client: aioredis.Redis, prefix: str) -> FeatureProcessor:
    return FeatureProcessor(
        bar_seconds=1,
        price_source="last",
        bars_topic="bars",
        features_topic="features",
        idle_flush_grace_s=0.0,
        checkpoints=CheckpointStore(client, FEATURE.name, prefix),
        metrics=FeatureMetrics(CollectorRegistry()),
        dead_letters=DeadLetterSink("dlq", CollectorRegistry(), service=FEATURE.name),
        clock=lambda: T0,  # outputs carry the clock: a fixed one makes runs comparable
    )


def records(tp: TopicPartition, symbol: str, n_bars: int, seed: int) -> list[ConsumerRecord]:
    series, _ = generate_market(SyntheticConfig(n_bars=n_bars, seed=seed, symbol=symbol))
    ticks = replay_ticks(series, ReplayConfig(seed=seed), t0_ns=T0)
    return [
        ConsumerRecord(
            tp.topic, tp.partition, i, 0, 0, symbol.encode(), t.to_bytes(), None, 0, 0, ()
        )
        for i, t in enumerate(ticks)
    ]


def state_of(proc: FeatureProcessor, tp: TopicPartition) -> dict:
    st = proc.parts[tp]
    return {
        "tracker": st.tracker.snapshot(),
        "bars": st.bars.snapshot(),
        "engine": st.engine.snapshot(),
        "last_event_ns": st.last_event_ns,
    }


async def test_feature_checkpoint_rewrites_only_changed_partitions_and_restores_exactly(
    redis_client: aioredis.Redis, redis_prefix: str
):
    a_all = records(TP0, "AA", WARMUP_BARS + 20, seed=1)
    a, tail = a_all[: len(a_all) * 2 // 3], a_all[len(a_all) * 2 // 3 :]
    b = records(TP1, "BB", WARMUP_BARS + 10, seed=2)
    proc = processor(redis_client, redis_prefix)
    assert await proc.on_assigned({TP0, TP1}) == {}
    await proc.process(TP0, a[: len(a) // 2])
    await proc.process(TP1, b)
    positions = {TP0: Position(len(a) // 2, "f0"), TP1: Position(len(b), "f1")}
    await proc.checkpoint(positions)
    store = proc.checkpoints
    assert store is not None
    # A write of a key drops its TTL: a TTL that survives means the key was not rewritten.
    for tp in (TP0, TP1):
        assert await redis_client.expire(store.key(tp), 3600)

    await proc.process(TP0, a[len(a) // 2 :])
    positions[TP0] = Position(len(a), "f2")
    await proc.checkpoint(positions)
    assert await redis_client.ttl(store.key(TP0)) == -1  # changed: written
    assert await redis_client.ttl(store.key(TP1)) > 0  # unchanged: left alone
    await proc.checkpoint(positions)  # nothing changed at all: nothing written
    assert await redis_client.expire(store.key(TP0), 3600)
    await proc.checkpoint(positions)
    assert await redis_client.ttl(store.key(TP0)) > 0

    restarted = processor(redis_client, redis_prefix)
    seeks = await restarted.on_assigned({TP0, TP1})
    assert seeks == {TP0: len(a), TP1: len(b)}
    assert [seeks[TP0].fingerprint, seeks[TP1].fingerprint] == ["f2", "f1"]  # type: ignore[attr-defined]
    for tp in (TP0, TP1):
        assert state_of(restarted, tp) == state_of(proc, tp)
    # the restored processor continues exactly as the original would
    continued = await restarted.process(TP0, tail)
    assert any(o.topic == "features" for o in continued)
    assert continued == await proc.process(TP0, tail)


async def test_collector_checkpoint_rewrites_only_changed_partitions_in_one_transaction(
    redis_client: aioredis.Redis, redis_prefix: str
):
    store = CheckpointStore(redis_client, COLLECTOR.name, redis_prefix)
    proc = CollectorProcessor(
        policy=ValidationPolicy(max_age_ns=2**62),
        out_topic="ticks",
        dead_letters=DeadLetterSink("dlq", CollectorRegistry(), service=COLLECTOR.name),
        checkpoints=store,
        metrics=CollectorMetrics(CollectorRegistry()),
        clock=lambda: T0 + 10**12,
    )
    raw0, raw1 = TopicPartition("raw", 0), TopicPartition("raw", 1)
    a, b = records(raw0, "AA", 3, seed=1), records(raw1, "BB", 3, seed=2)
    await proc.on_assigned({raw0, raw1})
    await proc.process(raw0, a[:10])
    await proc.process(raw1, b)
    positions = {raw0: Position(10, "f0"), raw1: Position(len(b), "f1")}
    await proc.checkpoint(positions)
    assert await redis_client.expire(store.key(raw1), 3600)
    await proc.process(raw0, a[10:])
    positions[raw0] = Position(len(a), "f2")
    await proc.checkpoint(positions)
    assert await redis_client.ttl(store.key(raw1)) > 0  # unchanged: not rewritten
    seen = await redis_client.hgetall(store.keys.seen_symbols)
    assert set(seen) == {b"AA", b"BB"}  # written with the checkpoints

    restarted = CollectorProcessor(
        policy=ValidationPolicy(),
        out_topic="ticks",
        dead_letters=DeadLetterSink("dlq", CollectorRegistry(), service=COLLECTOR.name),
        checkpoints=store,
        metrics=CollectorMetrics(CollectorRegistry()),
    )
    assert await restarted.on_assigned({raw0, raw1}) == {raw0: len(a), raw1: len(b)}
    for tp in (raw0, raw1):
        assert restarted.trackers[tp].snapshot() == proc.trackers[tp].snapshot()
