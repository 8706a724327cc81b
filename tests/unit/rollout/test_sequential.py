"""The win-rate judgement under repeated looks, by simulation of whole ramps.

A ramp is run through the real state machine (decide) with only the win-rate check on:
each analysis window adds Bernoulli outcomes to both routes in the step's proportion,
and the machine advances, aborts or promotes as it would live. Over many ramps:
- a good canary (at the worst case of the null: exactly `delta` worse than the
  baseline, and equal to it) is aborted in at most `alpha` of them;
- a fresh one-sided z-test at the same alpha on every window, the thing this replaces,
  aborts the same good canary far more often;
- a bad canary is caught, at the first step with enough samples in most runs.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from geodesic.rollout import RolloutPlan
from geodesic.rollout.machine import Observations, Phase, RolloutState, decide, start
from geodesic.rollout.sequential import SequentialWinRate, WinRateEvidence, log_mixture_ratio

S = 1_000_000_000
ALPHA = 0.05
DELTA = 0.02
PER_WINDOW = 200  # outcomes per analysis window, both routes together
RAMPS = 400

PLAN = RolloutPlan.model_validate(
    {
        "steps": [
            {"fraction": f, "min_duration_s": 0, "min_samples": 300, "inconclusive_limit_s": 1e6}
            for f in (0.05, 0.10, 0.25, 0.50, 1.0)
        ],
        "analysis_window_s": 1,
        "green_windows": 2,
        "checks": {
            "p95_latency_ms": None,
            "max_error_rate": None,
            "max_parity_failures": None,
            "drift": False,
            "winrate": {"alpha": ALPHA, "delta": DELTA, "mixing_sd": 0.05},
        },
    }
)


def simulate(p_base: float, p_canary: float, seed: int, naive: bool = False) -> tuple[str, int]:
    """One ramp; returns the final phase and the step it ended on."""
    rng = np.random.default_rng(seed)
    state = start(RolloutState("sim", "cand", "base", PLAN), 0).state
    ev = WinRateEvidence()
    step_base = step_cand = 0
    step = 0
    for w in range(1, 400):
        if state.step != step:
            step, step_base, step_cand = state.step, 0, 0
        n_c = int(rng.binomial(PER_WINDOW, state.fraction))
        n_b = PER_WINDOW - n_c
        wins_c = int(rng.binomial(n_c, p_canary))
        wins_b = int(rng.binomial(n_b, p_base))
        ev = WinRateEvidence(
            ev.wins_base + wins_b, ev.n_base + n_b, ev.wins_canary + wins_c, ev.n_canary + n_c
        )
        step_base += n_b
        step_cand += n_c
        if naive and state.fraction < 1.0 and _z_rejects(ev, 300):
            return Phase.ABORTED.value, state.step
        obs = Observations(base_outcomes=step_base, candidate_outcomes=step_cand, winrate=ev)
        state = decide(state, obs, w * S).state
        if state.phase in (Phase.ABORTED, Phase.PROMOTED):
            return state.phase.value, state.step
    return state.phase.value, state.step


def _z_rejects(ev: WinRateEvidence, min_n: int) -> bool:
    """The old guard's fresh z-test (geodesic.risk.guards.canary_vs_baseline)."""
    if min(ev.n_base, ev.n_canary) < min_n:
        return False
    pb, pc = ev.wins_base / ev.n_base, ev.wins_canary / ev.n_canary
    se = math.sqrt(pb * (1 - pb) / ev.n_base + pc * (1 - pc) / ev.n_canary)
    return se > 0 and (pb - pc - DELTA) / se > NormalDist().inv_cdf(1 - ALPHA)


def abort_rate(p_base: float, p_canary: float, naive: bool = False) -> float:
    ends = [simulate(p_base, p_canary, seed, naive)[0] for seed in range(RAMPS)]
    return ends.count(Phase.ABORTED.value) / RAMPS


@pytest.mark.parametrize("p_canary", [0.55 - DELTA, 0.55], ids=["at_margin", "equal"])
def test_false_abort_rate_of_a_good_canary_over_the_whole_ramp_is_within_alpha(p_canary):
    rate = abort_rate(0.55, p_canary)
    assert rate <= ALPHA, f"good canary aborted in {rate:.3f} of ramps > alpha {ALPHA}"


def test_a_fresh_z_test_every_window_would_abort_the_same_good_canary_too_often():
    assert abort_rate(0.55, 0.55 - DELTA, naive=True) > 2 * ALPHA


def test_a_bad_canary_is_caught_mostly_at_the_first_steps():
    ends = [simulate(0.55, 0.45, seed) for seed in range(150)]
    aborted = [step for phase, step in ends if phase == Phase.ABORTED.value]
    assert len(aborted) / len(ends) >= 0.95
    assert np.median(aborted) <= 1  # 5% or 10%: where the step first has enough samples


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
