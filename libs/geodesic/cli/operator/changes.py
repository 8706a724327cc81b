"""Handlers of the commands that change the control plane (each one audited commit)."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING

from geodesic.cli.operator.plumbing import (
    Ctx,
    RefusalError,
    UsageError,
    actor_of,
    err,
    registry_of,
    show_change,
    tag,
)
from geodesic.control.state import ControlSnapshot, Rollout, TradingState
from geodesic.operations.common import format_ns

if TYPE_CHECKING:
    from types import ModuleType

    from geodesic.operations.promotion_gates import GateRow


def _gates() -> ModuleType:
    """The promotion checks, imported only by commands that check a model: they pull the
    risk statistics and the feature schema, which the kill switch must not wait for."""
    from geodesic.operations import promotion_gates as gates

    return gates


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
    hard = _gates().failures([r for r in rows if not _gates().overridable(r)])
    if hard:
        raise RefusalError(
            "; ".join(hard) + " (--force cannot override a missing, unverifiable or "
            "wrong-schema model: train or register it, or pick one `geodesic gates` passes)"
        )
    problems = _gates().failures(rows) + ([cooldown] if cooldown else [])
    if not problems:
        return []
    if not args.force:
        raise RefusalError("; ".join(problems) + " (--force overrides, with a reason)")
    for p in problems:
        err(args, f"WARNING forced past: {p}")
    return [r.name for r in rows if not r.passed] + (["cooldown"] if cooldown else [])


async def _check_symbol_seen(args: argparse.Namespace, ctx: Ctx, *, undoing: bool) -> None:
    """Warn when --symbol was never seen by the collector; refuse a likely case typo.

    ``undoing``: the command clears something set for this exact symbol (kill switch off,
    resume); clearing a mistake must never be refused.
    """
    symbol = args.symbol
    if symbol is None or undoing:
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
    err(
        args,
        f"note: symbol {symbol!r} has never been seen by the collector ({known}); "
        "the change applies if it ever trades",
    )


# ---- changes ---------------------------------------------------------------------------
async def kill_switch(args: argparse.Namespace, ctx: Ctx) -> int:
    on = args.state == "on"
    if args.symbol is not None:
        flagged = args.symbol in (await ctx.plane.snapshot()).kill_symbols
        await _check_symbol_seen(args, ctx, undoing=not on and flagged)
    entry = await ctx.plane.set_kill_switch(
        on, actor=actor_of(args), reason=args.reason, symbol=args.symbol
    )
    snap = await ctx.plane.snapshot()
    scope = f"symbol {args.symbol}" if args.symbol else "global"
    was = "ON" if json.loads(entry["from"]) else "OFF"
    show_change(entry, f"kill switch {scope}: {'ON' if on else 'OFF'} (was {was})")
    print(
        f"  global {'ON' if snap.kill_global else 'off'}; symbols: "
        f"{', '.join(sorted(snap.kill_symbols)) or 'none'}"
    )
    return 0


async def _set_state(args: argparse.Namespace, ctx: Ctx, state: TradingState) -> int:
    if args.symbol is not None:
        states = (await ctx.plane.snapshot()).symbol_states
        undoing = state is TradingState.ACTIVE and args.symbol in states
        await _check_symbol_seen(args, ctx, undoing=undoing)
    entry = await ctx.plane.set_trading_state(
        state, actor=actor_of(args), reason=args.reason, symbol=args.symbol
    )
    scope = f"symbol {args.symbol}" if args.symbol else "global"
    show_change(entry, f"trading state {scope}: {state.value} (was {json.loads(entry['from'])})")
    snap = await ctx.plane.snapshot()
    if state is TradingState.ACTIVE:
        killed = snap.kill_global or (args.symbol is not None and args.symbol in snap.kill_symbols)
        if killed:
            err(args, "note: a kill switch is still ON; trading stays halted until it is off")
        if args.symbol and snap.global_state is not TradingState.ACTIVE:
            err(args, f"note: the global state is still {snap.global_state.value}")
    return 0


async def halt(args: argparse.Namespace, ctx: Ctx) -> int:
    return await _set_state(args, ctx, TradingState(args.state))


async def resume(args: argparse.Namespace, ctx: Ctx) -> int:
    return await _set_state(args, ctx, TradingState.ACTIVE)


async def promote(args: argparse.Namespace, ctx: Ctx) -> int:
    snap = await ctx.plane.snapshot()
    if snap.active == args.model_id:
        print(f"{args.model_id} is already the active model; nothing changed")
        return 0
    rows = _gates().model_checks(registry_of(args), args.model_id)
    overridden = _check_or_refuse(args, rows, _cooldown_reason(snap))
    actor, reason = actor_of(args), tag(args.reason, overridden)
    entry = await ctx.plane.promote(args.model_id, actor=actor, reason=reason, force=args.force)
    r = snap.rollout
    if r.mode != "disabled" and r.candidate == args.model_id:
        await ctx.plane.set_rollout(
            Rollout(seed=r.seed),
            actor=actor,
            reason=f"rollout of {args.model_id} complete: promoted to active ({args.reason})",
        )
        print(f"{r.mode} rollout of {args.model_id} closed (now the active model)")
    show_change(entry, f"promoted {args.model_id} to active; previous: {snap.active or '(none)'}")
    return 0


async def rollout(args: argparse.Namespace, ctx: Ctx) -> int:
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
        rows = _gates().model_checks(registry_of(args), candidate)
        overridden = _check_or_refuse(args, rows, _cooldown_reason(snap))
    entry = await ctx.plane.set_rollout(
        new, actor=actor_of(args), reason=tag(args.reason, overridden), force=args.force
    )
    desc = (
        "disabled: the active model scores every bar"
        if new.mode == "disabled"
        else f"{new.mode}: {new.candidate} on {new.canary_fraction:.2%} of bars (seed {new.seed});"
        f" active {snap.active or '(none)'}"
    )
    show_change(entry, f"rollout {desc}")
    return 0


async def rollback(args: argparse.Namespace, ctx: Ctx) -> int:
    snap = await ctx.plane.snapshot()
    in_flight = snap.rollout.mode != "disabled"
    if not in_flight and not snap.previous and not args.force:
        raise RefusalError("nothing to roll back: no rollout in flight and no previous model")
    if not in_flight and snap.previous:
        # reverting to a model that cannot serve would halt every signal: never forced
        hard = _gates().failures(
            r
            for r in _gates().model_checks(registry_of(args), snap.previous, gates=False)
            if not r.passed
        )
        if hard:
            raise RefusalError(
                f"previous model {snap.previous} cannot serve: {'; '.join(hard)} "
                "(promote a verified model instead: `geodesic promote <model_id>`)"
            )
    actor = actor_of(args)
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
    show_change(
        entry, f"rolled back: {what}; cooldown until {format_ns(after['cooldown_until_ns'])}"
    )
    return 0


async def shadow(args: argparse.Namespace, ctx: Ctx) -> int:
    model = None if args.clear else args.model_id
    overridden: list[str] = []
    if model is not None:
        rows = _gates().model_checks(registry_of(args), model, gates=False)
        overridden = _check_or_refuse(args, rows, None)
    entry = await ctx.plane.set_slot(
        "shadow", model, actor=actor_of(args), reason=tag(args.reason, overridden)
    )
    show_change(entry, f"shadow: {model or '(cleared)'}")
    return 0


async def cooldown_clear(args: argparse.Namespace, ctx: Ctx) -> int:
    snap = await ctx.plane.snapshot()
    entry = await ctx.plane.clear_cooldown(actor=actor_of(args), reason=args.reason)
    was = format_ns(snap.cooldown_until_ns) if snap.cooldown_until_ns else "none"
    show_change(entry, f"cooldown cleared (was until {was})")
    return 0
