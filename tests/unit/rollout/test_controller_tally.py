"""The controller's per-step counts: what it counts, and a checkpoint round trip."""

from __future__ import annotations

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from geodesic.contracts import Outcome, ScoredSignal
from geodesic.contracts.models import Route
from geodesic.contracts.reasons import SignalReason
from geodesic.control import ControlPlane
from geodesic.rollout import RolloutPlan
from geodesic.rollout.controller import RolloutController, RolloutMetrics, Tally, step_key
from geodesic.rollout.machine import Phase, RolloutState


def controller(phase: Phase) -> RolloutController:
    """A controller holding a ramp in memory (observing touches no Redis: none is reached)."""
    plane = ControlPlane(aioredis.Redis(host="127.0.0.1", port=1))
    ctl = RolloutController(plane, RolloutMetrics(CollectorRegistry()), actor="x")
    ctl.state = RolloutState("r", "cand", "base", RolloutPlan(), phase=phase)
    ctl.tally = Tally("r", step_key(ctl.state))
    return ctl


def signal(route: Route, model: str, *, latency: float = 2.0, failed: bool = False) -> ScoredSignal:
    return ScoredSignal(
        signal_id="s",
        symbol="ES",
        bar_index=1,
        ts_ns=1,
        prob_up=0.6,
        side="flat" if failed else "long",
        model_id=model,
        route=route,
        eff_k=3.0,
        degrade_level=0,
        halted=False,
        tradable=not failed,
        reasons=[SignalReason.MODEL_UNAVAILABLE] if failed else [],
        latency_ms={"score_total": latency},
    )


def outcome(route: Route, model: str, win: bool | None) -> Outcome:
    return Outcome(
        signal_id="s",
        symbol="ES",
        bar_index=1,
        route=route,
        model_id=model,
        side="long" if win is not None else "flat",
        horizon_bars=1,
        entry_price=100.0,
        exit_price=101.0,
        gross_bp=100.0,
        net_bp=99.0,
        win=win,
    )


def test_the_controller_counts_only_the_candidate_and_baseline_of_its_ramp():
    ctl = controller(Phase.ANALYSING)
    ctl.observe_signal(signal("canary", "cand", latency=3.0))
    ctl.observe_signal(signal("canary", "cand", failed=True))
    ctl.observe_signal(signal("active", "base"))  # the baseline's signals: not the candidate's
    ctl.observe_signal(signal("canary", "other"))  # another model: not this ramp
    ctl.observe_outcome(outcome("canary", "cand", True))
    ctl.observe_outcome(outcome("active", "base", False))
    ctl.observe_outcome(outcome("active", "cand", True))  # not on the canary route
    ctl.observe_outcome(outcome("canary", "cand", None))  # flat: no outcome
    t = ctl.tally
    assert (t.candidate_signals, t.candidate_errors, list(t.latencies)) == (2, 1, [3.0])
    assert (t.candidate_outcomes, t.base_outcomes) == (1, 1)
    ev = t.winrate
    assert (ev.wins_canary, ev.n_canary, ev.wins_base, ev.n_base) == (1, 1, 0, 1)
    assert Tally.from_json(t.to_json()).to_json() == t.to_json()


def test_after_promotion_the_candidate_is_counted_on_the_active_route():
    ctl = controller(Phase.PROMOTED)
    ctl.observe_signal(signal("active", "cand"))
    ctl.observe_signal(signal("canary", "cand"))
    assert ctl.tally.step_key == "guard" and ctl.tally.candidate_signals == 1
