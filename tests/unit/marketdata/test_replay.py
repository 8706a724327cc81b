import asyncio
import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.validation import Accepted, Rejected, ValidationPolicy, classify
from geodesic.contracts import Tick
from geodesic.features import BarBuilder
from geodesic.marketdata.datasets import (
    INTRADAY,
    BarSeries,
    DatasetUnavailableError,
    Trades,
    load_dataset,
    load_trades,
    time_bars,
)
from geodesic.marketdata.replay import (
    NS_PER_SECOND,
    FaultKind,
    ReplayConfig,
    backfill_start_ns,
    bar_ticks,
    inject_faults,
    interleave,
    live_start_ns,
    publish,
    replay_messages,
    replay_ticks,
    trade_ticks,
)
from geodesic.marketdata.sequencing import SequenceTracker, SeqVerdict
from geodesic.marketdata.synthetic import SyntheticConfig, generate_market

T0 = 1_700_000_000 * NS_PER_SECOND  # a multiple of every bar size used here


def _rebuild(ticks: list[Tick], bar_seconds: int) -> list:
    builder = BarBuilder(bar_seconds)
    bars = [r.closed for t in ticks if (r := builder.on_tick(t, now_ns=t.ts_ns)).closed]
    bars += builder.flush_due(now_ns=2**62, grace_ns=0)
    assert builder.stats.late == Counter()
    return bars


@pytest.mark.parametrize("bar_seconds", [1, 5])
def test_bar_builder_rebuilds_the_source_ohlc_exactly_from_replayed_ticks(bar_seconds):
    source = load_dataset("sp500").take(slice(1000, 1300))
    config = ReplayConfig(bar_seconds=bar_seconds, seed=7)
    ticks = list(replay_ticks(source, config, t0_ns=T0))
    bars = _rebuild(ticks, bar_seconds)

    assert len(bars) == len(source)
    first_index = T0 // (bar_seconds * NS_PER_SECOND)
    assert [b.bar_index for b in bars] == list(range(first_index, first_index + len(source)))
    for name in ("open", "high", "low", "close"):
        assert np.array_equal([getattr(b, name) for b in bars], getattr(source, name)), name
    np.testing.assert_allclose([b.volume for b in bars], source.volume, rtol=1e-9)
    assert all(20 <= b.n_ticks <= 50 for b in bars)
    assert all(b.low <= b.vwap <= b.high for b in bars)


def test_synthetic_series_survives_the_round_trip_too():
    source, _ = generate_market(SyntheticConfig(n_bars=200, seed=3))
    bars = _rebuild(list(replay_ticks(source, ReplayConfig(), t0_ns=T0)), 1)
    assert [b.close for b in bars] == source.close.tolist()
    assert [b.high for b in bars] == source.high.tolist()


ohlc = st.tuples(
    st.floats(1e-3, 1e6), st.floats(0, 1), st.floats(0, 1), st.floats(0, 0.2), st.floats(0, 0.2)
).map(
    lambda x: (
        x[0] * (1 + x[1] * x[3]),  # open
        x[0] * (1 + max(x[1], x[2]) * x[3]) * (1 + x[4]),  # high
        x[0] * (1 - x[4]) ** 2,  # low
        x[0] * (1 + x[2] * x[3]),  # close
    )
)


@settings(max_examples=300, deadline=None)
@given(ohlc, st.integers(4, 80), st.integers(0, 2**32), st.floats(0.01, 5))
def test_bar_ticks_hit_open_close_high_low_exactly(bar, n, seed, vol):
    o, h, low, c = bar
    prices = bar_ticks(o, h, low, c, n, np.random.default_rng(seed), vol)
    assert prices.shape == (n,)
    assert (prices[0], prices[-1], prices.max(), prices.min()) == (o, c, h, low)


@pytest.mark.parametrize("bar", [(5.0, 5.0, 5.0, 5.0), (5.0, 6.0, 5.0, 6.0), (6.0, 6.0, 5.0, 5.0)])
def test_degenerate_bars_still_pin_all_four_prices(bar):
    o, h, low, c = bar
    p = bar_ticks(o, h, low, c, 4, np.random.default_rng(0))
    assert (p[0], p[-1], p.max(), p.min()) == (o, c, h, low)


