import base64
import hashlib
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from collector.validation import (
    DETAIL_MAX_CHARS,
    Accepted,
    Rejected,
    RejectReason,
    ValidationPolicy,
    classify,
    expected_partition,
)
from geodesic.contracts import Tick, make_dead_letter
from geodesic.contracts.models import DEAD_LETTER_RAW_MAX
from geodesic.contracts.reasons import CLASSIFY_REASONS

NOW = 1_700_000_000_000_000_000
POLICY = ValidationPolicy()
GOOD = {
    "venue": "XNAS",
    "symbol": "ES",
    "seq": 7,
    "ts_ns": NOW - 1_000_000,
    "bid": 99.0,
    "ask": 100.0,
    "last": 99.5,
    "size": 3.0,
}


def encode(payload: object) -> bytes:
    return json.dumps(payload).encode()


def patched(**changes: object) -> bytes:
    return encode({**GOOD, **changes})


def without(field: str) -> bytes:
    return encode({k: v for k, v in GOOD.items() if k != field})


def reason_of(raw: bytes, key: bytes | None = None, policy: ValidationPolicy = POLICY) -> str:
    verdict = classify(raw, key, NOW, policy)
    assert isinstance(verdict, Rejected), verdict
    return verdict.reason


def test_valid_tick_is_accepted_and_stamped_with_ingest_time():
    verdict = classify(encode(GOOD), b"ES", NOW, POLICY)
    assert isinstance(verdict, Accepted)
    assert verdict.tick == Tick(**GOOD, ingest_ts_ns=NOW)


def test_producer_supplied_ingest_time_is_overwritten_by_the_collector_clock():
    verdict = classify(patched(ingest_ts_ns=5), None, NOW, POLICY)
    assert isinstance(verdict, Accepted)
    assert verdict.tick.ingest_ts_ns == NOW


def test_integer_prices_are_accepted_as_json_numbers():
    verdict = classify(patched(bid=99, ask=100, last=100, size=0), None, NOW, POLICY)
    assert isinstance(verdict, Accepted)
    assert verdict.tick.bid == 99.0


HOSTILE = [
    (b"\xff\xfe{}", RejectReason.INVALID_UTF8),
    (b'{"venue": "X\xc3"}', RejectReason.INVALID_UTF8),
    (b"", RejectReason.MALFORMED_JSON),
    (b'{"venue": "X"', RejectReason.MALFORMED_JSON),
    (b"\xef\xbb\xbf" + encode(GOOD), RejectReason.MALFORMED_JSON),
    (b'{"venue": "X\\ud800"}', RejectReason.MALFORMED_JSON),
    (b"[1, 2]", RejectReason.NOT_AN_OBJECT),
    (b"null", RejectReason.NOT_AN_OBJECT),
    (b'"tick"', RejectReason.NOT_AN_OBJECT),
    (b"42", RejectReason.NOT_AN_OBJECT),
    (without("bid"), RejectReason.MISSING_FIELD),
    (without("ts_ns"), RejectReason.MISSING_FIELD),
    (patched(price=1.0), RejectReason.EXTRA_FIELD),
    (patched(seq="7"), RejectReason.WRONG_TYPE),
    (patched(seq=7.5), RejectReason.WRONG_TYPE),
    (patched(seq=True), RejectReason.WRONG_TYPE),
    (patched(bid=True), RejectReason.WRONG_TYPE),
    (patched(bid="99.0"), RejectReason.WRONG_TYPE),
    (patched(bid=None), RejectReason.WRONG_TYPE),
    (patched(symbol=5), RejectReason.WRONG_TYPE),
    (patched(venue=["X"]), RejectReason.WRONG_TYPE),
    (patched(ts_ns="1"), RejectReason.WRONG_TYPE),
    (patched(bid=math.nan), RejectReason.NON_FINITE),
    (patched(ask=math.inf), RejectReason.NON_FINITE),
    (patched(last=-math.inf), RejectReason.NON_FINITE),
    (patched(size=math.nan), RejectReason.NON_FINITE),
    (encode(GOOD).replace(b"99.0", b"1e999"), RejectReason.NON_FINITE),
    (patched(bid=0.0), RejectReason.NON_POSITIVE_PRICE),
    (patched(ask=-1.0), RejectReason.NON_POSITIVE_PRICE),
    (patched(last=0), RejectReason.NON_POSITIVE_PRICE),
    (patched(bid=100.5), RejectReason.CROSSED_QUOTE),
    (patched(size=-1.0), RejectReason.INVALID_VALUE),
    (patched(seq=-1), RejectReason.INVALID_VALUE),
    (patched(seq=2**63), RejectReason.INVALID_VALUE),
    (patched(symbol="E S"), RejectReason.INVALID_VALUE),
    (patched(symbol=""), RejectReason.INVALID_VALUE),
    (patched(symbol="S" * 33), RejectReason.INVALID_VALUE),
    (patched(venue=""), RejectReason.INVALID_VALUE),
    (patched(v=2), RejectReason.UNSUPPORTED_VERSION),
    (patched(ts_ns=-1), RejectReason.TIMESTAMP_INVALID),
    (patched(ts_ns=2**63), RejectReason.TIMESTAMP_INVALID),
    (patched(ingest_ts_ns=-1), RejectReason.TIMESTAMP_INVALID),
    (patched(ts_ns=NOW + 6_000_000_000), RejectReason.TIMESTAMP_FUTURE),
    (patched(ts_ns=NOW - 2 * 86_400 * 10**9), RejectReason.TIMESTAMP_STALE),
    (patched(ts_ns=1_700_000_000_000), RejectReason.TIMESTAMP_STALE),  # milliseconds
    (encode({**GOOD, "venue": "X" * 5000}), RejectReason.OVERSIZED),
]


