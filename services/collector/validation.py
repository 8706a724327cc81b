"""Classify one raw ``md.ticks.raw`` message as an accepted Tick or a rejection with a reason.

Pure logic: the caller passes the clock (``now_ns``) and does the I/O, so replays and tests
are deterministic. Every input maps to exactly one verdict and ``classify`` never raises, so
the collector can honour "nothing is silently dropped": an ``Accepted`` goes on to the
sequence tracker, a ``Rejected`` goes to ``md.ticks.dlq`` with its reason code.

Checks run in a fixed order and the first failure wins, so one payload always gets the same
reason: size -> UTF-8 -> JSON / schema (pydantic, first error; a payload msgspec
proves valid skips pydantic, see geodesic.contracts.codec) -> int64 range -> symbol
allow-list -> message key -> timestamp window. Parsing is strict (no "1" for 1, no ``true``
for 1.0): the collector is the gate, so a producer bug fails here, not in a consumer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from aiokafka.partitioner import murmur2
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from geodesic.contracts import Tick
from geodesic.contracts.codec import decode_tick
from geodesic.contracts.reasons import RejectReason

INT64_MAX = 2**63 - 1
DETAIL_MAX_CHARS = 200
_PRICE_FIELDS = frozenset({"bid", "ask", "last"})


class ValidationPolicy(BaseModel):
    """Collector gate limits. Replays of old data raise ``max_age_ns`` (or the clock they pass)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_bytes: Annotated[int, Field(gt=0)] = 4096
    max_future_ns: Annotated[int, Field(ge=0)] = 5_000_000_000
    max_age_ns: Annotated[int, Field(ge=0)] = 86_400 * 1_000_000_000
    allowed_symbols: frozenset[str] | None = Field(
        default=None, description="None accepts any valid symbol; a set enables unknown_symbol."
    )


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid tick, stamped with ``ingest_ts_ns`` = the collector's clock."""

    tick: Tick


@dataclass(frozen=True, slots=True)
class Rejected:
    """A rejected message: ``reason`` for metrics and routing, ``detail`` for humans."""

    reason: RejectReason
    detail: str


Verdict = Accepted | Rejected


def classify(raw: bytes, key: bytes | None, now_ns: int, policy: ValidationPolicy) -> Verdict:
    """Decide one raw message. Never raises; the same inputs always give the same verdict."""
    if len(raw) > policy.max_bytes:
        return Rejected(RejectReason.OVERSIZED, f"{len(raw)} bytes > max_bytes {policy.max_bytes}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(RejectReason.INVALID_UTF8, _clip(f"invalid UTF-8 at byte {exc.start}"))
    stamped = decode_tick(raw, ingest_ts_ns=now_ns)  # fast path: None when unsure
    if stamped is not None:
        tick = stamped
    else:
        try:
            tick = Tick.model_validate_json(raw, strict=True)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            return Rejected(_reason_for(first), _describe(first))

    if tick.ts_ns > INT64_MAX:
        return Rejected(RejectReason.TIMESTAMP_INVALID, "ts_ns exceeds int64")
    if tick.seq > INT64_MAX:
        return Rejected(RejectReason.INVALID_VALUE, "seq exceeds int64")
    if policy.allowed_symbols is not None and tick.symbol not in policy.allowed_symbols:
        return Rejected(RejectReason.UNKNOWN_SYMBOL, _clip(f"symbol {tick.symbol!r} not allowed"))
    if key is not None and key != tick.symbol.encode():
        return Rejected(
            RejectReason.KEY_MISMATCH,
            _clip(f"key {key.decode('utf-8', 'backslashreplace')!r} != symbol {tick.symbol!r}"),
        )
    if tick.ts_ns > now_ns + policy.max_future_ns:
        ahead_ms = (tick.ts_ns - now_ns) / 1e6
        return Rejected(RejectReason.TIMESTAMP_FUTURE, f"ts_ns {ahead_ms:.3f} ms ahead of clock")
    if tick.ts_ns < now_ns - policy.max_age_ns:
        age_s = (now_ns - tick.ts_ns) / 1e9
        return Rejected(RejectReason.TIMESTAMP_STALE, f"ts_ns {age_s:.3f} s older than clock")
    if stamped is not None:
        return Accepted(stamped)
    return Accepted(tick.model_copy(update={"ingest_ts_ns": now_ns}))


def expected_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as the Java client and
    aiokafka; librdkafka's ``murmur2_random``) gives ``key`` among ``partitions``."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


def _reason_for(error: ErrorDetails) -> RejectReason:
    """Map one pydantic error (from Tick validation) to its reason code."""
    kind = error["type"]
    loc = error["loc"]
    field = loc[0] if loc else None
    if kind == "json_invalid":
        return RejectReason.MALFORMED_JSON
    if not loc and kind in ("model_type", "model_attributes_type", "dict_type"):
        return RejectReason.NOT_AN_OBJECT
    if kind == "missing":
        return RejectReason.MISSING_FIELD
    if kind == "extra_forbidden":
        return RejectReason.EXTRA_FIELD
    if kind == "finite_number":
        return RejectReason.NON_FINITE
    if kind == "literal_error" and field == "v":
        return RejectReason.UNSUPPORTED_VERSION
    if kind == "value_error" and not loc and "crossed quote" in error["msg"]:
        return RejectReason.CROSSED_QUOTE
    if kind.endswith(("_type", "_parsing", "_parsing_size")) or kind == "int_from_float":
        return RejectReason.WRONG_TYPE
    if kind in ("greater_than", "greater_than_equal"):
        if field in _PRICE_FIELDS:
            return RejectReason.NON_POSITIVE_PRICE
        if field in ("ts_ns", "ingest_ts_ns"):
            return RejectReason.TIMESTAMP_INVALID
    # Remaining constraint failures: negative size or seq, symbol pattern or length, ...
    return RejectReason.INVALID_VALUE


def _describe(error: ErrorDetails) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "<root>"
    return _clip(f"{where}: {error['msg']}")


def _clip(text: str) -> str:
    """Bound the detail: hostile field names or keys must not blow up the DLQ record."""
    if len(text) <= DETAIL_MAX_CHARS:
        return text
    return text[: DETAIL_MAX_CHARS - 3] + "..."
