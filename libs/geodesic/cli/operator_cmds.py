"""Operator commands on the live control plane (DESIGN.md section 6).

    status | kill-switch | halt | resume | promote | rollout | rollback | shadow |
    cooldown clear | gates | history | report

Every change goes through ControlPlane: one atomic, versioned commit with an audit entry
(actor, reason, from, to) and a publish that reaches every scorer in milliseconds. A
change needs --reason; --actor defaults to $USER. Promotion and rollouts check the
model first (signature, checksums, schema hash, offline gates from the signed manifest)
and respect the rollback cooldown; --force overrides both and says so in the audit
reason, so an override is never silent.

Exit codes, for scripts: 0 success (for `gates`: every gate passes), 1 refused or a gate
failed (the reason on stderr), 2 usage or connection error. The Redis URL may carry a
password: it is only ever shown masked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from geodesic.contracts.services import RISK_SUPERVISOR, SHADOW
from geodesic.control import ControlPlane, ControlSnapshot, Rollout, TradingState
from geodesic.control.plane import CooldownActiveError
from geodesic.operations.common import format_ns, mask_url, parse_time, scrub
from geodesic.operations.gates import (
    GateRow,
    all_pass,
    failures,
    gate_table,
    live_rows,
    model_checks,
    overridable,
)
from geodesic.operations.history import (
    AuditEvent,
    describe_answer,
    filter_events,
    model_at,
    parse_events,
)
from geodesic.operations.status import build_status
from geodesic.risk.guards import RolloutGuardConfig

ENV_REDIS_URL = "GEODESIC_REDIS_URL"
ENV_PREFIX = "GEODESIC_REDIS_PREFIX"
ENV_REGISTRY = "GEODESIC_MODEL_REGISTRY"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_MODEL_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class RefusalError(Exception):
    """A policy refusal (exit 1); the message says why and how to override, if allowed."""


class UsageError(Exception):
    """Bad input found after parsing (exit 2)."""


# ---- argument types --------------------------------------------------------------------
def _model_id(text: str) -> str:
    if not _MODEL_ID.fullmatch(text) or text in (".", ".."):
        raise argparse.ArgumentTypeError(f"invalid model id {text!r}")
    return text


def _symbol(text: str) -> str:
    """A symbol as the Tick contract defines it, taken as typed: symbols are case-sensitive
    (lower-case ones exist), so upper-casing `aapl` could halt the wrong instrument."""
    from geodesic.contracts.models import SYMBOL_MAX_LENGTH, SYMBOL_PATTERN, SYMBOL_RULE

    if len(text) > SYMBOL_MAX_LENGTH or not re.fullmatch(SYMBOL_PATTERN, text):
        raise argparse.ArgumentTypeError(
            f"invalid symbol {text!r}: a symbol is {SYMBOL_RULE}, e.g. AAPL or BTC-USD"
        )
    return text


def _nonblank(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be blank")
    return text.strip()


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"fraction {value} not in (0, 1]")
    return value


def _instant(text: str) -> int:
    try:
        return parse_time(text, time.time_ns())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is not > 0")
    return value


# ---- registration ----------------------------------------------------------------------
def _parents() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    conn = argparse.ArgumentParser(add_help=False)
    g = conn.add_argument_group("control plane")
    g.add_argument(
        "--redis-url",
        default=None,
        help=f"default ${ENV_REDIS_URL}, else the running `geodesic up` stack, "
        f"else {DEFAULT_REDIS_URL}",
    )
    g.add_argument(
        "--prefix",
        default=None,
        help=f"Redis key prefix (default ${ENV_PREFIX} or 'geodesic')",
    )
    change = argparse.ArgumentParser(add_help=False)
    c = change.add_argument_group("audit")
    c.add_argument(
        "--reason", required=True, type=_nonblank, help="why (recorded in the audit stream)"
    )
    c.add_argument(
        "--actor", default=None, type=_nonblank, help="who (default $USER or 'operator')"
    )
    return conn, change


def _registry_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--registry",
        type=Path,
        default=None,
        help=f"model registry (default ${ENV_REGISTRY} or models/registry)",
    )


def _symbol_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--symbol",
        type=_symbol,
        help=f"one symbol, exactly as in the ticks (case-sensitive; default: {default})",
    )
    p.add_argument(
        "--allow-unseen",
        action="store_true",
        help="set it even when the symbol was never seen but differs only in case from one "
        "that was (otherwise refused as a likely typo)",
    )


def _guard_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--guard-config",
        type=Path,
        default=None,
        help="JSON of the risk supervisor's rollout_guard (default: its defaults)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    conn, change = _parents()

    p = sub.add_parser(
        "status",
        parents=[conn],
        help="services (health, lag, last seen), control plane, win rates, drift, shadow; "
        "exit 1 when a service is down or not ready",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--audit", type=int, default=10, metavar="N", help="last N audit events")
    p.add_argument(
        "--service-url",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="a service's HTTP base URL to probe (repeatable; default: the services of the "
        "running `geodesic up` stack)",
    )
    _guard_arg(p)
    p.set_defaults(func=_runner(_status))

    p = sub.add_parser("kill-switch", parents=[conn, change], help="flip a kill switch")
    p.add_argument("state", choices=("on", "off"), help="on halts everything it covers")
    _symbol_args(p, "the global switch")
    p.set_defaults(func=_runner(_kill_switch))

    p = sub.add_parser("halt", parents=[conn, change], help="set REDUCING or HALTED")
    _symbol_args(p, "global")
    p.add_argument(
        "--state",
        choices=("REDUCING", "HALTED"),
        default="HALTED",
        help="REDUCING: only exits are tradable; HALTED (default): nothing is",
    )
    p.set_defaults(func=_runner(_halt))

    p = sub.add_parser("resume", parents=[conn, change], help="set the trading state ACTIVE")
    _symbol_args(p, "global")
    p.set_defaults(func=_runner(_resume))

    p = sub.add_parser(
        "promote", parents=[conn, change], help="make a verified model active (active -> previous)"
    )
    p.add_argument("model_id", type=_model_id)
    p.add_argument(
        "--force",
        action="store_true",
        help="override failed gates / cooldown (never a missing, unverified or wrong-schema model)",
    )
    _registry_arg(p)
    p.set_defaults(func=_runner(_promote))

    p = sub.add_parser("rollout", help="canary / full rollout of a candidate, or disable it")
    rsub = p.add_subparsers(dest="mode", required=True, metavar="MODE")
    q = rsub.add_parser("canary", parents=[conn, change], help="route a fraction to a candidate")
    q.add_argument("--candidate", type=_model_id, required=True)
    q.add_argument("--fraction", type=_fraction, required=True, help="share of bars, (0, 1]")
    q.add_argument("--seed", type=int, default=0, help="routing hash seed (default 0)")
    q.add_argument("--force", action="store_true", help="override failed checks / cooldown")
    _registry_arg(q)
    q.set_defaults(func=_runner(_rollout))
    q = rsub.add_parser("full", parents=[conn, change], help="route every bar to the candidate")
    q.add_argument("--candidate", type=_model_id, help="default: the canary in flight")
    q.add_argument("--seed", type=int, default=None, help="default: the current seed")
    q.add_argument("--force", action="store_true", help="override failed checks / cooldown")
    _registry_arg(q)
    q.set_defaults(func=_runner(_rollout))
    q = rsub.add_parser("disabled", parents=[conn, change], help="active model only")
    q.set_defaults(func=_runner(_rollout), force=False)

    p = sub.add_parser(
        "rollback", parents=[conn, change], help="take the change in flight out of service"
    )
    p.add_argument("--cooldown-s", type=float, default=900.0, help="promotion cooldown")
    p.add_argument("--force", action="store_true", help="even with nothing to roll back")
    _registry_arg(p)
    p.set_defaults(func=_runner(_rollback))

    p = sub.add_parser("shadow", parents=[conn, change], help="set or clear the shadow model")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("model_id", nargs="?", type=_model_id)
    g.add_argument("--clear", action="store_true")
    p.add_argument(
        "--force",
        action="store_true",
        help="accepted for symmetry; a shadow must still exist and verify",
    )
    _registry_arg(p)
    p.set_defaults(func=_runner(_shadow))

    p = sub.add_parser("cooldown", help="the rollback cooldown")
    csub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = csub.add_parser("clear", parents=[conn, change], help="allow promotions again")
    q.set_defaults(func=_runner(_cooldown_clear))

    p = sub.add_parser(
        "gates",
        parents=[conn],
        help="offline + live promotion gates (exit 0 pass, 1 fail, 2 error)",
    )
    p.add_argument("model_id", type=_model_id)
    p.add_argument("--json", action="store_true")
    p.add_argument("--offline", action="store_true", help="registry and offline gates only")
    _registry_arg(p)
    _guard_arg(p)
    p.set_defaults(func=_runner(_gates))

    p = sub.add_parser(
        "history",
        parents=[conn],
        help="which model served SYMBOL at TIME (audit replay), or --list the audit trail",
        description="TIME: ISO-8601 (UTC when no zone), epoch ns, 'now', or an age (90m, 2h).",
    )
    p.add_argument("--symbol")
    p.add_argument("--at", type=_instant, help="the instant to answer for")
    p.add_argument("--bar-index", type=int, help="also say which route this bar took")
    p.add_argument("--list", action="store_true", help="print the audit trail")
    p.add_argument("--since", type=_instant)
    p.add_argument("--until", type=_instant)
    p.add_argument("--kind", action="append", help="only these kinds (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="newest N entries of the list")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_runner(_history))

    p = sub.add_parser("report", parents=[conn], help="daily risk report: JSON, CSV and PNG charts")
    p.add_argument("--out", type=Path, default=None, help="default reports/daily/<UTC date>")
    p.add_argument("--hours", type=_positive, default=24.0, help="audit window (default 24)")
    p.add_argument(
        "--metrics-url",
        action="append",
        default=[],
        metavar="[NAME=]URL",
        help="a service's /metrics for the latency chart (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print the report JSON")
    p.set_defaults(func=_runner(_report))


# ---- plumbing --------------------------------------------------------------------------
def _resolve_url(args: argparse.Namespace) -> str:
    if args.redis_url:
        return args.redis_url
    env = os.environ.get(ENV_REDIS_URL)
    if env:
        return env
    with contextlib.suppress(Exception):  # a convenience only: any problem -> the default
        from geodesic.stack import find_running_stacks

        for state in find_running_stacks():
            url = json.loads(state.read_text()).get("redis_url")
            if url:
                return str(url)
    return DEFAULT_REDIS_URL


def _prefix(args: argparse.Namespace) -> str:
    return args.prefix or os.environ.get(ENV_PREFIX) or "geodesic"


def _actor(args: argparse.Namespace) -> str:
    return args.actor or os.environ.get("USER") or "operator"


def _registry(args: argparse.Namespace) -> Path:
    return args.registry or Path(os.environ.get(ENV_REGISTRY) or "models/registry")


def _guard_cfg(args: argparse.Namespace) -> RolloutGuardConfig:
    path = getattr(args, "guard_config", None)
    if path is None:
        return RolloutGuardConfig()
    try:
        return RolloutGuardConfig.model_validate(json.loads(Path(path).read_text()))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--guard-config {path}: {exc}") from None


def _console() -> Console:
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 120)


def _err(args: argparse.Namespace, message: str) -> None:
    print(f"geodesic {args.command}: {message}", file=sys.stderr)


Command = Callable[[argparse.Namespace, "Ctx"], Awaitable[int]]


class Ctx:
    """One command's connection: the client, its plane, and the masked URL for messages."""

    def __init__(self, client: aioredis.Redis, prefix: str, url: str) -> None:
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
async def _connect(url: str, prefix: str) -> AsyncIterator[Ctx]:
    try:
        client = aioredis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
    except ValueError as exc:
        raise UsageError(f"invalid Redis URL {mask_url(url)}: {scrub(str(exc), url)}") from None
    try:
        await client.ping()
        yield Ctx(client, prefix, url)
    finally:
        await client.aclose()