@pytest.mark.parametrize(("raw", "reason"), HOSTILE)
def test_hostile_input_maps_to_its_reason_code(raw, reason):
    assert reason_of(raw) == reason


def test_every_classify_reason_code_is_exercised():
    config_dependent = {RejectReason.UNKNOWN_SYMBOL, RejectReason.KEY_MISMATCH}
    covered = {reason for _, reason in HOSTILE} | config_dependent
    assert covered == CLASSIFY_REASONS


def test_reason_codes_are_stable_strings():
    assert RejectReason.NON_FINITE == "non_finite"
    assert json.dumps({"reason": RejectReason.KEY_MISMATCH}) == '{"reason": "key_mismatch"}'


def test_key_mismatch_when_key_present_and_differs_from_symbol():
    assert reason_of(encode(GOOD), key=b"NQ") == RejectReason.KEY_MISMATCH
    assert reason_of(encode(GOOD), key=b"\xff") == RejectReason.KEY_MISMATCH
    assert isinstance(classify(encode(GOOD), None, NOW, POLICY), Accepted)
    assert isinstance(classify(encode(GOOD), b"ES", NOW, POLICY), Accepted)


def test_unknown_symbol_only_when_an_allow_list_is_configured():
    allow = ValidationPolicy(allowed_symbols=frozenset({"NQ"}))
    assert reason_of(encode(GOOD), policy=allow) == RejectReason.UNKNOWN_SYMBOL
    assert isinstance(classify(encode(GOOD), None, NOW, POLICY), Accepted)
    allow_es = ValidationPolicy(allowed_symbols=frozenset({"ES", "NQ"}))
    assert isinstance(classify(encode(GOOD), None, NOW, allow_es), Accepted)


def test_timestamp_window_bounds_are_inclusive():
    policy = ValidationPolicy(max_future_ns=1_000, max_age_ns=5_000)
    assert isinstance(classify(patched(ts_ns=NOW + 1_000), None, NOW, policy), Accepted)
    assert reason_of(patched(ts_ns=NOW + 1_001), policy=policy) == RejectReason.TIMESTAMP_FUTURE
    assert isinstance(classify(patched(ts_ns=NOW - 5_000), None, NOW, policy), Accepted)
    assert reason_of(patched(ts_ns=NOW - 5_001), policy=policy) == RejectReason.TIMESTAMP_STALE


