"""Wire contracts shared by every service (DESIGN.md section 2).

Models are frozen and reject unknown fields so a producer typo fails loudly instead of
silently losing data. Every model carries ``v``: changing a payload's shape is a breaking
change that bumps ``v`` and the topic suffix, never an edit in place.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    def from_bytes(cls, raw: bytes | str):
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
    reasons: list[str] = Field(default_factory=list)
    latency_ms: dict[str, float] = Field(default_factory=dict)
    hops: dict[str, int] = Field(default_factory=dict)
    emitted_ts_ns: TimestampNs = 0
    control_version: int = Field(
        default=0, description="Control-plane version the routing and halts were read from."
    )


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
    """A rejected input, kept with a machine-readable reason so nothing is silently lost."""

    v: Literal[1] = 1
    reason: str
    detail: str
    source_topic: str
    partition: int
    offset: int
    key: str | None = None
    raw_b64: str
    ts_ns: TimestampNs


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
