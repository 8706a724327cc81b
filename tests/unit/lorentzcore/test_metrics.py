"""Metrics against scipy / scikit-learn and brute-force loops; streaming forms against batch."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from naive import auc_pairs, ece_loop, ks_loop, precision_at_k_all_orders, psi_loop
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score

from lorentzcore.constants import PSI_EPS
from lorentzcore.metrics import (
    IncrementalKS,
    IncrementalPSI,
    expected_calibration_error,
    ks_statistic,
    precision_at_k,
    psi,
    quantile_edges,
    roc_auc,
)

# Continuous values, plus small integers to force ties and atoms.
samples = st.one_of(
    arrays(np.float64, st.integers(1, 80), elements=st.floats(-1e6, 1e6, allow_nan=False)),
    arrays(np.float64, st.integers(1, 80), elements=st.integers(-3, 3).map(float)),
)


def drift_cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    normal = rng.normal(size=2000)
    return [
        ("same-distribution", normal, rng.normal(size=700)),
        ("shifted", normal, rng.normal(0.5, 1.0, size=700)),
        ("wider", normal, rng.normal(0.0, 3.0, size=700)),
        ("outside-reference-range", normal, np.r_[rng.normal(size=50), 1e9, -np.inf, np.inf]),
        ("constant-reference", np.full(100, 2.0), rng.normal(2.0, 1.0, size=300)),
        ("discrete-with-duplicates", rng.integers(0, 4, 500).astype(float), np.ones(40)),
    ]


# --- PSI -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "reference", "current"), drift_cases())
def test_psi_on_quantile_bins_matches_the_loop(name, reference, current):
    cuts = quantile_edges(reference, 10)[1:-1]
    expected = psi_loop(reference.tolist(), current.tolist(), cuts.tolist(), PSI_EPS)
    assert psi(reference, current, 10) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_quantile_edges_are_the_reference_deciles_with_open_outer_bins():
    reference = np.random.default_rng(1).normal(size=1001)
    edges = quantile_edges(reference, 10)
    assert edges[0] == -np.inf and edges[-1] == np.inf
    expected = statistics.quantiles(reference.tolist(), n=10, method="inclusive")
    np.testing.assert_allclose(edges[1:-1], expected, rtol=1e-12)


def test_psi_with_explicit_edges_counts_out_of_range_values_in_the_outer_bins():
    reference = np.array([0.5, 1.5, 1.6, 2.5, 2.6, 2.7])
    current = np.array([-5.0, 0.1, 1.1, 9.0, 9.5])
    edges = [0.0, 1.0, 2.0, 3.0]
    expected = psi_loop(reference.tolist(), current.tolist(), [1.0, 2.0], PSI_EPS)
    assert psi(reference, current, edges) == pytest.approx(expected, rel=1e-14)


def test_psi_floors_empty_bins_at_the_documented_epsilon():
    reference = np.array([0.0, 1.0, 2.0, 3.0])
    current = np.array([0.0, 0.0])  # everything in the first of 4 bins
    p = np.array([0.25, 0.25, 0.25, 0.25])
    q = np.array([1.0, PSI_EPS, PSI_EPS, PSI_EPS])
    expected = float(np.sum((q - p) * np.log(q / p)))
    assert psi(reference, current, [0.0, 1.0, 2.0, 3.0, 4.0]) == pytest.approx(expected)
    assert math.isfinite(expected) and expected > 1.0


@settings(max_examples=100, deadline=None)
@given(reference=samples, current=samples, bins=st.integers(1, 12))
def test_psi_is_non_negative_and_zero_for_an_identical_sample(reference, current, bins):
    assert psi(reference, current, bins) >= 0.0
    assert psi(reference, reference, bins) == 0.0


@pytest.mark.parametrize("bad_edges", [[1.0], [0.0, 0.0, 1.0], [2.0, 1.0], [0.0, np.nan]])
def test_psi_rejects_edges_that_are_not_strictly_increasing(bad_edges):
    with pytest.raises(ValueError, match="edges"):
        psi([1.0, 2.0], [1.0], bad_edges)


@pytest.mark.parametrize(("reference", "current"), [([], [1.0]), ([1.0], []), ([np.nan], [1.0])])
def test_psi_rejects_empty_or_nan_samples(reference, current):
    with pytest.raises(ValueError):
        psi(reference, current)


def test_incremental_psi_over_batches_equals_batch_psi_of_everything_seen():
    rng = np.random.default_rng(2)
    reference = rng.normal(size=3000)
    stream = rng.normal(0.3, 1.2, size=2500)
    monitor = IncrementalPSI.from_reference(reference, 10)
    assert math.isnan(monitor.value)
    seen = 0
    for size in [1, 7, 500, 0, 992, 1000]:
        monitor.update(stream[seen : seen + size])
        seen += size
        if seen:
            assert monitor.value == pytest.approx(psi(reference, stream[:seen], 10), rel=1e-12)
    assert monitor.count == seen


@pytest.mark.parametrize("window", [1, 64, 1000])
def test_incremental_psi_with_a_window_equals_batch_psi_of_the_last_window(window):
    rng = np.random.default_rng(3)
    reference = rng.normal(size=2000)
    stream = np.concatenate([rng.normal(size=1500), rng.normal(2.0, 1.0, size=1500)])
    edges = quantile_edges(reference, 10)
    monitor = IncrementalPSI.from_reference(reference, edges, window=window)
    seen = 0
    for size in rng.integers(0, 2 * window + 3, size=60):
        batch = stream[seen : seen + size]
        monitor.update(batch)
        seen += batch.size
        if seen:
            last = stream[max(0, seen - window) : seen]
            assert monitor.count == last.size
            assert monitor.value == pytest.approx(psi(reference, last, edges), rel=1e-12)


def test_incremental_psi_validates_its_reference_and_batches():
    with pytest.raises(ValueError, match="proportions"):
        IncrementalPSI([0.0, 1.0, 2.0], [0.5, 0.6])
    with pytest.raises(ValueError, match="proportions"):
        IncrementalPSI([0.0, 1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="window"):
        IncrementalPSI([0.0, 1.0, 2.0], [0.5, 0.5], window=0)
    with pytest.raises(ValueError, match="NaN"):
        IncrementalPSI([0.0, 1.0, 2.0], [0.5, 0.5]).update([np.nan])


# --- KS ------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy's p-value for n = 1; unused
@settings(max_examples=200, deadline=None)
@given(a=samples, b=samples)
def test_ks_statistic_matches_scipy_including_ties(a, b):
    assert ks_statistic(a, b) == pytest.approx(ks_2samp(a, b, method="asymp").statistic, abs=1e-12)


@pytest.mark.parametrize(("name", "reference", "current"), drift_cases())
def test_ks_statistic_matches_the_loop(name, reference, current):
    reference, current = reference[:200], current[:200]
    expected = ks_loop(reference.tolist(), current.tolist())
    assert ks_statistic(reference, current) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("window", [None, 300])
@pytest.mark.parametrize(("name", "reference", "current"), drift_cases())
def test_incremental_ks_brackets_the_exact_statistic_within_its_error_bound(
    name, reference, current, window
):
    monitor = IncrementalKS(reference, grid_bins=256, window=window)
    assert math.isnan(monitor.value)
    seen = 0
    for size in [1, 50, 0, 333, 1000]:
        monitor.update(current[seen : seen + size])
        seen = min(seen + size, current.size)
        if seen:
            last = current[:seen] if window is None else current[max(0, seen - window) : seen]
            exact = ks_statistic(reference, last)
            assert monitor.value <= exact + 1e-12
            assert exact <= monitor.value + monitor.error_bound + 1e-12
    assert monitor.error_bound <= 2.0 / 256 or name == "constant-reference"


def test_incremental_ks_gives_atoms_their_own_bins_so_the_bound_stays_small():
    rng = np.random.default_rng(4)
    returns = np.where(rng.random(5000) < 0.3, 0.0, rng.normal(size=5000))  # 30% exact zeros
    monitor = IncrementalKS(returns, grid_bins=512)
    assert monitor.error_bound <= 2.0 / 512
    current = np.where(rng.random(800) < 0.1, 0.0, rng.normal(size=800))
    monitor.update(current)
    exact = ks_statistic(returns, current)
    assert monitor.value <= exact <= monitor.value + monitor.error_bound
    assert monitor.value > 0.05  # the atom at 0 shrank from 30% to 10%


# --- ROC AUC, precision@k, ECE -------------------------------------------------------------


labelled_scores = st.integers(2, 60).flatmap(
    lambda n: st.tuples(
        arrays(np.int64, n, elements=st.integers(0, 1)).filter(lambda y: 0 < y.sum() < y.size),
        st.one_of(
            arrays(np.float64, n, elements=st.floats(-1e3, 1e3, allow_nan=False)),
            arrays(np.float64, n, elements=st.integers(0, 3).map(float)),  # heavy ties
        ),
    )
)


@settings(max_examples=200, deadline=None)
@given(case=labelled_scores)
def test_roc_auc_matches_sklearn_and_the_pairwise_count(case):
    y, scores = case
    assert roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert roc_auc(y, scores) == pytest.approx(auc_pairs(y.tolist(), scores.tolist()), abs=1e-12)


@pytest.mark.parametrize("y", [[1, 1, 1], [0, 0], [0, 2, 1]])
def test_roc_auc_refuses_a_single_class_or_non_binary_labels(y):
    with pytest.raises(ValueError):
        roc_auc(y, np.arange(len(y), dtype=float))


@settings(max_examples=100, deadline=None)
@given(
    case=st.integers(1, 6).flatmap(
        lambda n: st.tuples(
            arrays(np.int64, n, elements=st.integers(0, 1)),
            arrays(np.float64, n, elements=st.integers(0, 2).map(float)),
            st.integers(1, n),
        )
    )
)
def test_precision_at_k_is_the_mean_over_all_tie_breaks(case):
    y, scores, k = case
    expected = precision_at_k_all_orders(y.tolist(), scores.tolist(), k)
    assert precision_at_k(y, scores, k) == pytest.approx(expected, abs=1e-12)


def test_precision_at_k_without_ties_counts_the_top_k():
    y = np.array([1, 0, 1, 1, 0, 0, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.6, 0.2, 0.95])
    assert precision_at_k(y, scores, 3) == pytest.approx(2 / 3)
    assert precision_at_k(y, scores, 7) == pytest.approx(4 / 7)


@pytest.mark.parametrize("k", [0, 8])
def test_precision_at_k_rejects_k_outside_one_to_n(k):
    with pytest.raises(ValueError, match="k must be"):
        precision_at_k(np.ones(7), np.arange(7.0), k)


probabilities = st.one_of(
    st.floats(0.0, 1.0), st.sampled_from([0.0, 0.1, 0.3, 0.7, 0.9, 1.0]), st.just(0.29999999999999)
)


@settings(max_examples=200, deadline=None)
@given(
    case=st.integers(1, 80).flatmap(
        lambda n: st.tuples(
            arrays(np.int64, n, elements=st.integers(0, 1)),
            arrays(np.float64, n, elements=probabilities),
        )
    ),
    n_bins=st.integers(1, 20),
)
def test_ece_matches_the_loop_including_values_on_bin_edges(case, n_bins):
    y, probs = case
    expected = ece_loop(y.tolist(), probs.tolist(), n_bins)
    assert expected_calibration_error(y, probs, n_bins) == pytest.approx(expected, abs=1e-12)


def test_ece_is_zero_for_calibrated_bins_and_the_gap_for_an_overconfident_model():
    y = np.array([1, 0, 1, 0, 1, 1, 1, 1, 1, 0])
    calibrated = np.array([0.5, 0.5, 0.5, 0.5, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8])
    assert expected_calibration_error(y[:4], calibrated[:4]) == 0.0
    overconfident = np.full(10, 0.99)
    assert expected_calibration_error(y, overconfident) == pytest.approx(0.99 - 0.7)


@pytest.mark.parametrize("probs", [[1.1, 0.5], [-0.1, 0.5], [np.nan, 0.5]])
def test_ece_rejects_probabilities_outside_the_unit_interval(probs):
    with pytest.raises(ValueError):
        expected_calibration_error([1, 0], probs)
