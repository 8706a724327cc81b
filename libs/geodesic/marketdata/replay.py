"""Replay bar history as realistic tick streams for ``md.ticks.raw``.

Bars -> ticks. Bar ``i`` of a series is mapped to the live window
``[t0 + i * bar_seconds, t0 + (i + 1) * bar_seconds)`` (``t0`` aligned to a bar boundary), so a
20-year daily history replays as e.g. 1-second bars. Inside a bar the ``last`` price follows a
Brownian bridge O -> first extreme -> second extreme -> C (high and low in random order),
reflected into [L, H] and pinned at the four anchors, so the ticks' first/last/max/min are
*exactly* the bar's O/C/H/L: the feature service's BarBuilder (same ``bar_seconds``,
``price_source="last"``) rebuilds the source OHLC bit for bit. Sizes split the bar's volume
(Dirichlet), quotes sit around ``last`` with a jittered spread in bp (bid <= last <= ask).
``seq`` counts up per (venue, symbol). Each bar draws from its own generator seeded by
``(seed, crc32(symbol), i)``: a stream is deterministic, bar ``i`` does not depend on earlier
bars, and two symbols replayed with one seed still get independent paths.

Timing. The collector rejects ticks more than ``max_future_s`` ahead of its clock. Pace a
live replay to the tick timestamps (``live_start_ns`` and ``rate_per_s`` = ticks per bar /
bar_seconds), or start a fast replay in the recent past (``backfill_start_ns``).

Hostile input. ``inject_faults`` adds exact duplicates and malformed messages of known kinds
with a tally, so an end-to-end test can check the collector's
``received == accepted + duplicates + dlq`` and its per-reason DLQ counters.

Publishing. ``publish`` sends (key, value) pairs through an aiokafka-like producer with
token-bucket pacing; clock and sleep are injectable so pacing is unit-testable.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import math
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from geodesic.contracts import Tick
from geodesic.contracts.reasons import RejectReason
from geodesic.marketdata.datasets import BarSeries, Trades

__all__ = [
    "FaultInjector",
    "FaultKind",
    "FaultTally",
    "Message",
    "Producer",
    "PublishResult",
    "ReplayConfig",
    "backfill_start_ns",
    "bar_ticks",
    "encode_ticks",
    "inject_faults",
    "interleave",
    "live_start_ns",
    "publish",
    "replay_messages",
    "replay_ticks",
]

NS_PER_SECOND = 1_000_000_000
MIN_TICKS_PER_BAR = 4  # open, two extremes and close need four distinct ticks

Message = tuple[bytes, bytes]  # (key, value) as sent to Kafka


# --- bars -> ticks --------------------------------------------------------------------------


class ReplayConfig(BaseModel):
    """How bars become ticks. Defaults give 20-50 ticks per 1-second bar at a ~2 bp spread."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    venue: Annotated[str, Field(min_length=1, max_length=32)] = "REPLAY"
    symbol: str | None = Field(default=None, description="Override the series' symbol.")
    bar_seconds: Annotated[int, Field(gt=0)] = 1
    ticks_per_bar: tuple[int, int] = (20, 50)
    spread_bp: Annotated[float, Field(ge=0, le=500, allow_inf_nan=False)] = 2.0
    spread_jitter: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] = 0.25
    path_volatility: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] = 0.25
    volume_scale: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    seed: Annotated[int, Field(ge=0)] = 0
    seq_start: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _check_ticks_per_bar(self) -> ReplayConfig:
        lo, hi = self.ticks_per_bar
        if not MIN_TICKS_PER_BAR <= lo <= hi:
            raise ValueError(
                f"ticks_per_bar must satisfy {MIN_TICKS_PER_BAR} <= min <= max, got {lo, hi}"
            )
        return self


