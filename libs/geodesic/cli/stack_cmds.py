"""`geodesic up | down | restart`: the embedded stack and the five services, detached.

One stack per state directory (geodesic.stack.home): `up` with a stack already running
there reuses it (restarting any service that is down) instead of starting a second broker
and Redis that producers would not know about. Reuse rather than refuse, because the
embedded broker keeps its data in memory: making an operator `down` first would throw the
topics away. Options that would change the running stack (another --registry or
--bar-seconds) are refused with what to do instead.

Exit codes: 0 done, 1 refused (message on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from geodesic.contracts.model_registry import DEFAULT_MODEL_REGISTRY, ENV_MODEL_REGISTRY

DEFAULT_BAR_SECONDS = 1


def _run_root_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run-root",
        type=Path,
        default=None,
        help="state directory (default $GEODESIC_RUN_DIR, else $XDG_STATE_HOME/geodesic, "
        "i.e. ~/.local/state/geodesic)",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from geodesic.contracts.services import SERVICES

    up = sub.add_parser(
        "up",
        help="start broker, Redis and the five services in the background "
        "(or reuse the running stack and restart what is down)",
    )
    up.add_argument(
        "--registry",
        type=Path,
        default=None,
        help=f"model registry for a new stack (default {DEFAULT_MODEL_REGISTRY}; a model is "
        "trained into it if empty)",
    )
    up.add_argument(
        "--bar-seconds",
        type=int,
        default=None,
        help=f"feature bar size in seconds for a new stack (default {DEFAULT_BAR_SECONDS})",
    )
    up.add_argument(
        "--timeout", type=float, default=90.0, help="seconds to wait for services to be ready"
    )
    _run_root_arg(up)
    up.add_argument(
        "--broker",
        choices=("kafka", "tansu"),
        default=None,
        help="embedded broker for a new stack (default: $GEODESIC_EMBEDDED_BROKER, else "
        "Apache Kafka when Java 17 and `make install`'s jars are present, else Tansu)",
    )
    up.set_defaults(func=_up)
    down = sub.add_parser("down", help="stop everything `geodesic up` started")
    _run_root_arg(down)
    down.set_defaults(func=_down)
    restart = sub.add_parser(
        "restart",
        help="restart one service of the running stack with the environment it was started with",
    )
    restart.add_argument("service", choices=tuple(SERVICES), help="the service to restart")
    restart.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for it to be ready"
    )
    _run_root_arg(restart)
    restart.set_defaults(func=_restart)


def _root(args: argparse.Namespace) -> Path:
    from geodesic.stack.home import default_run_root

    return (args.run_root or default_run_root()).expanduser().resolve()


def _err(message: str) -> None:
    print(f"geodesic: {message}", file=sys.stderr)


async def _ensure_active(redis_url: str, model_id: str, reason: str) -> str:
    import redis.asyncio as aioredis

    from geodesic.control import ControlPlane

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


def _summary(state_file: Path, fleet: Any, active: str | None) -> dict[str, Any]:
    from geodesic.stack.home import read_state

    state = read_state(state_file)
    described = fleet.describe()
    return {
        "bootstrap": state["bootstrap"],
        "redis_url": state["redis_url"],
        "run_dir": state["run_dir"],
        "active_model": active,
        "services": {n: d["http_port"] for n, d in described.items()},
        "pids": {
            **{n: d["pid"] for n, d in described.items()},
            **{n: int(e["pid"]) for n, e in state.get("processes", {}).items()},
        },
    }


def _env_bar_seconds() -> str:
    """The feature service's bar-size variable (imported late: the CLI starts fast)."""
    from geodesic.contracts.services import FEATURE

    return f"{FEATURE.env_prefix}BAR_SECONDS"


def _up(args: argparse.Namespace) -> int:
    from geodesic.stack.home import running_up_stacks, up_lock

    root = _root(args)

    def waiting() -> None:
        print(f"another `geodesic up` holds {root}; waiting for it", file=sys.stderr)

    with up_lock(root, on_wait=waiting):
        running = running_up_stacks(root)
        if running:
            return _reuse(args, running)
        return _start(args, root)


