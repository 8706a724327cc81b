import numpy as np
import pytest

from geodesic.cli.main import main
from geodesic.contracts import Bar, FeatureVector
from geodesic.features import WARMUP_BARS, compute_features_batch
from geodesic.lifecycle.config import DatasetConfig
from geodesic.lifecycle.training_data import build_dataset, training_spreads
from geodesic.marketdata.datasets import BarSeries
from geodesic.marketdata.recorder import record
from geodesic.marketdata.recording import (
    FORMAT,
    BarRecorder,
    FeatureRecorder,
    kind_of_topic,
    load_bars_npz,
    read_recording,
)
from geodesic.marketdata.synthetic import SyntheticConfig, generate_market

NS = 1_000_000_000
T0_INDEX = 1_700_000_000  # a 1-second bar index in 2023, as a live replay produces
_OHLCV = ("dates", "open", "high", "low", "close", "volume")


def _bar(symbol: str, i: int, close: float = 100.0, *, bar_seconds: int = 1, **kw) -> Bar:
    open_ns = i * bar_seconds * NS
    fields = {
        "symbol": symbol,
        "bar_index": i,
        "bar_seconds": bar_seconds,
        "open": close - 0.5,
        "high": close + 1.0,
        "low": close - 1.0,
        "close": close,
        "vwap": close - 0.1,
        "volume": 10.0 + i % 7,
        "n_ticks": 20 + i % 5,
        "mean_spread": 0.02,
        "open_ts_ns": open_ns,
        "close_ts_ns": open_ns + bar_seconds * NS - 1,
        "emitted_ts_ns": open_ns + bar_seconds * NS + 5,
    }
    fields.update(kw)
    return Bar(**fields)


def _fv(symbol: str, i: int, values=(0.1, -0.2, 0.3), schema: str = "abcdef0123", **kw):
    fields = {
        "symbol": symbol,
        "bar_index": i,
        "ts_ns": (i + 1) * NS - 1,
        "close": 100.0 + i,
        "values": list(values),
        "schema_hash": schema,
        "hops": {"feature": i},
    }
    fields.update(kw)
    return FeatureVector(**fields)


def _stats_balance(recorder) -> bool:
    s = recorder.stats
    return s.received == s.kept + s.duplicates + s.rejected.total()


def _series_to_bars(series: BarSeries, first_index: int) -> list[Bar]:
    spreads = training_spreads(series.close, series.symbol, DatasetConfig())
    return [
        Bar(
            symbol=series.symbol,
            bar_index=first_index + j,
            bar_seconds=1,
            open=float(series.open[j]),
            high=float(series.high[j]),
            low=float(series.low[j]),
            close=float(series.close[j]),
            vwap=float(series.close[j]),
            volume=float(series.volume[j]),
            n_ticks=30,
            mean_spread=float(spreads[j]),
            open_ts_ns=(first_index + j) * NS,
            close_ts_ns=(first_index + j + 1) * NS - 1,
        )
        for j in range(len(series))
    ]


# --- dedup and ordering ----------------------------------------------------------------------


def test_redelivered_bar_keeps_first_delivery_and_counts_a_duplicate_not_a_conflict():
    rec = BarRecorder()
    first = _bar("AAA", 5, emitted_ts_ns=111)
    again = _bar("AAA", 5, emitted_ts_ns=222)  # same event, later processing time
    assert rec.add(first) is True
    assert rec.add(again) is False
    assert len(rec) == 1
    assert rec.items()[0].emitted_ts_ns == 111
    assert (rec.stats.duplicates, rec.stats.conflicts) == (1, 0)
    assert _stats_balance(rec)


def test_repeat_with_different_prices_is_counted_as_conflict_and_the_first_is_kept():
    rec = BarRecorder()
    rec.add(_bar("AAA", 5, close=100.0))
    rec.add(_bar("AAA", 5, close=101.0))
    assert rec.items()[0].close == 100.0
    assert (rec.stats.duplicates, rec.stats.conflicts) == (1, 1)


def test_feature_repeat_differing_only_in_hops_is_not_a_conflict():
    rec = FeatureRecorder()
    rec.add(_fv("AAA", 1, hops={"feature": 1}))
    rec.add(_fv("AAA", 1, hops={"feature": 2}))
    rec.add(_fv("AAA", 1, values=(9.0, 9.0, 9.0)))
    assert (rec.stats.kept, rec.stats.duplicates, rec.stats.conflicts) == (1, 2, 1)


def test_rows_are_sorted_by_symbol_then_bar_index_whatever_the_arrival_order():
    rec = BarRecorder()
    arrivals = [("BBB", 3), ("AAA", 10), ("BBB", 1), ("AAA", 2), ("AAA", 7), ("BBB", 2)]
    for symbol, i in arrivals:
        rec.add(_bar(symbol, i))
    a = rec.to_arrays()
    assert a["symbol"].tolist() == ["AAA"] * 3 + ["BBB"] * 3
    assert a["bar_index"].tolist() == [2, 7, 10, 1, 2, 3]


