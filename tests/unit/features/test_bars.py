import json
import math
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from geodesic.contracts import Tick
from geodesic.features import BarBuilder, LateReason
from geodesic.features.bars import _Snapshot

SEC = 1_000_000_000
T0 = 28_333_333 * 60 * SEC  # a bar boundary for 1 s and 60 s builders (late 2023)
NOW = T0 + 3_600 * SEC


def tick(
    ts_ns: int,
    last: float = 100.0,
    size: float = 1.0,
    symbol: str = "ES",
    bid: float | None = None,
    ask: float | None = None,
) -> Tick:
    bid = last - 0.5 if bid is None else bid
    ask = last + 0.5 if ask is None else ask
    return Tick(
        venue="X", symbol=symbol, seq=0, ts_ns=ts_ns, bid=bid, ask=ask, last=last, size=size
    )


def test_bar_closes_on_the_first_tick_of_a_later_bar_with_ohlc_volume_vwap_and_spread():
    builder = BarBuilder(60)
    assert builder.on_tick(tick(T0 + 1 * SEC, 100.0, 2.0, bid=99.0, ask=101.0), NOW).closed is None
    assert builder.on_tick(tick(T0 + 2 * SEC, 103.0, 1.0, bid=102.0, ask=103.0), NOW).closed is None
    assert builder.on_tick(tick(T0 + 3 * SEC, 98.0, 1.0, bid=97.0, ask=99.0), NOW).closed is None
    assert (
        builder.on_tick(tick(T0 + 59 * SEC, 101.0, 0.0, bid=100.0, ask=101.0), NOW).closed is None
    )
    result = builder.on_tick(tick(T0 + 60 * SEC, 105.0), NOW + 7)
    bar = result.closed
    assert result.late is None
    assert bar.model_dump() == {
        "v": 1,
        "symbol": "ES",
        "bar_index": T0 // (60 * SEC),
        "bar_seconds": 60,
        "open": 100.0,
        "high": 103.0,
        "low": 98.0,
        "close": 101.0,
        "vwap": pytest.approx((2 * 100.0 + 103.0 + 98.0) / 4.0),
        "volume": 4.0,
        "n_ticks": 4,
        "mean_spread": pytest.approx(1.5),
        "open_ts_ns": T0 + 1 * SEC,
        "close_ts_ns": T0 + 59 * SEC,
        "emitted_ts_ns": NOW + 7,
    }
    assert builder.open_bar_index("ES") == bar.bar_index + 1


def test_mid_price_source_uses_the_quote_midpoint():
    builder = BarBuilder(1, price_source="mid")
    builder.on_tick(tick(T0, last=50.0, bid=99.0, ask=101.0), NOW)
    builder.on_tick(tick(T0 + 1, last=50.0, bid=101.0, ask=103.0), NOW)
    bar = builder.on_tick(tick(T0 + SEC), NOW).closed
    assert (bar.open, bar.high, bar.low, bar.close) == (100.0, 102.0, 100.0, 102.0)


def test_open_and_close_follow_event_time_when_ticks_arrive_out_of_order_within_a_bar():
    builder = BarBuilder(60)
    builder.on_tick(tick(T0 + 30 * SEC, 100.0), NOW)
    builder.on_tick(tick(T0 + 10 * SEC, 90.0), NOW)  # earlier event: the true open
    builder.on_tick(tick(T0 + 50 * SEC, 110.0), NOW)
    builder.on_tick(tick(T0 + 40 * SEC, 105.0), NOW)  # not the latest: close stays 110
    bar = builder.on_tick(tick(T0 + 60 * SEC), NOW).closed
    assert (bar.open, bar.close) == (90.0, 110.0)
    assert (bar.open_ts_ns, bar.close_ts_ns) == (T0 + 10 * SEC, T0 + 50 * SEC)


def test_late_tick_for_a_closed_bar_is_dropped_and_counted():
    builder = BarBuilder(60)
    builder.on_tick(tick(T0), NOW)
    builder.on_tick(tick(T0 + 60 * SEC), NOW)
    result = builder.on_tick(tick(T0 + 30 * SEC), NOW)
    assert result.late is LateReason.BAR_CLOSED
    assert result.closed is None
    assert builder.stats.late == {"late_bar_closed": 1}


