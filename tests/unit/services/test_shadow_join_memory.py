"""The shadow join's memory: live signals waiting for a shadow score are kept compact.

A 30-minute soak (bench/soak.py, 10 signals/s, no shadow model configured) showed the
shadow process growing 2.6 MB a minute: every live signal waited in the join buffer as a
whole ScoredSignal (~4 KB with its hops) until join_capacity (20,000) pushed it out.
"""

from __future__ import annotations

import tracemalloc

from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry

from geodesic.contracts import ScoredSignal, ShadowScore
from geodesic.runtime.deadletters import DeadLetterSink
from shadow.processor import ShadowMetrics, ShadowProcessor

HOPS = {
    "tick_ts": 1,
    "collector": 2,
    "feature_in": 3,
    "feature_out": 4,
    "scorer_in": 5,
    "scorer_out": 6,
}


def _signal(i: int, prob_up: float = 0.7, side: str = "long") -> ScoredSignal:
    return ScoredSignal(
        signal_id=f"sig-{i:08d}",
        symbol="ES",
        bar_index=i,
        ts_ns=10**18 + i,
        prob_up=prob_up,
        side=side,  # type: ignore[arg-type]
        model_id="m-live",
        route="active",
        eff_k=12.5,
        degrade_level=0,
        halted=False,
        tradable=side != "flat",
        hops=HOPS,
        latency_ms={"score_total": 0.3, "feature_to_scorer": 4.0, "search": 0.1},
    )


def _processor(capacity: int = 20_000) -> ShadowProcessor:
    return ShadowProcessor(
        watcher=None,  # type: ignore[arg-type]  # live signals never consult it
        models=None,  # type: ignore[arg-type]
        features_topic="features",
        live_topic="signals",
        out_topic="shadow",
        metrics=ShadowMetrics(CollectorRegistry()),
        dead_letters=DeadLetterSink("dlq", CollectorRegistry(), service="test"),
        join_capacity=capacity,
    )


def _feed(proc: ShadowProcessor, signals: list[ScoredSignal]) -> None:
    records = [
        ConsumerRecord("signals", 0, i, 0, 0, b"ES", s.to_bytes(), None, 2, 0, ())
        for i, s in enumerate(signals)
    ]
    coro = proc.process(TopicPartition("signals", 0), records)
    try:
        coro.send(None)
    except StopIteration as stop:
        assert stop.value == []  # live signals are joined, never re-emitted
    else:
        raise AssertionError("the shadow processor suspended on live signals")


def test_a_waiting_live_signal_costs_hundreds_of_bytes_not_kilobytes() -> None:
    proc = _processor()
    signals = [_signal(i) for i in range(4000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    _feed(proc, signals)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown / len(signals) < 600, f"{grown / len(signals):.0f} bytes per waiting signal"


def test_join_capacity_still_bounds_the_buffer() -> None:
    proc = _processor(capacity=100)
    _feed(proc, [_signal(i) for i in range(1000)])
    assert proc.stats()["window"] == 0
    assert len(proc._live) == 100


def test_a_waiting_live_signal_still_joins_its_shadow_score() -> None:
    proc = _processor()
    live = _signal(1, prob_up=0.71, side="long")
    _feed(proc, [live])
    score = ShadowScore(
        signal_id="shadow-1",
        live_signal_id=live.signal_id,
        symbol="ES",
        bar_index=1,
        ts_ns=live.ts_ns,
        prob_up=0.41,
        side="flat",
        model_id="m-shadow",
        eff_k=10.0,
        emitted_ts_ns=1,
    )
    waiting = proc._live.pop(score.live_signal_id)
    proc._compare(score, waiting)
    stats = proc.stats()
    assert stats["joined"] == 1 and stats["matches"] == 0
    assert abs(stats["mean_abs_delta"] - 0.30) < 1e-12
