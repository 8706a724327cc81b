"""`record()` against the session broker: fresh topics, real redeliveries, real batches."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import numpy as np
import pytest

from geodesic.contracts import Bar, FeatureVector
from geodesic.marketdata.recorder import record
from geodesic.marketdata.recording import load_bars_npz, read_recording
from geodesic.runtime.kafka import KafkaSettings, make_consumer, make_producer

pytestmark = pytest.mark.integration

NS = 1_000_000_000
T0 = 1_700_000_000


def _bar(symbol: str, i: int, close: float) -> Bar:
    return Bar(
        symbol=symbol,
        bar_index=T0 + i,
        bar_seconds=1,
        open=close,
        high=close + 0.5,
        low=close - 0.5,
        close=close,
        vwap=close,
        volume=5.0 + i,
        n_ticks=25,
        mean_spread=0.01,
        open_ts_ns=(T0 + i) * NS,
        close_ts_ns=(T0 + i + 1) * NS - 1,
        emitted_ts_ns=time.time_ns(),
    )


def _fv(symbol: str, i: int) -> FeatureVector:
    return FeatureVector(
        symbol=symbol,
        bar_index=T0 + i,
        ts_ns=(T0 + i + 1) * NS - 1,
        close=100.0 + i,
        values=[float(i), -float(i), 0.5],
        schema_hash="16234d51e220aefa",
        hops={"feature": time.time_ns()},
    )


async def _produce(settings: KafkaSettings, topic: str, messages, **overrides) -> None:
    producer = make_producer(settings, **overrides)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def test_recorded_bars_match_what_was_produced_despite_redeliveries_and_batching(
    kafka_settings: KafkaSettings, fresh_topic, tmp_path
):
    topic = await fresh_topic(partitions=2)
    bars = [_bar(s, i, 100.0 + i) for s in ("AAA", "BBB") for i in range(30)]
    messages = [(b.symbol.encode(), b.to_bytes()) for b in bars]
    # At-least-once: a resend of a few bars (new emitted_ts_ns) and one bad payload.
    redelivered = [_bar("AAA", i, 100.0 + i) for i in (0, 7, 29)]
    messages += [(b.symbol.encode(), b.to_bytes()) for b in redelivered]
    messages.append((b"AAA", b"{not json"))
    # linger > 0 packs records into multi-record batches, whose tail end_offsets() misses.
    await _produce(kafka_settings, topic, messages, linger_ms=20)

    out = tmp_path / "bars.npz"
    started = time.monotonic()
    result = await record(
        kafka_settings, [topic], out, kind="bars", until_idle_s=0.5, max_seconds=10
    )
    assert time.monotonic() - started < 5.0
    assert result.stopped == "idle"
    s = result.stats
    assert (s.received, s.kept, s.duplicates, s.conflicts) == (64, 60, 3, 0)
    assert dict(s.rejected) == {"invalid": 1}

    a = read_recording(out, kind="bars")
    assert a["symbol"].tolist() == ["AAA"] * 30 + ["BBB"] * 30
    assert a["bar_index"].tolist() == [T0 + i for i in range(30)] * 2
    for name in ("close", "high", "low", "volume", "open_ts_ns", "close_ts_ns"):
        assert a[name].tolist() == [getattr(b, name) for b in bars], name
    # The first delivery is the one kept.
    assert a["emitted_ts_ns"][0] == bars[0].emitted_ts_ns

    series = load_bars_npz(out)
    assert sorted(series) == ["AAA", "BBB"]
    np.testing.assert_array_equal(series["BBB"].close, [100.0 + i for i in range(30)])


async def test_recorded_features_match_what_was_produced(
    kafka_settings: KafkaSettings, fresh_topic, tmp_path
):
    topic = await fresh_topic(partitions=2)
    vectors = [_fv(s, i) for s in ("AAA", "BBB") for i in range(20)]
    await _produce(kafka_settings, topic, [(v.symbol.encode(), v.to_bytes()) for v in vectors])

    result = await record(
        kafka_settings, topic, tmp_path / "f.npz", kind="features", until_idle_s=0.5
    )
    assert (result.stats.kept, result.stats.duplicates) == (40, 0)
    a = read_recording(result.path, kind="features")
    assert a["symbol"].tolist() == [v.symbol for v in vectors]
    assert a["bar_index"].tolist() == [v.bar_index for v in vectors]
    np.testing.assert_array_equal(a["values"], [v.values for v in vectors])
    assert str(a["schema_hash"]) == "16234d51e220aefa" and int(a["n_features"]) == 3


async def test_recording_a_topic_that_keeps_receiving_stops_at_max_seconds_and_writes(
    kafka_settings: KafkaSettings, fresh_topic, tmp_path
):
    topic = await fresh_topic(partitions=1)
    producer = make_producer(kafka_settings)
    await producer.start()

    async def trickle() -> None:
        for i in range(100):
            await producer.send_and_wait(topic, _bar("AAA", i, 50.0).to_bytes(), key=b"AAA")
            await asyncio.sleep(0.05)

    task = asyncio.create_task(trickle())
    try:
        result = await record(
            kafka_settings,
            topic,
            tmp_path / "b.npz",
            kind="bars",
            until_idle_s=1.0,
            max_seconds=1.5,
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
    assert result.stopped == "max_seconds"
    assert result.stats.kept > 5
    assert len(load_bars_npz(result.path)["AAA"]) == result.stats.kept


async def test_recording_a_missing_topic_fails_without_creating_it(
    kafka_settings: KafkaSettings, tmp_path
):
    topic = f"test.recorder.missing.{uuid.uuid4().hex[:8]}"
    with pytest.raises(LookupError, match="does not exist"):
        await record(kafka_settings, topic, tmp_path / "x.npz", kind="bars", max_seconds=5)
    assert not (tmp_path / "x.npz").exists()
    consumer = make_consumer(kafka_settings, group_id=None)
    await consumer.start()
    try:
        assert topic not in await consumer.topics()
    finally:
        await consumer.stop()


async def test_record_command_writes_the_npz_and_reports_counts_as_json(
    kafka_settings: KafkaSettings, fresh_topic, tmp_path, capsys
):
    from geodesic.cli.main import main

    topic = await fresh_topic(partitions=1)
    bars = [_bar("AAA", i, 10.0 + i) for i in range(10)]
    await _produce(kafka_settings, topic, [(b"AAA", b.to_bytes()) for b in [*bars, bars[3]]])

    def argv(topic: str, out: str) -> list[str]:
        return [
            *("record", "--topic", topic, "--kind", "bars", "--out", out),
            *("--idle-s", "0.5", "--max-s", "10", "--bootstrap", kafka_settings.bootstrap),
            "--json",
        ]

    out = tmp_path / "cli.npz"
    assert await asyncio.to_thread(main, argv(topic, str(out))) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["kept"], summary["duplicates"], summary["stopped"]) == (10, 1, "idle")
    assert load_bars_npz(out)["AAA"].close.tolist() == [10.0 + i for i in range(10)]

    empty = await fresh_topic(partitions=1)
    assert await asyncio.to_thread(main, argv(empty, str(tmp_path / "empty.npz"))) == 1
    assert "nothing recorded" in capsys.readouterr().err
