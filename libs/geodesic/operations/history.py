"""The audit stream as history: parse entries, replay the control plane to any instant.

Every control-plane change is one audit entry (ControlPlane._commit), so replaying the
entries written up to T rebuilds the slots, rollout, kill switches and trading states in
force at T; with the rollout's seed and fraction, ``route_for`` then says which model
scored any (symbol, bar_index) at that time, exactly as the scorer decided it live.

Entry formats replayed (kind: from -> to):
- PROMOTE  {"active": old} -> {"active": new} (promote: old becomes previous), or
           {slot: old} -> {slot: new} from set_slot (shadow / previous; null clears)
- ROLLOUT  repr(Rollout(...)) -> repr(Rollout(...)) (a dict is accepted too); an
           automatic ramp's transition (geodesic.rollout) is a ROLLOUT entry whose `to`
           is {"phase", "step", ...}: it changes no flag, it says which ramp step served
- ROLLBACK {...} -> {"active": a, "rollout": "disabled", "cooldown_until_ns": t}
- COOLDOWN t -> 0;  KILL_SWITCH bool -> bool;  HALT state -> state (symbol field: per
  symbol, else global);  MODE_SWITCH is a note only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from geodesic.control.audit import AuditEvent, decode_value
from geodesic.control.state import ControlSnapshot, Rollout, TradingState
from geodesic.operations.common import format_ns

__all__ = [
    "AuditEvent",
    "ReplayResult",
    "decode_value",
    "filter_events",
    "model_at",
    "parse_events",
    "replay",
]

#: Kinds that change which model serves (the "last change" an answer cites).
MODEL_KINDS = frozenset({"PROMOTE", "ROLLOUT", "ROLLBACK"})


def parse_events(records: Iterable[Mapping[str, str]]) -> list[AuditEvent]:
    """Audit records as read by ControlPlane.audit_log / audit_range, decoded."""
    return [AuditEvent.from_fields(r) for r in records]


def filter_events(
    events: Iterable[AuditEvent],
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    kinds: Iterable[str] | None = None,
    symbol: str | None = None,
) -> list[AuditEvent]:
    """Events in [since, until]; ``symbol`` keeps that symbol's and global entries."""
    wanted = {k.upper() for k in kinds} if kinds else None
    return [
        e
        for e in events
        if (since_ns is None or e.ts_ns >= since_ns)
        and (until_ns is None or e.ts_ns <= until_ns)
        and (wanted is None or e.kind in wanted)
        and (symbol is None or e.symbol in (None, symbol))
    ]


def _as_rollout(value: Any, current: Rollout) -> Rollout:
    if not isinstance(value, Mapping) or "phase" in value:
        return current  # not a rollout (a ramp's transition: its flags come separately)
    mode = value.get("mode")
    return Rollout(
        mode="canary" if mode == "canary" else "full" if mode == "full" else "disabled",
        canary_fraction=float(value.get("canary_fraction") or 0.0),
        seed=int(value.get("seed") or 0),
        candidate=value.get("candidate") or None,
    )


def apply_event(snap: ControlSnapshot, e: AuditEvent) -> ControlSnapshot:
    """The control plane after ``e``, as ControlPlane wrote it."""
    to, before = e.after, e.before
    if e.kind == "PROMOTE" and isinstance(to, Mapping):
        changes: dict[str, Any] = {}
        if "active" in to:
            old = before.get("active") if isinstance(before, Mapping) else snap.active
            changes["active"] = to["active"] or None
            if old and old != to["active"]:
                changes["previous"] = old
        for slot in ("shadow", "previous"):
            if slot in to:
                changes[slot] = to[slot] or None
        snap = replace(snap, **changes)
    elif e.kind == "ROLLOUT":
        snap = replace(snap, rollout=_as_rollout(to, snap.rollout))
    elif e.kind == "ROLLBACK" and isinstance(to, Mapping):
        changes = {
            "rollout": replace(snap.rollout, mode="disabled", canary_fraction=0.0),
            "cooldown_until_ns": int(to.get("cooldown_until_ns") or 0),
        }
        if to.get("active"):
            changes["active"] = to["active"]
        snap = replace(snap, **changes)
    elif e.kind == "COOLDOWN":
        snap = replace(snap, cooldown_until_ns=int(to or 0))
    elif e.kind == "KILL_SWITCH":
        on = bool(to)
        if e.symbol is None:
            snap = replace(snap, kill_global=on)
        else:
            syms = set(snap.kill_symbols)
            (syms.add if on else syms.discard)(e.symbol)
            snap = replace(snap, kill_symbols=frozenset(syms))
    elif e.kind == "HALT" and isinstance(to, str) and to in TradingState.__members__:
        state = TradingState(to)
        if e.symbol is None:
            snap = replace(snap, global_state=state)
        else:
            snap = replace(snap, symbol_states={**snap.symbol_states, e.symbol: state})
    return replace(snap, version=snap.version + 1)


@dataclass(frozen=True)
class ReplayResult:
    snapshot: ControlSnapshot
    applied: int
    last_model_change: AuditEvent | None
    first_ts_ns: int | None
    events: list[AuditEvent] = field(default_factory=list)
    #: the automatic ramp's last transition up to then ({"phase", "step", ...}), if any
    ramp: Mapping[str, Any] | None = None