def test_replay_policy_with_large_max_age_accepts_old_ticks():
    old = patched(ts_ns=NOW - 365 * 86_400 * 10**9)
    assert reason_of(old) == RejectReason.TIMESTAMP_STALE
    replay = ValidationPolicy(max_age_ns=10 * 365 * 86_400 * 10**9)
    assert isinstance(classify(old, None, NOW, replay), Accepted)


def test_size_limit_is_checked_before_decoding_and_is_inclusive():
    raw = encode(GOOD)
    assert isinstance(classify(raw, None, NOW, ValidationPolicy(max_bytes=len(raw))), Accepted)
    small = ValidationPolicy(max_bytes=len(raw) - 1)
    assert reason_of(raw, policy=small) == RejectReason.OVERSIZED
    assert reason_of(b"\xff" * 5000) == RejectReason.OVERSIZED


def test_first_failing_check_wins_in_the_documented_order():
    # Schema errors come in field order: bid (non-finite) precedes the extra field.
    both = patched(bid=math.nan, zzz=1)
    assert {reason_of(both) for _ in range(3)} == {RejectReason.NON_FINITE}
    # Allow-list before key before timestamps.
    policy = ValidationPolicy(allowed_symbols=frozenset({"NQ"}))
    stale_wrong_key = patched(ts_ns=0)
    assert reason_of(stale_wrong_key, key=b"NQ", policy=policy) == RejectReason.UNKNOWN_SYMBOL
    assert reason_of(stale_wrong_key, key=b"NQ") == RejectReason.KEY_MISMATCH
    assert reason_of(stale_wrong_key, key=b"ES") == RejectReason.TIMESTAMP_STALE


def test_detail_names_the_field_and_is_bounded():
    verdict = classify(patched(bid=math.nan), None, NOW, POLICY)
    assert isinstance(verdict, Rejected)
    assert verdict.detail.startswith("bid:")
    huge_field = encode({**GOOD, "x" * 3000: 1})
    verdict = classify(huge_field, None, NOW, POLICY)
    assert isinstance(verdict, Rejected)
    assert verdict.reason == RejectReason.EXTRA_FIELD
    assert len(verdict.detail) == DETAIL_MAX_CHARS


def test_policy_is_frozen_and_rejects_nonsense_naming_the_field():
    with pytest.raises(ValidationError, match="max_bytes"):
        ValidationPolicy(max_bytes=0)
    with pytest.raises(ValidationError, match="max_age_ns"):
        ValidationPolicy(max_age_ns=-1)
    with pytest.raises(ValidationError, match="max_bytez"):
        ValidationPolicy(max_bytez=10)
    with pytest.raises(ValidationError):
        POLICY.max_bytes = 1  # type: ignore[misc]
    from_json = ValidationPolicy.model_validate_json('{"allowed_symbols": ["ES", "NQ"]}')
    assert from_json.allowed_symbols == frozenset({"ES", "NQ"})


def test_dead_letter_keeps_reason_raw_bytes_and_key():
    raw = b"\xff not json"
    verdict = classify(raw, b"E\xffS", NOW, POLICY)
    assert isinstance(verdict, Rejected)
    dead = make_dead_letter(
        verdict.reason,
        verdict.detail,
        raw=raw,
        key=b"E\xffS",
        source_topic="md.ticks.raw",
        partition=3,
        offset=42,
        now_ns=NOW,
    )
    assert dead.reason == "invalid_utf8"
    assert base64.b64decode(dead.raw_b64) == raw
    assert dead.key == "E\\xffS"
    assert (dead.partition, dead.offset, dead.ts_ns) == (3, 42, NOW)
    assert (dead.raw_len, dead.truncated) == (len(raw), False)


