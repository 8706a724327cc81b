import itertools
import math

import numpy as np
import pytest
from lorentzcore_data import clustered_vectors, multivariate_t, queries_near, random_shape

from lorentzcore.ann import AnnIndex, recall_at_k, recall_lower_bound
from lorentzcore.tuning import RecallTuner, TuneReport

DIM = 16
K = 10


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    X, centres = clustered_vectors(3000, DIM, 30, rng)
    return X, queries_near(centres, 400, rng)


@pytest.fixture
def weak_index(data) -> AnnIndex:
    """Planted failure: M=4 and ef = k on separated clusters misses true neighbours."""
    X, _ = data
    return AnnIndex.build(X, M=4, ef_construction=20, ef_search=K, k_cand=K, seed=3)


def measured_recall(index: AnnIndex, Q: np.ndarray, k: int = K) -> float:
    """Recall of the candidate stage, computed independently of the tuner."""
    exact = (Q[:, None, :].astype(np.float64) - index.get_vectors(np.arange(len(index)))) ** 2
    truth = np.argsort(exact.sum(axis=-1), axis=1)[:, :k]
    return recall_at_k(index.search(Q, index.k_cand)[0], truth)


def test_low_ef_on_clustered_data_is_tuned_to_target_recall(weak_index, data):
    _, Q = data
    assert measured_recall(weak_index, Q) < 0.9  # the planted problem is real

    report = RecallTuner(weak_index, k=K, sample_size=200, seed=1).tune(Q)

    assert isinstance(report, TuneReport)
    assert report.reached and report.recall >= 0.95
    assert report.history[0].recall < 0.9 and report.history[-1].recall == report.recall
    assert report.bumps == len(report.history) - 1 > 0
    assert (report.ef_search, report.k_cand) == (weak_index.ef_search, weak_index.k_cand)
    assert measured_recall(weak_index, Q) >= 0.94  # holds on all queries, not just the sample


def test_tuning_never_lowers_ef(weak_index, data):
    _, Q = data
    report = RecallTuner(weak_index, k=K, sample_size=200, seed=1).tune(Q)
    efs = [step.ef_search for step in report.history]
    assert len(efs) > 2 and all(b > a for a, b in itertools.pairwise(efs))

    weak_index.set_ef(2000)  # already more than enough: left alone
    again = RecallTuner(weak_index, k=K, sample_size=200, max_ef=64, seed=1).tune(Q)
    assert again.bumps == 0 and weak_index.ef_search == 2000


def test_ef_above_max_ef_is_kept_and_k_cand_raised_instead(weak_index, data):
    _, Q = data
    weak_index.set_ef(15)
    report = RecallTuner(weak_index, k=K, sample_size=200, max_ef=12, seed=1).tune(Q)
    assert report.bumps > 0 and report.reached
    assert weak_index.ef_search == 15 and weak_index.k_cand > K


def test_k_cand_is_raised_once_ef_reaches_max_ef(weak_index, data):
    _, Q = data
    report = RecallTuner(weak_index, k=K, sample_size=200, max_ef=40, seed=1).tune(Q)
    assert report.reached
    assert weak_index.ef_search == 40
    assert weak_index.k_cand > K
    k_cands = [step.k_cand for step in report.history]
    assert k_cands == sorted(k_cands)
    assert all(step.ef_search == 40 for step in report.history if step.k_cand > K)


def test_tuner_reports_failure_when_caps_are_too_low(weak_index, data):
    _, Q = data
    report = RecallTuner(weak_index, k=K, max_ef=20, max_k_cand=K, seed=1).tune(Q)
    assert not report.reached and report.recall < 0.95
    assert (weak_index.ef_search, weak_index.k_cand) == (20, K)


def test_k_cand_below_k_is_raised_to_k_first(weak_index, data):
    _, Q = data
    weak_index.set_k_cand(3)
    report = RecallTuner(weak_index, k=K, seed=1).tune(Q)
    assert report.history[0].k_cand == K
    assert report.reached


def test_tuned_values_persist_through_save_and_load(weak_index, data, tmp_path):
    _, Q = data
    report = RecallTuner(weak_index, k=K, sample_size=200, max_ef=40, seed=1).tune(Q)
    loaded = AnnIndex.load(weak_index.save(tmp_path / "model"))
    assert (loaded.ef_search, loaded.k_cand) == (report.ef_search, report.k_cand)
    assert measured_recall(loaded, Q) == measured_recall(weak_index, Q)


