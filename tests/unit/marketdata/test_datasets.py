import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geodesic.features import WARMUP_BARS, compute_features_batch
from geodesic.marketdata.datasets import (
    DATASETS,
    BarSeries,
    DatasetSpec,
    DatasetUnavailableError,
    available_datasets,
    clean_ohlcv,
    load_dataset,
    load_source,
    register_dataset,
    split_by_date,
    split_fraction,
)


def _series(n: int = 10) -> BarSeries:
    close = 100.0 + np.arange(n, dtype=float)
    return BarSeries(
        "T",
        np.datetime64("2020-01-01") + np.arange(n),
        close - 0.5,
        close + 1.0,
        close - 1.0,
        close,
        np.full(n, 10.0),
    )


@pytest.mark.parametrize(
    ("name", "symbol", "zero_volume"), [("sp500", "SPX", 0), ("nasdaq", "IXIC", 2)]
)
def test_shipped_index_history_loads_5031_clean_sessions_1999_to_2018(name, symbol, zero_volume):
    series = load_dataset(name)
    assert series.symbol == symbol
    assert len(series) == 5031
    assert series.dates[0] == np.datetime64("1999-01-04")
    assert series.dates[-1] == np.datetime64("2018-12-31")
    assert series.dates.dtype == np.dtype("datetime64[D]")
    report = series.report
    assert report is not None
    assert (report.rows_read, report.rows_kept, report.dropped, report.repaired_ohlc) == (
        5031,
        5031,
        0,
        0,
    )
    assert report.zero_volume == zero_volume
    assert (series.low <= np.minimum(series.open, series.close)).all()
    assert (series.high >= np.maximum(series.open, series.close)).all()


def test_first_sp500_row_matches_the_raw_file():
    s = load_dataset("sp500")
    row = (s.open[0], s.high[0], s.low[0], s.close[0], s.volume[0])
    assert row == (1229.22998, 1248.810059, 1219.099976, 1228.099976, 877000000.0)


def test_loaded_series_is_immutable_and_cached():
    s = load_dataset("sp500")
    assert load_dataset("sp500") is s
    with pytest.raises(ValueError, match="read-only"):
        s.close[0] = 1.0


def test_loading_reads_the_file_without_importing_arch_or_pandas():
    code = (
        "import sys; from geodesic.marketdata import load_dataset; load_dataset('nasdaq'); "
        "print(sorted(m for m in ('arch', 'pandas', 'statsmodels') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_real_history_featurises_without_nan_after_warmup():
    s = load_dataset("sp500")
    feats = compute_features_batch(s.close, s.high, s.low, s.volume, np.zeros(len(s)))
    assert np.isfinite(feats[WARMUP_BARS - 1 :]).all()
    assert np.isnan(feats[: WARMUP_BARS - 1]).all()


def test_available_datasets_skips_sets_whose_package_is_missing(monkeypatch):
    spec = DatasetSpec(
        name="ghost",
        symbol="GHOST",
        package="no_such_package_for_geodesic_tests",
        resource="data.csv.gz",
        licence="n/a",
        provenance="test",
    )
    monkeypatch.setitem(DATASETS, "ghost", spec)
    assert {"sp500", "nasdaq"} <= set(available_datasets())
    assert "ghost" not in available_datasets()
    with pytest.raises(DatasetUnavailableError, match="pip install"):
        load_dataset("ghost")


def test_unknown_name_lists_registered_ones():
    with pytest.raises(KeyError, match="sp500"):
        load_dataset("nope")


def test_register_dataset_refuses_to_shadow_an_existing_name():
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(DATASETS["sp500"])


def test_small_ohlc_violation_is_repaired_and_large_one_dropped():
    dates = np.datetime64("2020-01-01") + np.arange(3)
    o = np.array([100.0, 100.0, 100.0])
    h = np.array([101.0, 99.9, 90.0])  # ok, 10 bp below open (repair), far below (drop)
    lo = np.array([99.0, 99.0, 89.0])
    c = np.array([100.5, 99.5, 100.0])
    s = clean_ohlcv("T", dates, o, h, lo, c, np.ones(3))
    assert s.report.repaired_ohlc == 1
    assert s.report.dropped_ohlc == 1
    assert len(s) == 2
    assert s.high[1] == 100.0  # widened to the open
    assert s.low[1] == 99.0


def test_unsorted_duplicate_dates_are_sorted_and_first_row_kept():
    dates = np.array(["2020-01-03", "2020-01-01", "2020-01-03", "2020-01-02"], "datetime64[D]")
    close = np.array([3.0, 1.0, 30.0, 2.0])
    s = clean_ohlcv("T", dates, close, close, close, close, np.ones(4))
    assert s.close.tolist() == [1.0, 2.0, 3.0]
    assert s.report.dropped_duplicate_date == 1
    assert not s.report.was_sorted


row = st.tuples(
    st.integers(0, 40),  # day
    *[st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(1, 200))] * 4,
    st.one_of(st.floats(-10, 1e9), st.just(float("nan"))),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(row, max_size=40), st.floats(0, 0.1))
