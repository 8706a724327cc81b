import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from lifecycle_helpers import small_config

from geodesic.lifecycle.baselines import LogisticRegression, MomentumRule
from geodesic.lifecycle.config import DatasetConfig, TrainConfig
from geodesic.lifecycle.evaluation import cross_validate, make_folds
from geodesic.lifecycle.offline_report import OfflineReport, load_report
from geodesic.lifecycle.training_data import build_dataset, load_training_dataset
from geodesic.marketdata.synthetic import SyntheticConfig, generate_market
from lorentzcore.model import AnalogModel
from lorentzcore.validation import FoldArtifactDir, FoldReuseError, no_information_overlap


@pytest.fixture(scope="module")
def small_ds():
    return load_training_dataset(small_config().data)


@pytest.fixture(scope="module")
def small_cv(small_ds, tmp_path_factory):
    root = tmp_path_factory.mktemp("cv") / "folds"
    return cross_validate(small_ds, small_config(), root, "cv-test"), root


def test_purging_and_embargo_hold_in_the_fold_artifacts_on_disk(small_ds, small_cv):
    cv, _ = small_cv
    cfg = small_config()
    h = cv.purge_horizon
    assert h == cfg.data.horizon
    for fold in cv.folds:
        trained_times = AnalogModel.load(Path(fold.artifact_dir) / "model").times
        lo, hi = fold.test_first_time, fold.test_last_time
        # every training label window [t, t+h] misses [lo, hi + h + embargo]
        assert not np.any((trained_times + h >= lo) & (trained_times <= hi + h + cfg.embargo))
        assert fold.n_purged > 0
    assert cv.no_information_overlap
    folds = make_folds(small_ds, cfg)
    assert no_information_overlap(folds, small_ds.times, h, embargo=cfg.embargo)


def test_fold_artifacts_are_distinct_and_reuse_is_refused(small_ds, small_cv):
    cv, root = small_cv
    dirs = {f.artifact_dir for f in cv.folds}
    prints = {f.train_fingerprint for f in cv.folds}
    assert len(dirs) == len(prints) == len(cv.folds)
    for f in cv.folds:
        assert json.loads((Path(f.artifact_dir) / "fold.json").read_text())["fold_id"] == str(
            f.fold_id
        )
    folds = make_folds(small_ds, small_config())
    with pytest.raises(FoldReuseError):  # fold 1's directory for fold 0's training set
        FoldArtifactDir(root, folds[1].fold_id, cv.folds[0].train_fingerprint)
    other = small_config().model_copy(update={"folds": 4})
    with pytest.raises(FoldReuseError):  # another split into the same root
        cross_validate(small_ds, other, root, "cv-test-2")


def test_test_fold_predictions_ignore_the_test_labels(small_ds, tmp_path):
    """Shuffling the labels of fold 1's test block (the future, from its model's point of
    view, plus its purged neighbourhood) must not change a single prediction on it."""
    cfg = small_config()
    folds = make_folds(small_ds, cfg)
    test = folds[1].test_idx
    rng = np.random.default_rng(0)
    y = small_ds.y.copy()
    y[test] = rng.permutation(y[test])
    fwd = small_ds.fwd.copy()
    fwd[test] = rng.permutation(fwd[test])
    shuffled = dataclasses.replace(small_ds, y=y, fwd=fwd)
    a = cross_validate(small_ds, cfg, tmp_path / "a", "a")
    b = cross_validate(shuffled, cfg, tmp_path / "b", "b")
    for name in ("level_0", "level_3", "ablation_exact_lorentz", "baseline_logistic"):
        np.testing.assert_array_equal(
            a.predictions[name].prob[test], b.predictions[name].prob[test]
        )
    assert not np.array_equal(y[test], small_ds.y[test])