def _runner(command: Command) -> Callable[[argparse.Namespace], int]:
    """Wrap an async command: connection, exit codes, and secret-free error messages."""

    def run(args: argparse.Namespace) -> int:
        url = _resolve_url(args)

        async def go() -> int:
            async with _connect(url, _prefix(args)) as ctx:
                return await command(args, ctx)

        try:
            return asyncio.run(go())
        except (RefusalError, CooldownActiveError) as exc:
            _err(args, f"REFUSED: {exc}")
            return 1
        except UsageError as exc:
            _err(args, scrub(str(exc), url))
            return 2
        except RedisError as exc:
            detail = scrub(f"{type(exc).__name__}: {exc}", url)
            _err(args, f"cannot use Redis at {mask_url(url)}: {detail}")
            return 2
        except OSError as exc:
            _err(args, scrub(f"{type(exc).__name__}: {exc}", url))
            return 2

    return run


def _show_change(entry: dict[str, str], headline: str) -> None:
    print(headline)
    version = f"; plane version {entry['version']}" if entry.get("version") else ""
    print(
        f"  audit {entry['event_id']} at {format_ns(int(entry['ts_ns']))} by {entry['actor']}"
        + version
    )


def _tag(reason: str, overridden: list[str]) -> str:
    return f"{reason} [FORCED past: {', '.join(overridden)}]" if overridden else reason