@pytest.mark.parametrize("size", [900 * 1024, 2 * 1024 * 1024])
def test_dead_letter_of_a_huge_payload_keeps_its_head_and_identity_and_fits_a_message(
    size: int,
) -> None:
    raw = bytes(range(256)) * (size // 256)
    dead = make_dead_letter(
        "oversized",
        "x" * 10_000,
        raw=raw,
        key=b"K" * 10_000,
        source_topic="md.ticks.raw",
        partition=0,
        offset=1,
        now_ns=NOW,
    )
    assert dead.truncated and dead.raw_len == len(raw)
    assert dead.raw_sha256 == hashlib.sha256(raw).hexdigest()
    head = base64.b64decode(dead.raw_b64)
    assert raw.startswith(head) and len(head) == DEAD_LETTER_RAW_MAX
    assert len(dead.to_bytes()) < 128 * 1024  # far below any broker's message limit


def test_expected_partition_matches_kafkas_default_partitioner() -> None:
    # Reference values of the Java client's murmur2 partitioner (Utils.murmur2 & 0x7fffffff
    # % n), as kafka-python and aiokafka reproduce them.
    from aiokafka.partitioner import DefaultPartitioner

    for key in (b"AAPL", b"ES", b"MSFT", b"BTC-USD", b"x" * 31):
        for n in (1, 3, 4, 12):
            assert expected_partition(key, n) == DefaultPartitioner()(key, list(range(n)), [])


# --- properties ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def assert_one_verdict(raw: bytes, key: bytes | None) -> None:
    verdict = classify(raw, key, NOW, POLICY)
    assert isinstance(verdict, Accepted | Rejected)
    if isinstance(verdict, Rejected):
        assert isinstance(verdict.reason, RejectReason)
        assert len(verdict.detail) <= DETAIL_MAX_CHARS
    else:
        assert verdict.tick.ingest_ts_ns == NOW


@settings(max_examples=300)
@given(st.binary(max_size=600), st.none() | st.binary(max_size=8))
def test_random_bytes_never_raise(raw, key):
    assert_one_verdict(raw, key)


@settings(max_examples=300)
@given(json_values)
def test_random_json_never_raises(value):
    assert_one_verdict(json.dumps(value).encode(), None)


@settings(max_examples=300)
@given(
    st.sampled_from(sorted(GOOD)),
    json_values,
    st.booleans(),
)
def test_mutated_ticks_never_raise_and_accepted_ones_satisfy_the_contract(field, value, drop):
    payload = dict(GOOD)
    if drop:
        payload.pop(field)
    else:
        payload[field] = value
    raw = json.dumps(payload).encode()
    assert_one_verdict(raw, None)
    verdict = classify(raw, None, NOW, POLICY)
    if isinstance(verdict, Accepted):
        tick = verdict.tick
        assert tick.bid <= tick.ask
        assert all(math.isfinite(x) and x > 0 for x in (tick.bid, tick.ask, tick.last))
        assert NOW - POLICY.max_age_ns <= tick.ts_ns <= NOW + POLICY.max_future_ns


prices = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)


@settings(max_examples=200)
@given(
    venue=st.text(min_size=1, max_size=32),
    symbol=st.from_regex(r"[A-Za-z0-9._:/-]{1,32}", fullmatch=True),
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    age=st.integers(min_value=-POLICY.max_future_ns, max_value=POLICY.max_age_ns),
    bid=prices,
    spread=st.floats(min_value=0, max_value=1e3),
    size=st.floats(min_value=0, max_value=1e12),
)
def test_any_contract_valid_tick_within_the_window_is_accepted_unchanged(
    venue, symbol, seq, age, bid, spread, size
):
    tick = Tick(
        venue=venue,
        symbol=symbol,
        seq=seq,
        ts_ns=NOW - age,
        bid=bid,
        ask=bid + spread,
        last=bid,
        size=size,
    )
    verdict = classify(tick.to_bytes(), symbol.encode(), NOW, POLICY)
    assert verdict == Accepted(tick.model_copy(update={"ingest_ts_ns": NOW}))
