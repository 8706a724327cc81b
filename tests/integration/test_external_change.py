"""Flags changed outside the audited path are found and recorded once (real Redis)."""

from __future__ import annotations

import asyncio

import pytest

from geodesic.control import ControlPlane
from geodesic.control.keys import Keys

pytestmark = pytest.mark.integration


async def test_a_raw_set_is_recorded_once_as_external_change_and_audited_changes_are_not(
    redis_client, redis_prefix
):
    plane = ControlPlane(redis_client, redis_prefix)
    keys = Keys(redis_prefix)
    assert await plane.detect_external(actor="t") is None  # nothing audited yet
    await plane.promote("m1", actor="ops", reason="base")
    await plane.set_kill_switch(True, actor="ops", reason="audited", symbol="ES")
    assert await plane.detect_external(actor="t") is None  # audited changes only

    version = (await plane.snapshot()).version
    await redis_client.set(keys.kill_global, "1")  # redis-cli SET, no audit, no version
    await redis_client.sadd(keys.kill_symbols, "NQ")
    entries = await asyncio.gather(*(plane.detect_external(actor=f"d{i}") for i in range(4)))
    recorded = [e for e in entries if e is not None]
    assert len(recorded) == 1  # concurrent detectors: recorded once
    audit = await plane.audit_log(10)
    assert [e["kind"] for e in audit] == ["PROMOTE", "KILL_SWITCH", "EXTERNAL_CHANGE"]
    last = audit[-1]
    assert "kill_global" in last["reason"] and "kill_symbols" in last["reason"]
    assert '"kill_global": true' in last["to"] and '"kill_global": false' in last["from"]
    assert (await plane.snapshot()).version == version + 1
    assert await plane.detect_external(actor="t") is None  # recorded: now the reference

    await plane.set_kill_switch(False, actor="ops", reason="clear")  # audited again
    assert await plane.detect_external(actor="t") is None
    await redis_client.hset(keys.rollout, mapping={"mode": "full", "candidate": "evil"})
    entry = await plane.detect_external(actor="t")
    assert entry is not None and "rollout" in entry["reason"]
