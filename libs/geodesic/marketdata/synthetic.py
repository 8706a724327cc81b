"""A synthetic market with known structure, for tests that need ground truth.

Real history cannot say whether a model found a pattern that is there; this generator plants
one and reports exactly where it is:

- Regimes: a hidden Markov chain over TREND (drift whose sign is drawn per episode),
  MEAN_REVERT (an Ornstein-Uhlenbeck pull of log price towards its level at regime entry)
  and HIGH_VOL (zero drift, volatility times ``high_vol_mult``), with a known transition
  matrix; the first regime is drawn from its stationary distribution.
- A periodic pattern: close-to-close log returns get ``+pattern_mean`` on bars where
  ``index % pattern_period == pattern_phase`` (index = position in the series).
- Drift: volatility drifts smoothly (``vol_drift`` = total log change of sigma over the
  series), the level drifts deterministically (``level_drift`` = total log-price change),
  and an optional abrupt shift at bar ``shift_at`` multiplies volatility and volume and
  jumps the level, for drift-detection tests.

Output is a ``BarSeries`` (same type as the real data sets, business-day dates) plus a
``SyntheticTruth``. Deterministic given the config (seed included).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from geodesic.marketdata.series import BarSeries

__all__ = ["Regime", "SyntheticConfig", "SyntheticTruth", "generate_market"]

PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Float = Annotated[float, Field(allow_inf_nan=False)]


class Regime(IntEnum):
    TREND = 0
    MEAN_REVERT = 1
    HIGH_VOL = 2


DEFAULT_TRANSITION: tuple[tuple[float, float, float], ...] = (
    (0.98, 0.01, 0.01),
    (0.01, 0.98, 0.01),
    (0.03, 0.02, 0.95),
)


class SyntheticConfig(BaseModel):
    """Every knob of the generator; the defaults give a plausible daily-like series."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_bars: Annotated[int, Field(ge=2)] = 5000
    seed: Annotated[int, Field(ge=0)] = 0
    symbol: Annotated[str, Field(min_length=1, max_length=32)] = "SYN"
    start_price: PosFloat = 100.0
    start_date: str = "2000-01-03"
    sigma: PosFloat = 0.01
    transition: tuple[tuple[float, float, float], ...] = DEFAULT_TRANSITION
    trend_drift: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0008
    mean_revert_kappa: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.1
    high_vol_mult: PosFloat = 2.5
    pattern_period: Annotated[int, Field(ge=2)] = 7
    pattern_phase: Annotated[int, Field(ge=0)] = 3
    pattern_mean: Float = 0.003
    vol_drift: Float = 0.0
    level_drift: Float = 0.0
    shift_at: Annotated[int, Field(ge=1)] | None = None
    shift_vol_mult: PosFloat = 3.0
    shift_level: Float = 0.0
    shift_volume_mult: PosFloat = 1.0
    base_volume: PosFloat = 1e6
    gap_frac: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.2
    intrabar_frac: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.5

    @model_validator(mode="after")
    def _check(self) -> SyntheticConfig:
        t = np.asarray(self.transition, dtype=np.float64)
        if t.shape != (3, 3) or (t < 0).any() or not np.allclose(t.sum(axis=1), 1.0):
            raise ValueError("transition must be 3x3, non-negative, rows summing to 1")
        if self.pattern_phase >= self.pattern_period:
            raise ValueError("pattern_phase must be < pattern_period")
        if self.shift_at is not None and self.shift_at >= self.n_bars:
            raise ValueError(f"shift_at must be < n_bars ({self.n_bars}), got {self.shift_at}")
        try:
            np.datetime64(self.start_date, "D")
        except ValueError:
            raise ValueError(f"start_date {self.start_date!r} is not an ISO date") from None
        return self


@dataclass(frozen=True, slots=True, eq=False)
class SyntheticTruth:
    """What the generator planted, per bar (arrays aligned with the BarSeries)."""

    regimes: np.ndarray  # int8, Regime values
    transition: np.ndarray  # (3, 3)
    pattern_mask: np.ndarray  # bool: bars whose return carries +pattern_mean
    pattern_period: int
    pattern_phase: int
    pattern_mean: float
    mu: np.ndarray  # conditional expected log return per bar (drift + pull + pattern)
    sigma: np.ndarray  # sd of each bar's log-return shock
    shift_at: int | None

    def live_pattern_phase(self, first_bar_index: int) -> int:
        """The phase in live ``bar_index`` terms when bar 0 is replayed as ``first_bar_index``."""
        return (first_bar_index + self.pattern_phase) % self.pattern_period


