"""Whole ramps simulated through the real state machine, to measure the win-rate judgement.

Each analysis window adds Bernoulli outcomes to both routes in the step's proportion and
calls `decide` as the controller would. Used by tests/unit/rollout/test_sequential.py
and `python -m bench.rollout_false_abort` (the figures in docs/runbook.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from geodesic.rollout.machine import Observations, Phase, RolloutState, decide, start
from geodesic.rollout.plan import RolloutPlan
from geodesic.rollout.sequential import WinRateEvidence

_S = 1_000_000_000


@dataclass(frozen=True)
class RampEnd:
    phase: Phase
    step: int  # 0-based step the ramp ended on
    windows: int


def winrate_only_plan(
    *,
    fractions: tuple[float, ...] = (0.05, 0.10, 0.25, 0.50, 1.0),
    min_samples: int = 300,
    alpha: float = 0.05,
    delta: float = 0.02,
    mixing_sd: float = 0.05,
    green_windows: int = 2,
) -> RolloutPlan:
    """A plan whose only check is the win rate (the others need no simulation)."""
    return RolloutPlan.model_validate(
        {
            "steps": [
                {
                    "fraction": f,
                    "min_duration_s": 0,
                    "min_samples": min_samples,
                    "inconclusive_limit_s": 1e9,
                }
                for f in fractions
            ],
            "analysis_window_s": 1,
            "green_windows": green_windows,
            "checks": {
                "p95_latency_ms": None,
                "max_error_rate": None,
                "max_parity_failures": None,
                "drift": False,
                "winrate": {"alpha": alpha, "delta": delta, "mixing_sd": mixing_sd},
            },
        }
    )


def naive_z_rejects(ev: WinRateEvidence, min_n: int, delta: float, alpha: float) -> bool:
    """A fresh one-sided z-test (geodesic.risk.guards.canary_vs_baseline) on this look."""
    if min(ev.n_base, ev.n_canary) < min_n:
        return False
    pb, pc = ev.wins_base / ev.n_base, ev.wins_canary / ev.n_canary
    se = math.sqrt(pb * (1 - pb) / ev.n_base + pc * (1 - pc) / ev.n_canary)
    return se > 0 and (pb - pc - delta) / se > NormalDist().inv_cdf(1 - alpha)


def simulate_ramp(
    plan: RolloutPlan,
    p_base: float,
    p_canary: float,
    seed: int,
    *,
    per_window: int = 200,
    max_windows: int = 400,
    naive: bool = False,
) -> RampEnd:
    """One ramp. With `naive`, a fresh z-test on every window aborts instead of the plan's
    sequential test (what repeated looks at a fixed-level test do)."""
    rng = np.random.default_rng(seed)
    state = start(RolloutState("sim", "cand", "base", plan), 0).state
    wr = plan.checks.winrate
    assert wr is not None, "the simulation judges the win rate"
    ev = WinRateEvidence()
    step = step_base = step_cand = 0
    for w in range(1, max_windows):
        if state.step != step:
            step, step_base, step_cand = state.step, 0, 0
        n_c = int(rng.binomial(per_window, state.fraction))
        n_b = per_window - n_c
        wins_c = int(rng.binomial(n_c, p_canary))
        wins_b = int(rng.binomial(n_b, p_base))
        ev = WinRateEvidence(
            ev.wins_base + wins_b, ev.n_base + n_b, ev.wins_canary + wins_c, ev.n_canary + n_c
        )
        step_base += n_b
        step_cand += n_c
        min_n = plan.steps[state.step].min_samples
        if naive and state.fraction < 1.0 and naive_z_rejects(ev, min_n, wr.delta, wr.alpha):
            return RampEnd(Phase.ABORTED, state.step, w)
        obs = Observations(base_outcomes=step_base, candidate_outcomes=step_cand, winrate=ev)
        state = decide(state, obs, w * _S).state
        if state.phase in (Phase.ABORTED, Phase.PROMOTED) or state.fraction >= 1.0:
            # at 100% the baseline has no traffic: the win rate has had its last look
            return RampEnd(state.phase, state.step, w)
    return RampEnd(state.phase, state.step, max_windows)


def abort_rate(
    plan: RolloutPlan, p_base: float, p_canary: float, ramps: int, *, naive: bool = False
) -> float:
    ends = [simulate_ramp(plan, p_base, p_canary, seed, naive=naive) for seed in range(ramps)]
    return sum(e.phase == Phase.ABORTED for e in ends) / ramps