def test_report_fields_are_present_and_finite(trained):
    report_path = trained.report_paths[0]
    doc = json.loads(report_path.read_text())

    def walk(x, path="report"):
        if isinstance(x, float):
            assert math.isfinite(x), path
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{path}.{k}")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{path}[{i}]")

    walk(doc)
    report = load_report(report_path)
    assert isinstance(report, OfflineReport)
    o = report.overall
    for m in (o.model, *o.baselines.values(), *o.ladder.values(), *o.rerank_ablation.values()):
        assert m.auc is not None and m.ece is not None and m.precision_at_k is not None
        assert m.hit_rate is not None
    assert set(o.baselines) == {"logistic", "momentum", "prior", "euclidean_knn"}
    cv = report.cv
    assert set(cv.forecasters) == {"analog", "logistic", "momentum", "prior", "euclidean_knn"}
    assert len(cv.forecasters["analog"].group_aucs) == 3 and cv.reliability
    assert set(cv.regimes) == {"vol_tercile", "year", "symbol"}
    assert cv.forecasters["prior"].brier_skill == 0.0
    assert set(cv.forecasters["momentum"].orientation) <= {"momentum", "reversal"}
    assert cv.deflated_sharpe.n_trials >= 5
    assert set(o.ladder) == {"0", "1", "2", "3"}
    assert set(o.rerank_ablation) == {"lorentz_rerank", "hnsw_order", "exact_lorentz"}
    assert o.ann.pipeline_recall_vs_exact_lorentz >= 0.9
    assert len(report.folds) == 3 and all(f.ann.n_queries == f.n_test for f in report.folds)
    assert report.gates and report.final_model["n_train"] > 0
    md = trained.report_paths[1].read_text()
    assert "baseline: logistic" in md and "ANN accuracy" in md and "Offline gates" in md
    assert "Cost sensitivity" in md and "Deflated Sharpe" in md
    html = (report_path.parent / "offline_report.html").read_text()
    assert "reliability.png" in html and (report_path.parent / "reliability.png").exists()


def test_reference_ablation_reproduces_the_deployed_scorer(small_cv):
    """The re-rank ablation re-implements the vote with the reference kernel functions;
    its Lorentz variant must agree with Scorer level 0 (same neighbours, same weights)."""
    cv, _ = small_cv
    a = cv.predictions["ablation_lorentz_rerank"].prob
    b = cv.predictions["level_0"].prob
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_planted_periodic_pattern_is_found_and_beats_the_kernel_free_ladder(tmp_path):
    """Every other bar carries +1.5 sigma; the periodic kernel (p = 2) weights neighbours
    at the query's phase, so dropping it (degrade level 2) must cost skill."""
    series, _ = generate_market(
        SyntheticConfig(n_bars=600, seed=1, pattern_period=2, pattern_phase=1, pattern_mean=0.015)
    )
    data = DatasetConfig(datasets=("synthetic",), cutoff=None)
    cfg = TrainConfig(data=data, folds=3, k=16, k_cand=64, period=2, periodic_length_scale=0.5)
    cv = cross_validate(build_dataset([series], data), cfg, tmp_path / "f", "planted")
    o = cv.overall
    assert o.model.auc > 0.65
    assert o.model.auc > o.ladder["2"].auc + 0.05  # level 2 drops the periodic kernel
    assert all(f.model.auc > 0.6 for f in cv.folds)


def test_logistic_baseline_matches_scikit_learn():
    sklearn_lm = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    X = rng.standard_t(4, size=(800, 5)) * [1, 10, 0.1, 3, 1]
    y = (X[:, 0] - 0.05 * X[:, 1] + rng.normal(0, 1.5, 800) > 0).astype(float)
    ours = LogisticRegression.fit(X, y, l2=1.0)
    assert ours.converged
    Xs = (X - ours.mean) / ours.std
    ref = sklearn_lm.LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(Xs, y)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(Xs)[:, 1], atol=1e-6)


def test_momentum_rule_probabilities_come_from_the_training_fold():
    r = np.array([0.01, -0.02, 0.03, -0.01, 0.0, 0.02])
    y = np.array([1, 0, 1, 1, 0, 1], dtype=float)
    rule = MomentumRule.fit(r, y)
    assert rule.p_up_after_up == pytest.approx((3 + 1) / (3 + 2))
    assert rule.p_up_after_down == pytest.approx((1 + 1) / (2 + 2))
    assert rule.direction(r).tolist() == [1, -1, 1, -1, 0, 1]
