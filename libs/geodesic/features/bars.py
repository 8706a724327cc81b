"""Event-time bars per symbol, built from accepted ticks.

A tick belongs to bar ``ts_ns // bar_ns``. A symbol has at most one open bar; it closes when
the first tick of a later bar arrives (pure event time, so a replay of the same ticks gives
the same bars), or via ``flush_due`` when the symbol goes quiet and the wall clock passes
the bar's end plus a grace period. Intervals without ticks produce no bar (the Bar contract
needs ``n_ticks >= 1``); downstream horizons therefore count emitted bars.

Within a bar, open/close are the prices of the ticks with the earliest/latest ``ts_ns``
(ties: first/last to arrive), so interleaved venues cannot reorder them. A tick whose bar
can no longer be emitted in order (already closed, or older than the open bar) is dropped and
counted with a reason; it has already passed the collector's DLQ gate, so it is not lost
silently, only excluded from bars.

Means (price, spread, VWAP) are accumulated incrementally so no intermediate sum can overflow
on extreme but valid inputs; a Bar can always be built from the accumulator.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from geodesic.contracts import Bar, Tick

NS_PER_SECOND = 1_000_000_000
SNAPSHOT_FORMAT = "geodesic.features.bar_builder/1"
PriceSource = Literal["last", "mid"]


class LateReason(StrEnum):
    """Why a tick was left out of every bar."""

    BAR_CLOSED = "late_bar_closed"
    BEHIND_OPEN_BAR = "late_behind_open_bar"


@dataclass(frozen=True, slots=True)
class TickResult:
    """What one tick did: closed the previous bar, was dropped as late, or neither."""

    closed: Bar | None = None
    late: LateReason | None = None


@dataclass(slots=True)
class BarStats:
    ticks: int = 0
    bars_closed: int = 0
    late: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _OpenBar:
    """Accumulator of the bar in progress (plain dataclass: it is updated on every tick)."""

    bar_index: Annotated[int, Field(ge=0)]
    open: float
    open_ts_ns: int
    high: float
    low: float
    close: float
    close_ts_ns: int
    volume: float = 0.0
    vwap: float = 0.0
    mean_price: float = 0.0
    mean_spread: float = 0.0
    n_ticks: int = 0

    def add(self, price: float, size: float, spread: float, ts_ns: int) -> None:
        if ts_ns < self.open_ts_ns:
            self.open, self.open_ts_ns = price, ts_ns
        if ts_ns >= self.close_ts_ns:
            self.close, self.close_ts_ns = price, ts_ns
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.n_ticks += 1
        self.mean_price += (price - self.mean_price) / self.n_ticks
        self.mean_spread += (spread - self.mean_spread) / self.n_ticks
        if size > 0.0:
            self.volume = min(self.volume + size, sys.float_info.max)
            self.vwap += (price - self.vwap) * (size / self.volume)

    def to_bar(self, symbol: str, bar_seconds: int, emitted_ts_ns: int) -> Bar:
        vwap = self.vwap if self.volume > 0.0 and math.isfinite(self.vwap) else self.mean_price
        return Bar(
            symbol=symbol,
            bar_index=self.bar_index,
            bar_seconds=bar_seconds,
            open=self.open,
            high=self.high,
            low=self.low,
            close=self.close,
            # Mathematically inside [low, high]; the clamp removes rounding excursions.
            vwap=min(max(vwap, self.low), self.high),
            volume=self.volume,
            n_ticks=self.n_ticks,
            mean_spread=self.mean_spread,
            open_ts_ns=self.open_ts_ns,
            close_ts_ns=self.close_ts_ns,
            emitted_ts_ns=emitted_ts_ns,
        )


_OPEN_FIELDS = tuple(f.name for f in fields(_OpenBar))


class _Snapshot(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = SNAPSHOT_FORMAT
    bar_seconds: int
    price_source: PriceSource
    open_bars: dict[str, _OpenBar]
    last_closed: dict[str, int]


class BarBuilder:
    """Time bars of ``bar_seconds`` per symbol; price is ``last`` or the quote ``mid``."""

    def __init__(self, bar_seconds: int, price_source: PriceSource = "last") -> None:
        if bar_seconds <= 0:
            raise ValueError(f"bar_seconds must be > 0, got {bar_seconds}")
        if price_source not in ("last", "mid"):
            raise ValueError(f"price_source must be 'last' or 'mid', got {price_source!r}")
        self.bar_seconds = bar_seconds
        self.bar_ns = bar_seconds * NS_PER_SECOND
        self.price_source: PriceSource = price_source
        self.stats = BarStats()
        self._open: dict[str, _OpenBar] = {}
        self._last_closed: dict[str, int] = {}

    def on_tick(self, tick: Tick, now_ns: int) -> TickResult:
        """Add a tick; returns the bar it closed (stamped ``emitted_ts_ns=now_ns``), if any."""
        self.stats.ticks += 1
        symbol = tick.symbol
        index = tick.ts_ns // self.bar_ns
        last_closed = self._last_closed.get(symbol)
        if last_closed is not None and index <= last_closed:
            return self._drop(LateReason.BAR_CLOSED)
        current = self._open.get(symbol)
        if current is not None and index < current.bar_index:
            return self._drop(LateReason.BEHIND_OPEN_BAR)

        closed = None
        if current is not None and index > current.bar_index:
            closed = self._close(symbol, now_ns)
            current = None
        price = tick.last if self.price_source == "last" else 0.5 * (tick.bid + tick.ask)
        if current is None:
            current = _OpenBar(
                bar_index=index,
                open=price,
                open_ts_ns=tick.ts_ns,
                high=price,
                low=price,
                close=price,
                close_ts_ns=tick.ts_ns,
            )
            self._open[symbol] = current
        current.add(price, tick.size, tick.ask - tick.bid, tick.ts_ns)
        return TickResult(closed=closed)

    def flush_due(self, now_ns: int, grace_ns: int) -> list[Bar]:
        """Close open bars whose end + grace has passed on the wall clock (idle symbols).

        Returned in symbol order so the output does not depend on dict history.
        """
        due = [
            symbol
            for symbol, bar in self._open.items()
            if (bar.bar_index + 1) * self.bar_ns + grace_ns <= now_ns
        ]
        return [self._close(symbol, now_ns) for symbol in sorted(due)]

    def open_bar_index(self, symbol: str) -> int | None:
        bar = self._open.get(symbol)
        return None if bar is None else bar.bar_index

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state (floats round-trip exactly through JSON), enough to resume losslessly."""
        # Built by hand: the pydantic model is the reader's schema (restore validates with
        # it), but dumping through it cost ~40 us per checkpoint for a handful of symbols.
        return {
            "format": SNAPSHOT_FORMAT,
            "bar_seconds": self.bar_seconds,
            "price_source": self.price_source,
            "open_bars": {
                s: {f: getattr(b, f) for f in _OPEN_FIELDS} for s, b in self._open.items()
            },
            "last_closed": dict(self._last_closed),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state with a snapshot taken by a builder with the same configuration."""
        snap = _Snapshot.model_validate(state)
        if snap.format != SNAPSHOT_FORMAT:
            raise ValueError(f"unsupported snapshot format {snap.format!r}")
        if (snap.bar_seconds, snap.price_source) != (self.bar_seconds, self.price_source):
            raise ValueError(
                f"snapshot is for bar_seconds={snap.bar_seconds}, price_source="
                f"{snap.price_source!r}; builder has {self.bar_seconds}, {self.price_source!r}"
            )
        self._open = {s: replace(b) for s, b in snap.open_bars.items()}
        self._last_closed = dict(snap.last_closed)

    def stats_dict(self) -> dict[str, Any]:
        out = asdict(self.stats)
        out["late"] = dict(self.stats.late)
        return out

    def _close(self, symbol: str, now_ns: int) -> Bar:
        bar = self._open.pop(symbol).to_bar(symbol, self.bar_seconds, now_ns)
        self._last_closed[symbol] = bar.bar_index
        self.stats.bars_closed += 1
        return bar

    def _drop(self, reason: LateReason) -> TickResult:
        self.stats.late[reason.value] += 1
        return TickResult(late=reason)
