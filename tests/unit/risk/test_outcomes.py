import pytest

from geodesic.contracts import Bar, ScoredSignal, make_signal_id
from geodesic.risk.outcomes import MarkoutLabeler
from geodesic.risk.winrate import RollingWinRate, wilson_interval


def bar(i: int, close: float, symbol: str = "ES") -> Bar:
    return Bar(
        symbol=symbol,
        bar_index=i,
        bar_seconds=60,
        open=close,
        high=close,
        low=close,
        close=close,
        vwap=close,
        volume=1,
        n_ticks=1,
        mean_spread=0.01,
        open_ts_ns=i * 60_000_000_000,
        close_ts_ns=(i + 1) * 60_000_000_000,
    )


def signal(i: int, side: str, route: str = "active", symbol: str = "ES") -> ScoredSignal:
    return ScoredSignal(
        signal_id=make_signal_id(symbol, i, "m"),
        symbol=symbol,
        bar_index=i,
        ts_ns=i,
        prob_up=0.6,
        side=side,
        model_id="m",
        route=route,
        eff_k=5,
        degrade_level=0,
        halted=False,
        tradable=True,
    )


def test_long_signal_labelled_from_entry_and_exit_closes_net_of_cost():
    lab = MarkoutLabeler(horizon_bars=2, cost_bp=1.0)
    assert lab.on_bar(bar(10, 100.0)) == []
    assert lab.on_signal(signal(10, "long")) == []
    assert lab.on_bar(bar(11, 100.5)) == []
    (out,) = lab.on_bar(bar(12, 101.0))
    assert out.entry_price == 100.0 and out.exit_price == 101.0
    assert out.gross_bp == pytest.approx(100.0)
    assert out.net_bp == pytest.approx(99.0)
    assert out.win is True


def test_short_loses_when_price_rises_and_gap_bars_use_first_bar_after_horizon():
    lab = MarkoutLabeler(horizon_bars=1, cost_bp=0.0)
    lab.on_bar(bar(5, 100.0))
    lab.on_signal(signal(5, "short"))
    (out,) = lab.on_bar(bar(9, 102.0))  # bars 6..8 had no ticks
    assert out.exit_price == 102.0 and out.win is False


def test_signal_arriving_after_its_exit_bar_is_resolved_at_once():
    lab = MarkoutLabeler(horizon_bars=1, cost_bp=0.5)
    lab.on_bar(bar(1, 10.0))
    lab.on_bar(bar(2, 10.0))
    (out,) = lab.on_signal(signal(1, "long"))
    assert out.net_bp == pytest.approx(-0.5) and out.win is False


def test_flat_signal_has_no_win_and_duplicates_are_dropped():
    lab = MarkoutLabeler(horizon_bars=1)
    lab.on_bar(bar(1, 10.0))
    lab.on_signal(signal(1, "flat"))
    assert lab.on_signal(signal(1, "flat")) == []
    assert lab.duplicates == 1
    (out,) = lab.on_bar(bar(2, 11.0))
    assert out.win is None and out.net_bp == 0.0


def test_signal_whose_entry_bar_was_never_seen_is_counted_unlabelled():
    lab = MarkoutLabeler(horizon_bars=1)
    lab.on_bar(bar(5, 10.0))
    assert lab.on_signal(signal(3, "long")) == []
    assert lab.unlabelled == 1 and lab.pending() == 0


def test_rolling_win_rate_reports_none_without_samples_and_slides():
    wr = RollingWinRate(window=4)
    assert wr.value().rate is None
    for w in [True, True, False, False, False, False]:
        wr.add(w)
    v = wr.value()
    assert v.n == 4 and v.wins == 0 and v.rate == 0.0
    assert v.lower == 0.0 and v.upper is not None and v.upper > 0.3


def test_wilson_interval_contains_estimate_and_shrinks_with_n():
    lo1, hi1 = wilson_interval(6, 10)
    lo2, hi2 = wilson_interval(600, 1000)
    assert lo1 < 0.6 < hi1 and lo2 < 0.6 < hi2
    assert hi2 - lo2 < hi1 - lo1


def test_labeler_snapshot_restore_resumes_identically():
    a = MarkoutLabeler(horizon_bars=2, cost_bp=0.5)
    b = MarkoutLabeler(horizon_bars=2, cost_bp=0.5)
    events = [bar(1, 10.0), signal(1, "long"), bar(2, 10.5), signal(2, "short")]
    later = [bar(3, 10.2), signal(2, "short"), bar(4, 9.9)]
    for e in events:
        (a.on_bar if isinstance(e, Bar) else a.on_signal)(e)
    b.restore(__import__("json").loads(__import__("json").dumps(a.snapshot())))
    outs_a = [o for e in later for o in (a.on_bar if isinstance(e, Bar) else a.on_signal)(e)]
    outs_b = [o for e in later for o in (b.on_bar if isinstance(e, Bar) else b.on_signal)(e)]
    assert outs_a == outs_b and len(outs_a) == 2
    assert b.duplicates == a.duplicates == 1


def test_win_rate_snapshot_round_trip():
    wr = RollingWinRate(window=3)
    for w in [True, False, True, True]:
        wr.add(w)
    again = RollingWinRate.restore(wr.snapshot(), window=3)
    assert again.value() == wr.value()


def test_labeler_snapshot_stays_bounded_however_long_it_ran():
    lab = MarkoutLabeler(horizon_bars=3)
    for i in range(2000):
        lab.on_bar(bar(i, 100.0 + i % 7))
    lab.on_signal(signal(1999, "long"))  # pending: waits for bar 2002
    snap = lab.snapshot(max_bars=50)
    assert [i for i, _ in snap["books"]["ES"]["bars"]] == list(range(1950, 2000))
    # a restored labeller resolves the pending signal and labels a late one within the bars
    other = MarkoutLabeler(horizon_bars=3)
    other.restore(__import__("json").loads(__import__("json").dumps(snap)))
    (late,) = other.on_signal(signal(1990, "long"))
    assert (late.entry_price, late.exit_price) == (100.0 + 1990 % 7, 100.0 + 1993 % 7)
    (resolved,) = other.on_bar(bar(2002, 105.0))
    assert resolved.bar_index == 1999 and resolved.exit_price == 105.0
    # older than the saved bars: counted unlabelled, never guessed
    assert other.on_signal(signal(1900, "long")) == [] and other.unlabelled == 1


def test_seen_ids_snapshot_of_the_newest_only():
    from geodesic.risk.dedup import SeenIds

    seen = SeenIds(capacity=10)
    for i in range(25):
        seen.add(str(i))
    assert seen.snapshot() == [str(i) for i in range(15, 25)]
    assert seen.snapshot(last=3) == ["22", "23", "24"]
    assert seen.snapshot(last=100) == seen.snapshot()
