import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from geodesic.features import WARMUP_BARS, compute_features_batch
from geodesic.marketdata.synthetic import Regime, SyntheticConfig, generate_market

TREND_ONLY = ((1.0, 0.0, 0.0),) * 3  # stationary distribution is all TREND: no regime noise


def _returns(series) -> np.ndarray:
    """Close-to-close log returns aligned with bars 1..n-1."""
    return np.diff(np.log(series.close))


def test_same_seed_gives_the_same_market_and_another_seed_does_not():
    a, ta = generate_market(SyntheticConfig(n_bars=500, seed=4))
    b, tb = generate_market(SyntheticConfig(n_bars=500, seed=4))
    c, _ = generate_market(SyntheticConfig(n_bars=500, seed=5))
    assert np.array_equal(a.close, b.close) and np.array_equal(a.volume, b.volume)
    assert np.array_equal(ta.regimes, tb.regimes)
    assert not np.array_equal(a.close, c.close)


def test_planted_pattern_has_a_significantly_higher_mean_return():
    series, truth = generate_market(SyntheticConfig(seed=11))
    r = _returns(series)
    mask = truth.pattern_mask[1:]
    assert mask.sum() == pytest.approx(len(r) / truth.pattern_period, abs=1)
    _, p = stats.ttest_ind(r[mask], r[~mask], equal_var=False, alternative="greater")
    assert p < 1e-3
    assert r[mask].mean() - r[~mask].mean() == pytest.approx(truth.pattern_mean, abs=0.0015)


def test_without_a_planted_pattern_the_same_test_finds_nothing():
    series, truth = generate_market(SyntheticConfig(seed=11, pattern_mean=0.0))
    r = _returns(series)
    mask = truth.pattern_mask[1:]
    _, p = stats.ttest_ind(r[mask], r[~mask], equal_var=False, alternative="greater")
    assert p > 0.01


def test_pattern_mask_is_the_declared_phase_and_maps_to_live_bar_indexes():
    _, truth = generate_market(SyntheticConfig(n_bars=100, pattern_period=5, pattern_phase=2))
    assert np.flatnonzero(truth.pattern_mask).tolist() == list(range(2, 100, 5))
    first = 1_700_000_003
    live = first + np.arange(100)
    assert np.array_equal(truth.pattern_mask, live % 5 == truth.live_pattern_phase(first))


def test_regime_chain_follows_the_declared_transition_matrix():
    _, truth = generate_market(SyntheticConfig(n_bars=40_000, seed=2))
    counts = np.zeros((3, 3))
    np.add.at(counts, (truth.regimes[:-1], truth.regimes[1:]), 1)
    empirical = counts / counts.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(empirical, truth.transition, atol=0.01)
    assert set(np.unique(truth.regimes)) == {r.value for r in Regime}


def test_regimes_leave_their_signature_in_the_returns():
    series, truth = generate_market(SyntheticConfig(n_bars=20_000, seed=8))
    r = _returns(series)
    reg = truth.regimes[1:]
    vol = {g: r[reg == g].std() for g in Regime}
    assert vol[Regime.HIGH_VOL] > 2 * vol[Regime.TREND]
    # Mean reversion: within MEAN_REVERT, returns are negatively autocorrelated.
    both = (reg[1:] == Regime.MEAN_REVERT) & (reg[:-1] == Regime.MEAN_REVERT)
    assert np.corrcoef(r[1:][both], r[:-1][both])[0, 1] < -0.03


def test_truth_mu_and_sigma_explain_the_returns_on_both_sides_of_the_shift():
    config = SyntheticConfig(n_bars=6000, seed=5, shift_at=4000, vol_drift=0.7)
    series, truth = generate_market(config)
    z = (_returns(series) - truth.mu[1:]) / truth.sigma[1:]
    before, after = z[: config.shift_at - 1], z[config.shift_at :]
    for part in (before, after):
        assert abs(part.mean()) < 0.1
        assert part.std() == pytest.approx(1.0, abs=0.05)


