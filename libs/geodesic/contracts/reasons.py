"""Dead-letter reason codes shared by every service that rejects input."""

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
