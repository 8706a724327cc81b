"""What an operator does to a ramp: start, pause, resume, abort, status.

Each is one audited write of the ramp's state (compare-and-set on its revision, so it
cannot overwrite a decision the controller made meanwhile). The risk supervisor's
controller picks the change up at its next tick; an abort also takes the candidate out
of rollout right away, so it works with the supervisor down. Refusals raise
`RolloutRefusedError` with what to do instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from geodesic.control import ControlPlane, Rollout
from geodesic.rollout.controller import new_rollout
from geodesic.rollout.machine import (
    LIVE,
    Phase,
    RolloutState,
    Transition,
    abort,
    pause,
    resume,
    time_to_decision_s,
)
from geodesic.rollout.plan import RolloutPlan


class RolloutRefusedError(RuntimeError):
    """An operator request that cannot be done as asked; the message says what to do."""


@dataclass(frozen=True)
class Loaded:
    revision: int | None
    state: RolloutState | None


async def load(plane: ControlPlane) -> Loaded:
    got = await plane.rollout_state()
    if got is None:
        return Loaded(None, None)
    return Loaded(got[0], RolloutState.from_json(got[1]))


def _ongoing(state: RolloutState | None, now_ns: int) -> bool:
    return state is not None and (
        state.phase in LIVE or (state.phase == Phase.PROMOTED and now_ns < state.guard_until_ns)
    )


async def start_rollout(
    plane: ControlPlane, candidate: str, plan: RolloutPlan, *, actor: str, reason: str
) -> RolloutState:
    now = time.time_ns()
    current = await load(plane)
    if _ongoing(current.state, now):
        st = current.state
        assert st is not None
        raise RolloutRefusedError(
            f"rollout {st.rollout_id} of {st.candidate} is {st.label()}: "
            "`geodesic rollout abort` it (or wait for its guard window) before starting another"
        )
    snap = await plane.snapshot()
    if snap.cooldown_until_ns > now:
        raise RolloutRefusedError(
            "a rollback cooldown is active: review why it was rolled back, then "
            "`geodesic cooldown clear` and start again"
        )
    if snap.active == candidate:
        raise RolloutRefusedError(f"{candidate} is already active: nothing to roll out")
    if snap.active is None:
        raise RolloutRefusedError(
            "no active model to compare the candidate with: `geodesic promote` one first"
        )
    if snap.rollout.mode != "disabled":
        raise RolloutRefusedError(
            f"a manual rollout ({snap.rollout.mode} of {snap.rollout.candidate}) is on: "
            "`geodesic rollout disable` it first"
        )
    state = new_rollout(candidate, plan, now)
    ok = await plane.put_rollout_state(
        state.to_json(),
        expect_revision=current.revision,
        audit=(
            actor,
            f"rollout {state.rollout_id}: start {candidate} ({reason})",
            None,
            {"phase": state.phase.value, "steps": [s.fraction for s in plan.steps]},
        ),
    )
    if not ok:
        raise RolloutRefusedError("the rollout state changed while starting: run the command again")
    return state


async def _operate(plane: ControlPlane, op: str, *, actor: str, reason: str) -> Transition:
    now = time.time_ns()
    current = await load(plane)
    if current.state is None:
        raise RolloutRefusedError("no rollout was started: `geodesic rollout start <candidate>`")
    fn = {"pause": pause, "resume": resume, "abort": abort}[op]
    try:
        t = fn(current.state, now, f"{actor}: {reason}")
    except ValueError as exc:
        raise RolloutRefusedError(f"{exc} (see `geodesic rollout status`)") from None
    before = current.state
    ok = await plane.put_rollout_state(
        t.state.to_json(),
        expect_revision=current.revision,
        audit=(
            actor,
            f"rollout {before.rollout_id}: {t.summary}",
            {"phase": before.phase.value, "step": before.step + 1},
            {"phase": t.state.phase.value, "step": t.state.step + 1},
        ),
    )
    if not ok:
        raise RolloutRefusedError(
            "the controller changed the rollout meanwhile: run the command again"
        )
    if op == "abort":
        snap = await plane.snapshot()
        if snap.rollout.mode != "disabled" and snap.rollout.candidate == before.candidate:
            await plane.set_rollout(Rollout(), actor=actor, reason=f"rollout abort: {reason}")
    return t


async def pause_rollout(plane: ControlPlane, *, actor: str, reason: str) -> Transition:
    return await _operate(plane, "pause", actor=actor, reason=reason)


async def resume_rollout(plane: ControlPlane, *, actor: str, reason: str) -> Transition:
    return await _operate(plane, "resume", actor=actor, reason=reason)


async def abort_rollout(plane: ControlPlane, *, actor: str, reason: str) -> Transition:
    return await _operate(plane, "abort", actor=actor, reason=reason)


def status_doc(state: RolloutState, now_ns: int) -> dict[str, Any]:
    """What `geodesic rollout status` shows: the step, each check, the next decision."""
    plan = state.plan
    return {
        "rollout_id": state.rollout_id,
        "candidate": state.candidate,
        "baseline": state.baseline,
        "state": state.label(),
        "weight": state.fraction,
        "steps": [s.fraction for s in plan.steps],
        "time_in_step_s": max(0.0, (now_ns - state.step_started_ns) / 1e9),
        "green_streak": f"{state.green_streak}/{plan.green_windows}",
        "next_decision_s": time_to_decision_s(state, now_ns),
        "guard_left_s": max(0.0, (state.guard_until_ns - now_ns) / 1e9)
        if state.phase == Phase.PROMOTED
        else None,
        "reason": state.reason,
        "checks": [c.to_json() for c in state.checks],
    }