def test_ticks_are_ordered_quoted_and_sequenced_per_venue_symbol():
    source = load_dataset("nasdaq").take(slice(0, 100))
    ticks = list(replay_ticks(source, ReplayConfig(venue="XNAS", seq_start=10), t0_ns=T0))
    ts = np.array([t.ts_ns for t in ticks])
    assert (np.diff(ts) > 0).all()
    assert [t.seq for t in ticks] == list(range(10, 10 + len(ticks)))
    assert all(t.bid <= t.last <= t.ask and t.bid > 0 for t in ticks)
    assert {(t.venue, t.symbol) for t in ticks} == {("XNAS", "IXIC")}
    bar_of = (ts - T0) // NS_PER_SECOND
    assert bar_of.min() == 0 and bar_of.max() == len(source) - 1
    spreads_bp = np.array([(t.ask - t.bid) / t.last * 1e4 for t in ticks])
    assert 1.0 < np.median(spreads_bp) < 4.0  # ~2 bp default


def test_replay_is_deterministic_given_the_seed():
    source = load_dataset("sp500").take(slice(0, 30))
    a = list(replay_messages(source, ReplayConfig(seed=1), t0_ns=T0))
    b = list(replay_messages(source, ReplayConfig(seed=1), t0_ns=T0))
    c = list(replay_messages(source, ReplayConfig(seed=2), t0_ns=T0))
    assert a == b
    assert a != c
    assert all(key == b"SPX" and Tick.from_bytes(value).symbol == "SPX" for key, value in a)


def test_one_seed_gives_different_symbols_independent_tick_paths():
    source = load_dataset("sp500").take(slice(0, 30))
    a = [t.ts_ns for t in replay_ticks(source, ReplayConfig(seed=1), t0_ns=T0)]
    b = [t.ts_ns for t in replay_ticks(source, ReplayConfig(seed=1, symbol="ES"), t0_ns=T0)]
    assert a != b


def test_unaligned_start_is_rejected():
    with pytest.raises(ValueError, match="multiple of bar_seconds"):
        replay_ticks(load_dataset("sp500"), ReplayConfig(bar_seconds=5), t0_ns=T0 + 1)


@pytest.mark.parametrize("bad", [(3, 10), (30, 20)])
def test_config_rejects_too_few_or_inverted_ticks_per_bar(bad):
    with pytest.raises(ValueError, match="ticks_per_bar"):
        ReplayConfig(ticks_per_bar=bad)


def test_start_helpers_align_to_bar_boundaries():
    now = T0 + 1_234_567_890
    assert live_start_ns(now, 5) == T0 + 5 * NS_PER_SECOND
    assert live_start_ns(T0, 5) == T0
    start = backfill_start_ns(now, 5, n_bars=100)
    assert start % (5 * NS_PER_SECOND) == 0
    assert start + 100 * 5 * NS_PER_SECOND <= now < start + 101 * 5 * NS_PER_SECOND


def test_interleave_merges_symbols_by_time_keeping_each_sequence():
    spx = replay_ticks(load_dataset("sp500").take(slice(0, 20)), ReplayConfig(seed=1), t0_ns=T0)
    ixic = replay_ticks(load_dataset("nasdaq").take(slice(0, 20)), ReplayConfig(seed=2), t0_ns=T0)
    merged = list(interleave(spx, ixic))
    assert (np.diff([t.ts_ns for t in merged]) >= 0).all()
    for symbol in ("SPX", "IXIC"):
        seqs = [t.seq for t in merged if t.symbol == symbol]
        assert seqs == list(range(len(seqs)))


# --- faults ---------------------------------------------------------------------------------


def _messages(n_bars: int = 40) -> list[tuple[bytes, bytes]]:
    return list(
        replay_messages(load_dataset("sp500").take(slice(0, n_bars)), ReplayConfig(), t0_ns=T0)
    )