def _cooldown_reason(snap: ControlSnapshot) -> str | None:
    if snap.cooldown_until_ns > time.time_ns():
        return (
            f"cooldown active until {format_ns(snap.cooldown_until_ns)} after a rollback "
            "(clear it with `geodesic cooldown clear`)"
        )
    return None


def _check_or_refuse(
    args: argparse.Namespace, rows: list[GateRow], cooldown: str | None
) -> list[str]:
    """Refuse on failed checks unless --force; returns the names of what was overridden.

    --force overrides gates and the cooldown only: a model that does not exist, fails its
    signature / checksums or was built for another feature schema is refused regardless.
    """
    hard = failures([r for r in rows if not overridable(r)])
    if hard:
        raise RefusalError(
            "; ".join(hard) + " (--force cannot override a missing, unverifiable or "
            "wrong-schema model: train or register it, or pick one `geodesic gates` passes)"
        )
    problems = failures(rows) + ([cooldown] if cooldown else [])
    if not problems:
        return []
    if not args.force:
        raise RefusalError("; ".join(problems) + " (--force overrides, with a reason)")
    for p in problems:
        _err(args, f"WARNING forced past: {p}")
    return [r.name for r in rows if not r.passed] + (["cooldown"] if cooldown else [])


async def _check_symbol_seen(args: argparse.Namespace, ctx: Ctx) -> None:
    """Warn when --symbol was never seen by the collector; refuse a likely case typo."""
    symbol = args.symbol
    if symbol is None:
        return
    seen = await ctx.plane.seen_symbols()
    if symbol in seen:
        return
    twins = sorted(s for s in seen if s.casefold() == symbol.casefold())
    if twins and not args.allow_unseen:
        raise RefusalError(
            f"symbol {symbol!r} was never seen, but {', '.join(twins)} was: symbols are "
            f"case-sensitive, so this would halt nothing. Use --symbol {twins[0]}, or "
            "--allow-unseen to set it anyway"
        )
    known = f"{len(seen)} symbols seen" if seen else "no symbol seen yet (is the collector up?)"
    _err(
        args,
        f"note: symbol {symbol!r} has never been seen by the collector ({known}); "
        "the change applies if it ever trades",
    )