def test_unparseable_and_empty_payloads_are_counted_as_rejected_and_left_out():
    rec = BarRecorder()
    assert rec.add_raw(_bar("AAA", 1).to_bytes()) is True
    assert rec.add_raw(b"not json") is False
    assert rec.add_raw(b'{"symbol": "AAA"}') is False
    assert rec.add_raw(_fv("AAA", 2).to_bytes()) is False  # a FeatureVector is not a Bar
    assert rec.add_raw(None) is False
    assert len(rec) == 1
    assert dict(rec.stats.rejected) == {"invalid": 3, "empty": 1}
    assert _stats_balance(rec)


def test_bars_of_a_second_bar_length_are_rejected_since_bar_index_would_mean_another_time():
    rec = BarRecorder()
    rec.add(_bar("AAA", 1, bar_seconds=1))
    assert rec.add(_bar("AAA", 2, bar_seconds=60)) is False
    assert dict(rec.stats.rejected) == {"bar_seconds_mismatch": 1}
    assert BarRecorder(bar_seconds=60).add(_bar("AAA", 1, bar_seconds=1)) is False


def test_features_of_another_schema_or_length_are_rejected_and_counted():
    rec = FeatureRecorder()
    rec.add(_fv("AAA", 1))
    assert rec.add(_fv("AAA", 2, schema="ffffffffff")) is False
    assert rec.add(_fv("AAA", 3, values=(1.0, 2.0))) is False
    assert rec.add(_fv("AAA", 4)) is True
    assert dict(rec.stats.rejected) == {"schema_mismatch": 1, "feature_count_mismatch": 1}
    assert _stats_balance(rec)
    expected = FeatureRecorder(schema_hash="ffffffffff")
    assert expected.add(_fv("AAA", 1)) is False


# --- npz round trip --------------------------------------------------------------------------


def test_bar_round_trip_through_npz_preserves_every_field_in_plain_arrays(tmp_path):
    bars = [_bar("AAA", i, close=100.0 + i) for i in range(5)] + [_bar("B.X", 3, close=50.0)]
    rec = BarRecorder()
    for b in reversed(bars):
        rec.add(b)
    rec.add(bars[0])  # a redelivery
    path = rec.to_npz(tmp_path / "bars.npz")

    with np.load(path, allow_pickle=False) as npz:
        raw = {k: npz[k] for k in npz.files}
    assert all(a.dtype != object for a in raw.values())
    assert raw["symbol"].dtype.kind == "U"
    assert (str(raw["format"]), str(raw["kind"])) == (FORMAT, "bars")
    assert int(raw["n_duplicates"]) == 1 and int(raw["n_received"]) == 7

    a = read_recording(path, kind="bars")
    for row, bar in enumerate(bars):
        for name in (
            "symbol",
            "bar_index",
            "bar_seconds",
            "open",
            "high",
            "low",
            "close",
            "vwap",
            "volume",
            "n_ticks",
            "mean_spread",
            "open_ts_ns",
            "close_ts_ns",
            "emitted_ts_ns",
        ):
            assert a[name][row] == getattr(bar, name), name
    assert a["bar_index"].dtype == np.int64 and a["close"].dtype == np.float64


def test_feature_round_trip_through_npz_keeps_the_matrix_and_schema(tmp_path):
    rec = FeatureRecorder()
    vectors = [_fv("BBB", 2, values=(1.0, 2.0, 3.0)), _fv("AAA", 9, values=(-1.5, 0.0, 1e-300))]
    for v in vectors:
        rec.add(v)
    a = read_recording(rec.to_npz(tmp_path / "f.npz"), kind="features")
    assert a["symbol"].tolist() == ["AAA", "BBB"]
    assert a["values"].shape == (2, 3) and a["values"].dtype == np.float64
    np.testing.assert_array_equal(a["values"], [[-1.5, 0.0, 1e-300], [1.0, 2.0, 3.0]])
    assert a["schema_hash"].shape == () and str(a["schema_hash"]) == "abcdef0123"
    assert int(a["n_features"]) == 3
    assert a["ts_ns"].tolist() == [vectors[1].ts_ns, vectors[0].ts_ns]
    assert a["close"].tolist() == [vectors[1].close, vectors[0].close]


def test_empty_recordings_round_trip_with_zero_rows(tmp_path):
    f = read_recording(FeatureRecorder().to_npz(tmp_path / "f.npz"))
    assert f["values"].shape == (0, 0) and f["symbol"].shape == (0,)
    assert load_bars_npz(BarRecorder().to_npz(tmp_path / "b.npz")) == {}


