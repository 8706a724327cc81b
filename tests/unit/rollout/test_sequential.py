"""The win-rate judgement under repeated looks, by simulation of whole ramps.

Ramps run through the real state machine (geodesic.rollout.simulation): each analysis
window adds Bernoulli outcomes to both routes in the step's proportion. Over many ramps:
- a good canary (at the worst case of the null: exactly `delta` worse than the
  baseline, and equal to it) is aborted in at most `alpha` of them;
- a fresh one-sided z-test at the same alpha on every window, the thing this replaces,
  aborts the same good canary far more often;
- a bad canary is caught, at the first steps, in nearly every run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from geodesic.rollout.machine import Phase
from geodesic.rollout.sequential import SequentialWinRate, WinRateEvidence, log_mixture_ratio
from geodesic.rollout.simulation import abort_rate, simulate_ramp, winrate_only_plan

ALPHA = 0.05
DELTA = 0.02
RAMPS = 400
PLAN = winrate_only_plan(alpha=ALPHA, delta=DELTA, min_samples=300)


@pytest.mark.parametrize("p_canary", [0.55 - DELTA, 0.55], ids=["at_margin", "equal"])
def test_false_abort_rate_of_a_good_canary_over_the_whole_ramp_is_within_alpha(p_canary):
    rate = abort_rate(PLAN, 0.55, p_canary, RAMPS)
    assert rate <= ALPHA, f"good canary aborted in {rate:.3f} of ramps > alpha {ALPHA}"


def test_a_fresh_z_test_every_window_would_abort_the_same_good_canary_too_often():
    assert abort_rate(PLAN, 0.55, 0.55 - DELTA, RAMPS, naive=True) > 2 * ALPHA


def test_a_bad_canary_is_caught_mostly_at_the_first_steps():
    ends = [simulate_ramp(PLAN, 0.55, 0.45, seed) for seed in range(150)]
    aborted = [e.step for e in ends if e.phase == Phase.ABORTED]
    assert len(aborted) / len(ends) >= 0.95
    assert np.median(aborted) <= 1  # 5% or 10%: where a step first has enough samples


def test_mixture_ratio_grows_with_evidence_of_harm_and_stays_small_without():
    harm = WinRateEvidence(600, 1000, 450, 1000)
    same = WinRateEvidence(550, 1000, 550, 1000)
    assert log_mixture_ratio(harm, DELTA, 0.05) > math.log(1 / ALPHA)
    assert log_mixture_ratio(same, DELTA, 0.05) < 0.0
    seq = SequentialWinRate(harm).look(DELTA, 0.05)
    assert seq.rejects(ALPHA) and seq.p_value() < ALPHA
    # the p-value is always valid: it keeps the smallest value seen, later looks cannot undo it
    later = SequentialWinRate(same, seq.max_log_ratio).look(DELTA, 0.05)
    assert later.p_value() == seq.p_value()