# ---- changes ---------------------------------------------------------------------------
async def _kill_switch(args: argparse.Namespace, ctx: Ctx) -> int:
    on = args.state == "on"
    await _check_symbol_seen(args, ctx)
    entry = await ctx.plane.set_kill_switch(
        on, actor=_actor(args), reason=args.reason, symbol=args.symbol
    )
    snap = await ctx.plane.snapshot()
    scope = f"symbol {args.symbol}" if args.symbol else "global"
    was = "ON" if json.loads(entry["from"]) else "OFF"
    _show_change(entry, f"kill switch {scope}: {'ON' if on else 'OFF'} (was {was})")
    print(
        f"  global {'ON' if snap.kill_global else 'off'}; symbols: "
        f"{', '.join(sorted(snap.kill_symbols)) or 'none'}"
    )
    return 0


async def _set_state(args: argparse.Namespace, ctx: Ctx, state: TradingState) -> int:
    await _check_symbol_seen(args, ctx)
    entry = await ctx.plane.set_trading_state(
        state, actor=_actor(args), reason=args.reason, symbol=args.symbol
    )
    scope = f"symbol {args.symbol}" if args.symbol else "global"
    _show_change(entry, f"trading state {scope}: {state.value} (was {json.loads(entry['from'])})")
    snap = await ctx.plane.snapshot()
    if state is TradingState.ACTIVE:
        killed = snap.kill_global or (args.symbol is not None and args.symbol in snap.kill_symbols)
        if killed:
            _err(args, "note: a kill switch is still ON; trading stays halted until it is off")
        if args.symbol and snap.global_state is not TradingState.ACTIVE:
            _err(args, f"note: the global state is still {snap.global_state.value}")
    return 0


async def _halt(args: argparse.Namespace, ctx: Ctx) -> int:
    return await _set_state(args, ctx, TradingState(args.state))


async def _resume(args: argparse.Namespace, ctx: Ctx) -> int:
    return await _set_state(args, ctx, TradingState.ACTIVE)