def replay(events: Iterable[AuditEvent], at_ns: int | None = None) -> ReplayResult:
    """The control plane as of ``at_ns`` (inclusive): every entry up to then, in stream
    order. Starts from the empty plane, so a trimmed stream yields what it still holds."""
    snap = ControlSnapshot()
    applied: list[AuditEvent] = []
    last_model: AuditEvent | None = None
    first: int | None = None
    ramp: Mapping[str, Any] | None = None
    for e in events:
        first = e.ts_ns if first is None else min(first, e.ts_ns)
        if at_ns is not None and e.ts_ns > at_ns:
            continue
        snap = apply_event(snap, e)
        applied.append(e)
        if e.kind in MODEL_KINDS:
            last_model = e
        if e.kind == "ROLLOUT" and isinstance(e.after, Mapping) and "phase" in e.after:
            ramp = {**e.after, "reason": e.reason}
    return ReplayResult(snap, len(applied), last_model, first, applied, ramp)


def rollout_dict(r: Rollout) -> dict[str, Any]:
    return {
        "mode": r.mode,
        "canary_fraction": r.canary_fraction,
        "seed": r.seed,
        "candidate": r.candidate,
    }


def model_at(
    events: Iterable[AuditEvent],
    symbol: str,
    at_ns: int,
    bar_index: int | None = None,
    *,
    trail_start_ns: int | None = None,
) -> dict[str, Any]:
    """Which model served ``symbol`` at ``at_ns``: the active model and, during a canary,
    the candidate with its fraction and seed; with ``bar_index``, the route that bar took.

    ``known`` is False when no audit entry precedes ``at_ns`` (nothing to replay);
    ``trail_start_ns`` (the stream's first entry, when the caller read only up to
    ``at_ns``) lets the answer say where the trail begins.
    """
    res = replay(events, at_ns)
    snap = res.snapshot
    r = snap.rollout
    doc: dict[str, Any] = {
        "symbol": symbol,
        "at_ns": at_ns,
        "at": format_ns(at_ns),
        "known": res.applied > 0,
        "audit_first_ns": res.first_ts_ns or trail_start_ns,
        "events_replayed": res.applied,
        "active": snap.active,
        "previous": snap.previous,
        "shadow": snap.shadow,
        "rollout": rollout_dict(r),
        "canary": r.mode == "canary" and bool(r.candidate) and r.canary_fraction > 0,
        "serving": _serving(snap),
        "trading_state": snap.trading_state(symbol).value,
        "cooldown_until_ns": snap.cooldown_until_ns or None,
        "last_model_change": res.last_model_change.as_dict() if res.last_model_change else None,
        "route": None,
        "ramp": res.ramp,
    }
    if bar_index is not None:
        model, route = snap.route(symbol, bar_index)
        doc["route"] = {"bar_index": bar_index, "route": route, "model": model}
    return doc


def _serving(snap: ControlSnapshot) -> list[dict[str, Any]]:
    """The models live on each route, with the share of bars each one scores."""
    r = snap.rollout
    if r.mode == "full" and r.candidate:
        return [{"route": "canary", "model": r.candidate, "share": 1.0}]
    if r.mode == "canary" and r.candidate and r.canary_fraction > 0:
        return [
            {"route": "active", "model": snap.active, "share": 1.0 - r.canary_fraction},
            {"route": "canary", "model": r.candidate, "share": r.canary_fraction},
        ]
    return [{"route": "active", "model": snap.active, "share": 1.0}]


def describe_answer(doc: Mapping[str, Any]) -> str:
    """One paragraph for people: what served the symbol at that time and why."""
    if not doc["known"]:
        first = doc.get("audit_first_ns")
        start = f"the audit trail starts at {format_ns(first)}" if first else "it is empty"
        return f"unknown: no audit entry at or before {doc['at']} ({start})"
    r = doc["rollout"]
    lines = [f"{doc['symbol']} at {doc['at']}: active model {doc['active'] or '(none)'}"]
    if r["mode"] == "full" and r["candidate"]:
        lines.append(f"  full rollout: every bar scored by candidate {r['candidate']}")
    elif doc["canary"]:
        lines.append(
            f"  canary: candidate {r['candidate']} on {r['canary_fraction']:.2%} of bars "
            f"(seed {r['seed']}); the rest on {doc['active'] or '(none)'}"
        )
    ramp = doc.get("ramp")
    if ramp and ramp.get("phase") in ("ANALYSING", "PAUSED"):
        lines.append(
            f"  automatic ramp: step {ramp.get('step')} {ramp['phase']} ({ramp.get('reason', '')})"
        )
    if doc.get("shadow"):
        lines.append(f"  shadow: {doc['shadow']} (never reaches executors)")
    route = doc.get("route")
    if route:
        lines.append(
            f"  bar {route['bar_index']}: route {route['route']} -> {route['model'] or '(none)'}"
        )
    if doc["trading_state"] != "ACTIVE":
        lines.append(f"  trading state: {doc['trading_state']}")
    last = doc.get("last_model_change")
    if last:
        lines.append(
            f"  since {last['time']}: {last['kind']} by {last['actor']} ({last['reason']})"
        )
    lines.append(f"  ({doc['events_replayed']} audit entries replayed)")
    return "\n".join(lines)
