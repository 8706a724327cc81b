"""Faults on the real embedded stack with the five services as separate processes.

One private stack and one fleet serve the whole module (starting them costs ~10 s); each
test streams its own symbols and reads only those back, so the tests do not see each
other's data. The broker restart wipes every topic, so it runs last.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka import ConsumerRecord
from fault_support import (
    BAR_NS,
    TOPICS,
    FleetEnv,
    TopicTail,
    bar_content,
    bar_ticks,
    expected_outputs,
    fleet_env_vars,
    publish,
    running_fleet,
    signal_content,
)

from geodesic.contracts import Tick
from geodesic.control import ControlPlane, TradingState
from geodesic.features import WARMUP_BARS
from geodesic.runtime.kafka import make_consumer
from geodesic.stack import EmbeddedStack
from geodesic.stack.fleet import health

pytestmark = pytest.mark.integration

MODEL = "m-fault"
STALENESS_S = 1.0  # GEODESIC_SCORER_CONTROL_STALENESS_S in fleet_env_vars
DOWNTIME_S = 3.0
_NEXT_BAR: list[int] = []


def allocate_bars(n: int) -> int:
    """The first bar index of ``n`` bars later than any earlier test's, all in the past.

    The feature service's idle-flush clock is per partition (the newest event time seen on
    it), so a test must not stream symbols older than those an earlier test left on the
    same partitions: their bars would be flushed before their ticks arrive.
    """
    if not _NEXT_BAR:
        _NEXT_BAR.append(time.time_ns() // BAR_NS - 900)
    first = _NEXT_BAR[0]
    _NEXT_BAR[0] += n + 5
    assert _NEXT_BAR[0] < time.time_ns() // BAR_NS, "bar budget of the module exhausted"
    return first


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory, run_root: Path) -> AsyncIterator[FleetEnv]:
    registry = tmp_path_factory.mktemp("faults") / "registry"

    def variables(stack: EmbeddedStack) -> dict[str, str]:
        # exactly-once where the broker allows it, so the kill tests below can show it
        eos = {"GEODESIC_KAFKA_EXACTLY_ONCE": "true"} if stack.broker == "kafka" else {}
        return {**fleet_env_vars(registry), **eos}

    async with running_fleet(
        run_root, registry, model_id=MODEL, seed=1, shadow=True, env=variables
    ) as fleet_env:
        yield fleet_env


@pytest.fixture
async def tail(env: FleetEnv) -> AsyncIterator[TopicTail]:
    reader = TopicTail(env.kafka, TOPICS)
    await reader.start()
    try:
        yield reader
    finally:
        await reader.stop()


def service_info(env: FleetEnv, name: str) -> dict:
    port = env.fleet.services[name].http_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=2) as resp:
        return json.loads(resp.read())


def of(records: Iterable[ConsumerRecord], symbols: set[str]) -> list[dict]:
    """Decoded records of the given symbols (records are keyed by symbol)."""
    return [json.loads(r.value) for r in records if r.key and r.key.decode() in symbols]


def by_key(docs: list[dict], key: Callable[[dict], tuple]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = defaultdict(list)
    for d in docs:
        out[key(d)].append(d)
    return out


def sym_bar(d: dict) -> tuple:
    return (d["symbol"], d["bar_index"])


def assert_complete_and_consistent(tail: TopicTail, ticks: list[Tick], symbols: set[str]) -> dict:
    """Every tick -> bar -> vector -> signal (and shadow score); repeats identical."""
    exp_bars, exp_vectors = expected_outputs(ticks)
    ticks_out = by_key(
        of(tail.records["md.ticks"], symbols), lambda d: (d["venue"], d["symbol"], d["seq"])
    )
    assert set(ticks_out) == {(t.venue, t.symbol, t.seq) for t in ticks}
    bars = by_key(of(tail.records["md.bars"], symbols), sym_bar)
    assert set(bars) == set(exp_bars), "bars lost or invented"
    for key, copies in bars.items():
        want = bar_content(exp_bars[key])
        got = {(c["open"], c["high"], c["low"], c["close"], c["volume"], c["n_ticks"],
                c["close_ts_ns"]) for c in copies}  # fmt: skip
        assert got == {want}, f"bar {key} differs from an uninterrupted run"
    vectors = by_key(of(tail.records["features.v1"], symbols), sym_bar)
    assert set(vectors) == exp_vectors, "feature vectors lost or invented"
    for key, copies in vectors.items():
        assert len({tuple(c["values"]) for c in copies}) == 1, f"vector {key} repeats differ"
    signals = by_key(of(tail.records["signals.scored"], symbols), sym_bar)
    assert set(signals) == exp_vectors, "a vector has no signal"
    for key, copies in signals.items():
        assert len({signal_content(c) for c in copies}) == 1, f"signal {key} repeats differ"
    shadow = by_key(of(tail.records["signals.shadow"], symbols), sym_bar)
    assert set(shadow) == exp_vectors, "a vector has no shadow score"
    assert of(tail.records["md.ticks.dlq"], symbols) == []
    assert of(tail.records["pipeline.dlq"], symbols) == []
    return {"bars": bars, "vectors": vectors, "signals": signals}


def complete(tail: TopicTail, symbols: set[str], n_signals: int) -> Callable[[], bool]:
    def done() -> bool:
        sig = {sym_bar(d) for d in of(tail.records["signals.scored"], symbols)}
        shadow = {sym_bar(d) for d in of(tail.records["signals.shadow"], symbols)}
        return len(sig) >= n_signals and len(shadow) >= n_signals

    return done


async def test_each_service_killed_mid_stream_then_restarted_loses_nothing_and_repeats_match(
    env: FleetEnv, tail: TopicTail
):
    symbols = ("KA", "KB", "KC")
    n_bars = WARMUP_BARS + 30
    first = allocate_bars(n_bars)
    chunks = bar_ticks(symbols, n_bars, first_bar=first, seed=11, venue="KILL")
    ticks = [t for c in chunks for t in c]
    _, exp_vectors = expected_outputs(ticks)
    victims = ["collector", "feature", "scorer", "shadow", "risk-supervisor"]
    groups = chunks
    step = len(groups) // (len(victims) + 1)
    pos = 0
    for victim in victims:
        await publish(env.kafka, "md.ticks.raw", [t for c in groups[pos : pos + step] for t in c])
        pos += step
        env.fleet.kill(victim)  # kill -9 while the step's records are in the pipeline
        # input keeps arriving while the victim is down
        half = step // 2
        await publish(env.kafka, "md.ticks.raw", [t for c in groups[pos : pos + half] for t in c])
        pos += half
        port = env.fleet.services[victim].http_port
        env.fleet.start(victim, port)
        await asyncio.to_thread(env.fleet.wait_healthy, 60, (victim,))
    await publish(env.kafka, "md.ticks.raw", [t for c in groups[pos:] for t in c])

    await tail.wait_for(complete(tail, set(symbols), len(exp_vectors)), 60, "all signals")
    seen = assert_complete_and_consistent(tail, ticks, set(symbols))
    if env.stack.broker == "kafka":
        # exactly-once (transactions, read_committed): five kill -9s, not one repeat
        for topic in ("md.ticks", "md.bars", "signals.scored", "signals.shadow"):
            docs = of(tail.records[topic], set(symbols))
            key = sym_bar if topic != "md.ticks" else (lambda d: (d["symbol"], d["seq"]))
            repeats = {k: len(c) for k, c in by_key(docs, key).items() if len(c) > 1}
            assert repeats == {}, (topic, repeats)
        assert all(service_info(env, n)["loop"]["transactional"] for n in victims)
    # risk supervisor: every signal with a later bar is labelled, repeats identical
    outcomes = by_key(of(tail.records["outcomes.v1"], set(symbols)), lambda d: (d["signal_id"],))
    last_bar = {s: max(b for (sym, b) in seen["bars"] if sym == s) for s in symbols}
    want = {(c[0]["signal_id"],) for (s, b), c in seen["signals"].items() if b < last_bar[s]}
    await tail.wait_for(
        lambda: (
            want
            <= set(
                by_key(of(tail.records["outcomes.v1"], set(symbols)), lambda d: (d["signal_id"],))
            )
        ),
        30,
        "outcomes",
    )
    outcomes = by_key(of(tail.records["outcomes.v1"], set(symbols)), lambda d: (d["signal_id"],))
    for copies in outcomes.values():
        assert len({(c["net_bp"], c["win"], c["exit_price"]) for c in copies}) == 1


async def test_slow_executor_downstream_neither_drops_nor_reorders_signals_per_symbol(
    env: FleetEnv, tail: TopicTail
):
    symbols = ("SA", "SB")
    n_bars = WARMUP_BARS + 40
    first = allocate_bars(n_bars)
    chunks = bar_ticks(symbols, n_bars, first_bar=first, seed=12, venue="SLOW")
    ticks = [t for c in chunks for t in c]
    _, exp_vectors = expected_outputs(ticks)

    executor = make_consumer(env.kafka, topics=["signals.scored"], group_id="slow-executor")
    await executor.start()
    received: list[dict] = []
    max_behind = 0

    async def consume_slowly() -> None:
        while True:
            batches = await executor.getmany(timeout_ms=50, max_records=5)
            for recs in batches.values():
                for r in recs:
                    if r.key and r.key.decode() in symbols:
                        received.append(json.loads(r.value))
                    await asyncio.sleep(0.02)  # 50 signals/s at most: slower than produced

    reader = asyncio.create_task(consume_slowly())
    try:
        await _stream_paced(env, chunks, 0.0)
        deadline = time.monotonic() + 90
        while len({sym_bar(d) for d in received}) < len(exp_vectors):
            assert time.monotonic() < deadline, f"executor got {len(received)} signals"
            produced = {sym_bar(d) for d in of(tail.records["signals.scored"], set(symbols))}
            max_behind = max(max_behind, len(produced) - len({sym_bar(d) for d in received}))
            await asyncio.sleep(0.05)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await executor.stop()
    assert max_behind > 10, "the executor was never behind: the test did not slow it down"
    assert {sym_bar(d) for d in received} == exp_vectors
    for sym in symbols:
        order = [d["bar_index"] for d in received if d["symbol"] == sym]
        assert order == sorted(order) and len(order) == len(set(order)), f"{sym} reordered"
    assert_complete_and_consistent(tail, ticks, set(symbols))


async def _stream_paced(env: FleetEnv, chunks: list[list[Tick]], pace_s: float) -> None:
    for chunk in chunks:
        await publish(env.kafka, "md.ticks.raw", chunk)
        await asyncio.sleep(pace_s)


async def test_redis_outage_fails_the_scorer_closed_then_recovers_and_flags_survive(
    env: FleetEnv, tail: TopicTail
):
    symbols = ("RA", "RB")
    warm, live = WARMUP_BARS + 2, 70
    first = allocate_bars(warm + live)
    chunks = bar_ticks(symbols, warm + live, first_bar=first, seed=13, venue="REDIS")
    ticks = [t for c in chunks for t in c]
    _, exp_vectors = expected_outputs(ticks)

    client = aioredis.from_url(env.stack.redis_url)
    plane = ControlPlane(client)
    await plane.set_kill_switch(True, actor="test", reason="persistence probe", symbol="ZZ")
    await plane.set_trading_state(
        TradingState.REDUCING, actor="test", reason="persistence probe", symbol="YY"
    )
    before = await plane.snapshot()
    await client.aclose()
    await asyncio.sleep(1.5)  # appendfsync everysec: the flags are on disk now

    await publish(env.kafka, "md.ticks.raw", [t for c in chunks[:warm] for t in c])
    streaming = asyncio.create_task(_stream_paced(env, chunks[warm:], 0.1))
    await asyncio.sleep(2.0)
    down_at = time.time_ns()
    await asyncio.to_thread(env.stack.restart_redis, downtime_s=DOWNTIME_S, graceful=False)
    up_at = time.time_ns()
    await streaming
    await tail.wait_for(complete(tail, set(symbols), len(exp_vectors)), 60, "all signals")

    signals = of(tail.records["signals.scored"], set(symbols))
    # Redis is down from down_at to at least down_at + DOWNTIME_S; the scorer may keep
    # using its last snapshot for STALENESS_S, never longer
    stale_from, stale_to = down_at + (STALENESS_S + 0.3) * 1e9, down_at + DOWNTIME_S * 1e9
    stale_window = [s for s in signals if stale_from < s["hops"]["scorer_in"] < stale_to]
    assert len(stale_window) >= 10, "no signals were scored while Redis was down"
    assert all(not s["tradable"] and "control_plane_stale" in s["reasons"] for s in stale_window)
    before_outage = [s for s in signals if s["hops"]["scorer_in"] < down_at]
    after_recovery = [s for s in signals if s["hops"]["scorer_in"] > up_at + 1.5e9]
    assert before_outage and after_recovery
    assert all(s["tradable"] and not s["reasons"] for s in before_outage + after_recovery)
    # nothing was lost while checkpoints could not be written
    assert_complete_and_consistent(tail, ticks, set(symbols))
    for name in ("collector", "feature"):
        assert service_info(env, name)["loop"]["state_store_errors"] > 0, name
    # flags, slots and the audit trail came back from the append-only file
    client = aioredis.from_url(env.stack.redis_url)
    after = await ControlPlane(client).snapshot()
    await client.aclose()
    assert after == before


async def test_service_restarted_while_redis_is_down_waits_for_its_state_then_resumes(
    env: FleetEnv, tail: TopicTail
):
    symbols = ("WA", "WB")
    n_bars = WARMUP_BARS + 20
    first = allocate_bars(n_bars)
    chunks = bar_ticks(symbols, n_bars, first_bar=first, seed=14, venue="WAIT")
    ticks = [t for c in chunks for t in c]
    _, exp_vectors = expected_outputs(ticks)
    half = len(chunks) - 10
    await publish(env.kafka, "md.ticks.raw", [t for c in chunks[:half] for t in c])
    await tail.wait_for(
        lambda: len(of(tail.records["md.bars"], set(symbols))) >= 2 * (half - 1), 30, "bars"
    )
    env.fleet.kill("feature")
    outage = asyncio.create_task(
        asyncio.to_thread(env.stack.restart_redis, downtime_s=8.0, graceful=False)
    )
    await asyncio.sleep(0.5)
    env.fleet.start("feature", env.fleet.services["feature"].http_port)
    await publish(env.kafka, "md.ticks.raw", [t for c in chunks[half:] for t in c])
    # the replacement joins its group while Redis is down: it must wait, not run stateless
    reasons = set()
    while not outage.done():
        body = health(env.fleet.services["feature"].http_port)
        if body is not None:
            reasons.add((body.get("ready"), body.get("reason")))
        await asyncio.sleep(0.2)
    await outage
    await asyncio.to_thread(env.fleet.wait_healthy, 60, ("feature",))
    assert any(ready is False for ready, _ in reasons), reasons
    await tail.wait_for(complete(tail, set(symbols), len(exp_vectors)), 60, "all signals")
    assert_complete_and_consistent(tail, ticks, set(symbols))


@pytest.mark.broker_compat
async def test_broker_restart_services_reconnect_and_resume_on_the_new_log_without_help(
    env: FleetEnv, tail: TopicTail
):
    symbols = ("BA", "BB")
    pre, post = WARMUP_BARS + 5, 30
    first = allocate_bars(pre + post)
    chunks = bar_ticks(symbols, pre + post, first_bar=first, seed=15, venue="BROKER")
    ticks = [t for c in chunks for t in c]
    exp_bars, exp_vectors = expected_outputs(ticks)
    await publish(env.kafka, "md.ticks.raw", [t for c in chunks[:pre] for t in c])
    n_pre = len([k for k in exp_vectors if k[1] < first + pre])
    await tail.wait_for(complete(tail, set(symbols), n_pre), 60, "signals before the restart")
    await asyncio.sleep(1.0)  # every checkpoint written, offsets committed

    # Tansu (memory storage): topics, records and group offsets are gone after this.
    # Kafka keeps its log dir: the services resume where they were, nothing is reset.
    await asyncio.to_thread(env.stack.restart_broker, downtime_s=1.0)
    await tail.reopen()
    post_ticks = [t for c in chunks[pre:] for t in c]
    await publish(env.kafka, "md.ticks.raw", post_ticks)

    kept = env.stack.broker == "kafka"
    want = {k for k in exp_vectors if kept or k[1] >= first + pre}
    await tail.wait_for(complete(tail, set(symbols), len(want)), 90, "signals after the restart")
    bars = by_key(of(tail.records["md.bars"], set(symbols)), sym_bar)
    want_bars = {k for k in exp_bars if kept or k[1] >= first + pre}
    assert set(bars) == want_bars, (sorted(want_bars - set(bars)), sorted(set(bars) - want_bars))
    for key, copies in bars.items():
        assert {bar_content_doc(c) for c in copies} == {bar_content(exp_bars[key])}, key
    signals = by_key(of(tail.records["signals.scored"], set(symbols)), sym_bar)
    # history survived in the checkpoints: the first new bar already has its vector
    assert set(signals) == want, (sorted(want - set(signals)), sorted(set(signals) - want))
    for name in ("collector", "feature", "risk-supervisor"):
        resets = service_info(env, name)["loop"]["log_resets"]
        assert (resets == 0) if kept else (resets > 0), (name, resets)
    assert all(env.fleet.services[n].proc.alive() for n in env.fleet.services)


def bar_content_doc(d: dict) -> tuple:
    return (d["open"], d["high"], d["low"], d["close"], d["volume"], d["n_ticks"], d["close_ts_ns"])


async def test_scorer_and_feature_killed_while_signals_flow_repeat_no_signal_on_kafka(
    env: FleetEnv, tail: TopicTail
):
    """kill -9 lands between an output and the offsets after it. At-least-once (Tansu,
    or GEODESIC_KAFKA_EXACTLY_ONCE=false) repeats the records since the last commit or
    checkpoint (measured: repeated signals, some with a different prob_up); exactly-once
    (Kafka: one transaction per batch, read_committed readers) repeats nothing."""
    if env.stack.broker != "kafka":
        pytest.skip("exactly-once needs Kafka transactions; Tansu is at-least-once")
    symbols = ("EA", "EB", "EC", "ED")
    warm, live = WARMUP_BARS + 5, 80
    first = allocate_bars(warm + live)
    chunks = bar_ticks(symbols, warm + live, first_bar=first, seed=21, venue="EOS")
    ticks = [t for c in chunks for t in c]
    _, exp_vectors = expected_outputs(ticks)
    await publish(env.kafka, "md.ticks.raw", [t for c in chunks[:warm] for t in c])

    def n_signals() -> int:
        return len(of(tail.records["signals.scored"], set(symbols)))

    streaming = asyncio.create_task(_stream_paced(env, chunks[warm:], 0.1))
    try:
        for victim, after in (("scorer", 40), ("feature", 120)):
            await tail.wait_for(lambda a=after: n_signals() >= a, 60, f"signals before {victim}")
            port = env.fleet.services[victim].http_port
            env.fleet.kill(victim)  # mid-stream: outputs in flight, offsets not yet committed
            env.fleet.start(victim, port)
            await asyncio.to_thread(env.fleet.wait_healthy, 60, (victim,))
    finally:
        await streaming
    await tail.wait_for(complete(tail, set(symbols), len(exp_vectors)), 90, "all signals")
    signals = by_key(of(tail.records["signals.scored"], set(symbols)), sym_bar)
    repeats = {k: len(c) for k, c in signals.items() if len(c) > 1}
    assert set(signals) == exp_vectors
    assert_complete_and_consistent(tail, ticks, set(symbols))
    assert repeats == {}
    assert service_info(env, "scorer")["loop"]["transactional"] is True