async def _promote(args: argparse.Namespace, ctx: Ctx) -> int:
    snap = await ctx.plane.snapshot()
    if snap.active == args.model_id:
        print(f"{args.model_id} is already the active model; nothing changed")
        return 0
    rows = model_checks(_registry(args), args.model_id)
    overridden = _check_or_refuse(args, rows, _cooldown_reason(snap))
    actor, reason = _actor(args), _tag(args.reason, overridden)
    entry = await ctx.plane.promote(args.model_id, actor=actor, reason=reason, force=args.force)
    r = snap.rollout
    if r.mode != "disabled" and r.candidate == args.model_id:
        await ctx.plane.set_rollout(
            Rollout(seed=r.seed),
            actor=actor,
            reason=f"rollout of {args.model_id} complete: promoted to active ({args.reason})",
        )
        print(f"{r.mode} rollout of {args.model_id} closed (now the active model)")
    _show_change(entry, f"promoted {args.model_id} to active; previous: {snap.active or '(none)'}")
    return 0


async def _rollout(args: argparse.Namespace, ctx: Ctx) -> int:
    snap = await ctx.plane.snapshot()
    cur = snap.rollout
    if args.mode == "disabled":
        new = Rollout(mode="disabled", seed=cur.seed)
        overridden: list[str] = []
    else:
        # default only to a canary in flight: a disabled rollout keeps its last candidate,
        # which may be the model that was just rolled back
        running = cur.candidate if cur.mode == "canary" else None
        candidate = args.candidate or running
        if not candidate:
            raise UsageError("no canary in flight to widen: give --candidate")
        if candidate == snap.active:
            raise RefusalError(f"{candidate} is already the active model")
        if args.mode == "canary":
            new = Rollout("canary", args.fraction, args.seed, candidate)
        else:
            seed = cur.seed if args.seed is None else args.seed
            new = Rollout("full", 1.0, seed, candidate)
        rows = model_checks(_registry(args), candidate)
        overridden = _check_or_refuse(args, rows, _cooldown_reason(snap))
    entry = await ctx.plane.set_rollout(
        new, actor=_actor(args), reason=_tag(args.reason, overridden), force=args.force
    )
    desc = (
        "disabled: the active model scores every bar"
        if new.mode == "disabled"
        else f"{new.mode}: {new.candidate} on {new.canary_fraction:.2%} of bars (seed {new.seed});"
        f" active {snap.active or '(none)'}"
    )
    _show_change(entry, f"rollout {desc}")
    return 0


async def _rollback(args: argparse.Namespace, ctx: Ctx) -> int:
    snap = await ctx.plane.snapshot()
    in_flight = snap.rollout.mode != "disabled"
    if not in_flight and not snap.previous and not args.force:
        raise RefusalError("nothing to roll back: no rollout in flight and no previous model")
    if not in_flight and snap.previous:
        # reverting to a model that cannot serve would halt every signal: never forced
        hard = failures(
            r for r in model_checks(_registry(args), snap.previous, gates=False) if not r.passed
        )
        if hard:
            raise RefusalError(
                f"previous model {snap.previous} cannot serve: {'; '.join(hard)} "
                "(promote a verified model instead: `geodesic promote <model_id>`)"
            )
    actor = _actor(args)
    entry = await ctx.plane.rollback(actor=actor, reason=args.reason, cooldown_s=args.cooldown_s)
    await ctx.plane.record_mode_switch(
        actor=actor,
        reason=args.reason,
        before=snap.rollout.mode if in_flight else "active",
        after="disabled" if in_flight else "previous",
    )
    after = json.loads(entry["to"])
    what = (
        f"{snap.rollout.mode} rollout of {snap.rollout.candidate} disabled"
        if in_flight
        else f"active {snap.active or '(none)'} -> {after.get('active') or '(none)'}"
    )
    _show_change(
        entry, f"rolled back: {what}; cooldown until {format_ns(after['cooldown_until_ns'])}"
    )
    return 0


async def _shadow(args: argparse.Namespace, ctx: Ctx) -> int:
    model = None if args.clear else args.model_id
    overridden: list[str] = []
    if model is not None:
        rows = model_checks(_registry(args), model, gates=False)
        overridden = _check_or_refuse(args, rows, None)
    entry = await ctx.plane.set_slot(
        "shadow", model, actor=_actor(args), reason=_tag(args.reason, overridden)
    )
    _show_change(entry, f"shadow: {model or '(cleared)'}")
    return 0