def test_cleaning_any_rows_yields_a_valid_series_and_accounts_for_every_row(rows, tol):
    arr = np.array([r[1:] for r in rows], dtype=float).reshape(-1, 5)
    dates = np.datetime64("2020-01-01") + np.array([r[0] for r in rows], dtype=int)
    s = clean_ohlcv("T", dates, *arr.T, repair_tolerance=tol)  # BarSeries validates itself
    rep = s.report
    assert rep.rows_kept + rep.dropped == rep.rows_read == len(rows)
    assert len(s) == rep.rows_kept
    assert rep.repaired_ohlc <= rep.rows_kept


def test_unparseable_rows_are_counted():
    dates = np.array(["2020-01-01", "NaT"], "datetime64[D]")
    one = np.ones(2)
    s = clean_ohlcv("T", dates, one, one, one, one, one, parsed=np.array([True, True]))
    assert s.report.dropped_unparseable == 1
    assert len(s) == 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("high", 100.0, "OHLC inconsistent"),
        ("close", float("nan"), "non-finite"),
        ("low", -1.0, "low must be > 0"),
        ("volume", -1.0, "volume must be >= 0"),
    ],
)
def test_bar_series_rejects_invalid_columns(field, value, message):
    good = _series(3)
    cols = {f: np.array(getattr(good, f)) for f in ("open", "high", "low", "close", "volume")}
    cols[field][1] = value
    with pytest.raises(ValueError, match=message):
        BarSeries("T", good.dates, **cols)


def test_bar_series_rejects_non_increasing_dates_and_length_mismatch():
    good = _series(3)
    with pytest.raises(ValueError, match="strictly increasing"):
        BarSeries("T", good.dates[::-1], good.open, good.high, good.low, good.close, good.volume)
    with pytest.raises(ValueError, match="shape"):
        BarSeries("T", good.dates, good.open[:2], good.high, good.low, good.close, good.volume)


def test_split_by_date_puts_the_cutoff_day_in_the_replay_side():
    s = load_dataset("sp500")
    train, replay = split_by_date(s, "2015-01-02")
    assert train.dates[-1] < np.datetime64("2015-01-02") == replay.dates[0]
    assert len(train) + len(replay) == len(s)
    assert np.array_equal(np.concatenate([train.close, replay.close]), s.close)
    with pytest.raises(ValueError, match="empty side"):
        split_by_date(s, "1990-01-01")


@given(st.floats(0.01, 0.99))
def test_split_fraction_partitions_in_order(frac):
    s = _series(200)
    train, replay = split_fraction(s, frac)
    assert len(train) == int(frac * 200)
    assert train.dates[-1] < replay.dates[0]
    assert len(train) + len(replay) == 200


@pytest.mark.parametrize("frac", [0.0, 1.0, 0.001])
def test_split_fraction_rejects_empty_sides(frac):
    with pytest.raises(ValueError):
        split_fraction(_series(10), frac)


def test_load_source_resolves_every_kind_and_names_them_when_it_cannot():
    from geodesic.marketdata.synthetic import SyntheticConfig, generate_market

    assert load_source("sp500") is load_dataset("sp500")
    generated = load_source("synthetic:4", synthetic_bars=120)
    expected, _ = generate_market(SyntheticConfig(n_bars=120, seed=4, symbol="SYN4"))
    assert generated.symbol == "SYN4"
    np.testing.assert_array_equal(generated.close, expected.close)
    assert load_source("synthetic", synthetic_bars=120, seed=4).symbol == "SYN4"
    with pytest.raises(KeyError, match=r"sp500.*synthetic\[:SEED\].*recorded:FILE"):
        load_source("sp5000")
    with pytest.raises(ValueError, match="name the file"):
        load_source("recorded:")
