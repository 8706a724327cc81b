"""One symbol's bars as validated, read-only arrays: what every market-data source yields.

Its own module so that each source (registered files in datasets.py, generated markets in
synthetic.py, recordings in recording.py) can build one without importing the others, and
the registry in datasets.py can resolve every kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["BarSeries", "CleaningReport"]

_PRICE_FIELDS = ("open", "high", "low", "close")
_FIELDS = (*_PRICE_FIELDS, "volume")


@dataclass(frozen=True, slots=True)
class CleaningReport:
    """What cleaning did to a raw file; ``rows_kept + dropped == rows_read``."""

    rows_read: int = 0
    rows_kept: int = 0
    dropped_unparseable: int = 0
    dropped_non_finite: int = 0
    dropped_non_positive: int = 0
    dropped_duplicate_date: int = 0
    dropped_ohlc: int = 0
    repaired_ohlc: int = 0
    zero_volume: int = 0
    was_sorted: bool = True

    @property
    def dropped(self) -> int:
        return (
            self.dropped_unparseable
            + self.dropped_non_finite
            + self.dropped_non_positive
            + self.dropped_duplicate_date
            + self.dropped_ohlc
        )


@dataclass(frozen=True, slots=True, eq=False)
class BarSeries:
    """One symbol's bars, oldest first, as read-only numpy arrays.

    Construction validates the invariants every consumer relies on (equal lengths, strictly
    increasing dates, finite positive prices, non-negative volume, high/low bounding
    open/close), so a BarSeries in hand is always safe to replay or featurise.
    """

    symbol: str
    dates: np.ndarray  # datetime64[D] for daily bars; datetime64[s] (bar open) if sub-daily
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    report: CleaningReport | None = field(default=None)

    def __post_init__(self) -> None:
        if not self.symbol:
            raise ValueError("symbol must be non-empty")
        raw = np.asarray(self.dates)
        unit = np.datetime_data(raw.dtype)[0] if raw.dtype.kind == "M" else "D"
        # whole days stay days; anything finer is a sub-daily bar time, kept to the second
        dates = np.array(
            raw, dtype="datetime64[D]" if unit in ("Y", "M", "W", "D") else "datetime64[s]"
        )
        if dates.ndim != 1:
            raise ValueError(f"dates must be 1-D, got shape {dates.shape}")
        n = dates.shape[0]
        if n > 1 and not (np.diff(dates) > np.timedelta64(0, "D")).all():
            raise ValueError("dates must be strictly increasing")
        dates.setflags(write=False)
        object.__setattr__(self, "dates", dates)
        for name in _FIELDS:
            arr = np.array(getattr(self, name), dtype=np.float64)
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"{name} contains non-finite values")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        for name in _PRICE_FIELDS:
            if (getattr(self, name) <= 0).any():
                raise ValueError(f"{name} must be > 0")
        if (self.volume < 0).any():
            raise ValueError("volume must be >= 0")
        lo = np.minimum(self.open, self.close)
        hi = np.maximum(self.open, self.close)
        if (self.low > lo).any() or (self.high < hi).any():
            raise ValueError("OHLC inconsistent: high/low do not bound open/close")

    def __len__(self) -> int:
        return int(self.dates.shape[0])

    def take(self, index: slice | np.ndarray) -> BarSeries:
        """A sub-series (slice or sorted index/mask); keeps the symbol and cleaning report."""
        return BarSeries(
            symbol=self.symbol,
            dates=self.dates[index],
            open=self.open[index],
            high=self.high[index],
            low=self.low[index],
            close=self.close[index],
            volume=self.volume[index],
            report=self.report,
        )
