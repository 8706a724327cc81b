"""Wire contracts shared by every service (DESIGN.md section 2).

Models are frozen and reject unknown fields so a producer typo fails loudly instead of
silently losing data. Every model carries ``v``: changing a payload's shape is a breaking
change that bumps ``v`` and the topic suffix, never an edit in place.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from geodesic.contracts.reasons import BLOCKING_REASONS, SignalReason
from geodesic.contracts.symbols import SYMBOL_MAX_LENGTH, SYMBOL_PATTERN

Side = Literal["long", "short", "flat"]
Route = Literal["active", "canary"]
ControlKind = Literal[
    "MODE_SWITCH",
    "ROLLBACK",
    "KILL_SWITCH",
    "PROMOTE",
    "ROLLOUT",
    "HALT",
    "COOLDOWN",
    "EXTERNAL_CHANGE",
]

PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFinite = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Symbol = Annotated[str, Field(min_length=1, max_length=SYMBOL_MAX_LENGTH, pattern=SYMBOL_PATTERN)]
TimestampNs = Annotated[int, Field(ge=0)]


class Contract(BaseModel):
    """Base for every payload: immutable, strict about unknown fields, finite floats."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> Self:
        return cls.model_validate_json(raw)


class Tick(Contract):
    """A top-of-book update from one venue; seq is monotonic per (venue, symbol)."""

    v: Literal[1] = 1
    venue: Annotated[str, Field(min_length=1, max_length=32)]
    symbol: Symbol
    seq: Annotated[int, Field(ge=0)]
    ts_ns: TimestampNs
    bid: PositiveFinite
    ask: PositiveFinite
    last: PositiveFinite
    size: NonNegFinite
    ingest_ts_ns: TimestampNs | None = Field(
        default=None, description="Stamped by the collector when it accepts the tick."
    )

    @model_validator(mode="after")
    def _quote_not_crossed(self) -> Tick:
        if self.bid > self.ask:
            raise ValueError("crossed quote: bid > ask")
        return self


class Bar(Contract):
    """A time bar; bar_index counts bars of bar_seconds since the Unix epoch."""

    v: Literal[1] = 1
    symbol: Symbol
    bar_index: Annotated[int, Field(ge=0)]
    bar_seconds: Annotated[int, Field(gt=0)]
    open: PositiveFinite
    high: PositiveFinite
    low: PositiveFinite
    close: PositiveFinite
    vwap: PositiveFinite
    volume: NonNegFinite
    n_ticks: Annotated[int, Field(ge=1)]
    mean_spread: NonNegFinite
    open_ts_ns: TimestampNs
    close_ts_ns: TimestampNs
    emitted_ts_ns: TimestampNs = 0

    @model_validator(mode="after")
    def _ohlc_consistent(self) -> Bar:
        if not (self.low <= min(self.open, self.close) and self.high >= max(self.open, self.close)):
            raise ValueError("OHLC inconsistent: low/high do not bound open/close")
        return self


class FeatureVector(Contract):
    """Features of one closed bar, in the fixed order named by schema_hash."""

    v: Literal[1] = 1
    symbol: Symbol
    bar_index: Annotated[int, Field(ge=0)]
    ts_ns: TimestampNs
    close: PositiveFinite
    values: list[float]
    schema_hash: Annotated[str, Field(min_length=8, max_length=64)]
    hops: dict[str, int] = Field(
        default_factory=dict,
        description="Wall-clock ns per hop (tick_ts, collector, feature) for latency tracing.",
    )


class ScoredSignal(Contract):
    """What executors consume. Drop duplicates by signal_id (delivery is at-least-once)."""

    v: Literal[1] = 1
    signal_id: str
    symbol: Symbol
    bar_index: Annotated[int, Field(ge=0)]
    ts_ns: TimestampNs
    prob_up: Annotated[float, Field(ge=0.0, le=1.0)]
    side: Side
    model_id: str
    route: Route
    eff_k: NonNegFinite
    degrade_level: Annotated[int, Field(ge=0, le=3)]
    halted: bool
    tradable: bool
    reasons: list[SignalReason] = Field(
        default_factory=list,
        description="Blocking reasons (the signal is not tradable) and informational ones; "
        "see geodesic.contracts.reasons.BLOCKING_REASONS.",
    )
    latency_ms: dict[str, float] = Field(default_factory=dict)
    hops: dict[str, int] = Field(default_factory=dict)
    emitted_ts_ns: TimestampNs = 0
    control_version: int = Field(
        default=0, description="Control-plane version the routing and halts were read from."
    )
    decision_age_ms: NonNegFinite | None = Field(
        default=None,
        description="Wall-clock ms from the collector accepting the tick that closed the bar "
        "(or the feature service closing an idle bar) to this decision; null when the input "
        "carried neither time. Past the scorer's max_signal_age_ms, or unknown, the signal "
        "carries stale_input and is not tradable.",
    )

    @model_validator(mode="after")
    def _tradable_has_no_blocking_reason(self) -> ScoredSignal:
        if self.tradable and BLOCKING_REASONS.intersection(self.reasons):
            raise ValueError(
                "a tradable signal carries no blocking reason: "
                f"{sorted(BLOCKING_REASONS.intersection(self.reasons))}"
            )
        if self.halted and self.tradable:
            raise ValueError("a halted signal is not tradable")
        return self