async def _cooldown_clear(args: argparse.Namespace, ctx: Ctx) -> int:
    snap = await ctx.plane.snapshot()
    entry = await ctx.plane.clear_cooldown(actor=_actor(args), reason=args.reason)
    was = format_ns(snap.cooldown_until_ns) if snap.cooldown_until_ns else "none"
    _show_change(entry, f"cooldown cleared (was until {was})")
    return 0


# ---- reads -----------------------------------------------------------------------------
async def _status(args: argparse.Namespace, ctx: Ctx) -> int:
    if args.audit < 0:
        raise UsageError("--audit must be >= 0")
    snap = await ctx.plane.snapshot()
    audit = parse_events(await ctx.plane.audit_log(args.audit)) if args.audit else []
    risk = await ctx.read_json(RISK_SUPERVISOR.name, "status")
    shadow = await ctx.read_json(SHADOW.name, "stats")
    doc = build_status(
        snap,
        audit,
        risk,
        shadow,
        time.time_ns(),
        source={"redis": ctx.masked_url, "prefix": ctx.prefix},
        cfg=_guard_cfg(args),
    )
    from geodesic.cli.probes import discover, probe
    from geodesic.operations.health import service_rows, services_ok

    for spec in args.service_url:
        name, sep, url = spec.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise UsageError(f"--service-url {spec!r}: expected NAME=http://HOST:PORT")
    found = discover(ctx.url, args.service_url)
    seen = await ctx.plane.seen_symbols()
    probes = await probe(found, {"collector": max(seen.values())} if seen else {})
    doc["services"] = service_rows(probes, time.time_ns())
    if args.json:
        print(json.dumps(doc, indent=2, allow_nan=False))
    else:
        render_status(doc, _console())
    return 0 if services_ok(doc["services"]) else 1


async def _gates(args: argparse.Namespace, ctx: Ctx) -> int:
    registry = _registry(args)
    if not (registry / args.model_id).is_dir():
        raise UsageError(f"model {args.model_id!r} not found in {registry}")
    rows = model_checks(registry, args.model_id)
    if not args.offline:
        snap = await ctx.plane.snapshot()
        risk = await ctx.read_json(RISK_SUPERVISOR.name, "status")
        shadow = await ctx.read_json(SHADOW.name, "stats")
        rows += live_rows(args.model_id, snap, risk, shadow, _guard_cfg(args))
    table = gate_table(args.model_id, rows)
    if args.json:
        print(json.dumps(table, indent=2, allow_nan=False))
    else:
        render_gates(table, _console())
    return 0 if all_pass(rows) else 1


async def _history(args: argparse.Namespace, ctx: Ctx) -> int:
    if args.list:
        records = await ctx.plane.audit_range(args.since, args.until)
        events = filter_events(parse_events(records), kinds=args.kind, symbol=args.symbol)
        if args.limit is not None:
            events = events[-args.limit :] if args.limit > 0 else []
        if args.json:
            print(json.dumps([e.as_dict() for e in events], indent=2))
        else:
            render_audit(events, _console(), title=f"audit trail ({len(events)} entries)")
        return 0
    if not args.symbol or args.at is None:
        raise UsageError("give --symbol and --at (or --list)")
    events = parse_events(await ctx.plane.audit_range(None, args.at))
    start = None
    if not events:  # say where the trail starts, so "unknown" is not read as "no model"
        first = await ctx.client.xrange(ctx.plane.keys.audit, count=1)
        if first:
            entry_id, fields = first[0]
            rec = {_text(k): _text(v) for k, v in fields.items()} | {"id": _text(entry_id)}
            start = AuditEvent.from_fields(rec).ts_ns
    doc = model_at(events, args.symbol, args.at, args.bar_index, trail_start_ns=start)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(describe_answer(doc))
    if not doc["known"]:
        _err(args, f"no audit entry at or before {doc['at']}: cannot say")
        return 1
    return 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _fetch_metrics(specs: list[str]) -> tuple[dict[str, str], list[str]]:
    texts: dict[str, str] = {}
    errors: list[str] = []
    for spec in specs:
        name, sep, url = spec.partition("=")
        if not sep or "://" in name:
            name, url = "", spec
        if not url.startswith(("http://", "https://")):
            errors.append(f"{mask_url(url)}: not an http(s) URL")
            continue
        label = name or (mask_url(url).split("://", 1)[-1].split("/", 1)[0])
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                texts[label] = resp.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            errors.append(f"{label}: {scrub(str(exc), url)}")
    return texts, errors


