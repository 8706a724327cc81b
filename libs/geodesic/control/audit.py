"""Reading the audit stream: the one decoder of its entries.

ControlPlane._commit writes each change as one stream entry (event_id, kind, actor,
reason, from, to as JSON, symbol, ts_ns). Everything that reads it back (the CLI's
history and status, the daily report, the risk supervisor forwarding entries to
control.events) decodes it here, so a change to the entry format is made in one place.
Old entries whose from/to hold a ``Rollout(...)`` repr are decoded by literal evaluation
only (never eval).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from geodesic.contracts.models import ControlEvent

__all__ = ["AuditEvent", "audit_to_event", "decode_value"]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_ns(ns: int | None) -> str:
    """ISO-8601 UTC with microseconds ("-" for none): what people read in tables."""
    if not ns:
        return "-"
    dt = _EPOCH + timedelta(microseconds=ns // 1000)
    return dt.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _rollout_repr(text: str) -> dict[str, Any] | None:
    """Rollout(mode='canary', ...) -> its fields, by literal evaluation only (no eval)."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return None
    if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Rollout"):
        return None
    try:
        return {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
    except ValueError:
        return None


def decode_value(raw: str | None) -> Any:
    """An audit from/to field as data: JSON, with a Rollout repr turned into a dict."""
    if raw is None or raw == "":
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    if isinstance(value, str) and value.startswith("Rollout("):
        return _rollout_repr(value) or value
    return value


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit entry, decoded; ``id`` is the stream id (the commit order)."""

    id: str
    ts_ns: int
    kind: str
    actor: str
    reason: str
    symbol: str | None
    before: Any
    after: Any
    event_id: str = ""
    from_raw: str | None = field(default=None, repr=False, compare=False)
    to_raw: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_entry(
        cls, entry_id: bytes | str, fields: Mapping[bytes | str, bytes | str]
    ) -> AuditEvent:
        """A raw stream entry as redis-py returns it (bytes or str)."""
        rec = {_text(k): _text(v) for k, v in fields.items()}
        return cls.from_fields({**rec, "id": _text(entry_id)})

    @classmethod
    def from_fields(cls, rec: Mapping[str, str]) -> AuditEvent:
        sid = rec.get("id", "") or ""
        ts = rec.get("ts_ns") or ""
        if ts.isdigit():
            ts_ns = int(ts)
        else:  # fall back to the stream id's server milliseconds
            head = sid.split("-", 1)[0]
            ts_ns = int(head) * 1_000_000 if head.isdigit() else 0
        return cls(
            id=sid,
            ts_ns=ts_ns,
            kind=rec.get("kind", "") or "",
            actor=rec.get("actor", "") or "",
            reason=rec.get("reason", "") or "",
            symbol=rec.get("symbol") or None,
            before=decode_value(rec.get("from")),
            after=decode_value(rec.get("to")),
            event_id=rec.get("event_id", "") or "",
            from_raw=rec.get("from"),
            to_raw=rec.get("to"),
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AuditEvent:
        """The inverse of :meth:`as_dict` (e.g. a status document's audit list)."""
        return cls(
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

    def to_control_event(self) -> ControlEvent:
        """The control.events payload; from/to stay exactly as written to the stream."""
        from geodesic.contracts.models import ControlEvent

        return ControlEvent(
            event_id=self.event_id or self.id,
            kind=self.kind,  # a str: the model validates it against ControlKind
            actor=self.actor or "unknown",
            reason=self.reason or "unspecified",
            from_value=self.from_raw,
            to_value=self.to_raw,
            symbol=self.symbol,
            ts_ns=self.ts_ns,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts_ns": self.ts_ns,
            "time": format_ns(self.ts_ns),
            "kind": self.kind,
            "symbol": self.symbol,
            "actor": self.actor,
            "reason": self.reason,
            "from": self.before,
            "to": self.after,
            "event_id": self.event_id,
        }


def audit_to_event(
    entry_id: bytes | str, fields: Mapping[bytes | str, bytes | str]
) -> ControlEvent:
    """A raw audit-stream entry as the ControlEvent forwarded to control.events."""
    return AuditEvent.from_entry(entry_id, fields).to_control_event()