def _variance_change_point(r: np.ndarray, margin: int = 20) -> int:
    """Maximum-likelihood split of a zero-mean series into two variances (bar index)."""
    cs = np.cumsum(r**2)
    k = np.arange(margin, len(r) - margin)
    v1 = cs[k - 1] / k
    v2 = (cs[-1] - cs[k - 1]) / (len(r) - k)
    return int(k[np.argmax(-k * np.log(v1) - (len(r) - k) * np.log(v2))]) + 1


@settings(max_examples=20, deadline=None)
@given(st.integers(200, 1800), st.integers(0, 2**31))
def test_volatility_shift_is_detected_where_the_truth_says(shift_at, seed):
    config = SyntheticConfig(
        n_bars=2000, seed=seed, shift_at=shift_at, transition=TREND_ONLY, trend_drift=0.0
    )
    series, truth = generate_market(config)
    assert truth.shift_at == shift_at
    assert np.all(truth.sigma[shift_at:] == 3 * truth.sigma[0])
    assert np.all(truth.sigma[:shift_at] == truth.sigma[0])
    assert abs(_variance_change_point(_returns(series)) - shift_at) <= 25


def test_level_shift_is_an_opening_gap_at_the_shift_bar():
    series, _ = generate_market(SyntheticConfig(n_bars=300, shift_at=150, shift_level=0.2))
    gaps = np.log(series.open[1:] / series.close[:-1])
    assert np.argmax(np.abs(gaps)) + 1 == 150
    assert gaps[149] == pytest.approx(0.2, abs=1e-12)


def test_volume_shift_multiplies_volume_after_the_shift():
    base = SyntheticConfig(n_bars=2000, seed=1, shift_at=1000, shift_vol_mult=1.0)
    a, _ = generate_market(base)
    b, _ = generate_market(base.model_copy(update={"shift_volume_mult": 4.0}))
    np.testing.assert_allclose(b.volume[1000:] / a.volume[1000:], 4.0)
    np.testing.assert_array_equal(b.volume[:1000], a.volume[:1000])


def test_level_drift_moves_the_final_log_price_by_exactly_the_declared_amount():
    base = SyntheticConfig(n_bars=1000, seed=3, transition=TREND_ONLY, trend_drift=0.0)
    a, _ = generate_market(base)
    b, _ = generate_market(base.model_copy(update={"level_drift": 0.5}))
    assert np.log(b.close[-1] / a.close[-1]) == pytest.approx(0.5, abs=1e-9)


def test_volatility_drift_scales_realised_volatility_over_time():
    config = SyntheticConfig(n_bars=10_000, seed=6, transition=TREND_ONLY, vol_drift=np.log(2))
    series, truth = generate_market(config)
    assert truth.sigma[-1] / truth.sigma[0] == pytest.approx(2.0)
    r = _returns(series)
    assert r[-1000:].std() / r[:1000].std() == pytest.approx(1.9, rel=0.1)  # mean of 2^t over 10%


def test_synthetic_bars_are_valid_inputs_for_the_feature_pipeline():
    series, _ = generate_market(SyntheticConfig(n_bars=500, seed=9, shift_at=250))
    assert (series.dates[1:] > series.dates[:-1]).all()
    assert np.is_busday(series.dates).all()
    spreads = series.close * 2e-4
    feats = compute_features_batch(series.close, series.high, series.low, series.volume, spreads)
    assert np.isfinite(feats[WARMUP_BARS - 1 :]).all()


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"transition": ((0.5, 0.5, 0.5),) * 3}, "rows summing to 1"),
        ({"pattern_phase": 7}, "pattern_phase"),
        ({"shift_at": 5000}, "shift_at"),
        ({"start_date": "not-a-date"}, "start_date"),
    ],
)
def test_config_rejects_nonsense_naming_the_field(update, message):
    with pytest.raises(ValueError, match=message):
        SyntheticConfig(**update)
