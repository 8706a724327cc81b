import numpy as np
import pytest

from geodesic.contracts import Bar
from geodesic.features.compute import FEATURE_NAMES, SCHEMA_HASH, WARMUP_BARS, FeatureEngine
from geodesic.lifecycle.config import DatasetConfig, TrainConfig
from geodesic.lifecycle.training_data import (
    BAND,
    build_dataset,
    forward_labels,
    live_bar_offset,
    load_training_dataset,
    training_spreads,
)
from geodesic.marketdata.datasets import BarSeries, load_dataset
from geodesic.marketdata.synthetic import SyntheticConfig, generate_market
from lorentzcore.whitening import Whitener

SEC = 1_000_000_000


def _series(n: int = 400, seed: int = 0, symbol: str = "SYN") -> BarSeries:
    s, _ = generate_market(SyntheticConfig(n_bars=n, seed=seed, symbol=symbol))
    return s


def test_dataset_rows_equal_the_streaming_feature_engine_bit_for_bit():
    cfg = DatasetConfig(datasets=("synthetic",), cutoff=None)
    s = _series(160)
    ds = build_dataset([s], cfg)
    spreads = training_spreads(s.close, s.symbol, cfg)
    engine = FeatureEngine()
    live = {}
    for i in range(len(s)):
        bar = Bar(
            symbol=s.symbol,
            bar_index=i,
            bar_seconds=1,
            open=s.open[i],
            high=s.high[i],
            low=s.low[i],
            close=s.close[i],
            vwap=s.close[i],
            volume=s.volume[i],
            n_ticks=30,
            mean_spread=spreads[i],
            open_ts_ns=i * SEC,
            close_ts_ns=i * SEC + SEC // 2,
        )
        values = engine.on_bar(bar)
        if values is not None:
            live[s.dates[i]] = values
    assert ds.feature_names == FEATURE_NAMES and ds.schema_hash == SCHEMA_HASH
    assert len(live) == len(s) - WARMUP_BARS + 1
    assert len(ds) == len(live) - cfg.horizon  # the last h bars have no label yet
    for row, day in zip(ds.X, ds.dates, strict=True):
        assert row.tolist() == live[day]  # exact float equality, no tolerance


def test_labels_are_forward_log_returns_with_a_cost_band():
    close = np.array([100.0, 101.0, 101.005, 100.0, 100.0])
    fwd, y = forward_labels(close, horizon=1, cost_bp=1.0)
    np.testing.assert_allclose(fwd[:4], np.log(close[1:] / close[:4]))
    assert y.tolist() == [1, BAND, 0, BAND, BAND]  # 0.5 bp move and the last bar: no label
    fwd2, y2 = forward_labels(close, horizon=2, cost_bp=0.0)
    assert np.isnan(fwd2[-2:]).all() and y2[:3].tolist() == [1, 0, 0]


def test_band_policy_drop_excludes_band_samples_and_down_labels_them_zero():
    s = _series(600)
    drop = build_dataset([s], DatasetConfig(cutoff=None, cost_bp=30.0))
    down = build_dataset([s], DatasetConfig(cutoff=None, cost_bp=30.0, band_policy="down"))
    band = drop.y == BAND
    assert band.any()
    mask, y = drop.binary()
    assert not mask[band].any() and set(np.unique(y[mask])) == {0.0, 1.0}
    mask_d, y_d = down.binary()
    assert mask_d.all() and (y_d[band] == 0).all()


