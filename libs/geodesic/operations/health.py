"""Service health rows for `geodesic status`: is each service up, ready, keeping up?

Pure: the CLI probes (geodesic.cli.probes) and passes what it saw. A service is

- ``ready``: /health answered 200 (alive, partitions assigned, dependencies reachable);
- ``not ready``: /health answered 503 (alive; the body says why);
- ``down``: /health did not answer (or its recorded process is gone).

"Last seen" is when the service last showed a sign of life: now when /health answered,
else the last write to its log (a crash or kill -9 leaves it there), else unknown.
Lag is the sum over its consumer group's partitions of (end offset - committed offset):
records the service has not yet processed. Anything not ready makes `status` exit 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from geodesic.operations.common import format_ns

__all__ = ["ServiceProbe", "service_rows", "services_ok"]

State = Literal["ready", "not ready", "down"]


@dataclass(frozen=True, slots=True)
class ServiceProbe:
    """What the CLI saw of one service."""

    name: str
    url: str
    health: Mapping[str, Any] | None  # the /health body; None: no answer
    process_alive: bool | None = None  # None: no recorded process to check
    pid: int | None = None
    log_mtime_ns: int | None = None
    group_id: str | None = None
    lag: int | None = None
    lag_error: str | None = None
    last_input_ns: int | None = None  # e.g. the collector's last accepted tick
    #: the feature service's warm-up: bars needed, symbols ready, symbols still warming
    warmup: Mapping[str, Any] | None = None


def _state(p: ServiceProbe) -> tuple[State, str]:
    if p.process_alive is False:
        return "down", f"process {p.pid} is not running"
    if p.health is None:
        return "down", f"no answer from {p.url}/health"
    if p.health.get("ready"):
        return "ready", str(p.health.get("reason") or "ok")
    return "not ready", str(p.health.get("reason") or "not ready")


def service_rows(probes: Iterable[ServiceProbe], now_ns: int) -> list[dict[str, Any]]:
    """One JSON-safe row per service, in the order given."""
    rows = []
    for p in probes:
        state, detail = _state(p)
        seen = now_ns if p.health is not None else p.log_mtime_ns
        rows.append(
            {
                "service": p.name,
                "state": state,
                "detail": detail,
                "url": p.url,
                "pid": p.pid,
                "group_id": p.group_id,
                "lag": p.lag,
                "lag_error": p.lag_error,
                "last_seen": format_ns(seen) if seen else None,
                "last_seen_age_s": None if not seen else round((now_ns - seen) / 1e9, 3),
                "last_input": format_ns(p.last_input_ns) if p.last_input_ns else None,
                "warmup": dict(p.warmup) if p.warmup else None,
            }
        )
    return rows


def warmup_line(warmup: Mapping[str, Any]) -> str:
    """'2 symbols scoring; warming (bars of 50): QQQ 12, SPY 49' for the status table."""
    need = warmup.get("bars_needed")
    warming = dict(warmup.get("symbols_warming") or {})
    text = f"{warmup.get('symbols_ready', 0)} symbols scoring"
    if warming:
        shown = ", ".join(f"{s} {n}" for s, n in sorted(warming.items())[:8])
        more = f" (+{len(warming) - 8} more)" if len(warming) > 8 else ""
        text += f"; warming (bars of {need}): {shown}{more}"
    return text


def services_ok(rows: Iterable[Mapping[str, Any]]) -> bool:
    """True when every known service is ready (no services known is not a failure)."""
    return all(r["state"] == "ready" for r in rows)
