"""The idle flush must not close a bar whose closing ticks are already in the log."""

from __future__ import annotations

from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry

from feature.processor import FeatureMetrics, FeatureProcessor
from geodesic.contracts import Tick
from geodesic.runtime.deadletters import DeadLetterSink

TP = TopicPartition("md.ticks", 0)
BAR_NS = 1_000_000_000


def tick_record(seq: int, ts_ns: int) -> ConsumerRecord:
    value = Tick(
        venue="V", symbol="ES", seq=seq, ts_ns=ts_ns, bid=99.0, ask=101.0, last=100.0, size=1.0
    ).to_bytes()
    return ConsumerRecord("md.ticks", 0, seq, 0, 0, b"ES", value, None, 2, len(value), ())


async def test_a_stalled_loop_with_unread_ticks_does_not_flush_the_open_bar_early():
    behind = {TP: True}
    clock = [10 * BAR_NS]
    proc = FeatureProcessor(
        bar_seconds=1,
        price_source="last",
        bars_topic="bars",
        features_topic="features",
        idle_flush_grace_s=0.3,
        checkpoints=None,
        metrics=FeatureMetrics(CollectorRegistry()),
        dead_letters=DeadLetterSink("pdlq", None, service="feature"),
        clock=lambda: clock[0],
        is_behind=lambda tp: behind[tp],
    )
    await proc.process(TP, [tick_record(1, 10 * BAR_NS + 1)])
    clock[0] += 5 * BAR_NS  # the loop stalled (e.g. on a dead Redis) for 5 s
    assert await proc.on_idle(clock[0]) == []  # the rest of the bar is waiting in the log
    behind[TP] = False
    assert [o.topic for o in await proc.on_idle(clock[0])] == ["bars"]  # caught up: flush


async def test_without_a_lag_probe_idle_bars_are_flushed_as_before():
    proc = FeatureProcessor(
        bar_seconds=1,
        price_source="last",
        bars_topic="bars",
        features_topic="features",
        idle_flush_grace_s=0.3,
        checkpoints=None,
        metrics=FeatureMetrics(CollectorRegistry()),
        dead_letters=DeadLetterSink("pdlq", None, service="feature"),
        clock=lambda: 10 * BAR_NS,
    )
    await proc.process(TP, [tick_record(1, 10 * BAR_NS + 1)])
    assert [o.topic for o in await proc.on_idle(12 * BAR_NS)] == ["bars"]
