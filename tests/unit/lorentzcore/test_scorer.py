import numpy as np
import pytest

from lorentzcore.ann import recall_at_k
from lorentzcore.degrade import DegradeController
from lorentzcore.hyperbolic import lorentz_distance_from_spatial
from lorentzcore.kernels import KernelConfig
from lorentzcore.metrics import roc_auc
from lorentzcore.model import AnalogModel, ModelArtifactError, ScorerParams
from lorentzcore.scorer import NonFiniteInputError, Scorer
from lorentzcore.tuning import RecallTuner

D = 6


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Labels are a noisy function of the features, so good neighbours predict them."""
    rng = np.random.default_rng(0)
    n = 4000
    X = rng.standard_t(df=4, size=(n, D)) * np.array([1, 2, 0.5, 1, 3, 1])
    signal = X[:, 0] - 0.5 * X[:, 2]
    y = (signal + 0.3 * rng.standard_normal(n) > 0).astype(np.float32)
    times = np.arange(n, dtype=np.int64)
    model = AnalogModel.fit(
        X[:3000],
        y[:3000],
        times[:3000],
        directory=tmp_path_factory.mktemp("model"),
        model_id="planted-1",
        feature_names=tuple(f"f{i}" for i in range(D)),
        schema_hash="deadbeefcafe0000",
        kernel=KernelConfig(period=20.0, rbf_length_scale=1.0),
        params=ScorerParams(k=16, k_cand=64),
    )
    return model, X[3000:], y[3000:], times[3000:]


def test_batch_and_single_event_scores_are_identical(planted):
    model, Xq, _, Tq = planted
    scorer = Scorer(model)
    batch = scorer.score_batch(Xq[:200], Tq[:200])
    for i in range(200):
        s = scorer.score(Xq[i], int(Tq[i]))
        assert s.prob_up == batch.prob_up[i]
        assert s.eff_k == batch.eff_k[i]
        assert s.abstain == batch.abstain[i]
        np.testing.assert_array_equal(s.neighbor_ids, batch.neighbor_ids[i])


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_compiled_rows_give_the_reference_path_s_scores_bit_for_bit_at_every_level(planted, level):
    """score and score_batch re-rank and vote all rows in compiled passes; `_finish` is the
    per-event reference they replaced. Equal floats, ids and distances, at every rung."""
    model, Xq, _, Tq = planted
    scorer = Scorer(model)
    assert model.spec.params.lift_scale not in (None, 1.0)  # the scaled path is exercised
    batch = scorer.score_batch(Xq[:150], Tq[:150], level=level)
    for i in range(150):
        z = scorer.whiten(Xq[i])
        cand, _, Zn = model.index.search_with_vectors(z[None], scorer._k_cand(level))
        ref = scorer._finish(z, cand[0], Zn[0], int(Tq[i]), level, 0, 0, 0)
        one = scorer.score(Xq[i], int(Tq[i]), level=level)
        for got in (one.prob_up, batch.prob_up[i]):
            assert got == ref.prob_up
        for got in (one.eff_k, batch.eff_k[i]):
            assert got == ref.eff_k
        assert one.abstain == batch.abstain[i] == ref.abstain
        np.testing.assert_array_equal(one.neighbor_ids, ref.neighbor_ids)
        np.testing.assert_array_equal(batch.neighbor_ids[i], ref.neighbor_ids)
        np.testing.assert_array_equal(one.distances, ref.distances)


def test_reranked_top_k_equals_exact_lorentz_top_k_among_candidates(planted):
    model, Xq, _, Tq = planted
    scorer = Scorer(model)
    for i in range(50):
        z = model.whitener.transform(Xq[i].astype(np.float32))
        cand, _, Zn = model.index.search_with_vectors(z[None], model.spec.params.k_cand)
        c = model.spec.params.lift_scale
        exact = lorentz_distance_from_spatial(
            c * z.astype(np.float64), c * Zn[0].astype(np.float64)
        )
        expected = set(cand[0][np.argsort(exact, kind="stable")[: model.spec.params.k]])
        s = scorer.score(Xq[i], int(Tq[i]))
        assert set(s.neighbor_ids) == expected
        assert np.all(np.diff(s.distances) >= 0)


def test_scores_predict_planted_labels(planted):
    model, Xq, yq, Tq = planted
    batch = Scorer(model).score_batch(Xq, Tq)
    assert roc_auc(yq, batch.prob_up) > 0.85
    assert np.all((batch.prob_up >= 0) & (batch.prob_up <= 1))


def test_degrade_levels_shed_work_in_order(planted):
    model, Xq, _, Tq = planted
    scorer = Scorer(model)
    full = scorer.score(Xq[0], int(Tq[0]), level=0)
    no_periodic = scorer.score(Xq[0], int(Tq[0]), level=2)
    no_rerank = scorer.score(Xq[0], int(Tq[0]), level=3)
    assert [s.degrade_level for s in (full, no_periodic, no_rerank)] == [0, 2, 3]
    # level 3 keeps HNSW's own order: its first K candidates, unsorted by d_L
    z = model.whitener.transform(Xq[0].astype(np.float32))
    hnsw_ids, _ = model.index.search(z[None], model.spec.params.k)
    np.testing.assert_array_equal(no_rerank.neighbor_ids, hnsw_ids[0])
    with pytest.raises(ValueError, match="degrade level"):
        scorer.score(Xq[0], 0, level=4)


def test_controller_raises_level_when_budget_is_tiny(planted):
    model, Xq, _, Tq = planted
    scorer = Scorer(model, DegradeController(budget_ms=1e-6, window=16, min_events=8))
    levels = [scorer.score(Xq[i], int(Tq[i])).degrade_level for i in range(100)]
    assert levels[0] == 0 and levels[-1] == 3


def test_float32_overflow_falls_back_to_float64_and_is_counted(planted):
    model, Xq, _, Tq = planted
    scorer = Scorer(model)
    x = Xq[0].copy()
    x[1] = 1e39  # finite in float64, inf in float32
    s = scorer.score(x, int(Tq[0]))
    assert scorer.fallback_count["whiten"] == 1
    assert np.isfinite(s.prob_up)


def test_non_finite_input_is_refused(planted):
    model, Xq, _, _ = planted
    x = Xq[0].copy()
    x[0] = np.nan
    with pytest.raises(NonFiniteInputError):
        Scorer(model).score(x, 0)


def test_abstains_when_weights_fall_under_the_floor(planted, tmp_path):
    model, Xq, _, Tq = planted
    far = Xq[0] + 1e3
    s = Scorer(model).score(far, int(Tq[0]))
    assert s.abstain and s.prob_up == 0.5


def test_saved_model_reloads_to_identical_scores(planted):
    model, Xq, _, Tq = planted
    again = AnalogModel.load(model.directory)
    a = Scorer(model).score_batch(Xq[:50], Tq[:50])
    b = Scorer(again).score_batch(Xq[:50], Tq[:50])
    np.testing.assert_array_equal(a.prob_up, b.prob_up)
    assert again.index.ef_search == model.index.ef_search


def test_truncated_labels_file_is_refused_with_its_name(planted, tmp_path):
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(planted[0].directory, copy)
    np.save(copy / "labels.npy", np.zeros(5, dtype=np.float32))
    with pytest.raises(ModelArtifactError, match=r"labels\.npy"):
        AnalogModel.load(copy)


@pytest.fixture(scope="module")
def served_mips(tmp_path_factory):
    """The default served shape: Lorentz-MIPS candidates, K_cand = K, ef calibrated."""
    rng = np.random.default_rng(8)
    n, d = 6000, 8
    X = rng.standard_t(df=4, size=(n, d)) @ rng.standard_normal((d, d))
    y = (X[:, 0] + rng.standard_normal(n) > 0).astype(np.float32)
    model = AnalogModel.fit(
        X[:5000],
        y[:5000],
        np.arange(5000),
        directory=tmp_path_factory.mktemp("mips"),
        model_id="mips-1",
        feature_names=tuple(f"f{i}" for i in range(d)),
        schema_hash="deadbeefcafe0001",
        kernel=KernelConfig(period=20.0),
        params=ScorerParams(k=16, k_cand=16),
        M=8,
        ef_construction=60,
        candidate_metric="lorentz_mips",
    )
    scorer = Scorer(model)
    tune = np.stack([scorer.whiten(x) for x in X[5000:5300]])
    report = RecallTuner(model.index, k=16, sample_size=300).calibrate(tune)
    served = model.with_operating_point(report.ef_search, report.k_cand)
    return served, X[5300:], np.arange(5300, 6000, dtype=np.int64)


def test_calibrated_mips_model_holds_recall_against_exact_lorentz_knn(served_mips):
    model, Xq, Tq = served_mips
    assert model.spec.params.k_cand == model.index.k_cand == model.spec.params.k
    scorer = Scorer(model)
    batch = scorer.score_batch(Xq, Tq)
    scale = model.spec.params.lift_scale
    store = np.asarray(model.index.vector_store, dtype=np.float64) * scale
    exact = np.stack(
        [
            np.argsort(
                lorentz_distance_from_spatial(scale * scorer.whiten(x), store), kind="stable"
            )[:16]
            for x in Xq
        ]
    )
    assert recall_at_k(batch.neighbor_ids, exact) >= 0.95


def test_threaded_batch_equals_single_events_bit_for_bit_on_the_served_model(served_mips):
    model, Xq, Tq = served_mips
    scorer = Scorer(model)
    model.index.num_threads = 2
    try:
        batch = scorer.score_batch(Xq[:200], Tq[:200])
    finally:
        model.index.num_threads = 1
    for i in range(200):
        s = scorer.score(Xq[i], int(Tq[i]))
        assert s.prob_up == batch.prob_up[i] and s.eff_k == batch.eff_k[i]
        assert s.abstain == batch.abstain[i]
        np.testing.assert_array_equal(s.neighbor_ids, batch.neighbor_ids[i])


def test_operating_point_is_validated_and_survives_save_and_load(served_mips):
    model, Xq, Tq = served_mips
    with pytest.raises(ValueError, match="k_cand"):
        model.with_operating_point(64, model.spec.params.k - 1)
    wider = model.with_operating_point(model.index.ef_search + 8, 24)
    try:
        wider.save()
        again = AnalogModel.load(model.directory)
        assert (again.index.ef_search, again.index.k_cand) == (wider.index.ef_search, 24)
        assert again.spec.params.k_cand == 24
        np.testing.assert_array_equal(
            Scorer(again).score(Xq[0], int(Tq[0])).neighbor_ids,
            Scorer(wider).score(Xq[0], int(Tq[0])).neighbor_ids,
        )
    finally:
        model.with_operating_point(model.index.ef_search - 8, model.spec.params.k_cand).save()


def test_params_reject_k_above_k_cand():
    with pytest.raises(ValueError, match="k_cand"):
        ScorerParams(k=64, k_cand=32)


@pytest.mark.parametrize("locally_periodic", [False, True])
@pytest.mark.parametrize("use_periodic", [False, True])
def test_fused_vote_equals_reference_kernel_functions(use_periodic, locally_periodic):
    from lorentzcore.kernels import SinCache, kernel_weights, weighted_prob
    from lorentzcore.scorer import _njit_weighted_vote

    rng = np.random.default_rng(3)
    cfg = KernelConfig(
        period=24.0,
        rbf_length_scale=0.7,
        periodic_length_scale=0.9,
        locally_periodic=locally_periodic,
        local_length_scale=300.0,
        weight_floor=1e-3,
    )
    for _ in range(50):
        d = np.sort(rng.gamma(2.0, 0.5, size=32))
        tau = rng.integers(0, 5000, size=32)
        y = rng.integers(0, 2, size=32).astype(np.float64)
        w = kernel_weights(d, tau, cfg, SinCache(cfg.period), include_periodic=use_periodic)
        ref = weighted_prob(w, y, cfg.weight_floor)
        sin_values = SinCache(cfg.period).lookup(tau)
        got = _njit_weighted_vote(
            d,
            sin_values,
            tau,
            y,
            cfg.rbf_length_scale,
            cfg.periodic_length_scale,
            cfg.local_length_scale,
            use_periodic,
            locally_periodic,
            cfg.weight_floor,
        )
        assert got[0] == pytest.approx(ref[0], rel=1e-12, abs=1e-15)
        assert got[1] == pytest.approx(ref[1], rel=1e-12)
        assert got[2] == ref[2] and got[3]


def test_fitted_lift_scale_puts_the_median_state_at_radius_one(planted):
    model = planted[0]
    scale = model.spec.params.lift_scale
    Z = np.asarray(model.index.vector_store, dtype=np.float64)
    assert np.median(np.linalg.norm(Z, axis=1)) * scale == pytest.approx(1.0, rel=1e-4)


def test_a_feature_constant_in_training_is_masked_and_cannot_dominate_live_distances(tmp_path):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((1500, 4))
    X[:, 2] = 2.0  # e.g. a spread that training data could not vary
    y = (X[:, 0] > 0).astype(np.float32)
    model = AnalogModel.fit(
        X,
        y,
        np.arange(1500),
        directory=tmp_path / "m",
        model_id="masked",
        feature_names=("a", "b", "spread", "d"),
        schema_hash="feedface00",
        params=ScorerParams(k=8, k_cand=32),
    )
    assert model.spec.feature_mask == (True, True, False, True)
    live = X[10].copy()
    live[2] = 2.5  # live spread varies: must not matter
    s = Scorer(AnalogModel.load(model.directory)).score(live, 10)
    assert 10 in s.neighbor_ids and s.distances[0] < 1e-3


def test_public_whiten_applies_the_feature_mask(tmp_path):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((500, 3))
    X[:, 1] = 1.0
    model = AnalogModel.fit(
        X,
        (X[:, 0] > 0).astype(np.float32),
        np.arange(500),
        directory=tmp_path / "m",
        model_id="w",
        feature_names=("a", "b", "c"),
        schema_hash="feedface01",
        params=ScorerParams(k=4, k_cand=16),
    )
    z = Scorer(model).whiten(X[0])
    assert z.shape == (2,) and z.dtype == np.float32
    np.testing.assert_array_equal(z, model.index.get_vectors([0])[0])