def _reuse(args: argparse.Namespace, running: list[Path]) -> int:
    """Reuse the running stack: refuse option changes, restart services that are down."""
    from geodesic.stack.fleet import Fleet
    from geodesic.stack.home import operator_redis_url, read_state
    from geodesic.stack.processes import ServerProcess

    state_file = running[0]
    for other in running[1:]:
        _err(f"warning: another stack also runs in {other.parent} (stop it with `down`)")
    run_dir = state_file.parent
    dead = [
        name
        for name, entry in read_state(state_file).get("processes", {}).items()
        if not ServerProcess.from_json(name, entry).alive()
    ]
    if dead:
        _err(
            f"the stack in {run_dir} is half down ({', '.join(dead)} not running) and the "
            "embedded broker cannot be restarted in place: `geodesic down`, then `geodesic up`"
        )
        return 1
    try:
        fleet = Fleet.from_state(run_dir)
    except (OSError, ValueError, RuntimeError) as exc:
        _err(f"cannot reuse the stack in {run_dir}: {exc}")
        return 1
    wanted = {
        ENV_MODEL_REGISTRY: None if args.registry is None else str(args.registry.resolve()),
        _env_bar_seconds(): None if args.bar_seconds is None else str(args.bar_seconds),
    }
    running_broker = read_state(state_file).get("broker")
    if args.broker is not None and args.broker != running_broker:
        _err(
            f"a stack already runs in {run_dir} on the {running_broker} broker, not "
            f"{args.broker}: reuse it as is (drop --broker), or `geodesic down` first"
        )
        return 1
    for var, value in wanted.items():
        if value is not None and fleet.env.get(var) != value:
            _err(
                f"a stack already runs in {run_dir} with {var}={fleet.env.get(var)}, not "
                f"{value}: reuse it as is (drop the option), or `geodesic down` first"
            )
            return 1
    down = fleet.down()
    print(f"[1/2] reusing the running stack in {run_dir}", file=sys.stderr)
    for name in down:
        print(f"      {name} is down: restarting it", file=sys.stderr)
        fleet.restart(name, args.timeout)
    print(
        f"[2/2] ready ({'restarted ' + ', '.join(down) if down else 'nothing was down'})",
        file=sys.stderr,
    )
    active = asyncio.run(_active(operator_redis_url(read_state(state_file))))
    print(json.dumps(_summary(state_file, fleet, active)), flush=True)
    return 0


async def _active(redis_url: str) -> str | None:
    import redis.asyncio as aioredis

    from geodesic.control import ControlPlane

    client = aioredis.from_url(redis_url)
    try:
        return (await ControlPlane(client).snapshot()).active
    finally:
        await client.aclose()


def _start(args: argparse.Namespace, root: Path) -> int:
    from geodesic.lifecycle.bootstrap import ensure_model
    from geodesic.lifecycle.registry import demo_promotion_reason
    from geodesic.stack import ENV_REDIS_URL, EmbeddedStack
    from geodesic.stack.fleet import Fleet, stop_fleet_from_state
    from geodesic.stack.kafka_broker import KafkaUnavailableError
    from geodesic.stack.redis_acl import OPERATOR, SERVICE_USERS

    registry = (args.registry or DEFAULT_MODEL_REGISTRY).resolve()
    bar_seconds = args.bar_seconds or DEFAULT_BAR_SECONDS
    print(f"[1/4] model registry {registry}", file=sys.stderr)
    model_id = ensure_model(registry)
    print(f"[2/4] starting broker and Redis (state in {root})", file=sys.stderr)
    try:
        stack = EmbeddedStack(run_root=root, detach=True, broker=args.broker, acl=True)
    except KafkaUnavailableError as exc:
        _err(f"geodesic up: {exc}")
        return 2
    info = stack.start()
    try:
        operator_url = info.redis_users.get(OPERATOR, info.redis_url)
        # a gate-failing bootstrap model is promoted as a DEMO model, its failures audited
        reason = demo_promotion_reason(registry / model_id, "no active model: bootstrap")
        active = asyncio.run(_ensure_active(operator_url, model_id, reason))
        if active == model_id and "DEMO model" in reason:
            print(f"      {reason}", file=sys.stderr)
        print(f"[3/4] active model {active}; starting services", file=sys.stderr)
        env = {
            **info.env(),
            ENV_MODEL_REGISTRY: str(registry),
            _env_bar_seconds(): str(bar_seconds),
        }
        # each service as its own Redis user (production's ACL), never the operator
        per_service = {
            name: {ENV_REDIS_URL: info.redis_users[user]}
            for name, user in SERVICE_USERS.items()
            if user in info.redis_users
        }
        fleet = Fleet(stack.run_dir, env, detach=True, extra_env=per_service)
        fleet.start_all()
        fleet.wait_healthy(args.timeout)
    except BaseException:
        stop_fleet_from_state(stack.run_dir)
        stack.stop()
        raise
    print("[4/4] ready", file=sys.stderr)
    print(json.dumps(_summary(stack.state_file, fleet, active)), flush=True)
    return 0


def _down(args: argparse.Namespace) -> int:
    from geodesic.stack import find_running_stacks, stop_from_state
    from geodesic.stack.fleet import stop_fleet_from_state

    states = find_running_stacks(_root(args))
    if not states:
        print("nothing running")
        return 0
    for state in states:
        services = stop_fleet_from_state(state.parent)
        servers = stop_from_state(state)
        print(f"stopped {state.parent.name}: {', '.join(services + servers) or 'nothing'}")
    return 0


def _restart(args: argparse.Namespace) -> int:
    from geodesic.stack.fleet import Fleet
    from geodesic.stack.home import running_up_stacks

    root = _root(args)
    running = running_up_stacks(root)
    if not running:
        _err(f"no running stack in {root}: start one with `geodesic up`")
        return 1
    try:
        fleet = Fleet.from_state(running[0].parent)
        svc = fleet.restart(args.service, args.timeout)
    except (OSError, ValueError, RuntimeError, TimeoutError) as exc:
        _err(f"restart {args.service} failed: {exc}")
        return 1
    print(f"restarted {args.service}: pid {svc.proc.pid}, http {svc.url}, log {svc.proc.log_path}")
    return 0
