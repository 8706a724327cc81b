"""ControlWatcher fails closed: a snapshot older than the staleness budget is no snapshot.

Real Redis (the session's) and an injected clock: the staleness rule is checked exactly,
without sleeping, against the reads a scorer really makes.
"""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from geodesic.control import ControlPlane, ControlWatcher
from geodesic.stack.processes import free_port

pytestmark = pytest.mark.integration


async def test_a_snapshot_older_than_the_budget_is_withheld_until_a_read_succeeds(
    redis_client, redis_prefix
):
    now = [100.0]
    watcher = ControlWatcher(redis_client, redis_prefix, staleness_s=2.0, clock=lambda: now[0])
    assert watcher.current() is None  # never read: fail closed
    await watcher.refresh()
    assert watcher.current() is not None
    now[0] += 2.0
    assert watcher.current() is not None  # at the budget: still fresh
    now[0] += 0.001
    assert watcher.current() is None  # past it: fail closed, although a snapshot is held
    assert watcher.last_snapshot is not None
    await watcher.ensure_fresh()  # one successful version read renews it
    assert watcher.current() is not None


async def test_a_flip_is_seen_at_the_next_batch_boundary_without_pubsub(redis_client, redis_prefix):
    watcher = ControlWatcher(redis_client, redis_prefix, staleness_s=2.0)
    await watcher.refresh()
    before = watcher.current()
    assert before is not None and not before.kill_global
    await ControlPlane(redis_client, redis_prefix).set_kill_switch(
        True, actor="test", reason="watcher test"
    )
    snap = await watcher.ensure_fresh()
    assert snap is not None and snap.kill_global and snap.version > before.version


async def test_an_unreachable_redis_leaves_the_watcher_failing_closed(redis_client, redis_prefix):
    now = [0.0]
    watcher = ControlWatcher(redis_client, redis_prefix, staleness_s=1.0, clock=lambda: now[0])
    await watcher.refresh()
    dead = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    watcher.plane = ControlPlane(dead, redis_prefix)  # the server went away
    now[0] += 5.0
    assert await watcher.refresh() is None and watcher.errors == 1
    assert await watcher.ensure_fresh() is None and watcher.errors == 2
    assert watcher.current() is None and watcher.age_s == 5.0
    await dead.aclose()
