"""Rolling win rates per route, with a confidence interval instead of a bare ratio."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class WinRate:
    wins: int
    n: int
    rate: float | None  # None on no samples: never a fake 0.0
    lower: float | None
    upper: float | None


def wilson_interval(wins: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval: honest at small n and near 0 or 1, unlike the normal one."""
    if n == 0:
        return 0.0, 1.0
    p = wins / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


class RollingWinRate:
    def __init__(self, window: int = 500) -> None:
        self.window = window
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._wins = 0

    def add(self, win: bool) -> None:
        if len(self._outcomes) == self.window:
            self._wins -= self._outcomes[0]
        self._outcomes.append(win)
        self._wins += win

    def value(self, z: float = 1.96) -> WinRate:
        n = len(self._outcomes)
        if n == 0:
            return WinRate(0, 0, None, None, None)
        lo, hi = wilson_interval(self._wins, n, z)
        return WinRate(self._wins, n, self._wins / n, lo, hi)

    def snapshot(self) -> list[bool]:
        return list(self._outcomes)

    @classmethod
    def restore(cls, outcomes: list[bool], window: int = 500) -> RollingWinRate:
        wr = cls(window)
        for w in outcomes[-window:]:
            wr.add(bool(w))
        return wr
