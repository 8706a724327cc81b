"""Labelling each signal with its realised outcome: markout after h bars, net of a cost.

The entry is the close of the signal's own bar (the signal is made when that bar closes);
the exit is the close of the first bar at or after bar_index + h. Signals and bars come
from different topics, so either may arrive first: the labeller holds whichever is early,
in bounded memory, and resolves when both ends are known.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from geodesic.contracts import Bar, Outcome, ScoredSignal
from geodesic.risk.dedup import SeenIds

SIDE_SIGN = {"long": 1.0, "short": -1.0, "flat": 0.0}


@dataclass
class _SymbolBook:
    bar_idx: list[int] = field(default_factory=list)  # sorted
    closes: dict[int, float] = field(default_factory=dict)
    pending: list[ScoredSignal] = field(default_factory=list)


class MarkoutLabeler:
    def __init__(self, horizon_bars: int = 1, cost_bp: float = 1.0, max_bars: int = 5000) -> None:
        if horizon_bars < 1:
            raise ValueError("horizon_bars must be >= 1")
        self.horizon = horizon_bars
        self.cost_bp = cost_bp
        self.max_bars = max_bars
        self._books: dict[str, _SymbolBook] = defaultdict(_SymbolBook)
        self._seen = SeenIds()
        self.duplicates = 0
        self.unlabelled = 0  # entry bar unknown (e.g. bar older than our memory)

    def on_signal(self, sig: ScoredSignal) -> list[Outcome]:
        if not self._seen.add(sig.signal_id):
            self.duplicates += 1
            return []
        book = self._books[sig.symbol]
        book.pending.append(sig)
        return self._resolve(sig.symbol)

    def on_bar(self, bar: Bar) -> list[Outcome]:
        book = self._books[bar.symbol]
        if bar.bar_index not in book.closes:
            bisect.insort(book.bar_idx, bar.bar_index)
        book.closes[bar.bar_index] = bar.close
        if len(book.bar_idx) > self.max_bars:
            for old in book.bar_idx[: len(book.bar_idx) - self.max_bars]:
                book.closes.pop(old, None)
            del book.bar_idx[: len(book.bar_idx) - self.max_bars]
        return self._resolve(bar.symbol)

    def snapshot(self, max_ids: int = 5000, max_bars: int = 600) -> dict[str, Any]:
        """JSON-able state: per symbol the last ``max_bars`` bars and the pending signals
        (they wait for an exit bar newer than any held, so they need no older bar), and
        the most recently seen ids.

        It is saved every checkpoint interval, so its size must not grow with run time:
        saving all ``self.max_bars`` bars kept in memory made it grow for the first ~80
        minutes (the risk supervisor's CPU rose from 2% to 5.5% of a core over a 30-minute
        soak at 10 symbols, bench/soak.py). A signal arriving more than ``max_bars`` bars
        after its own bar is still labelled while the process lives; after a restart it is
        counted unlabelled.
        """
        books: dict[str, dict[str, Any]] = {}
        for sym, book in self._books.items():
            books[sym] = {
                "bars": [[i, book.closes[i]] for i in book.bar_idx[-max_bars:]],
                "pending": [sig.model_dump(mode="json") for sig in book.pending],
            }
        return {
            "horizon": self.horizon,
            "books": books,
            "seen": self._seen.snapshot(last=max_ids),
            "duplicates": self.duplicates,
            "unlabelled": self.unlabelled,
        }

    def restore(self, state: dict[str, Any]) -> None:
        if int(state["horizon"]) != self.horizon:
            raise ValueError(f"snapshot horizon {state['horizon']} != {self.horizon}")
        self._books = defaultdict(_SymbolBook)
        for sym, doc in state["books"].items():
            book = self._books[sym]
            book.bar_idx = [int(i) for i, _ in doc["bars"]]
            book.closes = {int(i): float(c) for i, c in doc["bars"]}
            book.pending = [ScoredSignal.model_validate(p) for p in doc["pending"]]
        self._seen = SeenIds.restore(list(state["seen"]))
        self.duplicates = int(state.get("duplicates", 0))
        self.unlabelled = int(state.get("unlabelled", 0))

    def pending(self) -> int:
        return sum(len(b.pending) for b in self._books.values())

    def _resolve(self, symbol: str) -> list[Outcome]:
        book = self._books[symbol]
        if not book.bar_idx:
            return []
        out: list[Outcome] = []
        keep: list[ScoredSignal] = []
        oldest = book.bar_idx[0]
        for sig in book.pending:
            entry = book.closes.get(sig.bar_index)
            pos = bisect.bisect_left(book.bar_idx, sig.bar_index + self.horizon)
            if entry is None:
                if sig.bar_index < oldest or (pos < len(book.bar_idx)):
                    # the exit exists but the entry bar never will: cannot label honestly
                    self.unlabelled += 1
                else:
                    keep.append(sig)
                continue
            if pos == len(book.bar_idx):
                keep.append(sig)
                continue
            exit_price = book.closes[book.bar_idx[pos]]
            out.append(self._label(sig, entry, exit_price))
        book.pending = keep
        return out

    def _label(self, sig: ScoredSignal, entry: float, exit_price: float) -> Outcome:
        sign = SIDE_SIGN[sig.side]
        gross = sign * (exit_price / entry - 1.0) * 1e4
        tradable_position = sign != 0.0
        net = gross - self.cost_bp if tradable_position else 0.0
        return Outcome(
            signal_id=sig.signal_id,
            symbol=sig.symbol,
            bar_index=sig.bar_index,
            route=sig.route,
            model_id=sig.model_id,
            side=sig.side,
            horizon_bars=self.horizon,
            entry_price=entry,
            exit_price=exit_price,
            gross_bp=gross,
            net_bp=net,
            win=(net > 0.0) if tradable_position else None,
            ts_ns=sig.ts_ns,
            prob_up=sig.prob_up,
            tradable=sig.tradable,
        )