def test_streaming_bumps_ef_until_rolling_recall_meets_target(weak_index, data):
    """Bumps while the shortfall is evidenced (upper bound under target); once the
    window covers every query (400), what remains is the measured recall itself."""
    _, Q = data
    tuner = RecallTuner(weak_index, k=K, sample_rate=1.0, window=400, min_window=50, seed=2)
    start_ef = weak_index.ef_search
    bumps = []
    for round_ in range(40):
        for i in range(60):
            assert tuner.observe(Q[(round_ * 60 + i) % len(Q)])
        if tuner.maybe_bump():
            bumps.append(weak_index.ef_search)
            assert tuner.rolling_recall is None  # the window restarts with the new ef
    assert bumps and bumps == sorted(bumps) and bumps[0] > start_ef
    assert tuner.param_bumps == len(bumps)
    assert tuner.window_size == 400
    assert tuner.rolling_recall == pytest.approx(measured_recall(weak_index, Q))
    assert tuner.rolling_recall >= 0.95
    metrics = tuner.metrics()
    assert metrics["param_bumps_total"] == len(bumps)
    assert metrics["ef_search"] == weak_index.ef_search
    assert metrics["ann_recall"] == tuner.rolling_recall


def test_rolling_recall_uses_the_candidates_the_scorer_passes(weak_index, data):
    _, Q = data
    tuner = RecallTuner(weak_index, k=K, sample_rate=1.0, min_window=5, seed=0)
    far = np.arange(len(weak_index) - K, len(weak_index))
    truth = weak_index.exact_search(Q[:5], K)[0]
    assert not np.isin(far, truth).any()
    for q in Q[:5]:
        tuner.observe(q, candidate_ids=far)  # deliberately wrong candidates
    assert tuner.evaluate_pending() == 5
    assert tuner.rolling_recall == 0.0
    assert tuner.maybe_bump()


def test_maybe_bump_waits_for_min_window_and_leaves_good_recall_alone(weak_index, data):
    _, Q = data
    tuner = RecallTuner(weak_index, k=K, sample_rate=1.0, min_window=20, seed=0)
    for q in Q[:19]:
        tuner.observe(q)
    assert not tuner.maybe_bump()
    assert tuner.window_size == 19 and tuner.rolling_recall < 0.95

    weak_index.set_ef(2000)
    good = RecallTuner(weak_index, k=K, sample_rate=1.0, min_window=20, seed=0)
    for q in Q[:40]:
        good.observe(q)
    assert not good.maybe_bump()
    assert good.rolling_recall >= 0.95 and weak_index.ef_search == 2000


def test_samples_taken_before_a_bump_are_discarded(weak_index, data):
    _, Q = data
    tuner = RecallTuner(weak_index, k=K, sample_rate=1.0, min_window=60, seed=0)
    for q in Q[:60]:
        tuner.observe(q)
    assert tuner.maybe_bump()
    for q in Q[60:65]:
        tuner.observe(q)
    tuner.tune(Q[:50])  # also a parameter change: the 5 queued samples are stale
    assert tuner.evaluate_pending() == 0
    assert tuner.rolling_recall is None


def test_observe_samples_the_requested_fraction(weak_index, data):
    _, Q = data
    tuner = RecallTuner(weak_index, k=K, sample_rate=0.25, max_pending=5000, seed=9)
    kept = sum(tuner.observe(Q[i % len(Q)]) for i in range(4000))
    assert abs(kept - 1000) < 4 * math.sqrt(4000 * 0.25 * 0.75)
    assert tuner.evaluate_pending() == kept


def test_observe_refuses_a_query_of_the_wrong_width(weak_index):
    tuner = RecallTuner(weak_index, k=K, sample_rate=1.0)
    with pytest.raises(ValueError, match="16 values"):
        tuner.observe(np.zeros(DIM - 1))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"target": 1.5}, "target"),
        ({"k": 0}, "k"),
        ({"growth": 1.0}, "growth"),
        ({"sample_rate": -0.1}, "sample_rate"),
        ({"window": 10, "min_window": 11}, "min_window"),
    ],
)
def test_invalid_arguments_are_refused_by_name(weak_index, kwargs, name):
    with pytest.raises(ValueError, match=name):
        RecallTuner(weak_index, **kwargs)


@pytest.fixture(scope="module")
def heavy_tailed() -> tuple[np.ndarray, np.ndarray, float]:
    """Whitened-like heavy-tailed vectors, held-out queries and a lift scale 1 / median |z|."""
    rng = np.random.default_rng(11)
    X = multivariate_t(6000, random_shape(8, rng), 4.0, rng).astype(np.float32)
    Q = multivariate_t(400, random_shape(8, rng), 4.0, rng).astype(np.float32)
    return X, Q, 1.0 / float(np.median(np.linalg.norm(X, axis=1)))


