"""Kernels against their direct formulas, plus the cache, the config and the vote."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from naive import effective_neighbors_loop, periodic_direct, rbf_direct
from pydantic import ValidationError

from lorentzcore.kernels import (
    KernelConfig,
    SinCache,
    effective_neighbors,
    kernel_weights,
    periodic_kernel,
    rbf_kernel,
    weighted_prob,
)

distances = st.floats(0.0, 50.0, allow_nan=False)
length_scales = st.floats(0.01, 100.0, allow_nan=False)
lags = st.integers(0, 100_000)
periods = st.one_of(st.integers(1, 5000).map(float), st.floats(0.5, 5000.0, allow_nan=False))


# --- formulas ------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(d=distances, length_scale=length_scales)
def test_rbf_matches_the_direct_formula_and_stays_in_the_unit_interval(d, length_scale):
    value = float(rbf_kernel(d, length_scale))
    assert value == pytest.approx(rbf_direct(d, length_scale), rel=1e-14, abs=1e-300)
    assert 0.0 <= value <= 1.0


@settings(max_examples=200, deadline=None)
@given(d1=distances, d2=distances, length_scale=length_scales)
def test_rbf_never_increases_with_distance(d1, d2, length_scale):
    near, far = sorted((d1, d2))
    assert rbf_kernel(near, length_scale) >= rbf_kernel(far, length_scale)


@settings(max_examples=200, deadline=None)
@given(tau=lags, period=periods, length_scale=length_scales)
def test_periodic_matches_the_direct_formula_and_stays_in_the_unit_interval(
    tau, period, length_scale
):
    value = float(periodic_kernel(tau, period, length_scale))
    assert value == pytest.approx(periodic_direct(tau, period, length_scale), rel=1e-12)
    assert 0.0 <= value <= 1.0


@settings(max_examples=200, deadline=None)
@given(tau=st.floats(0.0, 1e4), period=periods, cycles=st.integers(1, 20))
def test_periodic_kernel_repeats_every_period(tau, period, cycles):
    here = periodic_kernel(tau, period, 0.7)
    later = periodic_kernel(tau + cycles * period, period, 0.7)
    assert later == pytest.approx(here, abs=1e-9)


def test_periodic_kernel_is_one_on_whole_periods_and_smallest_half_a_period_away():
    taus = np.array([0, 1440, 2880, 720, 2160])
    values = periodic_kernel(taus, 1440.0, 0.5)
    np.testing.assert_allclose(values[:3], 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(values[3:], math.exp(-2.0 / 0.25), rtol=1e-12)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_kernels_reject_non_positive_or_non_finite_scales(bad):
    with pytest.raises(ValueError, match="length_scale"):
        rbf_kernel(1.0, bad)
    with pytest.raises(ValueError, match="period"):
        periodic_kernel(1, bad, 1.0)


# --- SinCache ------------------------------------------------------------------------------


@pytest.mark.parametrize("period", [1440.0, 390.0, 97.5, 7.3])
def test_sin_cache_matches_sin_including_lags_beyond_one_period(period):
    cache = SinCache(period)
    tau = np.concatenate([np.arange(0, 3000), [10**6, 10**6 + 1, 123_457]])
    expected = np.array([math.sin(math.pi * t / period) for t in tau.tolist()])
    np.testing.assert_allclose(cache.lookup(tau), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(cache.lookup(tau[:3000]), expected[:3000], rtol=0, atol=1e-13)


def test_sin_cache_hit_ratio_exceeds_90_percent_on_repeated_lags():
    rng = np.random.default_rng(0)
    cache = SinCache(1440.0)
    for _ in range(50):  # 50 queries, 128 neighbours each, all within three days
        cache.lookup(rng.integers(0, 3 * 1440, size=128))
    assert cache.hits + cache.misses == 50 * 128
    assert cache.misses >= 1
    assert cache.hit_ratio > 0.9


def test_sin_cache_with_a_whole_period_never_holds_more_than_two_periods():
    cache = SinCache(96.0)
    cache.lookup(np.arange(0, 100_000, 7))
    assert cache.size <= 2 * 96
    hits_before = cache.hits
    cache.lookup([96 * 2 * 1000 + 5])  # same phase as 5: a hit
    assert cache.hits == hits_before + 1


@pytest.mark.parametrize(("period", "cap"), [(390.0, 1 << 20), (97.5, 1 << 20), (97.5, 300)])
def test_sin_cache_compiled_int64_path_gives_the_general_path_s_values_and_counts(period, cap):
    rng = np.random.default_rng(1)
    fast, general = SinCache(period, max_entries=cap), SinCache(period, max_entries=cap)
    for shape in [(40, 32), (32,), (40, 32), (7, 3)]:
        tau = rng.integers(0, 1200, size=shape)  # int64, C-contiguous: the scorer's lags
        got = fast.lookup(tau)
        want = general.lookup(tau.tolist())  # a list always takes the general path
        assert got.shape == tau.shape
        np.testing.assert_array_equal(got, want)
        assert (fast.hits, fast.misses, fast.size) == (general.hits, general.misses, general.size)
    with pytest.raises(ValueError, match="negative"):
        fast.lookup(np.array([3, -1], dtype=np.int64))


def test_sin_cache_beyond_its_cap_computes_directly_and_counts_misses():
    cache = SinCache(97.5, max_entries=64)
    values = cache.lookup([10, 500, 500])
    assert cache.size == 64
    assert cache.misses == 3
    np.testing.assert_allclose(values, np.sin(np.pi * np.array([10, 500, 500]) / 97.5))
    cache.lookup([500])
    assert cache.misses == 4  # never stored, so never a hit


@pytest.mark.parametrize(
    ("tau", "error"),
    [([-1], ValueError), ([1.5], TypeError), ([np.nan], TypeError), (["3"], TypeError)],
)
def test_sin_cache_rejects_lags_that_are_not_whole_non_negative_bars(tau, error):
    with pytest.raises(error):
        SinCache(1440.0).lookup(np.array(tau))


def test_sin_cache_accepts_whole_valued_float_lags():
    np.testing.assert_array_equal(
        SinCache(24.0).lookup(np.array([3.0, 30.0])), SinCache(24.0).lookup([3, 30])
    )


# --- KernelConfig --------------------------------------------------------------------------


def test_config_builds_with_defaults_and_is_frozen():
    config = KernelConfig()
    assert config.tau_policy == "time_diff_bars"
    assert config.weight_floor > 0.0
    with pytest.raises(ValidationError):
        config.period = 10.0


def test_config_rejects_any_other_tau_policy_naming_the_field():
    with pytest.raises(ValidationError) as excinfo:
        KernelConfig(tau_policy="wall_clock_seconds")
    assert [err["loc"] for err in excinfo.value.errors()] == [("tau_policy",)]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rbf_length_scale", 0.0),
        ("period", -5.0),
        ("periodic_length_scale", math.nan),
        ("local_length_scale", math.inf),
        ("weight_floor", -1e-3),
    ],
)
def test_config_rejects_nonsense_values_naming_the_field(field, value):
    with pytest.raises(ValidationError) as excinfo:
        KernelConfig(**{field: value})
    assert excinfo.value.errors()[0]["loc"] == (field,)


def test_config_rejects_unknown_fields():
    with pytest.raises(ValidationError) as excinfo:
        KernelConfig(rbf_lengthscale=2.0)
    assert excinfo.value.errors()[0]["loc"] == ("rbf_lengthscale",)


# --- kernel_weights ------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    d=arrays(np.float64, 16, elements=distances),
    tau=arrays(np.int64, 16, elements=st.integers(0, 20_000)),
    locally_periodic=st.booleans(),
)
def test_kernel_weights_are_the_product_of_the_direct_formulas(d, tau, locally_periodic):
    config = KernelConfig(
        rbf_length_scale=1.3,
        period=1440.0,
        periodic_length_scale=0.8,
        locally_periodic=locally_periodic,
        local_length_scale=5000.0,
    )
    expected = [
        rbf_direct(di, 1.3)
        * periodic_direct(ti, 1440.0, 0.8)
        * (rbf_direct(ti, 5000.0) if locally_periodic else 1.0)
        for di, ti in zip(d.tolist(), tau.tolist(), strict=True)
    ]
    cache = SinCache(1440.0)
    np.testing.assert_allclose(kernel_weights(d, tau, config, cache), expected, rtol=1e-12)
    np.testing.assert_allclose(kernel_weights(d, tau, config), expected, rtol=1e-12)
    assert np.all(kernel_weights(d, tau, config, cache) >= 0.0)


def test_dropping_the_periodic_factor_leaves_the_rbf_weights():
    config = KernelConfig(locally_periodic=True)
    d = np.array([0.1, 0.5, 2.0])
    tau = np.array([700, 1440, 99_999])
    np.testing.assert_array_equal(
        kernel_weights(d, tau, config, include_periodic=False),
        rbf_kernel(d, config.rbf_length_scale),
    )


def test_kernel_weights_refuse_a_cache_built_for_another_period():
    with pytest.raises(ValueError, match="period"):
        kernel_weights([0.1], [3], KernelConfig(period=1440.0), SinCache(390.0))


# --- effective neighbours and the vote -----------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    w=arrays(
        np.float64,
        st.integers(1, 64),
        elements=st.one_of(st.just(0.0), st.floats(1e-100, 1.0)),  # the loop would underflow
    )
)
def test_effective_neighbors_matches_the_loop_and_lies_between_one_and_n(w):
    eff = effective_neighbors(w)
    assert eff == pytest.approx(effective_neighbors_loop(w.tolist()), rel=1e-12)
    if np.sum(w) > 0.0:
        assert 1.0 - 1e-12 <= eff <= w.size * (1.0 + 1e-12)


@pytest.mark.parametrize(
    ("w", "expected"),
    [
        ([0.0, 0.0, 0.0], 0.0),
        ([0.0, 0.7, 0.0], 1.0),
        ([0.3] * 8, 8.0),
        ([1e-200] * 5, 5.0),  # would underflow as sum(w^2) without rescaling
    ],
)
def test_effective_neighbors_edge_cases(w, expected):
    assert effective_neighbors(w) == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("w", [[np.nan, 1.0], [np.inf, 1.0], [-0.1, 1.0], [[1.0]]])
def test_effective_neighbors_rejects_invalid_weights(w):
    with pytest.raises(ValueError):
        effective_neighbors(w)


def test_weighted_prob_is_the_weighted_label_mean_with_its_effective_count():
    w = np.array([0.9, 0.5, 0.1, 0.0])
    y = np.array([1, 0, 1, 1])
    prob, eff_k, abstain = weighted_prob(w, y, floor=1e-3)
    assert prob == pytest.approx((0.9 + 0.1) / 1.5, rel=1e-15)
    assert eff_k == pytest.approx(1.5**2 / (0.81 + 0.25 + 0.01), rel=1e-15)
    assert abstain is False


def test_weighted_prob_abstains_with_an_uninformative_answer_under_the_floor():
    prob, eff_k, abstain = weighted_prob([1e-4, 2e-4], [1, 1], floor=1e-3)
    assert (prob, abstain) == (0.5, True)
    assert eff_k == pytest.approx(9.0 / 5.0)
    assert weighted_prob([1e-3], [1], floor=1e-3) == (1.0, 1.0, False)  # at the floor: votes
    assert weighted_prob([0.0, 0.0], [1, 0], floor=0.0) == (0.5, 0.0, True)


@pytest.mark.parametrize(
    ("w", "labels", "floor"),
    [([1.0], [2.0], 0.0), ([1.0, 1.0], [1.0], 0.0), ([1.0], [1.0], -1.0), ([1.0], [0.0], math.nan)],
)
def test_weighted_prob_rejects_malformed_inputs(w, labels, floor):
    with pytest.raises(ValueError):
        weighted_prob(w, labels, floor)
