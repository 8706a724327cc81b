"""The status document: everything an operator checks first, in one JSON-safe dict.

Inputs are what the CLI read: the control snapshot, recent audit entries, the risk
supervisor's status (``<prefix>:state:risk:status``) and the shadow's stats
(``<prefix>:state:shadow:stats``). A route or feature with no samples says
"insufficient data" instead of showing a rate of 0, which would read as a failing model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from geodesic.control.audit import AuditEvent
from geodesic.control.state import ControlSnapshot
from geodesic.operations.common import format_ns, jsonable
from geodesic.operations.history import rollout_dict
from geodesic.risk.guards import RolloutGuardConfig

__all__ = ["build_status", "drift_view", "shadow_view", "winrate_view"]

INSUFFICIENT = "insufficient data"


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def winrate_view(
    risk_status: Mapping[str, Any] | None, snapshot: ControlSnapshot
) -> dict[str, dict[str, Any]]:
    """Rolling win rate per route with its Wilson interval; the model each route serves."""
    r = snapshot.rollout
    models = {
        "active": snapshot.active,
        "canary": r.candidate if r.mode in ("canary", "full") else None,
    }
    docs = (risk_status or {}).get("winrates") or {}
    out = {}
    for route, model in models.items():
        d = docs.get(route) or {}
        n = int(d.get("n") or 0)
        rate = _finite(d.get("rate")) if n else None
        out[route] = {
            "route": route,
            "model": model,
            "wins": int(d.get("wins") or 0),
            "n": n,
            "rate": rate,
            "lower": _finite(d.get("lower")) if n else None,
            "upper": _finite(d.get("upper")) if n else None,
            "status": "ok" if rate is not None else INSUFFICIENT,
        }
    return out


def drift_view(
    risk_status: Mapping[str, Any] | None, cfg: RolloutGuardConfig | None = None
) -> dict[str, Any]:
    """PSI and KS per feature against their sample-size-aware alarm levels."""
    cfg = cfg or RolloutGuardConfig()
    docs = (risk_status or {}).get("drift")
    if not isinstance(docs, Mapping) or not docs:
        guard = ((risk_status or {}).get("guards") or {}).get("drift") or {}
        note = guard.get("reason") or (
            "no risk-supervisor status" if not risk_status else "no drift reference in use"
        )
        return {"available": False, "features": [], "alarms": [], "note": note}
    rows = []
    for name, d in docs.items():
        n = int(d.get("n") or 0)
        psi, psi_level = _finite(d.get("psi")), _finite(d.get("psi_level"))
        ks, ks_level = _finite(d.get("ks")), _finite(d.get("ks_level"))
        psi_alarm = psi is not None and psi_level is not None and psi > psi_level
        ks_alarm = ks is not None and ks_level is not None and ks > ks_level
        if n == 0 or psi is None:
            status = INSUFFICIENT
        elif psi_alarm or ks_alarm:
            status = "ALARM"
        elif n < cfg.drift_min_window:
            status = f"{INSUFFICIENT} (n < {cfg.drift_min_window})"
        else:
            status = "ok"
        rows.append(
            {
                "feature": name,
                "n": n,
                "psi": psi,
                "psi_level": psi_level,
                "psi_alarm": psi_alarm,
                "ks": ks,
                "ks_level": ks_level,
                "ks_alarm": ks_alarm,
                "status": status,
            }
        )
    alarms = [r["feature"] for r in rows if r["status"] == "ALARM"]
    return {"available": True, "features": rows, "alarms": alarms, "note": ""}


def shadow_view(
    shadow_stats: Mapping[str, Any] | None, snapshot: ControlSnapshot
) -> dict[str, Any]:
    """Shadow match rate (same side as live), mean |score delta|, parity failures."""
    if not shadow_stats:
        return {
            "available": False,
            "model": snapshot.shadow,
            "match_rate": None,
            "status": "no shadow stats published",
        }
    rate = _finite(shadow_stats.get("match_rate"))
    return {
        "available": True,
        "model": snapshot.shadow,
        "match_rate": rate,
        "window": int(shadow_stats.get("window") or 0),
        "mean_abs_delta": _finite(shadow_stats.get("mean_abs_delta")),
        "parity_fail": int(shadow_stats.get("parity_fail") or 0),
        "scored": int(shadow_stats.get("scored") or 0),
        "joined": int(shadow_stats.get("joined") or 0),
        "status": "ok" if rate is not None else INSUFFICIENT,
    }


def cooldown_view(snapshot: ControlSnapshot, now_ns: int) -> dict[str, Any]:
    until = snapshot.cooldown_until_ns
    if until <= now_ns:
        return {"active": False, "until_ns": until or None, "until": None, "remaining_s": 0.0}
    return {
        "active": True,
        "until_ns": until,
        "until": format_ns(until),
        "remaining_s": round((until - now_ns) / 1e9, 1),
    }


def build_status(
    snapshot: ControlSnapshot,
    audit: Sequence[AuditEvent],
    risk_status: Mapping[str, Any] | None,
    shadow_stats: Mapping[str, Any] | None,
    now_ns: int,
    *,
    source: Mapping[str, Any] | None = None,
    cfg: RolloutGuardConfig | None = None,
) -> dict[str, Any]:
    """The whole `geodesic status` document (strict-JSON safe)."""
    s = snapshot
    risk = risk_status or {}
    doc = {
        "generated_at": format_ns(now_ns),
        "generated_at_ns": now_ns,
        "source": dict(source or {}),
        "version": s.version,
        "slots": {"active": s.active, "shadow": s.shadow, "previous": s.previous},
        "rollout": rollout_dict(s.rollout),
        "kill_switches": {"global": s.kill_global, "symbols": sorted(s.kill_symbols)},
        "trading_states": {
            "global": s.global_state.value,
            "symbols": {k: v.value for k, v in sorted(s.symbol_states.items())},
        },
        "cooldown": cooldown_view(s, now_ns),
        "audit": [e.as_dict() for e in audit],
        "risk_status_available": bool(risk_status),
        "winrates": winrate_view(risk_status, s),
        "drift": drift_view(risk_status, cfg),
        "guards": dict(risk.get("guards") or {}),
        "risk_actions": list(risk.get("actions") or []),
        "shadow": shadow_view(shadow_stats, s),
    }
    out: dict[str, Any] = jsonable(doc)
    return out
