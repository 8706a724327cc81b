import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from geodesic.risk.guards import (
    FeatureDrift,
    RolloutGuardConfig,
    canary_vs_baseline,
    chi2_quantile,
    drift_decision,
    ks_alarm_level,
    parity_decision,
    precision_decision,
    psi_alarm_level,
    volatility_decision,
)
from lorentzcore.metrics import ks_statistic, psi, quantile_edges

CFG = RolloutGuardConfig(min_samples=100, winrate_delta=0.05, alpha=0.05)


def test_no_decision_on_too_few_samples():
    d = canary_vs_baseline(5, 10, 0, 10, CFG)
    assert d.verdict == "insufficient_data" and d.value is None


def test_clearly_worse_canary_is_rolled_back_and_a_close_one_is_not():
    assert canary_vs_baseline(330, 600, 200, 600, CFG).verdict == "rollback"  # .55 vs .33
    assert canary_vs_baseline(330, 600, 310, 600, CFG).verdict == "ok"  # .55 vs .52


def test_equal_win_rates_rarely_trigger_a_rollback():
    rng = np.random.default_rng(0)
    fired = 0
    for _ in range(2000):
        b, c = rng.binomial(200, 0.52), rng.binomial(200, 0.52)
        fired += canary_vs_baseline(b, 200, c, 200, CFG).verdict == "rollback"
    assert fired / 2000 < 0.01  # delta 0.05 on top of alpha 0.05: false alarms are rare


def test_chi2_quantile_matches_scipy():
    for dof in (3, 9, 19, 49):
        for q in (0.95, 0.99, 0.999):
            assert chi2_quantile(q, dof) == pytest.approx(stats.chi2.ppf(q, dof), rel=0.02)


def test_ks_level_matches_the_asymptotic_two_sample_critical_value():
    n, m = 300, 5000
    level = ks_alarm_level(n, m, 0.05, ks_limit=1e-9)
    expected = 1.3581 * np.sqrt((n + m) / (n * m))
    assert level == pytest.approx(expected, rel=1e-3)


DRIFT_CFG = RolloutGuardConfig(drift_min_window=100)


def _drift(ref, cur, name="f", cfg=DRIFT_CFG):
    edges = quantile_edges(ref, 10)
    return FeatureDrift(
        name,
        len(cur),
        psi(ref, cur, edges),
        psi_alarm_level(len(cur), len(ref), 10, cfg.drift_alpha, cfg.psi_limit),
        ks_statistic(ref, cur),
        ks_alarm_level(len(cur), len(ref), cfg.drift_alpha, cfg.ks_limit),
    )


def test_pure_noise_on_a_small_window_does_not_alarm_where_a_fixed_cutoff_would():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal(20_000)
    fixed_cutoff_alarms = adaptive_alarms = 0
    for _ in range(300):
        cur = rng.standard_normal(100)
        d = _drift(ref, cur)
        fixed_cutoff_alarms += d.psi > 0.1
        adaptive_alarms += d.alarm
    assert fixed_cutoff_alarms / 300 > 0.25  # the classic 0.1 rule fires on noise
    assert adaptive_alarms / 300 < 0.05


def test_real_drift_on_a_large_window_alarms_even_below_the_classic_cutoff():
    rng = np.random.default_rng(2)
    ref = rng.standard_normal(20_000)
    cur = rng.standard_normal(5000) + 0.3  # PSI ~ 0.09: under the classic 0.1/0.25 cut-offs
    d = _drift(ref, cur)
    assert d.psi < 0.25 and d.alarm


def test_drift_decision_needs_window_and_several_features():
    cfg = RolloutGuardConfig(drift_min_window=100, drift_features_required=2)
    ok = FeatureDrift("a", 500, 0.01, 0.1, 0.01, 0.1)
    bad = FeatureDrift("b", 500, 0.9, 0.1, 0.3, 0.1)
    small = FeatureDrift("c", 50, 0.9, 0.1, 0.3, 0.1)
    assert drift_decision([small], cfg).verdict == "insufficient_data"
    assert drift_decision([ok, bad], cfg).verdict == "ok"
    assert drift_decision([bad, bad, ok], cfg).verdict == "rollback"


def test_parity_volatility_and_precision_guards():
    cfg = RolloutGuardConfig()
    assert parity_decision(0, cfg).verdict == "ok"
    assert parity_decision(1, cfg).verdict == "rollback"
    assert volatility_decision(0.01, 0.01, 20, cfg).verdict == "ok"
    assert volatility_decision(0.04, 0.01, 20, cfg).verdict == "reduce"
    assert volatility_decision(0.07, 0.01, 20, cfg).verdict == "halt"
    assert volatility_decision(0.07, 0.01, 2, cfg).verdict == "insufficient_data"
    assert precision_decision(60, 300, cfg).verdict == "reduce"
    assert precision_decision(150, 300, cfg).verdict == "ok"
    assert precision_decision(1, 10, cfg).verdict == "insufficient_data"


def test_config_rejects_nonsense_naming_the_field():
    with pytest.raises(ValidationError, match="winrate_delta"):
        RolloutGuardConfig(winrate_delta=2.0)
    with pytest.raises(ValidationError, match="nonsense"):
        RolloutGuardConfig(nonsense=1)