def test_npz_is_written_to_the_exact_path_and_leaves_no_temp_file(tmp_path):
    rec = BarRecorder()
    rec.add(_bar("AAA", 1))
    out = rec.to_npz(tmp_path / "session.rec")
    assert out == tmp_path / "session.rec"
    assert [p.name for p in tmp_path.iterdir()] == ["session.rec"]


def test_read_recording_refuses_foreign_files_wrong_kind_and_unsorted_rows(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.arange(3))
    with pytest.raises(ValueError, match=r"not a geodesic\.recording/1"):
        read_recording(tmp_path / "other.npz")

    rec = BarRecorder()
    for i in (1, 2, 3):
        rec.add(_bar("AAA", i))
    path = rec.to_npz(tmp_path / "bars.npz")
    with pytest.raises(ValueError, match="holds bars, expected features"):
        read_recording(path, kind="features")

    arrays = rec.to_arrays()
    arrays["bar_index"] = arrays["bar_index"][::-1].copy()
    np.savez(tmp_path / "unsorted.npz", **arrays)
    with pytest.raises(ValueError, match="not strictly sorted"):
        read_recording(tmp_path / "unsorted.npz")

    arrays = rec.to_arrays()
    arrays["close"] = arrays["close"][:2]
    np.savez(tmp_path / "short.npz", **arrays)
    with pytest.raises(ValueError, match="close has shape"):
        read_recording(tmp_path / "short.npz")


# --- BarSeries for training ------------------------------------------------------------------


def test_load_bars_npz_gives_one_validated_bar_series_per_symbol(tmp_path):
    rec = BarRecorder()
    for i in (T0_INDEX + 2, T0_INDEX, T0_INDEX + 1):
        rec.add(_bar("AAA", i, close=100.0 + i % 10))
    rec.add(_bar("BBB", T0_INDEX + 1, close=20.0))
    series = load_bars_npz(rec.to_npz(tmp_path / "b.npz"))
    assert sorted(series) == ["AAA", "BBB"]
    aaa = series["AAA"]
    assert isinstance(aaa, BarSeries) and len(aaa) == 3
    assert aaa.dates.dtype == np.dtype("datetime64[D]")
    assert aaa.dates.astype(np.int64).tolist() == [T0_INDEX, T0_INDEX + 1, T0_INDEX + 2]
    assert aaa.close.tolist() == [100.0 + i % 10 for i in range(T0_INDEX, T0_INDEX + 3)]
    # One bar_index, one date, across symbols: build_dataset's calendar lines them up.
    assert series["BBB"].dates[0] == aaa.dates[1]


def test_intraday_bars_share_a_close_day_so_dates_follow_bar_index_instead(tmp_path):
    rec = BarRecorder()
    for i in range(T0_INDEX, T0_INDEX + 50):
        rec.add(_bar("AAA", i, bar_seconds=1))
    a = rec.to_arrays()
    close_days = a["close_ts_ns"].astype("datetime64[ns]").astype("datetime64[D]")
    assert np.unique(close_days).shape[0] <= 2  # would fail BarSeries' strict increase
    series = load_bars_npz(rec.to_npz(tmp_path / "b.npz"))["AAA"]
    assert (np.diff(series.dates) > np.timedelta64(0, "D")).all()


def test_daily_bars_get_their_real_utc_dates(tmp_path):
    rec = BarRecorder()
    first = int(np.datetime64("2024-03-01", "D").astype(np.int64))
    for i in range(first, first + 4):
        rec.add(_bar("AAA", i, bar_seconds=86_400))
    a = rec.to_arrays()
    series = load_bars_npz(rec.to_npz(tmp_path / "b.npz"))["AAA"]
    close_days = a["close_ts_ns"].astype("datetime64[ns]").astype("datetime64[D]")
    np.testing.assert_array_equal(series.dates, close_days)
    assert str(series.dates[0]) == "2024-03-01"


def test_load_bars_npz_refuses_a_file_mixing_bar_lengths(tmp_path):
    rec = BarRecorder()
    rec.add(_bar("AAA", 1))
    rec.add(_bar("AAA", 2))
    arrays = rec.to_arrays()
    arrays["bar_seconds"] = np.array([1, 60], dtype=np.int64)
    np.savez(tmp_path / "mixed.npz", **arrays)
    with pytest.raises(ValueError, match="mixes bar_seconds"):
        load_bars_npz(tmp_path / "mixed.npz")


def test_load_bars_npz_surfaces_bar_series_validation(tmp_path):
    rec = BarRecorder()
    rec.add(_bar("AAA", 1))
    arrays = rec.to_arrays()
    arrays["high"] = arrays["close"] - 5.0  # high below close: not a valid bar
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="OHLC inconsistent"):
        load_bars_npz(tmp_path / "bad.npz")


