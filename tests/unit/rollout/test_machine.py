"""The rollout state machine with an injected clock: advance, pause, abort, promote, guard."""

from __future__ import annotations

import pytest

from geodesic.rollout import RolloutPlan
from geodesic.rollout.machine import (
    AbortCanary,
    Observations,
    Phase,
    Promote,
    RollbackPromotion,
    RolloutState,
    SetFraction,
    Status,
    abort,
    decide,
    pause,
    resume,
    start,
    time_to_decision_s,
)
from geodesic.rollout.sequential import WinRateEvidence

S = 1_000_000_000


def plan(**overrides) -> RolloutPlan:
    doc = {
        "steps": [
            {"fraction": 0.1, "min_duration_s": 2, "min_samples": 50, "inconclusive_limit_s": 5},
            {"fraction": 1.0, "min_duration_s": 2, "min_samples": 50, "inconclusive_limit_s": 5},
        ],
        "analysis_window_s": 1,
        "checks": {"drift": False, "max_parity_failures": None},
        "promotion": {"guard_window_s": 10, "guard_min_samples": 50},
        **overrides,
    }
    return RolloutPlan.model_validate(doc)


def good(n: int = 100, latency: float = 5.0, wins: float = 0.55) -> Observations:
    w = int(n * wins)
    return Observations(
        base_outcomes=n,
        candidate_outcomes=n,
        candidate_signals=n,
        latencies_ms=(latency,) * n,
        winrate=WinRateEvidence(w, n, w, n),
    )


def started(p: RolloutPlan | None = None) -> RolloutState:
    st = RolloutState("r1", "m-new", "m-old", p or plan())
    t = start(st, 0)
    assert t.actions == (SetFraction("m-new", 0.1, 0),)
    return t.state


def run(state: RolloutState, obs: Observations, t0: int, windows: int) -> tuple:
    transitions = []
    for i in range(1, windows + 1):
        t = decide(state, obs, t0 + i * S)
        state = t.state
        if t.changed:
            transitions.append(t)
    return state, transitions


def test_green_windows_advance_a_step_then_the_last_step_promotes_and_guards():
    st = started()
    st, trans = run(st, good(), 0, 2)
    assert st.phase == Phase.ANALYSING and st.step == 1
    assert trans[-1].actions == (SetFraction("m-new", 1.0, 0),)
    st, trans = run(st, good(), 2 * S, 2)
    assert st.phase == Phase.PROMOTED
    assert trans[-1].actions == (Promote("m-new"),)
    assert st.guard_until_ns == 4 * S + 10 * S


def test_min_duration_holds_a_green_step():
    st = started(plan(steps=[{"fraction": 0.1, "min_duration_s": 5}, {"fraction": 1.0}]))
    st, _ = run(st, good(200), 0, 4)
    assert st.step == 0 and st.green_streak == 4
    st, _ = run(st, good(200), 4 * S, 1)
    assert st.step == 1


def test_a_check_with_too_few_samples_is_inconclusive_never_green_and_the_step_pauses():
    st = started()
    st, trans = run(st, Observations(), 0, 6)
    assert st.step == 0 and st.phase == Phase.ANALYSING
    assert {c.status for c in st.checks} == {Status.INCONCLUSIVE}
    st, trans = run(st, Observations(), 6 * S, 1)  # past min_duration 2 + limit 5
    assert st.phase == Phase.PAUSED and "inconclusive" in st.reason
    assert trans and trans[0].actions == ()
    st, trans = run(st, good(), 7 * S, 10)  # green now, but a paused rollout never advances
    assert st.phase == Phase.PAUSED and st.step == 0 and not trans


def test_partly_inconclusive_breaks_the_green_streak():
    st = started()
    thin = Observations(
        base_outcomes=100, candidate_outcomes=100, candidate_signals=100, latencies_ms=(1.0,) * 10
    )
    st, _ = run(st, good(), 0, 1)
    st, _ = run(st, thin, S, 1)
    assert st.green_streak == 0
    assert next(c for c in st.checks if c.name == "p95_latency_ms").status == Status.INCONCLUSIVE


def test_latency_breach_aborts_after_failed_windows_with_the_cooldown():
    st = started()
    st, _ = run(st, good(latency=500.0), 0, 1)
    assert st.phase == Phase.ANALYSING and st.red_streak == 1  # one red window: a warning
    st, trans = run(st, good(latency=500.0), S, 1)
    assert st.phase == Phase.ABORTED
    (action,) = trans[0].actions
    assert isinstance(action, AbortCanary) and action.cooldown_s == 900.0
    assert "p95_latency_ms" in action.reason