def live_start_ns(now_ns: int, bar_seconds: int) -> int:
    """The next bar boundary at or after ``now_ns``: a replay paced in real time starts here."""
    bar_ns = bar_seconds * NS_PER_SECOND
    return -(-now_ns // bar_ns) * bar_ns


def backfill_start_ns(now_ns: int, bar_seconds: int, n_bars: int) -> int:
    """An aligned start whose ``n_bars`` bars all end at or before ``now_ns``.

    Use it to publish a replay as fast as possible without tripping the collector's
    future-timestamp check (keep ``n_bars * bar_seconds`` under its ``max_age_s``).
    """
    bar_ns = bar_seconds * NS_PER_SECOND
    return (now_ns // bar_ns - n_bars) * bar_ns


def bar_ticks(
    o: float,
    h: float,
    low: float,
    c: float,
    n: int,
    rng: np.random.Generator,
    path_volatility: float = 0.25,
) -> np.ndarray:
    """``n`` prices with first == o, last == c, max == h and min == low exactly.

    Works in unit coordinates u = (p - L) / (H - L): a Brownian bridge through the anchors
    (0 -> extreme at k1 -> extreme at k2 -> n-1), folded back into [0, 1] by reflection (a
    reflected walk, not a clipped one, so no flat runs at the extremes), then mapped back,
    clipped against rounding, and the anchors written exactly.
    """
    if n < MIN_TICKS_PER_BAR:
        raise ValueError(f"n must be >= {MIN_TICKS_PER_BAR}, got {n}")
    if not (low <= min(o, c) and h >= max(o, c)):
        raise ValueError(f"OHLC inconsistent: O={o} H={h} L={low} C={c}")
    k1, k2 = np.sort(rng.choice(np.arange(1, n - 1), size=2, replace=False))
    high_first = bool(rng.integers(2))
    span = h - low
    prices = np.empty(n)
    if span > 0:
        anchors_idx = (0, int(k1), int(k2), n - 1)
        first, second = (1.0, 0.0) if high_first else (0.0, 1.0)
        u_anchor = ((o - low) / span, first, second, (c - low) / span)
        step_sd = path_volatility / math.sqrt(n)
        u = np.empty(n)
        for (a, b), (ua, ub) in zip(pairwise(anchors_idx), pairwise(u_anchor), strict=True):
            m = b - a
            walk = np.concatenate(([0.0], np.cumsum(rng.normal(0.0, step_sd, m))))
            frac = np.arange(m + 1) / m
            u[a : b + 1] = ua + (ub - ua) * frac + (walk - frac * walk[-1])
        u = np.mod(u, 2.0)
        u = np.where(u > 1.0, 2.0 - u, u)
        prices[:] = np.clip(low + u * span, low, h)
        prices[k1], prices[k2] = (h, low) if high_first else (low, h)
    else:
        prices[:] = h
    prices[0], prices[-1] = o, c
    return prices


def replay_ticks(series: BarSeries, config: ReplayConfig, *, t0_ns: int) -> Iterator[Tick]:
    """Ticks for every bar of ``series``, lazily, in time order (see the module docstring)."""
    bar_ns = config.bar_seconds * NS_PER_SECOND
    if t0_ns < 0 or t0_ns % bar_ns:
        raise ValueError(f"t0_ns must be a non-negative multiple of bar_seconds in ns, got {t0_ns}")
    return _replay_ticks(series, config, t0_ns, bar_ns)


def _replay_ticks(
    series: BarSeries, config: ReplayConfig, t0_ns: int, bar_ns: int
) -> Iterator[Tick]:
    symbol = config.symbol or series.symbol
    venue = config.venue
    lo_n, hi_n = config.ticks_per_bar
    seq = config.seq_start
    symbol_key = zlib.crc32(symbol.encode())  # same seed, different symbols: independent paths
    for i in range(len(series)):
        rng = np.random.default_rng([config.seed, symbol_key, i])
        n = int(rng.integers(lo_n, hi_n + 1))
        last = bar_ticks(
            float(series.open[i]),
            float(series.high[i]),
            float(series.low[i]),
            float(series.close[i]),
            n,
            rng,
            config.path_volatility,
        )
        edges = np.arange(n + 1, dtype=np.int64) * bar_ns // n
        offsets = edges[:-1] + (rng.random(n) * np.diff(edges)).astype(np.int64)
        ts = t0_ns + i * bar_ns + offsets
        sizes = rng.dirichlet(np.ones(n)) * (float(series.volume[i]) * config.volume_scale)
        jitter = rng.lognormal(0.0, config.spread_jitter, n)
        spread = np.minimum(config.spread_bp * 1e-4 * jitter, 0.5)  # keeps bid > 0
        skew = rng.random(n)  # where last sits inside the quote
        bid = last * (1.0 - spread * skew)
        ask = last * (1.0 + spread * (1.0 - skew))
        for k in range(n):
            yield Tick(
                venue=venue,
                symbol=symbol,
                seq=seq,
                ts_ns=int(ts[k]),
                bid=min(float(bid[k]), float(last[k])),
                ask=max(float(ask[k]), float(last[k])),
                last=float(last[k]),
                size=float(sizes[k]),
            )
            seq += 1


def trade_ticks(
    trades: Trades,
    *,
    symbol: str,
    t0_ns: int,
    tick_size: float,
    venue: str = "REPLAY",
    speed: float = 1.0,
    seq_start: int = 0,
) -> Iterator[Tick]:
    """Real trades as ticks: each trade is a tick whose ``last`` is the trade price.

    The trades carry no quotes, so the quote is modelled: a one-tick spread with the trade
    on the side the tick rule (Lee-Ready) gives it: a trade above the previous price hit
    the ask (bid = price - tick), below it hit the bid (ask = price + tick), at the same
    price it keeps the previous side; the first trade is taken at the bid. Times keep the
    trades' own spacing, divided by ``speed``, from ``t0_ns``: with ``speed`` 1 and ``t0_ns``
    congruent to the first trade modulo a bar, the bars the feature service builds from
    these ticks are the data set's time bars (tested).
    """
    if tick_size <= 0 or speed <= 0:
        raise ValueError(f"tick_size ({tick_size}) and speed ({speed}) must be > 0")
    if len(trades.ts_ns) == 0:
        return
    first = int(trades.ts_ns[0])
    at_ask = False
    previous = float(trades.price[0])
    for k in range(len(trades.ts_ns)):
        price = float(trades.price[k])
        if price > previous:
            at_ask = True
        elif price < previous:
            at_ask = False
        previous = price
        bid, ask = (price - tick_size, price) if at_ask else (price, price + tick_size)
        yield Tick(
            venue=venue,
            symbol=symbol,
            seq=seq_start + k,
            ts_ns=t0_ns + int((int(trades.ts_ns[k]) - first) / speed),
            bid=max(bid, tick_size),  # a price one tick above zero keeps a positive bid
            ask=ask,
            last=price,
            size=float(trades.size[k]),
        )


def encode_ticks(ticks: Iterable[Tick]) -> Iterator[Message]:
    """(key, value) pairs for Kafka: keyed by symbol (DESIGN.md 1), JSON value."""
    for tick in ticks:
        yield tick.symbol.encode(), tick.to_bytes()


def replay_messages(series: BarSeries, config: ReplayConfig, *, t0_ns: int) -> Iterator[Message]:
    """``replay_ticks`` encoded for ``md.ticks.raw``."""
    return encode_ticks(replay_ticks(series, config, t0_ns=t0_ns))


def interleave(*streams: Iterable[Tick]) -> Iterator[Tick]:
    """Merge per-symbol tick streams by ``ts_ns`` (ties keep argument order)."""
    return heapq.merge(*streams, key=lambda t: t.ts_ns)


# --- hostile input --------------------------------------------------------------------------


class FaultKind(StrEnum):
    """Malformed-message kinds, each with the collector reason it must produce."""

    BAD_JSON = "bad_json"
    NOT_AN_OBJECT = "not_an_object"
    NAN_PRICE = "nan_price"
    NEGATIVE_PRICE = "negative_price"
    CROSSED_QUOTE = "crossed_quote"
    MISSING_FIELD = "missing_field"
    EXTRA_FIELD = "extra_field"
    WRONG_TYPE = "wrong_type"
    BAD_VERSION = "bad_version"
    INVALID_UTF8 = "invalid_utf8"
    OVERSIZED = "oversized"

    @property
    def expected_reason(self) -> RejectReason:
        """The DLQ reason under the collector's default policy (oversized: ``max_bytes``)."""
        return _EXPECTED_REASON[self]


_EXPECTED_REASON: dict[FaultKind, RejectReason] = {
    FaultKind.BAD_JSON: RejectReason.MALFORMED_JSON,
    FaultKind.NOT_AN_OBJECT: RejectReason.NOT_AN_OBJECT,
    FaultKind.NAN_PRICE: RejectReason.NON_FINITE,
    FaultKind.NEGATIVE_PRICE: RejectReason.NON_POSITIVE_PRICE,
    FaultKind.CROSSED_QUOTE: RejectReason.CROSSED_QUOTE,
    FaultKind.MISSING_FIELD: RejectReason.MISSING_FIELD,
    FaultKind.EXTRA_FIELD: RejectReason.EXTRA_FIELD,
    FaultKind.WRONG_TYPE: RejectReason.WRONG_TYPE,
    FaultKind.BAD_VERSION: RejectReason.UNSUPPORTED_VERSION,
    FaultKind.INVALID_UTF8: RejectReason.INVALID_UTF8,
    FaultKind.OVERSIZED: RejectReason.OVERSIZED,
}

_REQUIRED_FIELDS = ("venue", "symbol", "seq", "ts_ns", "bid", "ask", "last", "size")
_PRICE_KEYS = ("bid", "ask", "last")
_UTF8_MARK = "@@INVALID_UTF8@@"


@dataclass(slots=True)
class FaultTally:
    """What the injector emitted so far; final once the stream is exhausted."""

    originals: int = 0
    duplicates: int = 0
    malformed: Counter[FaultKind] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.originals + self.duplicates + sum(self.malformed.values())

    def expected_collector_counts(self) -> dict[str, int]:
        """Collector counters after consuming the stream, if every original tick is valid and
        in seq order: originals accepted, copies dropped as duplicates, malformed to the DLQ."""
        dlq = sum(self.malformed.values())
        return {
            "received": self.total,
            "accepted": self.originals,
            "duplicates": self.duplicates,
            "dlq": dlq,
        }

    def expected_dlq_reasons(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for kind, count in self.malformed.items():
            out[kind.expected_reason.value] += count
        return dict(out)


class FaultInjector:
    """Iterator over a (key, value) stream with duplicates and malformed messages added.

    A duplicate (same key and bytes, hence same seq) follows its original immediately: the
    collector only calls a repeat of the *last* accepted seq a duplicate; a later copy would
    be an out-of-order DLQ entry. Malformed messages are *added* after an original (derived
    from it, keyed like it), never replace one, so the original stream stays gap-free.
    Kinds rotate through shuffled rounds, so every kind appears once enough are injected.
    """

    def __init__(
        self,
        stream: Iterable[Message],
        *,
        dup_rate: float,
        malformed_rate: float,
        seed: int,
        kinds: Iterable[FaultKind] = tuple(FaultKind),
        oversize_bytes: int = 16_384,
    ) -> None:
        for name, rate in (("dup_rate", dup_rate), ("malformed_rate", malformed_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {rate}")
        self.kinds = tuple(kinds)
        if malformed_rate > 0 and not self.kinds:
            raise ValueError("kinds must be non-empty when malformed_rate > 0")
        self.tally = FaultTally()
        self._stream = stream
        self._dup_rate = dup_rate
        self._malformed_rate = malformed_rate
        self._rng = np.random.default_rng(seed)
        self._oversize_bytes = oversize_bytes
        self._round: list[FaultKind] = []

    def __iter__(self) -> Iterator[Message]:
        for key, value in self._stream:
            self.tally.originals += 1
            yield key, value
            if self._rng.random() < self._dup_rate:
                self.tally.duplicates += 1
                yield key, value
            if self._rng.random() < self._malformed_rate:
                kind = self._next_kind()
                self.tally.malformed[kind] += 1
                yield key, self._malform(kind, value)

    def _next_kind(self) -> FaultKind:
        if not self._round:
            self._round = [self.kinds[i] for i in self._rng.permutation(len(self.kinds))]
        return self._round.pop()

    def _malform(self, kind: FaultKind, value: bytes) -> bytes:
        obj: dict[str, Any] = json.loads(value)
        rng = self._rng
        if kind is FaultKind.BAD_JSON:
            text = json.dumps(obj)
            variants = (text[: len(text) // 2], text + "}", text.replace('"', "'"), text[:-1])
            return variants[int(rng.integers(len(variants)))].encode()
        if kind is FaultKind.NOT_AN_OBJECT:
            return json.dumps([obj[k] for k in _REQUIRED_FIELDS]).encode()
        if kind is FaultKind.NAN_PRICE:
            obj[_PRICE_KEYS[int(rng.integers(3))]] = math.nan
        elif kind is FaultKind.NEGATIVE_PRICE:
            key = _PRICE_KEYS[int(rng.integers(3))]
            obj[key] = -abs(float(obj[key]))
        elif kind is FaultKind.CROSSED_QUOTE:
            obj["bid"] = float(obj["ask"]) * 1.01
        elif kind is FaultKind.MISSING_FIELD:
            del obj[_REQUIRED_FIELDS[int(rng.integers(len(_REQUIRED_FIELDS)))]]
        elif kind is FaultKind.EXTRA_FIELD:
            obj["unexpected"] = 1
        elif kind is FaultKind.WRONG_TYPE:
            key = ("seq", "ts_ns", "bid", "last")[int(rng.integers(4))]
            obj[key] = str(obj[key])
        elif kind is FaultKind.BAD_VERSION:
            obj["v"] = 99
        elif kind is FaultKind.INVALID_UTF8:
            obj["venue"] = _UTF8_MARK
            return json.dumps(obj).encode().replace(_UTF8_MARK.encode(), b"\xc3\x28\xff")
        elif kind is FaultKind.OVERSIZED:
            # Also invalid without the size limit (extra field), so it is rejected whatever
            # max_bytes the collector runs with.
            obj["padding"] = "x" * self._oversize_bytes
        return json.dumps(obj, allow_nan=True).encode()


def inject_faults(
    stream: Iterable[Message],
    dup_rate: float,
    malformed_rate: float,
    seed: int,
    *,
    kinds: Iterable[FaultKind] = tuple(FaultKind),
    oversize_bytes: int = 16_384,
) -> FaultInjector:
    """Wrap ``stream`` with hostile input; iterate the result, then read ``.tally``."""
    return FaultInjector(
        stream,
        dup_rate=dup_rate,
        malformed_rate=malformed_rate,
        seed=seed,
        kinds=kinds,
        oversize_bytes=oversize_bytes,
    )


# --- publishing -----------------------------------------------------------------------------


class Producer(Protocol):
    """The part of aiokafka's AIOKafkaProducer that ``publish`` uses."""

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Awaitable[Any]: ...


@dataclass(frozen=True, slots=True)
class PublishResult:
    sent: int
    delivered: int
    failed: int
    elapsed_s: float
    first_error: str | None = None

    @property
    def achieved_rate(self) -> float:
        """Delivered messages per second of wall (or injected) time."""
        return self.delivered / self.elapsed_s if self.elapsed_s > 0 else math.inf


async def publish(
    producer: Producer,
    messages: Iterable[Message] | AsyncIterable[Message],
    topic: str,
    rate_per_s: float | None = None,
    *,
    burst: float | None = None,
    max_pending: int = 10_000,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> PublishResult:
    """Send (key, value) pairs at ``rate_per_s`` (None: as fast as possible), await delivery.

    Token bucket: ``burst`` tokens (default 20 ms worth, at least 1) refill at
    ``rate_per_s``; a send spends one and an empty bucket sleeps until the next token. Event
    loop timers oversleep short waits; the tokens that accrue meanwhile are spent without
    sleeping (up to ``burst``), so the average rate holds even when the per-message gap is
    below timer resolution. Delivery futures are awaited every ``max_pending`` sends and at
    the end; failed deliveries are counted, not raised, so the caller sees the whole picture.
    """
    if rate_per_s is not None and not (rate_per_s > 0 and math.isfinite(rate_per_s)):
        raise ValueError(f"rate_per_s must be a positive finite number or None, got {rate_per_s}")
    if max_pending < 1:
        raise ValueError(f"max_pending must be >= 1, got {max_pending}")
    capacity = 0.0
    if rate_per_s is not None:
        capacity = burst if burst is not None else max(1.0, 0.02 * rate_per_s)
        if capacity < 1.0:
            raise ValueError(f"burst must be >= 1, got {burst}")
    tokens = capacity
    start = last = clock()
    sent = delivered = failed = 0
    first_error: str | None = None
    pending: list[Awaitable[Any]] = []

    async def drain() -> None:
        nonlocal delivered, failed, first_error
        results = await asyncio.gather(*pending, return_exceptions=True)
        pending.clear()
        for res in results:
            if isinstance(res, BaseException):
                failed += 1
                first_error = first_error or f"{type(res).__name__}: {res}"
            else:
                delivered += 1

    async for key, value in _aiter(messages):
        if rate_per_s is not None:
            now = clock()
            tokens = min(capacity, tokens + (now - last) * rate_per_s)
            last = now
            if tokens < 1.0:
                await sleep((1.0 - tokens) / rate_per_s)
                now = clock()
                tokens = min(capacity, tokens + (now - last) * rate_per_s)
                last = now
            tokens -= 1.0
        pending.append(await producer.send(topic, value, key=key))
        sent += 1
        if len(pending) >= max_pending:
            await drain()
    await drain()
    return PublishResult(sent, delivered, failed, clock() - start, first_error)


async def _aiter(messages: Iterable[Message] | AsyncIterable[Message]) -> AsyncIterable[Message]:
    if isinstance(messages, AsyncIterable):
        async for m in messages:
            yield m
    else:
        for m in messages:
            yield m