def test_calibrate_on_mips_serves_k_candidates_at_the_first_ef_that_holds_the_target(
    heavy_tailed, tmp_path
):
    X, Q, scale = heavy_tailed
    k = 16
    index = AnnIndex.build(
        X,
        directory=tmp_path,
        M=6,
        ef_construction=40,
        ef_search=200,
        k_cand=128,
        metric="lorentz_mips",
        lift_scale=scale,
    )
    tune, held_out = Q[:250], Q[250:]
    report = RecallTuner(index, target=0.95, k=k, sample_size=250).calibrate(tune)

    assert report.reached and (index.ef_search, index.k_cand) == (report.ef_search, k)
    assert all(step.k_cand == k for step in report.history)
    efs = [step.ef_search for step in report.history]
    assert efs[0] == k and efs == sorted(efs) and len(efs) > 1  # climbed from the floor
    truth = index.exact_search(tune, k)[0]
    assert recall_lower_bound(index.search(tune, k)[0], truth) >= 0.95
    # the step below did not hold: the chosen point is the cheapest on the ladder
    index.set_ef(efs[-2])
    assert recall_lower_bound(index.search(tune, k)[0], truth) < 0.95
    # and the mean holds on queries the tuner never saw
    index.set_ef(report.ef_search)
    assert recall_at_k(index.search(held_out, k)[0], index.exact_search(held_out, k)[0]) >= 0.95


def test_calibrate_judges_the_lower_bound_not_the_mean(heavy_tailed, tmp_path):
    X, Q, scale = heavy_tailed
    index = AnnIndex.build(
        X, directory=tmp_path, M=6, ef_construction=40, metric="lorentz_mips", lift_scale=scale
    )
    sample = Q[:60]  # few queries: a wide interval
    loose = RecallTuner(index, target=0.95, k=16, sample_size=60).calibrate(sample, z=0.0)
    strict = RecallTuner(index, target=0.95, k=16, sample_size=60).calibrate(sample, z=3.0)
    assert strict.ef_search >= loose.ef_search
    truth = index.exact_search(sample, 16)[0]
    assert recall_lower_bound(index.search(sample, 16)[0], truth, z=3.0) >= 0.95


def test_calibrate_keeps_an_l2_index_s_k_cand_and_lowers_ef_to_it(weak_index, data):
    _, Q = data
    weak_index.set_k_cand(3 * K)
    weak_index.set_ef(500)  # far more than needed: calibrate starts from the floor instead
    report = RecallTuner(weak_index, k=K, sample_size=200, seed=1).calibrate(Q)
    assert report.reached and weak_index.k_cand == 3 * K
    assert report.history[0].ef_search == 3 * K and weak_index.ef_search < 500


def test_calibrate_with_a_given_k_cand_uses_it(heavy_tailed, tmp_path):
    X, Q, scale = heavy_tailed
    index = AnnIndex.build(
        X, directory=tmp_path, M=6, ef_construction=40, metric="lorentz_mips", lift_scale=scale
    )
    report = RecallTuner(index, k=16, sample_size=100).calibrate(Q, k_cand=40)
    assert report.k_cand == index.k_cand == 40 and report.history[0].ef_search == 40
    with pytest.raises(ValueError, match="step"):
        RecallTuner(index, k=16).calibrate(Q, step=1.0)


def test_live_tuner_leaves_a_noisy_dip_alone_but_bumps_a_real_shortfall(weak_index, data):
    """A window of per-query recalls 1.0 / 0.9 with mean 0.94 (standard error 0.009) is
    within noise of 0.95 and left alone; 1.0 / 0.8 with mean 0.90 (0.019) is a shortfall."""
    _, Q = data
    exact = weak_index.exact_search(Q[:1], K)[0][0]
    far = np.arange(len(weak_index) - K, len(weak_index))
    assert not np.isin(far, exact).any()

    def candidates(hits: int) -> np.ndarray:
        return np.concatenate([exact[:hits], far[: K - hits]])

    def window(tuner: RecallTuner, recalls: list[int]) -> None:
        for hits in recalls:
            assert tuner.observe(Q[0], candidate_ids=candidates(hits))
        tuner.evaluate_pending()

    dip = RecallTuner(weak_index, k=K, sample_rate=1.0, min_window=20, seed=0)
    window(dip, [10] * 12 + [9] * 18)
    assert 0.93 < dip.rolling_recall < 0.95
    assert not dip.maybe_bump()  # 0.94 + 2 SE > 0.95: not evidence of a shortfall
    ef = weak_index.ef_search

    short = RecallTuner(weak_index, k=K, sample_rate=1.0, min_window=20, seed=0)
    window(short, [10, 8] * 15)
    assert short.maybe_bump() and weak_index.ef_search > ef
    with pytest.raises(ValueError, match="z"):
        RecallTuner(weak_index, k=K, z=-1.0)