async def _report(args: argparse.Namespace, ctx: Ctx) -> int:
    from geodesic.operations.report import build_report, latency_rows, write_report

    now = time.time_ns()
    since = now - int(args.hours * 3600 * 1e9)
    snap = await ctx.plane.snapshot()
    audit = parse_events(await ctx.plane.audit_range(since, now))
    risk = await ctx.read_json(RISK_SUPERVISOR.name, "status")
    shadow = await ctx.read_json(SHADOW.name, "stats")
    latency = None
    errors: list[str] = []
    if args.metrics_url:
        texts, errors = await asyncio.to_thread(_fetch_metrics, args.metrics_url)
        latency = latency_rows(texts)
    doc = build_report(
        now_ns=now,
        hours=args.hours,
        snapshot=snap,
        audit=audit,
        risk_status=risk,
        shadow_stats=shadow,
        latency=latency,
        latency_errors=errors,
        source={"redis": ctx.masked_url, "prefix": ctx.prefix},
    )
    date = datetime.fromtimestamp(now / 1e9, UTC).date().isoformat()
    out = args.out or Path("reports") / "daily" / date
    files = await asyncio.to_thread(write_report, doc, out)
    if args.json:
        print(files["report_json"].read_text(), end="")
        return 0
    final = json.loads(files["report_json"].read_text())
    print(f"daily risk report for {doc['window']['since']} .. {doc['window']['until']}")
    for key, path in sorted(files.items()):
        print(f"  {key:<13} {path}")
    for note in final["notes"]:
        print(f"  note: {note}")
    return 0


# ---- rendering -------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def render_status(doc: dict[str, Any], console: Console) -> None:
    src = doc["source"]
    console.print(
        f"[bold]Geodesic control plane[/bold] {src.get('redis', '')} prefix "
        f"{src.get('prefix', '')} (version {doc['version']}, {doc['generated_at']})"
    )
    render_services(doc.get("services", []), console)
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    slots, r = doc["slots"], doc["rollout"]
    for name in ("active", "shadow", "previous"):
        t.add_row(f"slot {name}", slots[name] or "-")
    if r["mode"] == "disabled":
        t.add_row("rollout", "disabled")
    else:
        t.add_row(
            "rollout",
            f"{r['mode']}: candidate {r['candidate']} on {r['canary_fraction']:.2%} "
            f"(seed {r['seed']})",
        )
    ks = doc["kill_switches"]
    t.add_row(
        "kill switches",
        f"global {'[red]ON[/red]' if ks['global'] else 'off'}; symbols: "
        + (f"[red]{', '.join(ks['symbols'])}[/red]" if ks["symbols"] else "none"),
    )
    ts = doc["trading_states"]
    sym = ", ".join(f"{k}={v}" for k, v in ts["symbols"].items()) or "none set"
    t.add_row("trading state", f"global {ts['global']}; symbols: {sym}")
    cd = doc["cooldown"]
    t.add_row(
        "cooldown",
        f"[yellow]until {cd['until']}[/yellow] ({cd['remaining_s']:.0f} s left)"
        if cd["active"]
        else "none",
    )
    console.print(t)

    w = Table(title="Live win rates per route (rolling, net of cost)")
    for col in ("route", "model", "win rate", "95% interval", "n"):
        w.add_column(col)
    for row in doc["winrates"].values():
        if row["rate"] is None:
            w.add_row(row["route"], row["model"] or "-", "insufficient data", "-", "0")
        else:
            w.add_row(
                row["route"],
                row["model"] or "-",
                _pct(row["rate"]),
                f"{_pct(row['lower'])} .. {_pct(row['upper'])}",
                str(row["n"]),
            )
    console.print(w)
    if not doc["risk_status_available"]:
        console.print("[yellow]no risk-supervisor status published (is it running?)[/yellow]")

    drift = doc["drift"]
    if drift["available"]:
        d = Table(title="Drift vs the active model's reference")
        for col in ("feature", "n", "PSI", "PSI level", "KS", "KS level", "status"):
            d.add_column(col)
        for f in drift["features"]:
            style = "red" if f["status"] == "ALARM" else None
            d.add_row(
                f["feature"],
                str(f["n"]),
                _pct(f["psi"]),
                _pct(f["psi_level"]),
                _pct(f["ks"]),
                _pct(f["ks_level"]),
                f["status"],
                style=style,
            )
        console.print(d)
    else:
        console.print(f"drift: insufficient data ({drift['note']})")

    sh = doc["shadow"]
    if sh["available"]:
        rate = "insufficient data" if sh["match_rate"] is None else f"{sh['match_rate']:.3f}"
        console.print(
            f"shadow {sh['model'] or '-'}: match rate {rate} over {sh['window']} joined; "
            f"mean |delta| {_pct(sh['mean_abs_delta'])}; parity failures {sh['parity_fail']}"
        )
    else:
        console.print(f"shadow {sh['model'] or '-'}: {sh['status']}")

    if doc["guards"]:
        g = Table(title="Risk supervisor guards")
        for col in ("guard", "verdict", "reason"):
            g.add_column(col)
        for name, dec in sorted(doc["guards"].items()):
            verdict = str(dec.get("verdict", "?"))
            style = "red" if verdict in ("rollback", "halt", "alarm", "reduce") else None
            g.add_row(name, verdict, str(dec.get("reason", "")), style=style)
        console.print(g)
    render_audit(
        [_event_from_dict(e) for e in doc["audit"]],
        console,
        title=f"last {len(doc['audit'])} audit events",
    )


