"""A random-walk tick source for the benches: one price and one sequence per symbol."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from geodesic.contracts import Tick


class RandomWalkFeed:
    """Ticks with a ~2 bp one-step volatility and a 2 bp quote around ``last``."""

    def __init__(self, symbols: Sequence[str], venue: str, seed: int = 7) -> None:
        self.venue = venue
        self.price = dict.fromkeys(symbols, 100.0)
        self.seq = dict.fromkeys(symbols, 0)
        self.rng = random.Random(seed)

    def tick(self, sym: str, ts_ns: int) -> Tick:
        self.price[sym] *= math.exp(self.rng.gauss(0, 2e-4))
        self.seq[sym] += 1
        p = self.price[sym]
        return Tick(
            venue=self.venue,
            symbol=sym,
            seq=self.seq[sym],
            ts_ns=ts_ns,
            bid=p * (1 - 1e-4),
            ask=p * (1 + 1e-4),
            last=p,
            size=1.0,
        )