class ShadowScore(Contract):
    """Observe-only score from the shadow slot; never reaches executors."""

    v: Literal[1] = 1
    signal_id: str
    live_signal_id: str
    symbol: Symbol
    bar_index: Annotated[int, Field(ge=0)]
    ts_ns: TimestampNs
    prob_up: Annotated[float, Field(ge=0.0, le=1.0)]
    side: Side
    model_id: str
    eff_k: NonNegFinite
    emitted_ts_ns: TimestampNs = 0


class Outcome(Contract):
    """The realised result of a signal: markout after horizon bars net of cost, or a fill."""

    v: Literal[1] = 1
    signal_id: str
    symbol: Symbol
    bar_index: Annotated[int, Field(ge=0)]
    route: Route
    model_id: str
    side: Side
    horizon_bars: Annotated[int, Field(ge=1)]
    entry_price: PositiveFinite
    exit_price: PositiveFinite
    gross_bp: float
    net_bp: float
    win: bool | None = Field(description="None for flat signals: no position, no outcome.")
    source: Literal["markout", "fill"] = "markout"
    prob_up: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    tradable: bool = True
    ts_ns: TimestampNs = 0


class ControlEvent(Contract):
    """An audited change of the control plane (slots, rollout, kill switches, halts)."""

    v: Literal[1] = 1
    event_id: str
    kind: ControlKind
    actor: Annotated[str, Field(min_length=1)]
    reason: Annotated[str, Field(min_length=1)]
    from_value: str | None = None
    to_value: str | None = None
    symbol: Symbol | None = None
    ts_ns: TimestampNs


class DeadLetter(Contract):
    """A rejected input, kept with a machine-readable reason so nothing is silently lost.

    ``raw_b64`` holds the original bytes, or only their head when the whole would not fit
    in one broker message (``truncated``); ``raw_len`` and ``raw_sha256`` always describe
    the whole original, so a truncated letter still identifies its record.
    """

    v: Literal[1] = 1
    reason: str
    detail: str
    source_topic: str
    partition: int
    offset: int
    key: str | None = None
    raw_b64: str
    ts_ns: TimestampNs
    raw_len: Annotated[int, Field(ge=0)] = 0
    raw_sha256: str = ""
    truncated: bool = False


MODELS: dict[str, type[Contract]] = {
    m.__name__: m
    for m in (
        Tick,
        Bar,
        FeatureVector,
        ScoredSignal,
        ShadowScore,
        Outcome,
        ControlEvent,
        DeadLetter,
    )
}


def make_signal_id(symbol: str, bar_index: int, model_id: str) -> str:
    """Deterministic idempotency key: a replay or a redelivery yields the same id."""
    digest = hashlib.sha256(f"{symbol}|{bar_index}|{model_id}".encode()).hexdigest()
    return digest[:32]


#: Bytes of the original payload a dead letter keeps. Far below any broker's message
#: limit (1 MiB by default) even after base64 and the detail text, so a dead letter can
#: always be produced, whatever the size of what it rejects.
DEAD_LETTER_RAW_MAX = 64 * 1024
_DETAIL_MAX = 1000


def make_dead_letter(
    reason: str,
    detail: str,
    *,
    raw: bytes,
    key: bytes | None,
    source_topic: str,
    partition: int,
    offset: int,
    now_ns: int,
    max_raw_bytes: int = DEAD_LETTER_RAW_MAX,
) -> DeadLetter:
    """The one way to build a dead letter: bounded in size, the original identified."""
    head = raw[:max_raw_bytes]
    return DeadLetter(
        reason=reason,
        detail=detail[:_DETAIL_MAX],
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        key=None if key is None else key[:256].decode("utf-8", "backslashreplace"),
        raw_b64=base64.b64encode(head).decode("ascii"),
        ts_ns=now_ns,
        raw_len=len(raw),
        raw_sha256=hashlib.sha256(raw).hexdigest(),
        truncated=len(head) < len(raw),
    )