def test_every_fault_kind_is_rejected_by_the_collector_with_its_reason():
    msgs = _messages(10)
    injector = inject_faults(msgs, dup_rate=0.0, malformed_rate=1.0, seed=3)
    out = list(injector)
    assert out[0::2] == msgs  # originals untouched, in order
    now = T0 + 60 * NS_PER_SECOND
    reasons = Counter()
    for key, value in out[1::2]:
        verdict = classify(value, key, now, ValidationPolicy())
        assert isinstance(verdict, Rejected), value[:120]
        reasons[verdict.reason.value] += 1
    assert dict(reasons) == injector.tally.expected_dlq_reasons()
    assert set(injector.tally.malformed) == set(FaultKind)  # rotation covers every kind


@settings(max_examples=25, deadline=None)
@given(st.floats(0, 0.5), st.floats(0, 0.5), st.integers(0, 2**32))
def test_collector_counts_match_the_injected_tally(dup_rate, malformed_rate, seed):
    msgs = _messages(8)
    injector = inject_faults(msgs, dup_rate=dup_rate, malformed_rate=malformed_rate, seed=seed)
    tracker = SequenceTracker()
    policy = ValidationPolicy()
    now = T0 + 60 * NS_PER_SECOND
    counts = Counter()
    for key, value in injector:
        counts["received"] += 1
        verdict = classify(value, key, now, policy)
        if isinstance(verdict, Rejected):
            counts["dlq"] += 1
            continue
        assert isinstance(verdict, Accepted)
        seq = tracker.observe_tick(verdict.tick)
        counts["duplicates" if seq is SeqVerdict.DUPLICATE else "accepted"] += 1
        assert seq is not SeqVerdict.OUT_OF_ORDER
    expected = injector.tally.expected_collector_counts()
    assert {k: counts[k] for k in expected} == expected
    assert expected["received"] == expected["accepted"] + expected["duplicates"] + expected["dlq"]
    assert expected["accepted"] == len(msgs)


def test_duplicates_repeat_the_previous_message_byte_for_byte():
    out = list(inject_faults(_messages(5), dup_rate=1.0, malformed_rate=0.0, seed=0))
    assert out[0::2] == out[1::2]


def test_injection_is_deterministic_and_kinds_can_be_restricted():
    msgs = _messages(5)
    a = list(inject_faults(msgs, 0.2, 0.5, seed=9, kinds=[FaultKind.OVERSIZED]))
    b = list(inject_faults(msgs, 0.2, 0.5, seed=9, kinds=[FaultKind.OVERSIZED]))
    assert a == b
    big = [v for _, v in a if len(v) > 4096]
    assert big and all("padding" in json.loads(v) for v in big)


@pytest.mark.parametrize("rates", [(-0.1, 0.0), (0.0, 1.5)])
def test_fault_rates_outside_unit_interval_are_rejected(rates):
    with pytest.raises(ValueError, match="rate"):
        inject_faults([], *rates, seed=0)


# --- publish pacing (fake clock and producer; no Kafka) ---------------------------------------


class FakeClock:
    """Monotonic clock whose sleep advances it, optionally oversleeping like a real timer."""

    def __init__(self, oversleep: float = 0.0) -> None:
        self.now = 0.0
        self.oversleep = oversleep
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds + self.oversleep


class FakeProducer:
    def __init__(self, fail_every: int = 0) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.fail_every = fail_every

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future:
        self.sent.append((topic, value, key))
        fut = asyncio.get_running_loop().create_future()
        if self.fail_every and len(self.sent) % self.fail_every == 0:
            fut.set_exception(RuntimeError("broker said no"))
        else:
            fut.set_result(len(self.sent))
        return fut


def _msgs(n: int) -> list[tuple[bytes, bytes]]:
    return [(b"K", str(i).encode()) for i in range(n)]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 400), st.floats(1, 1e5), st.integers(1, 20))
def test_token_bucket_spaces_sends_at_the_target_rate(n, rate, burst):
    clock = FakeClock()
    producer = FakeProducer()
    result = asyncio.run(
        publish(producer, _msgs(n), "t", rate, burst=burst, clock=clock, sleep=clock.sleep)
    )
    assert result.sent == result.delivered == n
    # A full bucket of `burst` goes out at once; every further message costs 1/rate seconds.
    assert result.elapsed_s == pytest.approx(max(0, n - burst) / rate, rel=1e-9, abs=1e-12)
    assert [v for _, v, _ in producer.sent] == [v for _, v in _msgs(n)]


