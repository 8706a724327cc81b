"""The fast Tick codec never disagrees with pydantic: whatever it accepts, pydantic accepts
with the same values (strict and lax); whatever it encodes, pydantic reads back equal."""

from __future__ import annotations

import json
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from geodesic.contracts import Tick
from geodesic.contracts.codec import decode_tick, encode_tick
from geodesic.marketdata.replay import ReplayConfig, backfill_start_ns, replay_ticks
from geodesic.marketdata.synthetic import SyntheticConfig, generate_market

TICK = dict(
    v=1, venue="V", symbol="ES", seq=1, ts_ns=10**18, bid=99.0, ask=101.0, last=100.0, size=1.0
)
edge_values = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0, -0.0, 0.0, 1, 1.0, 2**63, 2**64, 1e308, 5e-324, "1", "ES\n", "é"])
    | st.text(max_size=40)
)


def payload(field: str, value: object, how: str) -> bytes:
    doc = dict(TICK)
    if how == "drop":
        doc.pop(field, None)
    elif how == "extra":
        doc["unexpected"] = value
    elif how == "duplicate":  # a repeated key: both parsers must keep the same one
        text = json.dumps(doc)[:-1] + f", {json.dumps(field)}: {json.dumps(value)}}}"
        return text.encode()
    else:
        doc[field] = value
    return json.dumps(doc).encode()


near_misses = st.builds(
    payload,
    st.sampled_from([*sorted(TICK), "ingest_ts_ns"]),
    edge_values,
    st.sampled_from(["replace", "replace", "drop", "extra", "duplicate"]),
)


def pydantic_tick(raw: bytes, strict: bool) -> Tick | None:
    try:
        return Tick.model_validate_json(raw, strict=strict)
    except ValueError:
        return None


@settings(max_examples=600, deadline=None)
@given(near_misses | st.binary(max_size=80))
def test_the_fast_decoder_accepts_only_what_pydantic_accepts_with_the_same_values(raw):
    fast = decode_tick(raw)
    if fast is None:
        return
    for strict in (True, False):
        reference = pydantic_tick(raw, strict)
        assert reference is not None, raw
        assert fast.model_dump() == reference.model_dump()
        assert fast == reference


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 2**63 - 1),
    st.floats(min_value=1e-300, max_value=1e300),
    st.floats(min_value=0, max_value=1e300),
    st.floats(min_value=0, max_value=1e308),
    st.none() | st.integers(0, 2**63 - 1),
)
def test_encoded_ticks_read_back_equal_and_match_pydantic_s_json(seq, bid, spread, size, ingest):
    tick = Tick(
        venue="V",
        symbol="ES",
        seq=seq,
        ts_ns=seq,
        bid=bid,
        ask=bid + spread,
        last=bid,
        size=size,
        ingest_ts_ns=ingest,
    )
    raw = encode_tick(tick)
    assert json.loads(raw) == json.loads(tick.to_bytes())
    assert list(json.loads(raw)) == list(json.loads(tick.to_bytes()))  # field order too
    assert Tick.model_validate_json(raw, strict=True) == tick
    assert decode_tick(raw) == tick


def test_replayed_ticks_take_the_fast_path_and_the_collector_stamp_replaces_the_payload_s():
    series, _ = generate_market(SyntheticConfig(n_bars=20, symbol="ES"))
    t0 = backfill_start_ns(time.time_ns(), 1, 20)
    for tick in replay_ticks(series, ReplayConfig(), t0_ns=t0):
        raw = tick.to_bytes()
        assert decode_tick(raw) == tick
        stamped = decode_tick(raw, ingest_ts_ns=7)
        assert stamped == tick.model_copy(update={"ingest_ts_ns": 7})
