"""The emergency commands run lean: they set the flag without importing the heavy stack.

`geodesic kill-switch | halt | resume | rollback` must answer well under a second from
Enter, even on a loaded machine; the measurable cause of a slow start is what a command
imports. This test runs the real CLI in a fresh interpreter against the session Redis,
checks the change landed, and that none of the heavy packages was imported on the way
(bench/killswitch_latency.py reports the wall-clock figures).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from geodesic.control import ControlPlane, Rollout, TradingState

pytestmark = pytest.mark.integration

HEAVY = (
    "numpy",
    "numba",
    "hnswlib",
    "matplotlib",
    "scipy",
    "pydantic",
    "rich",
    "aiokafka",
    "lorentzcore.",  # the numerics; the package itself and model_id (imports re) are light
    "geodesic.contracts.models",
    "geodesic.features",
    "geodesic.lifecycle",
    "geodesic.risk",
    "geodesic.runtime",
)
PROBE = (
    "import json, sys\n"
    "from geodesic.cli.main import main\n"
    "rc = main(sys.argv[1:])\n"
    "print(json.dumps({'rc': rc, 'modules': sorted(sys.modules)}))\n"
)


def _run(redis_url: str, prefix: str, *args: str) -> tuple[int, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEODESIC_")}
    env["GEODESIC_REDIS_URL"] = redis_url
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args, "--reason", "emergency", "--prefix", prefix],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    light = {"lorentzcore.model_id"}
    return doc["rc"], [m for m in doc["modules"] if m.startswith(HEAVY) and m not in light]


async def test_emergency_commands_set_the_flag_without_heavy_imports(
    redis_url, redis_prefix, redis_client
):
    plane = ControlPlane(redis_client, redis_prefix)
    await plane.promote("m1", actor="t", reason="base")
    await plane.set_rollout(Rollout("canary", 0.2, 1, "m2"), actor="t", reason="canary")

    assert _run(redis_url, redis_prefix, "kill-switch", "on") == (0, [])
    assert (await plane.snapshot()).kill_global
    assert _run(redis_url, redis_prefix, "halt", "--symbol", "ES") == (0, [])
    assert (await plane.snapshot()).symbol_states["ES"] is TradingState.HALTED
    assert _run(redis_url, redis_prefix, "resume", "--symbol", "ES") == (0, [])
    assert (await plane.snapshot()).symbol_states["ES"] is TradingState.ACTIVE
    assert _run(redis_url, redis_prefix, "rollback") == (0, [])  # the canary in flight
    snap = await plane.snapshot()
    assert snap.rollout.mode == "disabled" and snap.active == "m1" and snap.kill_global
