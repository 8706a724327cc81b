import json

import pytest
from operations_helpers import SEC, T0, Trail

from geodesic.control import Rollout, TradingState, route_for
from geodesic.operations.common import format_ns, mask_url, parse_time, scrub
from geodesic.operations.history import (
    decode_value,
    describe_answer,
    filter_events,
    model_at,
    parse_events,
    replay,
)

CANARY = Rollout("canary", 0.25, 7, "m2")


@pytest.fixture
def trail() -> Trail:
    """m1 promoted at T0; canary of m2 at +10 s; rolled back at +20 s; m3 promoted at +30 s
    (during the cooldown, forced); global kill switch +40 s; ES halted +50 s."""
    t = Trail()
    t.promote(T0, None, "m1")
    t.rollout(T0 + 10 * SEC, Rollout(), CANARY)
    t.rollback(T0 + 20 * SEC, "m1", "m1", "canary")
    t.add("MODE_SWITCH", T0 + 20 * SEC + 1, "canary", "disabled")
    t.promote(T0 + 30 * SEC, "m1", "m3")
    t.add("KILL_SWITCH", T0 + 40 * SEC, False, True)
    t.add("HALT", T0 + 50 * SEC, "ACTIVE", "HALTED", symbol="ES")
    return t


def test_rollout_repr_in_the_audit_is_decoded_to_fields():
    assert decode_value(json.dumps(CANARY.__repr__())) == {
        "mode": "canary",
        "canary_fraction": 0.25,
        "seed": 7,
        "candidate": "m2",
    }
    assert decode_value('{"active": "m1"}') == {"active": "m1"}
    assert decode_value("not json") == "not json"
    assert decode_value("\"Rollout(__import__('os'))\"") == "Rollout(__import__('os'))"
    assert decode_value("") is None


def test_active_model_before_during_and_after_a_canary(trail):
    events = parse_events(trail.records)
    before = model_at(events, "ES", T0 + 5 * SEC)
    assert before["known"] and before["active"] == "m1" and not before["canary"]
    assert before["serving"] == [{"route": "active", "model": "m1", "share": 1.0}]

    during = model_at(events, "ES", T0 + 15 * SEC)
    assert during["active"] == "m1" and during["canary"]
    assert during["rollout"] == {
        "mode": "canary",
        "canary_fraction": 0.25,
        "seed": 7,
        "candidate": "m2",
    }
    assert {s["model"]: s["share"] for s in during["serving"]} == {"m1": 0.75, "m2": 0.25}
    assert during["last_model_change"]["kind"] == "ROLLOUT"

    after_rollback = model_at(events, "ES", T0 + 25 * SEC)
    assert after_rollback["active"] == "m1" and not after_rollback["canary"]
    assert after_rollback["cooldown_until_ns"] == T0 + 920 * SEC

    later = model_at(events, "ES", T0 + 35 * SEC)
    assert later["active"] == "m3" and later["previous"] == "m1"


def test_bar_route_during_canary_is_the_deterministic_hash(trail):
    events = parse_events(trail.records)
    at = T0 + 15 * SEC
    routed = {"canary": 0, "active": 0}
    for bar in range(400):
        doc = model_at(events, "NQ", at, bar_index=bar)
        expected = route_for(7, "NQ", bar, 0.25)
        assert doc["route"]["route"] == ("canary" if expected else "active")
        assert doc["route"]["model"] == ("m2" if expected else "m1")
        routed[doc["route"]["route"]] += 1
    assert 60 < routed["canary"] < 140  # ~25% of 400
    # outside the canary every bar is on the active route
    assert model_at(events, "NQ", T0 + 25 * SEC, bar_index=3)["route"]["model"] == "m1"


def test_boundaries_are_inclusive_and_before_the_trail_is_unknown(trail):
    events = parse_events(trail.records)
    assert model_at(events, "ES", T0)["active"] == "m1"
    assert model_at(events, "ES", T0 + 30 * SEC)["active"] == "m3"
    assert model_at(events, "ES", T0 + 30 * SEC - 1)["active"] == "m1"
    unknown = model_at(events, "ES", T0 - 1)
    assert not unknown["known"] and unknown["active"] is None
    assert "unknown" in describe_answer(unknown)


