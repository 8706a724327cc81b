"""Every reason code Geodesic emits: dead-letter reasons and the reasons on a signal.

Values are stable: dashboards, alerts and executors key on them.
"""

from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    """Machine-readable DLQ reason codes. Values are stable: dashboards and alerts key on them."""

    INVALID_UTF8 = "invalid_utf8"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    EXTRA_FIELD = "extra_field"
    WRONG_TYPE = "wrong_type"
    NON_FINITE = "non_finite"
    NON_POSITIVE_PRICE = "non_positive_price"
    CROSSED_QUOTE = "crossed_quote"
    INVALID_VALUE = "invalid_value"
    UNSUPPORTED_VERSION = "unsupported_version"
    TIMESTAMP_FUTURE = "timestamp_future"
    TIMESTAMP_STALE = "timestamp_stale"
    TIMESTAMP_INVALID = "timestamp_invalid"
    OVERSIZED = "oversized"
    UNKNOWN_SYMBOL = "unknown_symbol"
    KEY_MISMATCH = "key_mismatch"
    # Decided by collector.dedup.SequenceTracker, not by classify(); listed here so every
    # reason the collector can emit lives in one enum.
    DUPLICATE_SEQ = "duplicate_seq"
    OUT_OF_ORDER_SEQ = "out_of_order_seq"
    # A tick on a partition other than the one its key hashes to (Kafka's default murmur2
    # partitioner): accepting it would split one symbol's sequence over two partitions.
    WRONG_PARTITION = "wrong_partition"
    # Internal topics (md.ticks, features.v1, signals.scored, md.bars) and outputs.
    INVALID_RECORD = "invalid_record"
    UNSCORABLE_FEATURES = "unscorable_features"
    NO_CONTROL_PLANE = "no_control_plane"
    PROCESSING_ERROR = "processing_error"
    OUTPUT_TOO_LARGE = "output_too_large"


#: Reasons the collector's classify() can give; the others come from the sequence
#: tracker, the partition check, or the services past the collector.
CLASSIFY_REASONS: frozenset[RejectReason] = frozenset(RejectReason) - {
    RejectReason.DUPLICATE_SEQ,
    RejectReason.OUT_OF_ORDER_SEQ,
    RejectReason.WRONG_PARTITION,
    RejectReason.INVALID_RECORD,
    RejectReason.UNSCORABLE_FEATURES,
    RejectReason.NO_CONTROL_PLANE,
    RejectReason.PROCESSING_ERROR,
    RejectReason.OUTPUT_TOO_LARGE,
}


class SignalReason(StrEnum):
    """Why a signal is what it is. A tradable signal carries no blocking reason."""

    # blocking: the signal is not tradable
    CONTROL_PLANE_STALE = "control_plane_stale"
    HALTED = "halted"
    REDUCING_BLOCKS_ENTRY = "reducing_blocks_entry"
    ABSTAIN = "abstain"
    MODEL_UNAVAILABLE = "model_unavailable"
    SCHEMA_MISMATCH = "schema_mismatch"
    STALE_INPUT = "stale_input"
    # informational: said, but the signal stays tradable
    DEGRADED = "degraded"


BLOCKING_REASONS: frozenset[SignalReason] = frozenset(
    {
        SignalReason.CONTROL_PLANE_STALE,
        SignalReason.HALTED,
        SignalReason.REDUCING_BLOCKS_ENTRY,
        SignalReason.ABSTAIN,
        SignalReason.MODEL_UNAVAILABLE,
        SignalReason.SCHEMA_MISMATCH,
        SignalReason.STALE_INPUT,
    }
)
INFORMATIONAL_REASONS: frozenset[SignalReason] = frozenset(SignalReason) - BLOCKING_REASONS
