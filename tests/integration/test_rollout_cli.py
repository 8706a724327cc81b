"""`geodesic rollout start|pause|resume|abort|status` against real Redis, with the real
controller taking the ramp from PENDING (as the risk supervisor would)."""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client import CollectorRegistry
from test_operator_cli import cli, plane, registry  # noqa: F401  (fixtures)

from geodesic.control import ControlPlane
from geodesic.rollout.controller import RolloutController, RolloutMetrics

pytestmark = pytest.mark.integration


async def controller_tick(plane: ControlPlane) -> None:  # noqa: F811
    """One evaluation of the risk supervisor's controller (no traffic: checks inconclusive)."""
    ctl = RolloutController(plane, RolloutMetrics(CollectorRegistry()), actor="risk-supervisor")
    await ctl.load()
    await ctl.tick(
        time.time_ns(),
        await plane.snapshot(),
        decisions={},
        drift_samples=0,
        parity_total=0,
        shadow=None,
    )


async def test_start_pause_resume_abort_status_are_audited_and_manual_rollout_still_works(
    cli,  # noqa: F811
    plane,  # noqa: F811
    registry,  # noqa: F811
):
    reg = ("--registry", str(registry))
    rc, _, err = await cli("rollout", "start", "m2", "--reason", "r", *reg)
    assert rc == 1 and "no active model" in err and "geodesic promote" in err
    await plane.promote("m1", actor="test", reason="baseline")
    rc, out, _ = await cli("rollout", "status")
    assert rc == 0 and "no automatic rollout" in out
    rc, out, err = await cli("rollout", "start", "m2", "--reason", "ramp m2", *reg)
    assert rc == 0, err
    assert "PENDING" in out and "5% -> 10% -> 25% -> 50% -> 100%" in out
    rc, _, err = await cli("rollout", "start", "m3", "--reason", "another", *reg)
    assert rc == 1 and "rollout abort" in err  # says what to do instead
    rc, _, err = await cli("rollout", "pause", "--reason", "hold")
    assert rc == 1 and "only one analysing" in err

    await controller_tick(plane)  # PENDING -> step 1 at 5%
    snap = await plane.snapshot()
    assert (snap.rollout.mode, snap.rollout.candidate, snap.rollout.canary_fraction) == (
        "canary",
        "m2",
        0.05,
    )
    # history replays the ramp: the canary at 5% and the ramp step that served
    rc, out, err = await cli("history", "--symbol", "ES", "--at", "now", "--json")
    assert rc == 0, err
    answer = json.loads(out)
    assert answer["rollout"]["mode"] == "canary" and answer["rollout"]["canary_fraction"] == 0.05
    assert (answer["ramp"]["phase"], answer["ramp"]["step"]) == ("ANALYSING", 1)
    rc, out, _ = await cli("rollout", "pause", "--reason", "look at latency")
    assert rc == 0 and "PAUSED" in out
    rc, out, _ = await cli("rollout", "status")
    assert "STEP 1/5 PAUSED at 5%" in out and "look at latency" in out
    rc, out, _ = await cli("rollout", "resume", "--reason", "fine")
    assert rc == 0 and "STEP 1/5 ANALYSING" in out

    # a judged window: the status shows every check with value, threshold and samples
    got = await plane.rollout_state()
    assert got is not None
    rev, doc = got
    doc["last_decision_ns"] = 0  # the window is over: the next tick judges it
    assert await plane.put_rollout_state(doc, expect_revision=rev)
    await controller_tick(plane)
    rc, out, _ = await cli("rollout", "status")
    assert rc == 0
    for check in ("p95_latency_ms", "error_rate", "parity_failures", "drift", "winrate"):
        assert check in out
    assert "inconclusive" in out and "0/100" in out and "next decision in" in out
    rc, out, _ = await cli("rollout", "status", "--json")
    status = json.loads(out)
    assert status["state"] == "STEP 1/5 ANALYSING" and status["weight"] == 0.05
    latency = next(c for c in status["checks"] if c["name"] == "p95_latency_ms")
    assert latency["threshold"] == 50.0 and latency["samples"] == 0 and latency["needed"] == 100

    rc, out, _ = await cli("status", "--json")
    assert json.loads(out)["ramp"]["state"] == "STEP 1/5 ANALYSING"
    rc, out, _ = await cli("rollout", "abort", "--reason", "enough", "--actor", "alice")
    assert rc == 0 and "ABORTED" in out
    snap = await plane.snapshot()
    assert snap.rollout.mode == "disabled" and snap.cooldown_until_ns == 0  # operator: no cooldown
    rc, _, err = await cli("rollout", "abort", "--reason", "again")
    assert rc == 1 and "already over" in err

    audit = await plane.audit_log(200)
    ramp = [(e["actor"], e["reason"]) for e in audit if e["kind"] == "ROLLOUT"]
    assert any(a == "alice" and "ABORTED" in r for a, r in ramp)
    assert any("PAUSED" in r and "look at latency" in r for _, r in ramp)
    assert any(a == "risk-supervisor" and "STEP 1/5 ANALYSING" in r for a, r in ramp)

    # the manual route is untouched
    rc, _, err = await cli(
        "rollout", "canary", "--candidate", "m3", "--fraction", "0.2", "--reason", "manual", *reg
    )
    assert rc == 0, err
    assert (await plane.snapshot()).rollout.candidate == "m3"


async def test_start_refuses_a_bad_plan_naming_the_field_a_tampered_model_and_the_cooldown(
    cli,  # noqa: F811
    plane,  # noqa: F811
    registry,  # noqa: F811
    tmp_path,
):
    reg = ("--registry", str(registry))
    await plane.promote("m1", actor="test", reason="baseline")
    bad = tmp_path / "plan.yaml"
    bad.write_text("steps:\n  - {fraction: 0.5}\n  - {fraction: 0.2}\n  - {fraction: 1.0}\n")
    rc, _, err = await cli("rollout", "start", "m2", "--plan", str(bad), "--reason", "x", *reg)
    assert rc == 2 and "steps" in err and "strictly increase" in err
    bad.write_text("analysis_window_s: -1\n")
    rc, _, err = await cli("rollout", "start", "m2", "--plan", str(bad), "--reason", "x", *reg)
    assert rc == 2 and "analysis_window_s" in err
    rc, _, err = await cli("rollout", "start", "tampered", "--reason", "x", *reg)
    assert rc == 1 and "REFUSED" in err
    await plane.rollback(actor="test", reason="r", cooldown_s=600)
    rc, _, err = await cli("rollout", "start", "m2", "--reason", "x", *reg)
    assert rc == 1 and "geodesic cooldown clear" in err
    good = tmp_path / "good.yaml"
    good.write_text("steps:\n  - {fraction: 0.2}\n  - {fraction: 1.0}\n")
    await plane.clear_cooldown(actor="test", reason="reviewed")
    rc, out, err = await cli("rollout", "start", "m2", "--plan", str(good), "--reason", "x", *reg)
    assert rc == 0 and "20% -> 100%" in out, err
