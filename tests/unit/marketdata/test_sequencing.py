import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from collector.validation import Accepted, Rejected, RejectReason, ValidationPolicy, classify
from geodesic.contracts import Tick
from geodesic.marketdata.sequencing import SequenceTracker, SeqVerdict, _Snapshot

NOW = 1_700_000_000_000_000_000


def test_increasing_seq_is_accepted_equal_is_duplicate_lower_is_out_of_order():
    tracker = SequenceTracker()
    assert tracker.observe("X", "ES", 5) is SeqVerdict.ACCEPTED
    assert tracker.observe("X", "ES", 6) is SeqVerdict.ACCEPTED
    assert tracker.observe("X", "ES", 6) is SeqVerdict.DUPLICATE
    assert tracker.observe("X", "ES", 4) is SeqVerdict.OUT_OF_ORDER
    assert tracker.last_seq("X", "ES") == 6
    s = tracker.stats
    assert (s.accepted, s.duplicates, s.out_of_order, s.observed) == (2, 1, 1, 4)


def test_only_accepted_and_reset_verdicts_are_published_and_ooo_uses_the_dlq_reason():
    assert {v for v in SeqVerdict if v.publish} == {SeqVerdict.ACCEPTED, SeqVerdict.RESET}
    assert SeqVerdict.OUT_OF_ORDER.value == RejectReason.OUT_OF_ORDER_SEQ.value
    assert SeqVerdict.DUPLICATE.value == RejectReason.DUPLICATE_SEQ.value


def test_sequences_are_independent_per_venue_and_symbol():
    tracker = SequenceTracker()
    assert tracker.observe("A", "ES", 10) is SeqVerdict.ACCEPTED
    assert tracker.observe("B", "ES", 1) is SeqVerdict.ACCEPTED
    assert tracker.observe("A", "NQ", 1) is SeqVerdict.ACCEPTED
    assert tracker.observe("A", "ES", 9) is SeqVerdict.OUT_OF_ORDER
    assert len(tracker) == 3


def test_observe_tick_uses_the_ticks_venue_symbol_and_seq():
    tracker = SequenceTracker()
    tick = Tick(venue="X", symbol="ES", seq=3, ts_ns=1, bid=1.0, ask=1.0, last=1.0, size=0.0)
    assert tracker.observe_tick(tick) is SeqVerdict.ACCEPTED
    assert tracker.observe_tick(tick) is SeqVerdict.DUPLICATE


def test_forward_gaps_are_accepted_and_counted():
    tracker = SequenceTracker()
    for seq in (1, 2, 5, 6, 9):
        assert tracker.observe("X", "ES", seq) is SeqVerdict.ACCEPTED
    assert tracker.stats.gaps == 2


def test_venue_restart_at_zero_is_out_of_order_by_default():
    tracker = SequenceTracker()
    tracker.observe("X", "ES", 1_000_000)
    assert tracker.observe("X", "ES", 0) is SeqVerdict.OUT_OF_ORDER
    assert tracker.observe("X", "ES", 1) is SeqVerdict.OUT_OF_ORDER


def test_venue_restart_is_accepted_when_the_backward_jump_reaches_reset_gap():
    tracker = SequenceTracker(reset_gap=1_000)
    tracker.observe("X", "ES", 5_000)
    assert tracker.observe("X", "ES", 4_500) is SeqVerdict.OUT_OF_ORDER
    assert tracker.observe("X", "ES", 0) is SeqVerdict.RESET
    assert tracker.observe("X", "ES", 0) is SeqVerdict.DUPLICATE
    assert tracker.observe("X", "ES", 1) is SeqVerdict.ACCEPTED
    assert tracker.stats.resets == 1
    assert tracker.stats.accepted == 3


def test_lru_evicts_the_least_recently_seen_key_and_forgets_its_seq():
    tracker = SequenceTracker(max_keys=2)
    tracker.observe("X", "A", 1)
    tracker.observe("X", "B", 1)
    tracker.observe("X", "A", 1)  # a duplicate still counts as recent use
    tracker.observe("X", "C", 1)  # evicts B
    assert len(tracker) == 2
    assert tracker.last_seq("X", "B") is None
    assert tracker.stats.evictions == 1
    # The documented cost of eviction: B's old seq is accepted as new.
    assert tracker.observe("X", "B", 1) is SeqVerdict.ACCEPTED
    assert tracker.last_seq("X", "A") is None  # A was now the oldest


def test_constructor_rejects_nonsense():
    with pytest.raises(ValueError, match="max_keys"):
        SequenceTracker(max_keys=0)
    with pytest.raises(ValueError, match="reset_gap"):
        SequenceTracker(reset_gap=0)


