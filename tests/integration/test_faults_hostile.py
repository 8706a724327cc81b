"""Hostile input end to end: every bad raw tick lands in md.ticks.dlq with its reason, and
bad records written straight into internal topics stop no service.

The services run in-process on the session stack with topics of their own, so each test
can read exactly what a service did with every record it was given.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from pipeline_support import (
    Pipeline,
    TopicReader,
    Topics,
    runner_of,
    running_pipeline,
)

from collector.app import CollectorService
from collector.settings import CollectorSettings
from collector.validation import expected_partition
from geodesic.contracts import DeadLetter, FeatureVector, ScoredSignal, Tick
from geodesic.features import FEATURE_NAMES, SCHEMA_HASH, WARMUP_BARS
from geodesic.marketdata import load_dataset
from geodesic.marketdata.replay import ReplayConfig, backfill_start_ns, interleave, replay_ticks
from geodesic.runtime.kafka import KafkaSettings, make_producer
from geodesic.runtime.service import ServiceRunner

pytestmark = pytest.mark.integration

ALLOWED = frozenset({"ES", "NQ"})
N_FEATURES = len(FEATURE_NAMES)


def tick_doc(seq: int, ts_ns: int, **overrides: object) -> dict:
    doc = dict(
        v=1, venue="HOST", symbol="ES", seq=seq, ts_ns=ts_ns, bid=99.5, ask=100.5, last=100.0,
        size=1.0,
    )  # fmt: skip
    doc.update(overrides)
    return doc


def raw(doc: dict) -> bytes:
    return json.dumps(doc).encode()  # json.dumps writes NaN / Infinity for float specials


def hostile_ticks(now: int) -> list[tuple[str, bytes | None, bytes | None, str]]:
    """(case, key, value, expected reason): one of each kind of bad raw tick."""
    ts = now
    no_bid = tick_doc(0, ts)
    del no_bid["bid"]
    big_seq = b'{"v":1,"venue":"HOST","symbol":"ES","seq":' + b"9" * 3000
    big_seq += b',"ts_ns":1,"bid":1,"ask":1,"last":1,"size":1}'
    return [
        ("malformed json", b"ES", b'{"v":1,"venue":', "malformed_json"),
        ("not an object", b"ES", b"[1, 2, 3]", "not_an_object"),
        ("json null", b"ES", b"null", "not_an_object"),
        ("null value", b"ES", None, "malformed_json"),
        ("empty value", b"ES", b"", "malformed_json"),
        ("price as string", b"ES", raw(tick_doc(0, ts, bid="99.5")), "wrong_type"),
        ("bool as size", b"ES", raw(tick_doc(0, ts, size=True)), "wrong_type"),
        ("missing field", b"ES", raw(no_bid), "missing_field"),
        ("extra field", b"ES", raw(tick_doc(0, ts, side="buy")), "extra_field"),
        ("NaN", b"ES", raw(tick_doc(0, ts, bid=float("nan"))), "non_finite"),
        ("inf", b"ES", raw(tick_doc(0, ts, ask=float("inf"))), "non_finite"),
        (
            "1e999",
            b"ES",
            raw(tick_doc(0, ts)).replace(b'"ask": 100.5', b'"ask": 1e999'),
            "non_finite",
        ),
        ("negative price", b"ES", raw(tick_doc(0, ts, bid=-1.0)), "non_positive_price"),
        ("zero price", b"ES", raw(tick_doc(0, ts, last=0.0)), "non_positive_price"),
        ("bid > ask", b"ES", raw(tick_doc(0, ts, bid=101.0)), "crossed_quote"),
        ("ts beyond int64", b"ES", raw(tick_doc(0, 10**30)), "timestamp_invalid"),
        ("negative ts", b"ES", raw(tick_doc(0, -5)), "timestamp_invalid"),
        ("ts an hour ahead", b"ES", raw(tick_doc(0, ts + 3600 * 10**9)), "timestamp_future"),
        ("ts in 1970", b"ES", raw(tick_doc(0, 1)), "timestamp_stale"),
        ("seq beyond int64", b"ES", raw(tick_doc(10**40, ts)), "invalid_value"),
        ("3000-digit seq", b"ES", big_seq, "invalid_value"),
        (
            "symbol injection",
            b"ES; DROP",
            raw(tick_doc(0, ts, symbol="ES; DROP")),
            "invalid_value",
        ),
        ("unknown symbol", b"ZZ", raw(tick_doc(0, ts, symbol="ZZ")), "unknown_symbol"),
        ("unsupported version", b"ES", raw(tick_doc(0, ts, v=2)), "unsupported_version"),
        ("invalid utf-8", b"ES", b'{"v":1,"venue":"\xff\xfe"}', "invalid_utf8"),
        ("oversized", b"ES", raw(tick_doc(0, ts, venue="V" * 5000)), "oversized"),
        ("key mismatch", b"NQ", raw(tick_doc(0, ts)), "key_mismatch"),
        ("empty key", b"", raw(tick_doc(0, ts)), "key_mismatch"),
    ]


async def send(kafka: KafkaSettings, topic: str, messages: list[tuple[bytes | None, bytes | None]]):
    producer = make_producer(kafka, max_request_size=1 << 20)
    await producer.start()
    try:
        futs = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


def alive_and_ready(runner: ServiceRunner) -> bool:
    task = runner._task
    return task is not None and not task.done() and runner.ready()[0]


@pytest.fixture
async def collector_only(kafka_settings, redis_url, redis_prefix, redis_client):
    topics = await Topics.create(kafka_settings)
    collector = runner_of(
        CollectorService,
        CollectorSettings(
            kafka=kafka_settings,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            group_id=f"hostile-{topics.raw}",
            in_topic=topics.raw,
            out_topic=topics.ticks,
            dlq_topic=topics.dlq,
            allowed_symbols=ALLOWED,
        ),
    )
    await collector.start()
    await collector.wait_ready(30)
    reader = TopicReader(kafka_settings, topics.ticks, topics.dlq)
    await reader.start()
    try:
        yield collector, topics, reader
    finally:
        await reader.stop()
        await collector.stop()
        await topics.delete(kafka_settings)


async def test_every_hostile_raw_tick_is_dead_lettered_with_its_reason_and_good_ticks_flow_on(
    collector_only, kafka_settings
):
    collector, topics, reader = collector_only
    now = time.time_ns()
    cases = hostile_ticks(now)
    messages: list[tuple[bytes | None, bytes | None]] = []
    good: list[Tick] = []
    seq = 0

    def good_tick() -> tuple[bytes, bytes]:
        nonlocal seq
        seq += 1
        t = Tick.model_validate(tick_doc(seq, now + seq))
        good.append(t)
        return b"ES", t.to_bytes()

    for _case, key, value, _reason in cases:
        messages += [good_tick(), (key, value)]
    repeat = good_tick()
    stale = Tick.model_validate(tick_doc(1, now)).to_bytes()  # seq 1 again, but later: stale
    messages += [repeat, repeat, (b"ES", stale)]  # a duplicate, then an out-of-order seq
    messages += [good_tick() for _ in range(5)]  # the collector goes on after all of it
    await send(kafka_settings, topics.raw, messages)

    n_dlq = len(cases) + 1
    await reader.wait_for(
        lambda: (
            len(reader.records[topics.dlq]) >= n_dlq
            and len(reader.records[topics.ticks]) >= len(good)
        ),
        30,
        "dead letters and good ticks",
    )
    await asyncio.sleep(0.3)  # nothing more may arrive
    letters = [DeadLetter.model_validate_json(r.value) for r in reader.records[topics.dlq]]
    want = Counter(reason for *_, reason in cases) + Counter({"out_of_order_seq": 1})
    assert Counter(d.reason for d in letters) == want
    by_offset = {(d.partition, d.offset): d for d in letters}
    assert len(by_offset) == n_dlq
    raw_sent = {(v or b"") for _k, v in messages}
    for d in letters:  # the original bytes are kept, so every rejection can be inspected
        assert base64.b64decode(d.raw_b64) in raw_sent and d.source_topic == topics.raw
        assert d.detail
    published = [Tick.model_validate_json(r.value) for r in reader.records[topics.ticks]]
    assert [t.seq for t in published] == [t.seq for t in good]  # every good tick, in order
    counts = collector.processor.counts  # type: ignore[union-attr]
    assert counts["received"] == len(messages)
    assert counts["received"] == counts["accepted"] + counts["duplicates"] + counts["dlq"]
    assert (counts["accepted"], counts["duplicates"], counts["dlq"]) == (len(good), 1, n_dlq)
    assert alive_and_ready(collector)


# ---- internal topics -------------------------------------------------------------------


@pytest.fixture
async def pipeline(
    tmp_path, kafka_settings, redis_url, redis_client, redis_prefix
) -> AsyncIterator:
    async with running_pipeline(
        kafka_settings,
        redis_url,
        redis_client,
        redis_prefix,
        tmp_path / "registry",
        model_id="m-hostile",
        seed=3,
        read=lambda t: (t.signals, t.pdlq, t.features),
    ) as running:
        yield running


def feature_doc(**overrides: object) -> dict:
    doc = dict(
        v=1, symbol="PX", bar_index=100, ts_ns=100 * 10**9, close=1.0,
        values=[0.1] * N_FEATURES, schema_hash=SCHEMA_HASH,
    )  # fmt: skip
    doc.update(overrides)
    return doc


def bar_doc(**overrides: object) -> dict:
    doc = dict(
        v=1, symbol="PX", bar_index=100, bar_seconds=1, open=1.0, high=1.0, low=1.0, close=1.0,
        vwap=1.0, volume=1.0, n_ticks=1, mean_spread=0.0, open_ts_ns=0, close_ts_ns=0,
    )  # fmt: skip
    doc.update(overrides)
    return doc


def signal_doc(**overrides: object) -> dict:
    doc = dict(
        v=1, signal_id="x", symbol="PX", bar_index=100, ts_ns=0, prob_up=0.5, side="flat",
        model_id="m-hostile", route="active", eff_k=1.0, degrade_level=0, halted=False,
        tradable=True,
    )  # fmt: skip
    doc.update(overrides)
    return doc


GARBAGE: list[bytes | None] = [None, b"", b"\xff\xfe\x00", b"null", b"[]", b"{}", b"1e999"]

#: features.v1 records and what the scorer must do with each (a signal or a dead letter)
HOSTILE_FEATURES: list[tuple[bytes | None, str]] = [
    *[(g, "invalid_record") for g in GARBAGE],
    (raw(feature_doc(values=[float("nan")] * N_FEATURES)), "invalid_record"),
    (raw(feature_doc(close=-1.0)), "invalid_record"),
    (raw(feature_doc(symbol="P X")), "invalid_record"),
    (raw(feature_doc(extra=1)), "invalid_record"),
    (raw(feature_doc(values=[0.1] * 3)), "unscorable_features"),
    (raw(feature_doc(values=[])), "unscorable_features"),
    (raw(feature_doc(bar_index=10**30)), "processing_error"),
    (raw(feature_doc(bar_index=2**63 + 5)), "processing_error"),
    (raw(feature_doc(schema_hash="0" * 16)), "signal"),  # scored as schema_mismatch
    (raw(feature_doc(values=[1e308] * N_FEATURES)), "signal"),
    (raw(feature_doc(values=[-1e308, 1e308] * (N_FEATURES // 2))), "unscorable_features"),
]

HOSTILE_TICKS: list[bytes | None] = [
    *GARBAGE,
    raw(tick_doc(1, 1, symbol="PX", bid=-1.0)),
    raw(tick_doc(1, 1, symbol="PX", extra=1)),
    b'{"v":1,"venue":"HOST","symbol":"PX","seq":1,"ts_ns":1,"bid":1,"ask":1,"last":1,"size":NaN}',
]
#: valid by the contract, absurd in value: must be absorbed, not crash the feature service
ABSURD_TICKS: list[bytes] = [
    raw(tick_doc(2**70, 2**70, symbol="PY", bid=1e-300, ask=1e300, last=1e300, size=1e308)),
    raw(tick_doc(2**70 + 1, 2**70 + 10**9, symbol="PY", last=1e-300, bid=1e-300)),
]

HOSTILE_BARS: list[bytes | None] = [
    *GARBAGE,
    raw(bar_doc(high=0.5)),  # OHLC inconsistent
    raw(bar_doc(bar_index=10**30)),
    raw(bar_doc(bar_index=101, open=1e300, high=1e300, low=1e300, close=1e300, vwap=1e300)),
    raw(bar_doc(bar_index=102, open=1e-300, high=1e-300, low=1e-300, close=1e-300, vwap=1e-300)),
]
HOSTILE_SIGNALS: list[bytes | None] = [
    *GARBAGE,
    raw(signal_doc(prob_up=2.0)),
    raw(signal_doc(side="sideways")),
    raw(signal_doc(bar_index=10**30, signal_id="huge")),
    raw(signal_doc(bar_index=99, signal_id="early", side="long")),
]


def replay(n_bars: int, t0_ns: int) -> list[Tick]:
    streams = [
        replay_ticks(
            load_dataset(name).take(slice(2000, 2000 + n_bars)),
            ReplayConfig(seed=i, ticks_per_bar=(5, 7)),
            t0_ns=t0_ns,
        )
        for i, name in enumerate(("sp500", "nasdaq"))
    ]
    return list(interleave(*streams))


async def test_hostile_records_on_internal_topics_stop_no_service_and_the_scorer_dead_letters(
    pipeline, kafka_settings
):
    pipe: Pipeline
    pipe, topics, reader = pipeline
    await send(kafka_settings, topics.ticks, [(b"PX", v) for v in HOSTILE_TICKS])
    await send(kafka_settings, topics.ticks, [(b"PY", v) for v in ABSURD_TICKS])
    await send(kafka_settings, topics.features, [(b"PX", v) for v, _ in HOSTILE_FEATURES])
    await send(kafka_settings, topics.bars, [(b"PX", v) for v in HOSTILE_BARS])
    await send(kafka_settings, topics.signals, [(b"PX", v) for v in HOSTILE_SIGNALS])

    # then real traffic: every bar still becomes a vector and a signal
    n_bars = WARMUP_BARS + 8
    ticks = replay(n_bars, backfill_start_ns(time.time_ns(), 1, n_bars + 10))
    await send(kafka_settings, topics.raw, [(t.symbol.encode(), t.to_bytes()) for t in ticks])
    n_vectors = 2 * (n_bars - WARMUP_BARS + 1)

    def real_signals() -> list[ScoredSignal]:
        records = [r for r in reader.records[topics.signals] if r.key != b"PX"]
        return [ScoredSignal.model_validate_json(r.value) for r in records]

    await reader.wait_for(lambda: len(real_signals()) >= n_vectors, 60, "real signals")
    await reader.wait_for(
        lambda: (
            len(reader.records[topics.pdlq])
            >= sum(1 for _, want in HOSTILE_FEATURES if want != "signal")
        ),
        30,
        "scorer dead letters",
    )
    for svc in pipe.all():
        assert alive_and_ready(svc), f"{svc.name} stopped: {svc.ready()}"

    # the scorer: exactly one output per hostile vector, a dead letter with its reason
    letters = {
        d.offset: d
        for d in (DeadLetter.model_validate_json(r.value) for r in reader.records[topics.pdlq])
        if d.source_topic == topics.features and d.detail.startswith("[scorer]")
    }
    injected = len(HOSTILE_SIGNALS)  # written straight into signals.scored, before the scorer's
    px_records = [r for r in reader.records[topics.signals] if r.key == b"PX"]
    px_signals = [ScoredSignal.model_validate_json(r.value) for r in px_records[injected:]]
    feature_offsets = sorted(
        (r.partition, r.offset) for r in reader.records[topics.features] if r.key == b"PX"
    )
    assert len(feature_offsets) == len(HOSTILE_FEATURES)
    got = [letters[off].reason if off in letters else "signal" for _p, off in feature_offsets]
    assert got == [want for _, want in HOSTILE_FEATURES]
    assert len(px_signals) == sum(1 for _, want in HOSTILE_FEATURES if want == "signal")
    assert all(not s.tradable for s in px_signals if "schema_mismatch" in s.reasons)

    # feature, shadow and risk dead-letter what they could not use (none of it stopped them)
    feature_letters = pipe.feature.service.dead_letters.by_reason
    assert feature_letters.get("invalid_record") == len(HOSTILE_TICKS)
    invalid_features = sum(1 for _, want in HOSTILE_FEATURES if want == "invalid_record")
    shadow_errors = pipe.shadow.processor.counts["errors"]  # type: ignore[union-attr]
    assert shadow_errors >= invalid_features + len(GARBAGE) + 2
    risk_invalid = pipe.risk.processor.counts["invalid"]  # type: ignore[union-attr]
    # features: the invalid ones; bars: garbage, OHLC, and a close-to-close ratio that
    # underflows to 0 (log -> math domain error); signals: garbage, prob_up, side
    # >=: whether the underflowing bar also fails depends on which PX bar the supervisor
    # saw before it (topics interleave nondeterministically); the point is that it counts
    # every bad record and keeps running
    assert risk_invalid >= invalid_features + (len(GARBAGE) + 2) + (len(GARBAGE) + 1)
    assert risk_invalid == pipe.risk.service.dead_letters.count
    assert shadow_errors == pipe.shadow.service.dead_letters.count
    by_service = Counter(
        DeadLetter.model_validate_json(r.value).detail.split("]")[0].lstrip("[")
        for r in reader.records[topics.pdlq]
    )
    for runner in pipe.all():
        assert by_service[runner.name] <= runner.service.dead_letters.count
    real = real_signals()
    real_vectors = [r.value for r in reader.records[topics.features] if r.key != b"PX"]
    keys = {(v.symbol, v.bar_index) for v in map(FeatureVector.model_validate_json, real_vectors)}
    assert {(s.symbol, s.bar_index) for s in real} == {k for k in keys if k[0] != "PY"}
    assert all(s.tradable for s in real)


async def test_a_tick_forced_onto_another_partition_is_dead_lettered_not_accepted_twice(
    collector_only, kafka_settings
):
    """A producer with its own partitioner must not split a symbol's sequence: the same
    tick on two partitions would pass both partitions' de-duplication and reorder md.ticks."""
    collector, topics, reader = collector_only
    n = len(await _partitions(kafka_settings, topics.raw))
    home = expected_partition(b"ES", n)
    other = (home + 1) % n
    now = time.time_ns()
    ticks = [Tick.model_validate(tick_doc(seq, now + seq)) for seq in (1, 2, 3)]
    producer = make_producer(kafka_settings)
    await producer.start()
    try:
        for t in ticks:  # each tick sent twice: to its key's partition, and forced elsewhere
            await producer.send_and_wait(topics.raw, t.to_bytes(), key=b"ES", partition=home)
            await producer.send_and_wait(topics.raw, t.to_bytes(), key=b"ES", partition=other)
    finally:
        await producer.stop()
    await reader.wait_for(
        lambda: len(reader.records[topics.dlq]) >= 3 and len(reader.records[topics.ticks]) >= 3,
        30,
        "dead letters and ticks",
    )
    await asyncio.sleep(0.3)
    published = [Tick.model_validate_json(r.value) for r in reader.records[topics.ticks]]
    assert [t.seq for t in published] == [1, 2, 3]  # once each, in order
    letters = [DeadLetter.model_validate_json(r.value) for r in reader.records[topics.dlq]]
    assert [(d.reason, d.partition) for d in letters] == [("wrong_partition", other)] * 3
    assert f"partition {home}" in letters[0].detail
    assert alive_and_ready(collector)


