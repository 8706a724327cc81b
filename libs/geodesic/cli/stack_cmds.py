"""`geodesic up` / `geodesic down`: the embedded stack and the five services, detached."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import redis.asyncio as aioredis

from geodesic.control import ControlPlane
from geodesic.lifecycle.registry import demo_promotion_reason
from geodesic.stack import EmbeddedStack, find_running_stacks, stop_from_state
from geodesic.stack.bootstrap import ensure_model
from geodesic.stack.embedded import default_run_root
from geodesic.stack.fleet import Fleet, stop_fleet_from_state


def register(sub: argparse._SubParsersAction) -> None:
    up = sub.add_parser("up", help="start broker, Redis and the five services in the background")
    up.add_argument("--registry", type=Path, default=Path("models/registry"))
    up.add_argument("--bar-seconds", type=int, default=1, help="feature bar size")
    up.add_argument("--timeout", type=float, default=90.0)
    up.set_defaults(func=_up)
    down = sub.add_parser("down", help="stop everything `geodesic up` started")
    down.add_argument("--run-root", type=Path, default=None)
    down.set_defaults(func=_down)


async def _ensure_active(redis_url: str, model_id: str, reason: str) -> str:
    client = aioredis.from_url(redis_url)
    try:
        plane = ControlPlane(client)
        snap = await plane.snapshot()
        if snap.active:
            return snap.active
        await plane.promote(model_id, actor="geodesic-up", reason=reason)
        return model_id
    finally:
        await client.aclose()


def _up(args: argparse.Namespace) -> int:
    registry = args.registry.resolve()
    print(f"[1/4] model registry {registry}", file=sys.stderr)
    model_id = ensure_model(registry)
    print("[2/4] starting broker and Redis", file=sys.stderr)
    stack = EmbeddedStack(detach=True)
    info = stack.start()
    try:
        reason = demo_promotion_reason(registry / model_id, "no active model: bootstrap")
        active = asyncio.run(_ensure_active(info.redis_url, model_id, reason))
        print(f"[3/4] active model {active}; starting services", file=sys.stderr)
        env = {
            **info.env(),
            "GEODESIC_MODEL_REGISTRY": str(registry),
            "GEODESIC_FEATURE_BAR_SECONDS": str(args.bar_seconds),
        }
        fleet = Fleet(stack.run_dir, env, detach=True)
        fleet.start_all()
        fleet.wait_healthy(args.timeout)
    except BaseException:
        stop_fleet_from_state(stack.run_dir)
        stack.stop()
        raise
    print("[4/4] ready", file=sys.stderr)
    summary = {
        "bootstrap": info.bootstrap,
        "redis_url": info.redis_url,
        "run_dir": str(stack.run_dir),
        "active_model": active,
        "services": {n: d["http_port"] for n, d in fleet.describe().items()},
        "pids": {**{n: d["pid"] for n, d in fleet.describe().items()}, **dict(info.pids)},
    }
    print(json.dumps(summary), flush=True)
    return 0


def _down(args: argparse.Namespace) -> int:
    root = args.run_root or Path(os.environ.get("GEODESIC_RUN_DIR") or default_run_root())
    states = find_running_stacks(root)
    if not states:
        print("nothing running")
        return 0
    for state in states:
        services = stop_fleet_from_state(state.parent)
        servers = stop_from_state(state)
        print(f"stopped {state.parent.name}: {', '.join(services + servers) or 'nothing'}")
    return 0
