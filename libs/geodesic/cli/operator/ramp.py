"""Handlers of `geodesic rollout start|pause|resume|abort|status`: the automatic ramp.

The ramp itself runs in the risk supervisor (geodesic.rollout.controller); these commands
write its state (each one audited ROLLOUT change) and read it back. `rollout canary|full|
disabled` stay the manual route (changes.rollout).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Awaitable, Callable

from pydantic import ValidationError

from geodesic.cli.operator.changes import _check_or_refuse, _gates
from geodesic.cli.operator.plumbing import (
    Ctx,
    RefusalError,
    UsageError,
    actor_of,
    registry_of,
    tag,
)
from geodesic.rollout import RolloutPlan
from geodesic.rollout.machine import Transition
from geodesic.rollout.operator import (
    RolloutRefusedError,
    abort_rollout,
    load,
    pause_rollout,
    resume_rollout,
    start_rollout,
    status_doc,
)


def _plan(args: argparse.Namespace) -> RolloutPlan:
    if args.plan is None:
        return RolloutPlan()
    try:
        return RolloutPlan.from_file(args.plan)
    except OSError as exc:
        raise UsageError(f"--plan {args.plan}: {exc.strerror}") from None
    except ValidationError as exc:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(plan)'}: {e['msg']}" for e in exc.errors()
        )
        raise UsageError(f"--plan {args.plan}: {where}") from None
    except ValueError as exc:  # YAML syntax
        raise UsageError(f"--plan {args.plan}: not YAML/JSON: {exc}") from None


async def start(args: argparse.Namespace, ctx: Ctx) -> int:
    plan = _plan(args)
    rows = _gates().model_checks(registry_of(args), args.candidate)
    overridden = _check_or_refuse(args, rows, None)  # the cooldown is never forced here
    try:
        state = await start_rollout(
            ctx.plane,
            args.candidate,
            plan,
            actor=actor_of(args),
            reason=tag(args.reason, overridden),
        )
    except RolloutRefusedError as exc:
        raise RefusalError(str(exc)) from None
    steps = " -> ".join(f"{s.fraction:.0%}" for s in plan.steps)
    print(f"rollout {state.rollout_id}: {args.candidate} PENDING, ramp {steps}")
    print(
        "  the risk supervisor starts step 1 at its next evaluation; "
        "follow it with `geodesic rollout status`"
    )
    return 0


async def _operate(
    args: argparse.Namespace, ctx: Ctx, op: Callable[..., Awaitable[Transition]]
) -> int:
    try:
        t = await op(ctx.plane, actor=actor_of(args), reason=args.reason)
    except RolloutRefusedError as exc:
        raise RefusalError(str(exc)) from None
    print(f"rollout {t.state.rollout_id}: {t.summary}")
    return 0


async def pause(args: argparse.Namespace, ctx: Ctx) -> int:
    return await _operate(args, ctx, pause_rollout)


async def resume(args: argparse.Namespace, ctx: Ctx) -> int:
    return await _operate(args, ctx, resume_rollout)


async def abort(args: argparse.Namespace, ctx: Ctx) -> int:
    return await _operate(args, ctx, abort_rollout)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


async def status(args: argparse.Namespace, ctx: Ctx) -> int:
    loaded = await load(ctx.plane)
    if loaded.state is None:
        if args.json:
            print(json.dumps(None))
        else:
            print("no automatic rollout was started (`geodesic rollout start <candidate>`)")
        return 0
    doc = status_doc(loaded.state, time.time_ns())
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return 0
    steps = " ".join(f"{f:.0%}" for f in doc["steps"])
    print(
        f"rollout {doc['rollout_id']}: {doc['candidate']} vs {doc['baseline'] or '(baseline)'}"
        f" - {doc['state']} at {doc['weight']:.0%} (ramp {steps})"
    )
    nxt = doc["next_decision_s"]
    line = f"  in step {doc['time_in_step_s']:.0f}s; green windows {doc['green_streak']}; "
    line += "no decision pending" if nxt is None else f"next decision in {nxt:.1f}s"
    if doc["guard_left_s"]:
        line += f"; guard window {doc['guard_left_s']:.0f}s left"
    print(line)
    print(f"  why: {doc['reason']}")
    if doc["checks"]:
        print(f"  {'check':<18} {'status':<13} {'value':>10} {'threshold':>10} {'samples':>9}")
        for c in doc["checks"]:
            print(
                f"  {c['name']:<18} {c['status']:<13} {_num(c['value']):>10} "
                f"{_num(c['threshold']):>10} {c['samples']:>5}/{c['needed']:<3}"
            )
    else:
        print("  no analysis window judged yet")
    return 0