async def _partitions(kafka: KafkaSettings, topic: str) -> set[int]:
    producer = make_producer(kafka)
    await producer.start()
    try:
        return await producer.partitions_for(topic)
    finally:
        await producer.stop()


async def test_geodesic_replay_of_real_trades_is_accepted_whole_by_the_collector(
    collector_only, kafka_settings
):
    """A producer's view: `geodesic replay es_trades` into md.ticks.raw, nothing refused."""
    from geodesic.cli.main import main

    collector, topics, reader = collector_only
    argv = ["replay", "es_trades", "--limit", "400", "--rate", "2000", "--json"]
    argv += ["--bootstrap", kafka_settings.bootstrap, "--topic", topics.raw]
    try:
        code = await asyncio.to_thread(main, argv)
    except SystemExit as exc:  # pragma: no cover - argparse refusal
        code = int(exc.code or 0)
    if code == 2 and not reader.records[topics.ticks]:
        pytest.skip("mlfinpy's trade file is not installed (make install adds it)")
    assert code == 0
    await reader.wait_for(lambda: len(reader.records[topics.ticks]) >= 400, 30, "ticks")
    assert reader.records[topics.dlq] == []  # no timestamp_future, no wrong_partition
    published = [Tick.model_validate_json(r.value) for r in reader.records[topics.ticks]]
    assert {t.symbol for t in published} == {"ES"}
    assert sorted(t.seq for t in published) == list(range(400))
    assert alive_and_ready(collector)