def test_tick_behind_the_open_bar_is_dropped_even_if_its_bar_never_opened():
    builder = BarBuilder(60)
    builder.on_tick(tick(T0), NOW)
    builder.on_tick(tick(T0 + 180 * SEC), NOW)  # closes bar 0, opens bar 3
    result = builder.on_tick(tick(T0 + 90 * SEC), NOW)  # bar 1: can no longer go out in order
    assert result.late is LateReason.BEHIND_OPEN_BAR
    assert builder.stats_dict() == {
        "ticks": 3,
        "bars_closed": 1,
        "late": {"late_behind_open_bar": 1},
    }


def test_zero_volume_bar_uses_mean_price_as_vwap():
    builder = BarBuilder(1)
    builder.on_tick(tick(T0, 100.0, size=0.0), NOW)
    builder.on_tick(tick(T0 + 1, 102.0, size=0.0), NOW)
    bar = builder.on_tick(tick(T0 + SEC), NOW).closed
    assert bar.volume == 0.0
    assert bar.vwap == 101.0


def test_symbols_have_independent_bars():
    builder = BarBuilder(60)
    builder.on_tick(tick(T0, symbol="ES"), NOW)
    builder.on_tick(tick(T0 + 61 * SEC, symbol="NQ"), NOW)
    assert builder.open_bar_index("ES") == T0 // (60 * SEC)
    closed = builder.on_tick(tick(T0 + 62 * SEC, symbol="ES"), NOW).closed
    assert closed.symbol == "ES"
    assert builder.open_bar_index("NQ") == builder.open_bar_index("ES")


def test_flush_due_closes_idle_bars_only_after_end_plus_grace_in_symbol_order():
    builder = BarBuilder(60)
    builder.on_tick(tick(T0 + 5 * SEC, symbol="NQ"), NOW)
    builder.on_tick(tick(T0 + 6 * SEC, symbol="ES"), NOW)
    builder.on_tick(tick(T0 + 65 * SEC, symbol="CL"), NOW)
    grace = 2 * SEC
    assert builder.flush_due(T0 + 62 * SEC - 1, grace) == []
    flushed = builder.flush_due(T0 + 62 * SEC, grace)
    assert [b.symbol for b in flushed] == ["ES", "NQ"]
    assert all(b.emitted_ts_ns == T0 + 62 * SEC for b in flushed)
    assert builder.open_bar_index("CL") is not None
    # The flushed bar is final: a straggler for it is late, the next bar opens normally.
    assert builder.on_tick(tick(T0 + 59 * SEC), NOW).late is LateReason.BAR_CLOSED
    assert builder.on_tick(tick(T0 + 70 * SEC), NOW).late is None
    assert builder.flush_due(T0 + 62 * SEC, grace) == []


def test_extreme_but_valid_values_still_build_a_valid_bar():
    builder = BarBuilder(1)
    big = 1e300
    builder.on_tick(tick(T0, big, size=big, bid=big, ask=big), NOW)
    builder.on_tick(tick(T0 + 1, big, size=big, bid=1e-300, ask=big), NOW)
    bar = builder.on_tick(tick(T0 + SEC), NOW).closed
    assert math.isfinite(bar.volume)
    assert bar.vwap == big
    assert bar.mean_spread == pytest.approx(big / 2)


def test_constructor_and_restore_reject_mismatched_configuration():
    with pytest.raises(ValueError, match="bar_seconds"):
        BarBuilder(0)
    with pytest.raises(ValueError, match="price_source"):
        BarBuilder(60, price_source="vwap")  # type: ignore[arg-type]
    state = BarBuilder(60).snapshot()
    with pytest.raises(ValueError, match="bar_seconds"):
        BarBuilder(30).restore(state)
    with pytest.raises(ValueError, match="price_source"):
        BarBuilder(60, price_source="mid").restore(state)
    with pytest.raises(ValidationError):
        BarBuilder(60).restore({**state, "open_bars": {"ES": {"bar_index": "x"}}})


# --- properties ---------------------------------------------------------------------------

tick_streams = st.lists(
    st.tuples(
        st.sampled_from(["A", "B"]),
        st.integers(-3 * SEC, 2 * SEC),  # clock step: mostly forward, sometimes back
        st.floats(1.0, 1_000.0),
        st.just(0.0) | st.floats(1e-6, 100.0),  # no subnormal sizes: the reference would
        st.floats(0.0, 1.0),  # lose the vwap to underflow
    ),
    min_size=1,
    max_size=120,
)


