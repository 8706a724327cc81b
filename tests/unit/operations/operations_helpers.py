"""Audit entries written exactly as ControlPlane._commit writes them (uniquely named module)."""

from __future__ import annotations

import json
from typing import Any

from geodesic.control.state import Rollout

T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
SEC = 1_000_000_000


class Trail:
    """Builds a synthetic audit stream: one entry per change, stream ids in commit order."""

    def __init__(self) -> None:
        self.records: list[dict[str, str]] = []

    def add(
        self,
        kind: str,
        ts_ns: int,
        before: Any,
        after: Any,
        *,
        symbol: str | None = None,
        reason: str = "test",
        actor: str = "tester",
    ) -> dict[str, str]:
        rec = {
            "event_id": f"e{len(self.records)}",
            "kind": kind,
            "actor": actor,
            "reason": reason,
            "from": json.dumps(before, default=str),
            "to": json.dumps(after, default=str),
            "symbol": symbol or "",
            "ts_ns": str(ts_ns),
            "id": f"{ts_ns // 1_000_000}-{len(self.records)}",
        }
        self.records.append(rec)
        return rec

    def promote(self, ts: int, old: str | None, new: str) -> None:
        self.add("PROMOTE", ts, {"active": old}, {"active": new})

    def rollout(self, ts: int, before: Rollout, after: Rollout) -> None:
        # set_rollout records the dataclass repr, JSON-encoded as a string
        self.add("ROLLOUT", ts, before.__repr__(), after.__repr__())

    def rollback(self, ts: int, active: str | None, after_active: str | None, mode: str) -> None:
        self.add(
            "ROLLBACK",
            ts,
            {"active": active, "rollout": mode},
            {"active": after_active, "rollout": "disabled", "cooldown_until_ns": ts + 900 * SEC},
        )