def _stationary(t: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eig(t.T)
    v = np.abs(np.real(vecs[:, np.argmin(np.abs(vals - 1.0))]))
    out: np.ndarray = v / v.sum()
    return out


def generate_market(config: SyntheticConfig) -> tuple[BarSeries, SyntheticTruth]:
    """Simulate ``config.n_bars`` bars; returns the series and its ground truth."""
    c = config
    n = c.n_bars
    rng = np.random.default_rng(c.seed)
    trans = np.asarray(c.transition, dtype=np.float64)
    cum = np.cumsum(trans, axis=1)

    regimes = np.empty(n, dtype=np.int8)
    draws = rng.random(n)
    state = int(np.searchsorted(np.cumsum(_stationary(trans)), draws[0], side="right"))
    for t in range(n):
        if t > 0:
            state = int(np.searchsorted(cum[state], draws[t], side="right"))
        regimes[t] = min(state, 2)

    idx = np.arange(n)
    after_shift = np.zeros(n, bool) if c.shift_at is None else idx >= c.shift_at
    regime_vol = np.where(regimes == Regime.HIGH_VOL, c.high_vol_mult, 1.0)
    sigma = (
        c.sigma
        * np.exp(c.vol_drift * idx / (n - 1))
        * np.where(after_shift, c.shift_vol_mult, 1.0)
        * regime_vol
    )
    pattern = idx % c.pattern_period == c.pattern_phase
    base_mu = c.level_drift / n + np.where(pattern, c.pattern_mean, 0.0)
    shocks = rng.standard_normal(n) * sigma
    trend_signs = rng.choice((-1.0, 1.0), size=n)

    mu = np.empty(n)
    log_close = np.empty(n)
    prev = float(np.log(c.start_price))
    anchor = prev
    sign = 1.0
    for t in range(n):
        r = int(regimes[t])
        entered = t == 0 or regimes[t - 1] != r
        if c.shift_at is not None and t == c.shift_at:
            prev += c.shift_level
            anchor += c.shift_level
        if r == Regime.TREND:
            sign = trend_signs[t] if entered else sign
            m = sign * c.trend_drift
        elif r == Regime.MEAN_REVERT:
            anchor = prev if entered else anchor
            m = -c.mean_revert_kappa * (prev - anchor)
        else:
            m = 0.0
        mu[t] = m + base_mu[t]
        prev = prev + mu[t] + shocks[t]
        log_close[t] = prev

    close = np.exp(log_close)
    prev_close = np.concatenate(([c.start_price], close[:-1]))
    if c.shift_at is not None:
        prev_close[c.shift_at] *= np.exp(c.shift_level)  # the jump shows up as an opening gap
    gap = rng.standard_normal(n) * sigma * c.gap_frac
    open_ = prev_close * np.exp(gap)
    if c.shift_at is not None:
        open_[c.shift_at] = prev_close[c.shift_at]  # the jump is the gap itself
    wick = np.abs(rng.standard_normal((2, n))) * sigma * c.intrabar_frac
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    volume = (
        c.base_volume
        * np.exp(0.3 * rng.standard_normal(n))
        * (1.0 + 20.0 * np.abs(log_close - np.log(prev_close)))
        * np.where(regimes == Regime.HIGH_VOL, 1.5, 1.0)
        * np.where(after_shift, c.shift_volume_mult, 1.0)
    )
    dates = np.busday_offset(np.datetime64(c.start_date, "D"), idx, roll="forward")
    series = BarSeries(c.symbol, dates, open_, high, low, close, volume)
    for arr in (regimes, pattern, mu, sigma, trans):
        arr.setflags(write=False)
    truth = SyntheticTruth(
        regimes=regimes,
        transition=trans,
        pattern_mask=pattern,
        pattern_period=c.pattern_period,
        pattern_phase=c.pattern_phase,
        pattern_mean=c.pattern_mean,
        mu=mu,
        sigma=sigma,
        shift_at=c.shift_at,
    )
    return series, truth