def render_services(rows: list[dict[str, Any]], console: Console) -> None:
    if not rows:
        console.print(
            "[yellow]services: none known (no running `geodesic up` stack on this Redis; "
            "give --service-url NAME=URL)[/yellow]"
        )
        return
    t = Table(title="Services")
    for col in ("service", "state", "lag", "last seen", "detail"):
        t.add_column(col, overflow="fold")
    for row in rows:
        style = {"ready": "green", "not ready": "yellow"}.get(row["state"], "red")
        lag = str(row["lag"]) if row["lag"] is not None else f"? ({row['lag_error'] or '-'})"
        age = row["last_seen_age_s"]
        seen = "never" if age is None else "now" if age < 1 else f"{age:.0f} s ago"
        detail = row["detail"]
        if row.get("last_input"):
            detail += f"; last tick accepted {row['last_input']}"
        t.add_row(row["service"], f"[{style}]{row['state']}[/{style}]", lag, seen, detail)
    console.print(t)


def _event_from_dict(d: dict[str, Any]) -> AuditEvent:
    return AuditEvent(
        id=d["id"],
        ts_ns=d["ts_ns"],
        kind=d["kind"],
        actor=d["actor"],
        reason=d["reason"],
        symbol=d["symbol"],
        before=d["from"],
        after=d["to"],
        event_id=d.get("event_id", ""),
    )


def _short(value: Any) -> str:
    if isinstance(value, dict) and "mode" in value and "canary_fraction" in value:
        if value["mode"] == "disabled":
            return "disabled"
        return (
            f"{value['mode']} {value.get('candidate')} {float(value['canary_fraction']):.0%} "
            f"seed {value.get('seed')}"
        )
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items() if v not in (None, ""))
    return "-" if value is None else str(value)


def render_audit(events: list[AuditEvent], console: Console, *, title: str) -> None:
    t = Table(title=title)
    t.add_column("time (UTC)", no_wrap=True)
    t.add_column("kind", no_wrap=True)
    for col in ("symbol", "actor", "from -> to", "reason"):
        t.add_column(col, overflow="fold")
    for e in events:
        t.add_row(
            format_ns(e.ts_ns),
            e.kind,
            e.symbol or "*",
            e.actor,
            f"{_short(e.before)} -> {_short(e.after)}",
            e.reason,
        )
    console.print(t)


def render_gates(table: dict[str, Any], console: Console) -> None:
    t = Table(title=f"Promotion gates for {table['model_id']}")
    for col in ("source", "gate", "value", "limit", "result", "detail"):
        t.add_column(col, overflow="fold")
    for g in table["gates"]:
        value = "-" if g["value"] is None else f"{g['value']:.4g}"
        limit = "-" if g["limit"] is None else f"{g['comparison']} {g['limit']:.4g}".strip()
        t.add_row(
            g["source"],
            g["name"],
            value,
            limit,
            "[green]PASS[/green]" if g["passed"] else "[red]FAIL[/red]",
            g["detail"],
        )
    console.print(t)
    if table["passed"]:
        console.print("[green]all gates pass[/green]")
    else:
        console.print(
            f"[red]{len(table['failed'])} gate(s) fail:[/red] {', '.join(table['failed'])}"
        )
