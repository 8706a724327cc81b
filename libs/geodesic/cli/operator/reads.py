"""Handlers of the commands that only read: status, gates, history, report."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from geodesic.cli.operator.plumbing import Ctx, UsageError, err, guard_cfg, registry_of
from geodesic.cli.operator.render import console, render_audit, render_gates, render_status
from geodesic.contracts.services import RISK_SUPERVISOR, SHADOW
from geodesic.operations.common import mask_url, scrub
from geodesic.operations.history import (
    describe_answer,
    filter_events,
    model_at,
)
from geodesic.operations.promotion_gates import all_pass, gate_table, live_rows, model_checks
from geodesic.operations.status import build_status


# ---- reads -----------------------------------------------------------------------------
async def status(args: argparse.Namespace, ctx: Ctx) -> int:
    if args.audit < 0:
        raise UsageError("--audit must be >= 0")
    # flags written around the audited path are recorded before they are shown
    external = await ctx.plane.detect_external(actor="geodesic-status")
    snap = await ctx.plane.snapshot()
    audit = await ctx.plane.audit_events(args.audit) if args.audit else []
    risk = await ctx.read_json(RISK_SUPERVISOR.name, "status")
    shadow = await ctx.read_json(SHADOW.name, "stats")
    doc = build_status(
        snap,
        audit,
        risk,
        shadow,
        time.time_ns(),
        source={"redis": ctx.masked_url, "prefix": ctx.prefix},
        cfg=guard_cfg(args),
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
    doc["external_change"] = external and {"reason": external["reason"], "to": external["to"]}
    from geodesic.rollout.operator import load as load_ramp
    from geodesic.rollout.operator import status_doc

    ramp = (await load_ramp(ctx.plane)).state
    doc["ramp"] = None if ramp is None else status_doc(ramp, time.time_ns())
    if args.json:
        print(json.dumps(doc, indent=2, allow_nan=False))
    else:
        render_status(doc, console())
    return 0 if services_ok(doc["services"]) else 1


async def gates(args: argparse.Namespace, ctx: Ctx) -> int:
    registry = registry_of(args)
    if not (registry / args.model_id).is_dir():
        raise UsageError(f"model {args.model_id!r} not found in {registry}")
    rows = model_checks(registry, args.model_id)
    if not args.offline:
        snap = await ctx.plane.snapshot()
        risk = await ctx.read_json(RISK_SUPERVISOR.name, "status")
        shadow = await ctx.read_json(SHADOW.name, "stats")
        rows += live_rows(args.model_id, snap, risk, shadow, guard_cfg(args))
    table = gate_table(args.model_id, rows)
    if args.json:
        print(json.dumps(table, indent=2, allow_nan=False))
    else:
        render_gates(table, console())
    return 0 if all_pass(rows) else 1


async def history(args: argparse.Namespace, ctx: Ctx) -> int:
    if args.list:
        records = await ctx.plane.audit_events_range(args.since, args.until)
        events = filter_events(records, kinds=args.kind, symbol=args.symbol)
        if args.limit is not None:
            events = events[-args.limit :] if args.limit > 0 else []
        if args.json:
            print(json.dumps([e.as_dict() for e in events], indent=2))
        else:
            render_audit(events, console(), title=f"audit trail ({len(events)} entries)")
        return 0
    if not args.symbol or args.at is None:
        raise UsageError("give --symbol and --at (or --list)")
    events = await ctx.plane.audit_events_range(None, args.at)
    start = None
    if not events:  # say where the trail starts, so "unknown" is not read as "no model"
        first = await ctx.plane.first_audit_event()
        start = first.ts_ns if first else None
    doc = model_at(events, args.symbol, args.at, args.bar_index, trail_start_ns=start)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(describe_answer(doc))
    if not doc["known"]:
        err(args, f"no audit entry at or before {doc['at']}: cannot say")
        return 1
    return 0


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


async def report(args: argparse.Namespace, ctx: Ctx) -> int:
    from geodesic.operations.report import build_report, latency_rows, write_report

    now = time.time_ns()
    since = now - int(args.hours * 3600 * 1e9)
    snap = await ctx.plane.snapshot()
    audit = await ctx.plane.audit_events_range(since, now)
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