def test_future_bars_cannot_change_past_features_or_labels():
    """Leakage check: rewrite everything after bar m; rows whose features and labels end
    before m must not move by a single bit."""
    s = _series(500)
    m, h = 300, 3
    rng = np.random.default_rng(1)
    shock = np.exp(np.concatenate([np.zeros(m), np.cumsum(rng.normal(0, 0.05, len(s) - m))]))
    perturbed = BarSeries(
        s.symbol,
        s.dates,
        s.open * shock,
        s.high * shock,
        s.low * shock,
        s.close * shock,
        s.volume * np.where(np.arange(len(s)) >= m, rng.uniform(0.1, 10, len(s)), 1.0),
    )
    cfg = DatasetConfig(cutoff=None, horizon=h)
    a, b = build_dataset([s], cfg), build_dataset([perturbed], cfg)
    pos = np.searchsorted(s.dates, a.dates)
    past = pos + h < m  # the label's exit bar is before m
    assert past.sum() > 100
    np.testing.assert_array_equal(a.X[past], b.X[past])
    np.testing.assert_array_equal(a.y[past], b.y[past])
    np.testing.assert_array_equal(a.fwd[past], b.fwd[past])
    assert not np.array_equal(a.X[~past], b.X[~past])  # the perturbation did bite


def test_cutoff_keeps_every_replay_bar_out_of_training():
    cfg = DatasetConfig(datasets=("sp500", "nasdaq"), cutoff="2003-01-01", max_bars=400)
    ds = load_training_dataset(cfg)
    cutoff = np.datetime64("2003-01-01")
    assert ds.dates.max() < cutoff
    # the label of the last sample ends before the cutoff too (h bars later, same series)
    spx = load_dataset("sp500")
    last = np.searchsorted(spx.dates, ds.dates.max())
    assert spx.dates[last + cfg.horizon] < cutoff
    assert set(np.unique(ds.symbols)) == {"SPX", "IXIC"}


def test_pooled_symbols_share_bar_times_by_date_and_bar_offset_shifts_them():
    a, b = _series(300, seed=1, symbol="AAA"), _series(300, seed=2, symbol="BBB")
    ds = build_dataset([a, b], DatasetConfig(cutoff=None, bar_offset=1_000))
    for day in np.unique(ds.dates)[:20]:
        assert len(np.unique(ds.times[ds.dates == day])) == 1
    assert np.all(np.diff(ds.times) >= 0)  # sorted by time
    assert ds.times.min() == 1_000 + WARMUP_BARS - 1
    assert np.all(ds.label_end - ds.times == 1)
    assert live_bar_offset(t0_ns=10_000 * SEC, bar_seconds=1, n_training_bars=300) == 9_700
    with pytest.raises(ValueError):
        live_bar_offset(t0_ns=10 * SEC, bar_seconds=1, n_training_bars=300)


def test_replay_spread_model_matches_live_spread_distribution_and_keeps_whitening_sane():
    """A constant training spread makes spread_bp a degenerate column (the live replay's
    jittered quotes give ~2.06 +- 0.09 bp); whitening then blows a live value up."""
    s = load_dataset("sp500").take(slice(0, 1500))
    replay_cfg = DatasetConfig(cutoff=None, spread_model="replay")
    sp = training_spreads(s.close, s.symbol, replay_cfg) / s.close * 1e4
    assert 2.0 < sp.mean() < 2.12 and 0.06 < sp.std() < 0.12
    const = training_spreads(s.close, s.symbol, DatasetConfig(cutoff=None, spread_model="constant"))
    assert np.allclose(const / s.close * 1e4, 2.0)
    ds = build_dataset([s], replay_cfg)
    w = Whitener.fit(ds.X)
    x = ds.X[100].copy()
    x[FEATURE_NAMES.index("spread_bp")] = 2.2  # a live bar with wider quotes
    assert np.linalg.norm(w.transform(x)) < 20


def test_embargo_shorter_than_horizon_is_rejected():
    with pytest.raises(ValueError, match="embargo"):
        TrainConfig(data=DatasetConfig(horizon=10), embargo=5)


def test_default_k_cand_is_k_on_the_lorentz_stage_and_four_k_on_l2():
    assert TrainConfig().candidate_count == TrainConfig().k == 32
    assert TrainConfig(candidate_stage="l2", k=16).candidate_count == 64
    assert TrainConfig(k=16, k_cand=40).candidate_count == 40
    with pytest.raises(ValueError, match="exceeds k_cand"):
        TrainConfig(k=16, k_cand=8)
