import shutil

import numpy as np
import pytest
from lifecycle_helpers import SMALL_CERTIFY, TEST_KEY, small_config
from pydantic import ValidationError

from geodesic.lifecycle.certify import apply_operating_point, certify_model, search_work
from geodesic.lifecycle.config import GateThresholds
from geodesic.lifecycle.drift import RADIUS_KEY, DriftReference
from geodesic.lifecycle.evaluation import auc_standard_error
from geodesic.lifecycle.offline_gates import all_passed, offline_gates
from geodesic.lifecycle.registry import load_manifest, load_verified
from geodesic.lifecycle.training_data import load_training_dataset
from lorentzcore.metrics import psi


def _by_name(results):
    return {r.name: r for r in results}


def _queries(model, n, seed):
    """Feature vectors from random whitened ones (excluded columns at their training value)."""
    Z = np.random.default_rng(seed).standard_normal((n, model.spec.used_dim))
    used = model.whitener.inverse_transform(Z)
    mask = np.asarray(model.spec.feature_mask or [True] * model.spec.dim)
    X = np.full((n, model.spec.dim), 2.0)
    X[:, mask] = used
    return X


def test_gates_compare_the_honest_sections_with_configured_limits(trained):
    report = trained.report
    o, cv = report.overall, report.cv
    gates = _by_name(offline_gates(report, GateThresholds()))
    assert gates["ann_accuracy"].value == o.ann.pipeline_recall_vs_exact_lorentz
    assert gates["ann_accuracy"].limit == 0.90 and gates["ann_accuracy"].passed
    for b in ("logistic", "momentum", "prior", "euclidean_knn"):
        g = gates[f"cv_lift_lower_vs_{b}"]
        assert g.value == pytest.approx(cv.lift_vs_baselines[b].lower)
        assert g.passed == (g.value > 0)
    model = cv.forecasters["analog"]
    assert gates["cv_null_p"].value == model.null_p
    assert gates["cv_null_p"].passed == (model.null_p < 0.05)
    assert gates["cv_ece"].passed == (model.ece_quantile < 0.05)
    assert gates["cv_brier_skill"].passed == (model.brier_skill > 0)
    assert "worst_fold_auc" not in gates  # disabled by default (None)
    # no cutoff in this config: no holdout, and the holdout gates fail as undefined
    assert report.holdout is None
    assert gates["holdout_auc_mean"].value is None and not gates["holdout_auc_mean"].passed
    # stricter limits flip results; the same report as a plain dict gives the same answer
    strict = GateThresholds(min_auc=1.0, max_ece=0.0, require_holdout=False)
    again = _by_name(offline_gates(report.model_dump(mode="json"), strict))
    assert not again["cv_auc_mean"].passed and not again["cv_ece"].passed
    assert "holdout_auc_mean" not in again
    assert not all_passed(list(again.values()))


def test_gate_results_are_recorded_in_the_signed_manifest(trained, model_dir):
    manifest = load_manifest(model_dir)
    recorded = {g["name"]: g for g in manifest["gates"]}
    for g in trained.gates:
        assert recorded[g.name]["passed"] == g.passed
        assert recorded[g.name]["value"] == pytest.approx(g.value)
    assert manifest["gates_passed"] == all_passed(trained.gates)
    assert manifest["parameters"]["gate_thresholds"]["min_ann_accuracy"] == 0.9


def test_auc_standard_error_equals_the_exact_null_variance_at_one_half():
    for n_pos, n_neg in ((50, 50), (300, 700)):
        exact = np.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))  # Mann-Whitney under H0
        assert auc_standard_error(0.5, n_pos, n_neg) == pytest.approx(exact, rel=1e-12)
    assert auc_standard_error(0.8, 300, 700) < auc_standard_error(0.5, 300, 700)


