"""A risk supervisor killed with SIGKILL mid-step resumes the ramp at the same step.

The five services run as processes against a private embedded stack (as in
test_faults_processes.py); the kill gives the supervisor no chance to write anything.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis.asyncio as aioredis
from fault_support import fleet_env_vars
from test_guards_on_stack import fit, wait_until
from test_rollout_on_stack import feed, market, plan, ramp_audit, ramp_state

from geodesic.contracts.services import RISK_SUPERVISOR
from geodesic.control import ControlPlane
from geodesic.rollout.machine import Phase
from geodesic.rollout.operator import start_rollout
from geodesic.stack import EmbeddedStack
from geodesic.stack.fleet import Fleet

pytestmark = pytest.mark.integration
RISK = RISK_SUPERVISOR.name


async def test_supervisor_kill_9_mid_step_resumes_the_same_step_then_promotes(tmp_path, run_root):
    parts = market(900)
    registry = tmp_path / "registry"
    fit(registry, "m-base", parts)
    fit(registry, "m-cand", parts)
    stack = EmbeddedStack(run_root=run_root, use_env=False)
    info = stack.start()
    client = aioredis.from_url(info.redis_url)
    plane = ControlPlane(client)
    prefix = RISK_SUPERVISOR.env_prefix
    guard_env = {  # the supervisor's own fixed-level guards out of the way
        f"{prefix}ROLLOUT_GUARD__MIN_SAMPLES": "10000",
        f"{prefix}ROLLOUT_GUARD__PRECISION_MIN_SAMPLES": "10000",
        f"{prefix}ROLLOUT_GUARD__DRIFT_MIN_WINDOW": "10000",
        f"{prefix}ROLLOUT_GUARD__EVAL_INTERVAL_S": "0.2",
    }
    fleet = Fleet(stack.run_dir, {**info.env(), **fleet_env_vars(registry, **guard_env)})
    feeder: asyncio.Task | None = None
    try:
        await plane.promote("m-base", actor="test", reason="baseline")
        fleet.start_all()
        await asyncio.to_thread(fleet.wait_healthy, 90)
        p = plan(
            (0.25, 0.5, 1.0),
            steps=[
                {"fraction": 0.25, "min_duration_s": 1, "min_samples": 20},
                {"fraction": 0.5, "min_duration_s": 20, "min_samples": 20},
                {"fraction": 1.0, "min_duration_s": 1, "min_samples": 20},
            ],
        )
        await start_rollout(plane, "m-cand", p, actor="operator", reason="kill -9 test")
        feeder = asyncio.create_task(feed(stack.kafka_settings, "md.ticks.raw", parts))

        async def in_step_2() -> bool:
            st = await ramp_state(plane)
            return st is not None and st.phase == Phase.ANALYSING and st.step == 1

        await wait_until(in_step_2, 120, "step 2")
        before = await ramp_state(plane)
        assert before is not None
        fleet.kill(RISK)  # SIGKILL mid-step
        await asyncio.sleep(1.0)
        port = fleet.services[RISK].http_port
        fleet.start(RISK, port)
        await asyncio.to_thread(fleet.wait_healthy, 60, (RISK,))
        resumed = await ramp_state(plane)
        assert resumed is not None
        assert (resumed.rollout_id, resumed.phase, resumed.step) == (
            before.rollout_id,
            Phase.ANALYSING,
            1,
        )
        assert resumed.step_started_ns == before.step_started_ns  # the same step, not a restart

        async def promoted() -> bool:
            st = await ramp_state(plane)
            return st is not None and st.phase in (Phase.PROMOTED, Phase.ABORTED)

        await wait_until(promoted, 120, "promotion after the restart")
        final = await ramp_state(plane)
        assert final is not None and final.phase == Phase.PROMOTED, final.reason
        steps = [r for r in ramp_audit(await plane.audit_log(500)) if "STEP" in r]
        assert sum("STEP 2/3" in r for r in steps) == 1  # step 2 was entered once
        assert (await plane.snapshot()).active == "m-cand"
    finally:
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
        await client.aclose()
        fleet.stop_all()
        stack.stop()
