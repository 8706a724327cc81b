"""Vote shrinkage toward the base rate: the empirical-Bayes fit and the scorer wiring."""

import json

import numpy as np
import pytest

from lorentzcore.kernels import (
    NO_SIGNAL_PRIOR_STRENGTH,
    KernelConfig,
    fit_prior_strength,
    shrink_to_base_rate,
)
from lorentzcore.model import SPEC_FILE, AnalogModel, ScorerParams
from lorentzcore.scorer import Scorer


def test_prior_strength_recovers_the_beta_binomial_truth():
    rng = np.random.default_rng(0)
    p0, m, n = 0.53, 40.0, 20
    theta = rng.beta(m * p0, m * (1 - p0), 200_000)
    votes = rng.binomial(n, theta) / n
    fitted = fit_prior_strength(votes, np.full(votes.size, float(n)), p0)
    assert fitted == pytest.approx(m, rel=0.05)


def test_votes_with_only_binomial_noise_give_the_base_rate():
    rng = np.random.default_rng(1)
    votes = rng.binomial(22, 0.53, 100_000) / 22
    m = fit_prior_strength(votes, np.full(votes.size, 22.0), 0.53)
    assert m == NO_SIGNAL_PRIOR_STRENGTH
    assert shrink_to_base_rate(0.9, 22.0, 0.53, m) == pytest.approx(0.53, abs=1e-6)
    assert shrink_to_base_rate(0.9, 22.0, 0.53, 22.0) == pytest.approx((0.9 + 0.53) / 2)


def _fit(tmp_path, shrink):
    rng = np.random.default_rng(2)
    n = 3000
    X = rng.standard_normal((n, 4))
    y = (rng.random(n) < 0.5 + 0.3 * np.tanh(X[:, 0])).astype(np.float32)
    return AnalogModel.fit(
        X,
        y,
        np.arange(n, dtype=np.int64),
        directory=tmp_path / ("new" if shrink is not None else "old"),
        model_id="shrink-test",
        feature_names=("a", "b", "c", "d"),
        schema_hash="0" * 16,
        kernel=KernelConfig(period=5.0),
        params=ScorerParams(k=16, k_cand=64),
        shrink_exclude_bars=shrink,
    ), X


def test_scorer_serves_shrunk_votes_for_new_models_and_raw_votes_for_old(tmp_path):
    new, X = _fit(tmp_path, 1)
    old, _ = _fit(tmp_path, None)
    p = new.spec.params
    assert p.base_rate == pytest.approx(float(new.labels.mean()))
    assert 0 < p.prior_strength < NO_SIGNAL_PRIOR_STRENGTH  # a real signal: finite m
    assert old.spec.params.base_rate is None and old.spec.params.prior_strength is None
    # an old model.json has no shrinkage fields at all and still loads
    spec = json.loads((old.directory / SPEC_FILE).read_text())
    for key in ("base_rate", "prior_strength"):
        spec["params"].pop(key, None)
    (old.directory / SPEC_FILE).write_text(json.dumps(spec))
    old = AnalogModel.load(old.directory)
    reloaded = AnalogModel.load(new.directory)
    assert reloaded.spec.params == p
    q = X[:50] + 0.01
    t = np.arange(50, dtype=np.int64) + 10_000
    raw = Scorer(old).score_batch(q, t)
    shrunk = Scorer(reloaded).score_batch(q, t)
    want = (raw.eff_k * raw.prob_up + p.prior_strength * p.base_rate) / (
        raw.eff_k + p.prior_strength
    )
    np.testing.assert_allclose(shrunk.prob_up, want, atol=1e-12)
    # shrinkage never changes the side of the base rate a vote is on
    assert np.all(np.sign(shrunk.prob_up - p.base_rate) == np.sign(raw.prob_up - p.base_rate))