def test_one_red_window_then_green_does_not_abort():
    st = started()
    st, _ = run(st, good(latency=500.0), 0, 1)
    st, _ = run(st, good(), S, 1)
    assert st.phase == Phase.ANALYSING and st.red_streak == 0


def test_error_rate_breach_is_red():
    st = started()
    obs = Observations(
        base_outcomes=100,
        candidate_outcomes=100,
        candidate_signals=100,
        candidate_errors=20,
        latencies_ms=(1.0,) * 100,
        winrate=WinRateEvidence(50, 100, 50, 100),
    )
    st, _ = run(st, obs, 0, 1)
    err = next(c for c in st.checks if c.name == "error_rate")
    assert err.status == Status.RED and err.value == pytest.approx(0.2)


def test_a_clearly_worse_canary_is_aborted_at_once_by_the_sequential_test():
    st = started()
    bad = Observations(
        base_outcomes=400,
        candidate_outcomes=400,
        candidate_signals=400,
        latencies_ms=(1.0,) * 400,
        winrate=WinRateEvidence(240, 400, 120, 400),
    )
    st, trans = run(st, bad, 0, 1)
    assert st.phase == Phase.ABORTED
    assert "winrate" in trans[0].actions[0].reason


def test_winrate_is_not_judged_at_100_percent_where_the_baseline_has_no_traffic():
    st = started()
    st, _ = run(st, good(), 0, 2)
    assert st.step == 1
    st, _ = run(st, good(), 2 * S, 1)
    assert "winrate" not in {c.name for c in st.checks}


def test_a_paused_canary_that_turns_red_is_still_aborted():
    st = pause(started(), 0, "looking at it").state
    st, _ = run(st, good(latency=900.0), 0, 2)
    assert st.phase == Phase.ABORTED


def test_operator_pause_resume_abort_and_refusals():
    st = started()
    with pytest.raises(ValueError, match="only a paused one"):
        resume(st, 0, "x")
    paused = pause(st, S, "hold").state
    assert paused.phase == Phase.PAUSED
    with pytest.raises(ValueError, match="only one analysing"):
        pause(paused, S, "again")
    back = resume(paused, 3 * S, "go").state
    assert back.phase == Phase.ANALYSING and back.step_started_ns == 3 * S
    t = abort(back, 4 * S, "operator: enough")
    assert t.state.phase == Phase.ABORTED and t.actions == (AbortCanary("operator: enough", None),)
    with pytest.raises(ValueError, match="already over"):
        abort(t.state, 5 * S, "again")


def test_breach_in_the_guard_window_rolls_back_and_after_it_nothing_is_judged():
    st = started()
    st, _ = run(st, good(), 0, 4)
    assert st.phase == Phase.PROMOTED
    promoted = st
    st, trans = run(promoted, good(latency=500.0), 4 * S, 2)
    assert st.phase == Phase.ROLLED_BACK
    assert isinstance(trans[0].actions[0], RollbackPromotion)
    late = decide(promoted, good(latency=500.0), promoted.guard_until_ns + S)
    assert late.changed and not late.actions  # recorded once: the promotion is final
    assert late.state.phase == Phase.PROMOTED and late.state.guard_done
    assert decide(late.state, good(latency=500.0), promoted.guard_until_ns + 2 * S).state == (
        late.state
    )
    assert time_to_decision_s(promoted, promoted.guard_until_ns + S) is None


def test_nothing_is_decided_before_the_window_closes():
    st = started()
    t = decide(st, good(latency=500.0), S // 2)
    assert t.state == st
    assert time_to_decision_s(st, S // 4) == pytest.approx(0.75)


def test_state_survives_a_json_round_trip():
    st, _ = run(started(), good(), 0, 1)
    assert RolloutState.from_json(st.to_json()) == st


def test_an_immediate_check_acts_before_the_window_closes_a_point_estimate_waits():
    drifted = Observations(**{**good().__dict__, "drift_verdict": "rollback"})
    p = plan(checks={"drift": True, "max_parity_failures": None})
    st = start(RolloutState("r1", "m-new", "m-old", p), 0).state
    t = decide(st, drifted, S // 10)  # a tenth of the window: drift is a test, it acts now
    assert t.state.phase == Phase.ABORTED and "drift" in t.state.reason
    slow = decide(st, good(latency=900.0), S // 10)  # latency waits for the window
    assert slow.state == st


def test_a_plan_that_does_not_promote_pauses_after_its_last_step():
    p = plan(
        steps=[{"fraction": 0.1, "min_duration_s": 0, "min_samples": 50}],
        promotion={"promote": False},
    )
    st = start(RolloutState("r1", "m-new", "m-old", p), 0).state
    st, trans = run(st, good(), 0, 2)
    assert st.phase == Phase.PAUSED and not trans[-1].actions
    assert "promotion left to operator" in trans[-1].summary
