"""The one audit-stream decoder: every reader gets the same event from the same entry."""

import json

from geodesic.control.audit import AuditEvent, audit_to_event

FIELDS = {
    "event_id": "e1",
    "kind": "KILL_SWITCH",
    "actor": "alice",
    "reason": "venue outage",
    "from": "false",
    "to": "true",
    "symbol": "ES",
    "ts_ns": "1700000000123456789",
}


def test_bytes_and_text_entries_decode_to_the_same_event():
    raw = {k.encode(): v.encode() for k, v in FIELDS.items()}
    a = AuditEvent.from_entry(b"1700000000123-0", raw)
    b = AuditEvent.from_fields({**FIELDS, "id": "1700000000123-0"})
    assert a == b and a.before is False and a.after is True and a.symbol == "ES"
    assert AuditEvent.from_dict(a.as_dict()) == a
    assert a.as_dict()["time"] == "2023-11-14T22:13:20.123456Z"


def test_the_forwarded_control_event_keeps_from_and_to_exactly_as_written():
    fields = {**FIELDS, "kind": "PROMOTE", "from": '{"active": "m1"}', "to": '{"active": "m2"}'}
    event = audit_to_event("5-0", fields)
    assert (event.from_value, event.to_value) == (fields["from"], fields["to"])
    assert event.event_id == "e1" and event.ts_ns == 1700000000123456789


def test_missing_fields_fall_back_without_failing_the_contract():
    event = audit_to_event(
        "1700000000000-0", {"kind": "EXTERNAL_CHANGE", "to": json.dumps({"kill_global": True})}
    )
    assert event.event_id == "1700000000000-0" and event.actor == "unknown"
    assert event.reason == "unspecified" and event.ts_ns == 1700000000000 * 1_000_000
