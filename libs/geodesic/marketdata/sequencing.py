"""Per-(venue, symbol) sequence tracking: pass new ticks, drop duplicates, reject stale ones.

Delivery from producers is at-least-once, so the same seq can arrive twice: that is a
duplicate, counted but not dead-lettered (it carries no information the stream lacks).
A seq *below* the last one seen is a stale, out-of-order message: it cannot be published
without breaking per-symbol order, so it goes to the DLQ as ``out_of_order_seq``.

Venue restarts. A venue that restarts its sequence at 0 looks exactly like a flood of stale
messages. By default that is what it is treated as (safe and loud: the DLQ rate alerts an
operator). Set ``reset_gap`` to treat a backward jump of at least ``reset_gap`` as a restart
instead: the tick is accepted and counted in ``stats.resets``. Pick a gap far larger than any
plausible reordering window (e.g. 1_000_000).

Memory is bounded by an LRU over keys (``max_keys``). An evicted key forgets its last seq, so
its next tick is accepted as new (counted in ``stats.evictions``); size ``max_keys`` above the
number of live (venue, symbol) pairs.

Persistence: ``snapshot()`` must be taken at the same point as the consumer's offset commit
(after the accepted ticks are acked by the broker). A snapshot *ahead* of the committed offset
would make the replayed, never-published ticks look like duplicates and lose them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from geodesic.contracts import Tick
from geodesic.contracts.reasons import RejectReason

SNAPSHOT_FORMAT = "geodesic.collector.seq_tracker/1"


class SeqVerdict(StrEnum):
    """Outcome of one observation. Only OUT_OF_ORDER goes to the DLQ."""

    ACCEPTED = "accepted"
    RESET = "reset"
    DUPLICATE = RejectReason.DUPLICATE_SEQ.value
    OUT_OF_ORDER = RejectReason.OUT_OF_ORDER_SEQ.value

    @property
    def publish(self) -> bool:
        """True when the tick should be forwarded to ``md.ticks``."""
        return self in (SeqVerdict.ACCEPTED, SeqVerdict.RESET)


@dataclass(slots=True)
class SeqStats:
    """Counters since process start (not persisted: Prometheus counters restart too)."""

    accepted: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    resets: int = 0
    gaps: int = 0
    evictions: int = 0

    @property
    def observed(self) -> int:
        """Every observation lands in exactly one of these (resets are inside ``accepted``)."""
        return self.accepted + self.duplicates + self.out_of_order


class _Snapshot(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = SNAPSHOT_FORMAT
    entries: list[tuple[str, str, Annotated[int, Field(ge=0)]]]


class SequenceTracker:
    """Last accepted seq per (venue, symbol), LRU-bounded, snapshot-able."""

    def __init__(self, max_keys: int = 100_000, reset_gap: int | None = None) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        if reset_gap is not None and reset_gap < 1:
            raise ValueError(f"reset_gap must be >= 1 or None, got {reset_gap}")
        self.max_keys = max_keys
        self.reset_gap = reset_gap
        self.stats = SeqStats()
        self._last: OrderedDict[tuple[str, str], int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def last_seq(self, venue: str, symbol: str) -> int | None:
        """The last accepted seq, without touching LRU order (for inspection and tests)."""
        return self._last.get((venue, symbol))

    def observe_tick(self, tick: Tick) -> SeqVerdict:
        return self.observe(tick.venue, tick.symbol, tick.seq)

    def observe(self, venue: str, symbol: str, seq: int) -> SeqVerdict:
        """Classify ``seq`` against the last accepted one and update state."""
        key = (venue, symbol)
        last = self._last.get(key)
        if last is None:
            self._last[key] = seq
            if len(self._last) > self.max_keys:
                self._last.popitem(last=False)
                self.stats.evictions += 1
            self.stats.accepted += 1
            return SeqVerdict.ACCEPTED
        self._last.move_to_end(key)
        if seq > last:
            if seq > last + 1:
                self.stats.gaps += 1
            self._last[key] = seq
            self.stats.accepted += 1
            return SeqVerdict.ACCEPTED
        if seq == last:
            self.stats.duplicates += 1
            return SeqVerdict.DUPLICATE
        if self.reset_gap is not None and last - seq >= self.reset_gap:
            self._last[key] = seq
            self.stats.accepted += 1
            self.stats.resets += 1
            return SeqVerdict.RESET
        self.stats.out_of_order += 1
        return SeqVerdict.OUT_OF_ORDER

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state, least recently used first, so restore keeps the LRU order."""
        # by hand, as _Snapshot would dump it: this runs at every checkpoint
        entries = [[venue, symbol, seq] for (venue, symbol), seq in self._last.items()]
        return {"format": SNAPSHOT_FORMAT, "entries": entries}

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state with a snapshot; keeps the newest ``max_keys`` if it is larger."""
        snap = _Snapshot.model_validate(state)
        if snap.format != SNAPSHOT_FORMAT:
            raise ValueError(f"unsupported snapshot format {snap.format!r}")
        entries = snap.entries[-self.max_keys :]
        self._last = OrderedDict(((venue, symbol), seq) for venue, symbol, seq in entries)

    def stats_dict(self) -> dict[str, int]:
        return asdict(self.stats)