def make_ticks(rows: list[tuple[str, int, float, float, float]]) -> list[Tick]:
    ticks, ts = [], T0
    for symbol, step, price, size, spread in rows:
        ts = max(0, ts + step)
        ticks.append(tick(ts, price, size, symbol, bid=price, ask=price + spread))
    return ticks


@settings(max_examples=150)
@given(tick_streams)
def test_bars_match_a_naive_grouping_of_the_in_order_ticks(rows):
    ticks = make_ticks(rows)
    builder = BarBuilder(1)
    bars = [r.closed for t in ticks if (r := builder.on_tick(t, NOW)).closed is not None]
    bars += builder.flush_due(2**62, 0)

    # Reference: a tick is used iff its bar is not behind the newest bar of its symbol so far.
    newest: dict[str, int] = {}
    groups: dict[tuple[str, int], list[Tick]] = defaultdict(list)
    for t in ticks:
        index = t.ts_ns // SEC
        if index >= newest.get(t.symbol, -1):
            newest[t.symbol] = index
            groups[(t.symbol, index)].append(t)
    dropped = len(ticks) - sum(len(g) for g in groups.values())

    assert sum(builder.stats.late.values()) == dropped
    assert sorted((b.symbol, b.bar_index) for b in bars) == sorted(groups)
    for bar in bars:
        group = groups[(bar.symbol, bar.bar_index)]
        first = min(group, key=lambda t: t.ts_ns)  # min/max return the first on ties
        last = max(reversed(group), key=lambda t: t.ts_ns)
        volume = math.fsum(t.size for t in group)
        assert bar.n_ticks == len(group)
        assert (bar.open, bar.open_ts_ns) == (first.last, first.ts_ns)
        assert (bar.close, bar.close_ts_ns) == (last.last, last.ts_ns)
        assert bar.high == max(t.last for t in group)
        assert bar.low == min(t.last for t in group)
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert bar.low <= bar.vwap <= bar.high
        assert bar.volume == pytest.approx(volume, rel=1e-12, abs=1e-9)
        if volume > 0:
            expected_vwap = math.fsum(t.last * t.size for t in group) / volume
            assert bar.vwap == pytest.approx(expected_vwap, rel=1e-9)
        spreads = [t.ask - t.bid for t in group]
        assert bar.mean_spread == pytest.approx(math.fsum(spreads) / len(spreads), abs=1e-9)
    for symbol in ("A", "B"):
        indices = [b.bar_index for b in bars if b.symbol == symbol]
        assert indices == sorted(set(indices))


def run(builder: BarBuilder, ticks: list[Tick], flush_every: int) -> list[object]:
    """Feed ticks, flushing idle bars on a clock that trails event time by 2 s."""
    out: list[object] = []
    for i, t in enumerate(ticks):
        result = builder.on_tick(t, t.ts_ns)
        out.append(result.closed or result.late)
        if flush_every and i % flush_every == 0:
            out.extend(builder.flush_due(t.ts_ns, 2 * SEC))
    return out


@settings(max_examples=150)
@given(tick_streams, st.data())
def test_snapshot_restore_mid_stream_gives_identical_output_to_an_uninterrupted_run(rows, data):
    ticks = make_ticks(rows)
    cut = data.draw(st.integers(0, len(ticks)))
    flush_every = data.draw(st.integers(0, 5))
    price_source = data.draw(st.sampled_from(["last", "mid"]))

    expected = run(BarBuilder(1, price_source), ticks, flush_every)

    first = BarBuilder(1, price_source)
    got = run(first, ticks[:cut], flush_every)
    state = json.loads(json.dumps(first.snapshot()))
    second = BarBuilder(1, price_source)
    second.restore(state)
    # Re-base the flush cadence so the second half flushes at the same ticks.
    for i, t in enumerate(ticks[cut:], start=cut):
        result = second.on_tick(t, t.ts_ns)
        got.append(result.closed or result.late)
        if flush_every and i % flush_every == 0:
            got.extend(second.flush_due(t.ts_ns, 2 * SEC))
    assert got == expected
    assert second.snapshot() == json.loads(json.dumps(second.snapshot()))
    # the hand-built snapshot is exactly what its schema model dumps
    assert _Snapshot.model_validate(state).model_dump(mode="json") == first.snapshot()