def test_kill_switch_and_halts_replay_per_symbol(trail):
    events = parse_events(trail.records)
    assert model_at(events, "ES", T0 + 45 * SEC)["trading_state"] == "HALTED"  # global kill
    snap = replay(events, T0 + 55 * SEC).snapshot
    assert snap.kill_global and snap.symbol_states == {"ES": TradingState.HALTED}
    t = Trail()
    t.add("KILL_SWITCH", T0, False, True, symbol="ES")
    t.add("KILL_SWITCH", T0 + 1, False, True, symbol="NQ")
    t.add("KILL_SWITCH", T0 + 2, True, False, symbol="ES")
    t.add("HALT", T0 + 3, "ACTIVE", "REDUCING")
    snap = replay(parse_events(t.records)).snapshot
    assert snap.kill_symbols == {"NQ"} and snap.global_state is TradingState.REDUCING
    assert snap.version == 4


def test_full_rollout_serves_the_candidate_and_shadow_slot_changes_replay():
    t = Trail()
    t.promote(T0, None, "m1")
    t.add("PROMOTE", T0 + 1, {"shadow": None}, {"shadow": "s1"})
    t.rollout(T0 + 2, Rollout(), Rollout("full", 1.0, 3, "m2"))
    events = parse_events(t.records)
    doc = model_at(events, "ES", T0 + 3, bar_index=11)
    assert doc["serving"] == [{"route": "canary", "model": "m2", "share": 1.0}]
    assert doc["route"] == {"bar_index": 11, "route": "canary", "model": "m2"}
    assert doc["shadow"] == "s1"
    assert "full rollout" in describe_answer(doc)
    t.add("PROMOTE", T0 + 4, {"shadow": "s1"}, {"shadow": None})
    assert replay(parse_events(t.records)).snapshot.shadow is None


def test_rollback_without_rollout_reverts_to_previous():
    t = Trail()
    t.promote(T0, None, "m1")
    t.promote(T0 + SEC, "m1", "m2")
    t.rollback(T0 + 2 * SEC, "m2", "m1", "disabled")
    snap = replay(parse_events(t.records)).snapshot
    assert snap.active == "m1" and snap.rollout.mode == "disabled"


def test_filter_by_time_kind_and_symbol(trail):
    events = parse_events(trail.records)
    assert [e.kind for e in filter_events(events, kinds=["promote"])] == ["PROMOTE", "PROMOTE"]
    window = filter_events(events, since_ns=T0 + 10 * SEC, until_ns=T0 + 30 * SEC)
    assert [e.kind for e in window] == ["ROLLOUT", "ROLLBACK", "MODE_SWITCH", "PROMOTE"]
    nq = filter_events(events, symbol="NQ")
    assert all(e.symbol is None for e in nq) and len(nq) == len(events) - 1


def test_entry_without_ts_falls_back_to_the_stream_id():
    rec = {"id": "1700000000123-0", "kind": "COOLDOWN", "from": "5", "to": "0"}
    (e,) = parse_events([rec])
    assert e.ts_ns == 1_700_000_000_123_000_000 and e.before == 5 and e.after == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-11-14T22:13:20Z", T0),
        ("2023-11-14T22:13:20", T0),  # naive = UTC
        ("2023-11-14T23:13:20+01:00", T0),
        ("2023-11-14T22:13:20.000001Z", T0 + 1000),
        (str(T0 + 7), T0 + 7),
        ("now", T0 + 3600 * SEC),
        ("90m", T0 + 3600 * SEC - 5400 * SEC),
        ("1d", T0 + 3600 * SEC - 86400 * SEC),
    ],
)
def test_parse_time_accepts_iso_epoch_ns_and_ages(text, expected):
    assert parse_time(text, now_ns=T0 + 3600 * SEC) == expected


@pytest.mark.parametrize("text", ["1700000000", "1700000000000", "yesterday", "", "12:00"])
def test_parse_time_refuses_seconds_millis_and_nonsense(text):
    with pytest.raises(ValueError):
        parse_time(text, now_ns=T0)


def test_format_ns_round_trips_through_parse_time():
    assert format_ns(T0 + 1000) == "2023-11-14T22:13:20.000001Z"
    assert parse_time(format_ns(T0 + 1000), 0) == T0 + 1000
    assert format_ns(0) == "-"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://operator:s3cretpass@h:6379/0", "redis://operator:***@h:6379/0"),
        ("redis://:s3cretpass@h:6379", "redis://:***@h:6379"),
        ("rediss://h:6379/0?password=s3cretpass&db=1", "rediss://h:6379/0?password=***&db=1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_mask_url_hides_passwords(url, masked):
    assert mask_url(url) == masked
    if "s3cretpass" in url:
        assert "s3cretpass" not in scrub(f"error talking to {url}: s3cretpass rejected", url)