async def test_unpaced_publish_never_sleeps_and_reports_the_achieved_rate():
    clock = FakeClock()
    result = await publish(FakeProducer(), _msgs(50), "t", None, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []
    assert (result.sent, result.delivered, result.failed) == (50, 50, 0)


async def test_oversleeping_timer_is_caught_up_by_the_bucket_so_the_rate_holds():
    clock = FakeClock(oversleep=0.003)  # 3 ms late on every wake-up; target gap is 1 ms
    result = await publish(FakeProducer(), _msgs(2001), "t", 1000.0, clock=clock, sleep=clock.sleep)
    assert result.achieved_rate == pytest.approx(1000.0, rel=0.03)
    assert len(clock.sleeps) < 2001 / 3  # late wake-ups are spent as small bursts


async def test_failed_deliveries_are_counted_not_raised():
    producer = FakeProducer(fail_every=3)
    result = await publish(producer, _msgs(10), "md.ticks.raw", max_pending=4)
    assert (result.sent, result.delivered, result.failed) == (10, 7, 3)
    assert result.first_error == "RuntimeError: broker said no"
    assert {(t, k) for t, _, k in producer.sent} == {("md.ticks.raw", b"K")}


async def test_publish_accepts_an_async_iterable():
    async def gen():
        for m in _msgs(5):
            yield m

    result = await publish(FakeProducer(), gen(), "t")
    assert result.delivered == 5


async def test_publish_rejects_nonsense_rates():
    with pytest.raises(ValueError, match="rate_per_s"):
        await publish(FakeProducer(), [], "t", 0.0)


def test_bar_series_type_is_shared_with_datasets():
    source, _ = generate_market(SyntheticConfig(n_bars=10))
    assert isinstance(source, BarSeries)


def _es_trades(n: int) -> Trades:
    try:
        path = INTRADAY["es_1min"].path()
    except DatasetUnavailableError:
        pytest.skip("mlfinpy is not installed (make install adds it with --no-deps)")
    t = load_trades(path)
    return Trades(t.ts_ns[:n], t.price[:n], t.size[:n])


def test_real_trades_replayed_as_ticks_rebuild_the_data_sets_time_bars():
    trades = _es_trades(6_000)
    bar_ns = 60 * 10**9
    first = int(trades.ts_ns[0])
    t0 = (1_700_000_000 * 10**9 // bar_ns) * bar_ns + first % bar_ns  # same phase in the bar
    ticks = list(trade_ticks(trades, symbol="ES", t0_ns=t0, tick_size=0.25))
    assert [t.last for t in ticks] == trades.price.tolist()
    assert all(t.bid < t.ask and t.bid <= t.last <= t.ask for t in ticks)
    assert all(round((t.ask - t.bid) / 0.25) == 1 for t in ticks)  # a one-tick quote
    builder, bars = BarBuilder(60), []
    for t in ticks:
        closed = builder.on_tick(t, t.ts_ns).closed
        if closed is not None:
            bars.append(closed)
    expected = time_bars(trades, 60, "ES")
    assert len(bars) == len(expected) - 1  # the last bar is still open
    got = np.array([[b.open, b.high, b.low, b.close, b.volume] for b in bars])
    want = np.stack([expected.open, expected.high, expected.low, expected.close, expected.volume])
    np.testing.assert_array_equal(got, want.T[: len(bars)])


def test_the_tick_rule_puts_upticks_at_the_ask_and_downticks_at_the_bid():
    prices = np.array([100.0, 100.25, 100.25, 100.0, 100.0, 100.5])
    trades = Trades(np.arange(6, dtype=np.int64) * 10**9, prices, np.ones(6))
    ticks = list(trade_ticks(trades, symbol="ES", t0_ns=0, tick_size=0.25, speed=2.0))
    at_ask = [t.last == t.ask for t in ticks]
    assert at_ask == [False, True, True, False, False, True]
    assert [t.ts_ns for t in ticks] == [k * 10**9 // 2 for k in range(6)]  # spacing / speed
    assert [t.seq for t in ticks] == list(range(6))
