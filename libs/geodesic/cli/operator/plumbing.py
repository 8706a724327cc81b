"""Connection plumbing of the operator commands: which Redis, one client per command,
exit codes and secret-free error messages. Handlers are imported only when their
command runs, so `geodesic kill-switch` never pays for what `status` or `gates` need."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geodesic.cli.operator.args import DEFAULT_REDIS_URL, ENV_PREFIX, ENV_REDIS_URL, ENV_REGISTRY
from geodesic.contracts.model_registry import DEFAULT_MODEL_REGISTRY
from geodesic.operations.common import format_ns, mask_url, scrub

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from geodesic.risk.guards import RolloutGuardConfig


class RefusalError(Exception):
    """A policy refusal (exit 1); the message says why and how to override, if allowed."""


class UsageError(Exception):
    """Bad input found after parsing (exit 2)."""


# ---- plumbing --------------------------------------------------------------------------
def _up_stack() -> dict[str, Any] | None:
    """The running `geodesic up` stack of the state directory (a convenience: None on any
    problem, then the documented defaults apply)."""
    try:
        from geodesic.stack.home import up_stack_fleet

        return up_stack_fleet()
    except Exception:
        return None


def resolve_url(args: argparse.Namespace) -> str:
    """--redis-url, else $GEODESIC_REDIS_URL, else the running `geodesic up` stack's."""
    if args.redis_url:
        return str(args.redis_url)
    env = os.environ.get(ENV_REDIS_URL)
    if env:
        return env
    stack = _up_stack()
    if stack and stack.get("redis_url"):
        from geodesic.stack.home import operator_redis_url

        with contextlib.suppress(OSError):  # unreadable password file: plain URL, NOAUTH
            return operator_redis_url(stack)
        return str(stack["redis_url"])
    return DEFAULT_REDIS_URL


def prefix_of(args: argparse.Namespace) -> str:
    return args.prefix or os.environ.get(ENV_PREFIX) or "geodesic"


def actor_of(args: argparse.Namespace) -> str:
    return args.actor or os.environ.get("USER") or "operator"


def registry_of(args: argparse.Namespace) -> Path:
    """--registry, else $GEODESIC_MODEL_REGISTRY, else the running up-stack's registry
    (so a rollback from any directory checks the models the scorer loads), else
    models/registry."""
    if args.registry:
        return Path(args.registry)
    env = os.environ.get(ENV_REGISTRY)
    if env:
        return Path(env)
    stack = _up_stack()
    recorded = ((stack or {}).get("fleet") or {}).get("env", {}).get(ENV_REGISTRY)
    return Path(recorded) if recorded else DEFAULT_MODEL_REGISTRY


def guard_cfg(args: argparse.Namespace) -> RolloutGuardConfig:
    from geodesic.risk.guards import RolloutGuardConfig

    path = getattr(args, "guard_config", None)
    if path is None:
        return RolloutGuardConfig()
    try:
        return RolloutGuardConfig.model_validate(json.loads(Path(path).read_text()))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--guard-config {path}: {exc}") from None


def err(args: argparse.Namespace, message: str) -> None:
    print(f"geodesic {args.command}: {message}", file=sys.stderr)


Command = Callable[[argparse.Namespace, "Ctx"], Awaitable[int]]


class Ctx:
    """One command's connection: the client, its plane, and the masked URL for messages."""

    def __init__(self, client: aioredis.Redis, prefix: str, url: str) -> None:
        from geodesic.control import ControlPlane

        self.client = client
        self.plane = ControlPlane(client, prefix)
        self.prefix = prefix
        self.url = url
        self.masked_url = mask_url(url)

    async def read_json(self, service: str, name: str) -> dict[str, Any] | None:
        raw = await self.client.get(self.plane.keys.service_state(service, name))
        if not raw:
            return None
        try:
            doc = json.loads(raw)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None


@contextlib.asynccontextmanager
async def connect(url: str, prefix: str) -> AsyncIterator[Ctx]:
    import redis.asyncio as aioredis

    try:
        client = aioredis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
    except ValueError as exc:
        raise UsageError(f"invalid Redis URL {mask_url(url)}: {scrub(str(exc), url)}") from None
    try:
        await client.ping()
        yield Ctx(client, prefix, url)
    finally:
        await client.aclose()


def runner(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """The command ``geodesic.cli.operator.<module>.<name>`` (imported only when it runs):
    connection, exit codes, and secret-free error messages."""

    def run(args: argparse.Namespace) -> int:
        from redis.exceptions import RedisError

        from geodesic.control.plane import CooldownActiveError

        command: Command = getattr(importlib.import_module(f"geodesic.cli.operator.{module}"), name)
        url = resolve_url(args)

        async def go() -> int:
            async with connect(url, prefix_of(args)) as ctx:
                return await command(args, ctx)

        try:
            return asyncio.run(go())
        except (RefusalError, CooldownActiveError) as exc:
            err(args, f"REFUSED: {exc}")
            return 1
        except UsageError as exc:
            err(args, scrub(str(exc), url))
            return 2
        except RedisError as exc:
            detail = scrub(f"{type(exc).__name__}: {exc}", url)
            err(
                args,
                f"cannot use Redis at {mask_url(url)} ({detail.rstrip('.')}). Is the stack "
                "up? Start it with `geodesic up` (found from any directory), or point "
                "--redis-url / $GEODESIC_REDIS_URL at your Redis",
            )
            return 2
        except OSError as exc:
            err(args, scrub(f"{type(exc).__name__}: {exc}", url))
            return 2

    return run


def show_change(entry: dict[str, str], headline: str) -> None:
    print(headline)
    version = f"; plane version {entry['version']}" if entry.get("version") else ""
    print(
        f"  audit {entry['event_id']} at {format_ns(int(entry['ts_ns']))} by {entry['actor']}"
        + version
    )


def tag(reason: str, overridden: list[str]) -> str:
    return f"{reason} [FORCED past: {', '.join(overridden)}]" if overridden else reason