def test_snapshot_is_json_and_restore_keeps_state_and_lru_order():
    tracker = SequenceTracker(max_keys=3)
    for venue, symbol, seq in [("X", "A", 5), ("X", "B", 7), ("Y", "A", 2), ("X", "A", 6)]:
        tracker.observe(venue, symbol, seq)
    state = json.loads(json.dumps(tracker.snapshot()))
    restored = SequenceTracker(max_keys=3)
    restored.restore(state)
    assert restored.snapshot() == tracker.snapshot()
    assert _Snapshot.model_validate(state).model_dump(mode="json") == state  # as its schema
    assert restored.observe("X", "A", 6) is SeqVerdict.DUPLICATE
    restored.observe("Z", "Z", 1)  # must evict X/B, the least recently used
    assert restored.last_seq("X", "B") is None
    assert restored.last_seq("Y", "A") == 2


def test_restore_into_a_smaller_tracker_keeps_the_most_recent_keys():
    tracker = SequenceTracker()
    for i in range(5):
        tracker.observe("X", f"S{i}", i)
    small = SequenceTracker(max_keys=2)
    small.restore(tracker.snapshot())
    assert len(small) == 2
    assert small.last_seq("X", "S4") == 4
    assert small.last_seq("X", "S3") == 3
    assert small.last_seq("X", "S0") is None


@pytest.mark.parametrize(
    "state",
    [
        {"format": "other/1", "entries": []},
        {"entries": [["X", "A", -1]]},
        {"entries": [["X", "A"]]},
        {"entries": [], "extra": 1},
        {},
    ],
)
def test_restore_refuses_a_corrupt_or_foreign_snapshot(state):
    tracker = SequenceTracker()
    tracker.observe("X", "A", 1)
    with pytest.raises((ValueError, ValidationError)):
        tracker.restore(state)
    assert tracker.last_seq("X", "A") == 1


# --- properties ---------------------------------------------------------------------------

events = st.lists(
    st.tuples(
        st.sampled_from(["V1", "V2"]), st.sampled_from(["ES", "NQ", "CL"]), st.integers(0, 30)
    ),
    max_size=200,
)


@settings(max_examples=100)
@given(events, st.integers(0, 200))
def test_snapshot_restore_mid_stream_gives_the_same_verdicts_as_an_uninterrupted_run(evts, cut):
    straight = SequenceTracker(max_keys=4, reset_gap=20)
    expected = [straight.observe(*e) for e in evts]

    first = SequenceTracker(max_keys=4, reset_gap=20)
    got = [first.observe(*e) for e in evts[:cut]]
    second = SequenceTracker(max_keys=4, reset_gap=20)
    second.restore(json.loads(json.dumps(first.snapshot())))
    got += [second.observe(*e) for e in evts[cut:]]
    assert got == expected


def raw_tick(symbol: str, seq: int) -> bytes:
    return Tick(
        venue="V", symbol=symbol, seq=seq, ts_ns=NOW, bid=1.0, ask=1.5, last=1.2, size=1.0
    ).to_bytes()


messages = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["ES", "NQ"]), st.integers(0, 40)).map(lambda t: raw_tick(*t)),
        st.binary(max_size=40),
        st.sampled_from(
            [b"{}", b"[]", b'{"venue": "V"}', raw_tick("ES", 1).replace(b"1.5", b"0.5")]
        ),
    ),
    max_size=150,
)


@settings(max_examples=100)
@given(messages)
def test_every_message_is_accepted_duplicate_or_dead_lettered_and_output_seq_increases(msgs):
    policy = ValidationPolicy()
    tracker = SequenceTracker()
    published: list[Tick] = []
    duplicates = dead_lettered = 0
    for raw in msgs:
        verdict = classify(raw, None, NOW, policy)
        if isinstance(verdict, Rejected):
            dead_lettered += 1
            continue
        assert isinstance(verdict, Accepted)
        seq_verdict = tracker.observe_tick(verdict.tick)
        if seq_verdict.publish:
            published.append(verdict.tick)
        elif seq_verdict is SeqVerdict.DUPLICATE:
            duplicates += 1
        else:
            dead_lettered += 1

    assert len(msgs) == len(published) + duplicates + dead_lettered
    assert tracker.stats.accepted == len(published)
    assert tracker.stats.duplicates == duplicates
    for symbol in ("ES", "NQ"):
        seqs = [t.seq for t in published if t.symbol == symbol]
        assert seqs == sorted(set(seqs))
