"""The rollout controller against real Redis: reconciling the plane to the ramp's state,
changes made outside the ramp, a concurrent operator, a cooldown that began meanwhile."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry

from geodesic.control import ControlPlane, Rollout
from geodesic.rollout import RolloutPlan
from geodesic.rollout.controller import RolloutController, RolloutMetrics
from geodesic.rollout.machine import Phase, RolloutState
from geodesic.rollout.operator import pause_rollout, start_rollout

pytestmark = pytest.mark.integration


def controller(plane: ControlPlane) -> RolloutController:
    return RolloutController(plane, RolloutMetrics(CollectorRegistry()), actor="risk-supervisor")


async def tick(ctl: RolloutController, *, load: bool = True) -> bool:
    if load:
        await ctl.load()
    return await ctl.tick(
        time.time_ns(),
        await ctl.plane.snapshot(),
        decisions={},
        drift_samples=0,
        parity_total=0,
        shadow=None,
    )


async def state(plane: ControlPlane) -> RolloutState:
    got = await plane.rollout_state()
    assert got is not None
    return RolloutState.from_json(got[1])


@pytest.fixture
async def ramping(redis_client, redis_prefix) -> ControlPlane:
    """m-base active, m-cand ramping at step 1 (5%)."""
    plane = ControlPlane(redis_client, redis_prefix)
    await plane.promote("m-base", actor="test", reason="baseline")
    await start_rollout(plane, "m-cand", RolloutPlan(), actor="op", reason="ramp")
    assert await tick(controller(plane))
    assert (await plane.snapshot()).rollout.canary_fraction == 0.05
    return plane


async def test_a_plane_left_ahead_of_the_state_by_a_crash_is_set_back(ramping):
    plane = ramping
    # as if the controller died after widening the canary but before recording the step
    await plane.set_rollout(Rollout("canary", 0.10, 0, "m-cand"), actor="x", reason="crash")
    assert await tick(controller(plane))
    snap = await plane.snapshot()
    assert snap.rollout.canary_fraction == 0.05 and snap.rollout.candidate == "m-cand"
    st = await state(plane)
    assert (st.phase, st.step) == (Phase.ANALYSING, 0)


async def test_a_rollout_disabled_outside_the_ramp_ends_it_as_aborted_without_a_cooldown(ramping):
    plane = ramping
    await plane.set_rollout(Rollout(), actor="alice", reason="manual disable")
    await tick(controller(plane))
    st = await state(plane)
    assert st.phase == Phase.ABORTED and "outside the plan" in st.reason
    snap = await plane.snapshot()
    assert snap.cooldown_until_ns == 0 and snap.rollout.mode == "disabled"
    kinds = [e["kind"] for e in await plane.audit_log(50)]
    assert "ROLLBACK" not in kinds  # recorded, not acted upon


async def test_an_operator_pause_between_load_and_write_wins(ramping):
    plane = ramping
    ctl = controller(plane)
    await ctl.load()  # the controller read the state...
    await pause_rollout(plane, actor="alice", reason="hold")  # ...then the operator paused
    got = await plane.rollout_state()
    assert got is not None
    rev, doc = got
    doc["last_decision_ns"] = 0  # make the controller's stale copy want to write
    ctl.state = RolloutState.from_json({**doc, "phase": "ANALYSING"})
    ctl.revision = rev - 1
    await tick(ctl, load=False)
    st = await state(plane)
    assert st.phase == Phase.PAUSED and "hold" in st.reason


async def test_a_cooldown_that_began_before_the_first_step_ends_the_ramp_with_what_to_do(
    redis_client, redis_prefix
):
    plane = ControlPlane(redis_client, redis_prefix)
    await plane.promote("m-base", actor="test", reason="baseline")
    await start_rollout(plane, "m-cand", RolloutPlan(), actor="op", reason="ramp")
    await plane.rollback(actor="risk-supervisor", reason="drift", cooldown_s=600)
    await tick(controller(plane))
    st = await state(plane)
    assert st.phase == Phase.ABORTED and "geodesic cooldown clear" in st.reason
    assert (await plane.snapshot()).rollout.mode == "disabled"