def test_undefined_metric_fails_its_gate_and_bad_thresholds_are_rejected(trained):
    cv = trained.report.cv
    analog = cv.forecasters["analog"].model_copy(update={"auc_mean": None})
    section = cv.model_copy(update={"forecasters": {**cv.forecasters, "analog": analog}})
    report = trained.report.model_copy(update={"cv": section})
    gates = _by_name(offline_gates(report))
    assert not gates["cv_auc_mean"].passed and gates["cv_auc_mean"].value is None
    with pytest.raises(ValidationError, match="max_ece"):
        GateThresholds(max_ece=2.0)


def test_certify_sweep_measures_recall_and_latency_and_picks_a_point(model_dir):
    model = load_verified(model_dir, key=TEST_KEY)
    X = _queries(model, 150, 0)
    T = np.arange(150, dtype=np.int64) + 10_000
    result = certify_model(model, X, T, SMALL_CERTIFY)
    assert model.index.ef_search == load_verified(model_dir, key=TEST_KEY).index.ef_search
    keys = [(p.ef_search, p.k_cand) for p in result.points]
    assert len(keys) == len(set(keys))
    assert all(p.ef_search >= p.k_cand for p in result.points)  # hnswlib's effective ef
    for p in result.points:
        assert 0 <= p.pipeline_recall <= 1 and 0 < p.p50_us <= p.p99_us
    assert any(p.pareto for p in result.points)
    assert result.chosen is not None, result.reason
    assert result.chosen.meets_recall and result.chosen.meets_latency
    for p in result.points:  # recall must hold as a lower bound, not just on average
        assert p.pipeline_recall_lower <= p.pipeline_recall
        assert p.meets_recall == (
            min(p.pipeline_recall_lower, p.candidate_recall_l2_lower) >= SMALL_CERTIFY.target_recall
        )
    ok = [p for p in result.points if p.meets_recall and p.meets_latency]
    # the cheapest holding point: smallest beam max(ef, K_cand), then fewest candidates
    assert search_work(result.chosen) == min(search_work(p) for p in ok)
    # both candidate stages compared on the same store; the served one is the MIPS graph
    stages = {(c.metric, c.ef_search): c for c in result.candidate_stages}
    assert {m for m, _ in stages} == {"l2", "lorentz_mips"}
    assert all(c.served == (c.metric == model.index.metric) for c in stages.values())
    top = max(SMALL_CERTIFY.ef_grid)
    assert stages[("lorentz_mips", top)].topk_recall >= stages[("l2", top)].topk_recall


def test_certify_apply_writes_the_point_and_resigns(trained, model_dir, tmp_path):
    d = tmp_path / "registry" / model_dir.name
    shutil.copytree(model_dir, d)
    model = load_verified(d, key=TEST_KEY)
    X = _queries(model, 120, 1)
    result = certify_model(model, X, np.arange(120), SMALL_CERTIFY)
    target = max(result.points, key=lambda p: (p.k_cand, p.ef_search))
    forced = result.model_copy(update={"chosen": target})
    apply_operating_point(d, forced, TEST_KEY)
    reloaded = load_verified(d, key=TEST_KEY)
    assert reloaded.index.ef_search == target.ef_search
    assert reloaded.spec.params.k_cand == target.k_cand
    assert load_manifest(d)["certification"]["chosen"]["k_cand"] == target.k_cand


def test_drift_reference_reproduces_psi_on_the_training_features(trained, model_dir):
    ref = DriftReference.load(model_dir / "drift_reference.json")
    assert ref.names[:-1] == list(trained.report.feature_names) and ref.names[-1] == RADIUS_KEY
    X = load_training_dataset(small_config().data).X
    j = 0
    inc = ref.incremental_psi(ref.names[j]).update(X[:, j])
    assert inc.value == pytest.approx(psi(X[:, j], X[:, j]), abs=1e-12)
    assert inc.value < 1e-9
    shifted = ref.incremental_psi(ref.names[j]).update(X[:, j] + 3 * X[:, j].std())
    assert shifted.value > 1.0
    ks = ref.incremental_ks(ref.names[j]).update(X[:, j])
    assert ks.value < 0.01
