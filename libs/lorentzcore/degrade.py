"""The degrade ladder: shed optional work when rolling p95 latency exceeds the budget.

Levels (DESIGN.md 3.8): 0 full pipeline; 1 reduce K_cand; 2 also skip the periodic
kernels; 3 also skip the Lorentz re-rank (HNSW order and distances only). Each step up
needs the rolling p95 over budget; each step down needs it under `recover_ratio` x budget,
and both wait `min_events` since the last change so one slow event cannot flap the ladder.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

MAX_LEVEL = 3


@dataclass
class DegradeController:
    budget_ms: float = 1.0
    window: int = 256
    min_events: int = 64
    recover_ratio: float = 0.5
    max_level: int = MAX_LEVEL

    def __post_init__(self) -> None:
        if self.budget_ms <= 0:
            raise ValueError("budget_ms must be positive")
        if not 0 < self.recover_ratio < 1:
            raise ValueError("recover_ratio must be in (0, 1)")
        self.level = 0
        self._samples: deque[float] = deque(maxlen=self.window)
        self._since_change = 0
        self.changes = 0

    def observe(self, elapsed_ms: float) -> int:
        """Record one event's latency and return the level to use for the next event."""
        self._samples.append(elapsed_ms)
        self._since_change += 1
        if self._since_change < self.min_events or len(self._samples) < self.min_events:
            return self.level
        p95 = self.p95()
        if p95 > self.budget_ms and self.level < self.max_level:
            self._set(self.level + 1)
        elif p95 < self.recover_ratio * self.budget_ms and self.level > 0:
            self._set(self.level - 1)
        return self.level

    def p95(self) -> float:
        if not self._samples:
            return 0.0
        return float(np.percentile(np.fromiter(self._samples, float), 95))

    def _set(self, level: int) -> None:
        self.level = level
        self._since_change = 0
        self._samples.clear()
        self.changes += 1