def test_recorded_session_with_redeliveries_trains_on_exactly_the_live_bars(tmp_path):
    originals = {}
    rec = BarRecorder()
    for seed in (1, 2):
        series, _ = generate_market(SyntheticConfig(n_bars=WARMUP_BARS + 80, seed=seed))
        series = BarSeries(f"SYN{seed}", *(getattr(series, n) for n in _OHLCV))
        originals[series.symbol] = series
        bars = _series_to_bars(series, T0_INDEX)
        rng = np.random.default_rng(seed)
        for j in [*rng.permutation(len(bars)).tolist(), 0, 5, 17]:  # shuffled + repeats
            rec.add(bars[j])
    assert rec.stats.duplicates == 6

    loaded = load_bars_npz(rec.to_npz(tmp_path / "session.npz"))
    for symbol, original in originals.items():
        for name in ("open", "high", "low", "close", "volume"):
            np.testing.assert_array_equal(getattr(loaded[symbol], name), getattr(original, name))

    config = DatasetConfig(datasets=("recorded",), horizon=1, bar_offset=T0_INDEX)
    data = build_dataset(list(loaded.values()), config)
    assert len(data) > 0 and np.isfinite(data.X).all()
    assert set(data.symbols.tolist()) == set(originals)
    # With no missing bar, bar_offset = first bar_index puts times in live bar-index space.
    assert data.times.min() >= T0_INDEX + WARMUP_BARS - 1
    assert data.times.max() < T0_INDEX + WARMUP_BARS + 80
    s = loaded["SYN1"]
    F = compute_features_batch(
        s.close, s.high, s.low, s.volume, training_spreads(s.close, "SYN1", config)
    )
    mine = data.symbols == "SYN1"
    np.testing.assert_array_equal(data.X[mine], F[data.times[mine] - T0_INDEX])


# --- topics and CLI --------------------------------------------------------------------------


def test_kind_of_topic_follows_topics_yaml_and_refuses_other_payloads():
    assert kind_of_topic("md.bars") == "bars"
    assert kind_of_topic("features.v1") == "features"
    with pytest.raises(ValueError, match="ScoredSignal"):
        kind_of_topic("signals.scored")
    with pytest.raises(ValueError, match=r"not in topics\.yaml"):
        kind_of_topic("md.bars.typo")


def test_record_command_refuses_a_missing_output_directory_before_connecting(tmp_path, capsys):
    out = tmp_path / "missing" / "x.npz"
    code = main(["record", "--topic", "md.bars", "--out", str(out), "--bootstrap", "127.0.0.1:1"])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_record_command_rejects_a_non_positive_idle_time(tmp_path):
    with pytest.raises(SystemExit):
        main(["record", "--topic", "md.bars", "--out", str(tmp_path / "x.npz"), "--idle-s", "0"])


async def test_record_refuses_a_declared_topic_of_the_other_kind_before_connecting(tmp_path):
    with pytest.raises(ValueError, match="holds Bar, not features"):
        await record(None, "md.bars", tmp_path / "x.npz", kind="features")
    with pytest.raises(ValueError, match="different kinds"):
        await record(None, ["md.bars", "features.v1"], tmp_path / "x.npz")
    with pytest.raises(ValueError, match="must be > 0"):
        await record(None, "md.bars", tmp_path / "x.npz", until_idle_s=0)


def test_dataset_registry_resolves_a_recording_by_name(tmp_path):
    from geodesic.marketdata.datasets import load_source
    from geodesic.marketdata.synthetic import SyntheticConfig, generate_market

    series, _ = generate_market(SyntheticConfig(n_bars=80, seed=3, symbol="REC"))
    rec = BarRecorder()
    for i in range(len(series)):
        c = float(series.close[i])
        rec.add(
            Bar(
                symbol="REC",
                bar_index=1000 + i,
                bar_seconds=60,
                open=float(series.open[i]),
                high=float(series.high[i]),
                low=float(series.low[i]),
                close=c,
                vwap=c,
                volume=float(series.volume[i]),
                n_ticks=5,
                mean_spread=0.01,
                open_ts_ns=(1000 + i) * 60 * 10**9,
                close_ts_ns=(1001 + i) * 60 * 10**9,
            )
        )
    path = rec.to_npz(tmp_path / "session.npz")
    loaded = load_source(f"recorded:{path}")
    assert loaded.symbol == "REC" and len(loaded) == 80
    np.testing.assert_array_equal(loaded.close, series.close)
    assert len(load_source(f"recorded:{path}:REC")) == 80
    with pytest.raises(ValueError, match="no symbol"):
        load_source(f"recorded:{path}:NOPE")
