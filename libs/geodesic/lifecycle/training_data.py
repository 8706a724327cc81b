"""Training samples from bars: the feature service's own features, forward labels, bar times.

Sources are named as the market-data registry resolves them
(``geodesic.marketdata.datasets.load_source``: registered data sets, ``synthetic[:SEED]``,
``recorded:FILE.npz[:SYMBOL]``).

Features come from ``compute_features_batch``, the code the feature service runs (bit for
bit the streaming ``FeatureEngine``), never a copy, so a model is trained on exactly the
vectors it will score. Row t uses bars <= t only; the label of row t uses bars t..t+h only.

Spreads. Daily bars have no quotes. The default ``spread_model="constant"`` feeds the
literal ``close * spread_bp / 1e4``, so the training spread_bp column is constant up to one
ulp: it carries no information, and ``AnalogModel.fit`` excludes it (feature_mask, listed
under ``excluded_features`` in the manifest) so a live spread never moves a distance.
(Drawing each bar's spread from the replay's tick model, ``spread_model="replay"``, put
random numbers into the distance; that audit finding is why it is no longer the default.
It still describes what the live feature service will see, so the drift reference of the
spread column is built from it.)

Labels. fwd_t = log(close[t+h] / close[t]); y = 1 if fwd > cost, 0 if fwd < -cost, and -1
("band") otherwise. ``band_policy="drop"`` (default) keeps band samples out of training and
of the 0/1 metrics: a move smaller than the cost is not a direction worth learning, and
labelling it "down" would bias every forecast downward by the band's share. They stay in
the net win rate, where a trade on them loses the cost, as it would live.

Times. Samples on the same date share a bar index (their position in the union calendar of
all pooled symbols, plus ``bar_offset``), so purging treats correlated symbols' labels of
one day as one event, and the periodic kernel sees the live bar-index space when
``bar_offset`` is set with :func:`live_bar_offset`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import numpy as np
from numpy.typing import NDArray

from geodesic.features.compute import (
    DEFAULT_PARAMS,
    FeatureParams,
    compute_features_batch,
    feature_names,
    schema_hash,
)
from geodesic.lifecycle.config import DatasetConfig
from geodesic.marketdata.datasets import BarSeries, load_source
from geodesic.marketdata.replay import ReplayConfig

__all__ = [
    "LabeledDataset",
    "build_dataset",
    "feature_rows",
    "forward_labels",
    "holdout_series",
    "live_bar_offset",
    "load_training_dataset",
    "training_series",
    "training_spreads",
]

BAND = -1
NS_PER_SECOND = 1_000_000_000


@dataclass(frozen=True, eq=False)
class LabeledDataset:
    """Samples sorted by (time, symbol); arrays are aligned and read-only."""

    X: NDArray[np.float64]  # (n, d) features, finite
    fwd: NDArray[np.float64]  # forward log return over the horizon
    y: NDArray[np.int8]  # 1 up, 0 down, -1 inside the cost band
    times: NDArray[np.int64]  # bar index (calendar position + bar_offset)
    label_end: NDArray[np.int64]  # bar index of the label's exit bar (t + h per symbol)
    symbols: NDArray[np.str_]
    dates: NDArray[np.datetime64]
    feature_names: tuple[str, ...]
    schema_hash: str
    config: DatasetConfig

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def binary(self) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
        """(mask of samples with a 0/1 label under the band policy, labels as floats)."""
        if self.config.band_policy == "down":
            mask = np.ones(len(self), dtype=bool)
            return mask, (self.y == 1).astype(np.float64)
        mask = self.y != BAND
        return mask, self.y.astype(np.float64)

    def feature(self, name: str) -> NDArray[np.float64]:
        return self.X[:, self.feature_names.index(name)]

    def summary(self) -> dict[str, Any]:
        """Sizes, span and label balance, for reports."""
        syms, counts = np.unique(self.symbols, return_counts=True)
        return {
            "n_samples": len(self),
            "symbols": {str(s): int(c) for s, c in zip(syms, counts, strict=True)},
            "first_date": str(self.dates.min()) if len(self) else None,
            "last_date": str(self.dates.max()) if len(self) else None,
            "first_time": int(self.times.min()) if len(self) else None,
            "last_time": int(self.times.max()) if len(self) else None,
            "up_fraction": float(np.mean(self.y == 1)) if len(self) else None,
            "down_fraction": float(np.mean(self.y == 0)) if len(self) else None,
            "band_fraction": float(np.mean(self.y == BAND)) if len(self) else None,
        }


def live_bar_offset(t0_ns: int, bar_seconds: int, n_training_bars: int) -> int:
    """bar_offset that makes the training calendar end right where a replay starting at t0
    begins: live bar_index = t0_ns // (bar_seconds * 1e9) + j for replayed bar j."""
    start = t0_ns // (bar_seconds * NS_PER_SECOND)
    if start < n_training_bars:
        raise ValueError(f"t0 bar index {start} is before the {n_training_bars} training bars")
    return int(start - n_training_bars)


def training_spreads(
    close: NDArray[np.float64], symbol: str, config: DatasetConfig
) -> NDArray[np.float64]:
    """Per-bar mean quoted spread (price units) as the live bar builder would see it.

    "replay" follows ReplayConfig's tick model: n ~ U{ticks_per_bar} ticks, each quoting
    min(spread_bp * 1e-4 * lognormal(0, jitter), 0.5) of the price; the bar's mean spread
    over price is the mean of those (the price path inside a daily bar moves it by <1%).
    Seeded by (seed, crc32(symbol)): deterministic, independent across symbols.
    """
    close = np.asarray(close, dtype=np.float64)
    if config.spread_model == "constant":
        return close * config.spread_bp / 1e4
    replay = ReplayConfig(spread_bp=config.spread_bp)
    if config.ticks_per_bar is not None:
        replay = ReplayConfig(spread_bp=config.spread_bp, ticks_per_bar=config.ticks_per_bar)
    rng = np.random.default_rng([config.seed, zlib.crc32(symbol.encode())])
    lo, hi = replay.ticks_per_bar
    n_ticks = rng.integers(lo, hi + 1, size=close.shape[0])
    jitter = rng.lognormal(0.0, replay.spread_jitter, int(n_ticks.sum()))
    rel = np.minimum(replay.spread_bp * 1e-4 * jitter, 0.5)
    starts = np.concatenate([[0], np.cumsum(n_ticks)[:-1]])
    mean_rel = np.add.reduceat(rel, starts) / n_ticks
    return close * mean_rel


def forward_labels(
    close: NDArray[np.float64], horizon: int, cost_bp: float
) -> tuple[NDArray[np.float64], NDArray[np.int8]]:
    """(fwd log return, label 1/0/-1) per bar; the last ``horizon`` bars get NaN / -1."""
    close = np.asarray(close, dtype=np.float64)
    n = close.shape[0]
    fwd = np.full(n, np.nan)
    if n > horizon:
        fwd[: n - horizon] = np.log(close[horizon:] / close[: n - horizon])
    cost = cost_bp / 1e4
    y = np.full(n, BAND, dtype=np.int8)
    y[fwd > cost] = 1
    y[fwd < -cost] = 0
    return fwd, y


class _SymbolRows(NamedTuple):
    """One symbol's kept rows, before pooling."""

    X: NDArray[np.float64]
    fwd: NDArray[np.float64]
    y: NDArray[np.int8]
    pos: NDArray[np.int64]
    end: NDArray[np.int64]
    symbols: NDArray[np.str_]
    dates: NDArray[np.datetime64]


_Scalar = TypeVar("_Scalar", bound=np.generic)


def _sorted_read_only(a: NDArray[_Scalar], order: NDArray[np.intp]) -> NDArray[_Scalar]:
    out = a[order]
    out.setflags(write=False)
    return out


def build_dataset(
    series: Sequence[BarSeries],
    config: DatasetConfig,
    params: FeatureParams = DEFAULT_PARAMS,
) -> LabeledDataset:
    """Pool symbols into one time-sorted sample set (rows with features and a label)."""
    if not series:
        raise ValueError("no series given")
    symbols = [s.symbol for s in series]
    if len(set(symbols)) != len(symbols):
        raise ValueError(f"duplicate symbols in {symbols}")
    calendar = np.unique(np.concatenate([s.dates for s in series]))
    parts: list[_SymbolRows] = []
    for s in series:
        spreads = training_spreads(s.close, s.symbol, config)
        F = compute_features_batch(s.close, s.high, s.low, s.volume, spreads, params)
        fwd, y = forward_labels(s.close, config.horizon, config.cost_bp)
        keep = np.isfinite(F).all(axis=1) & np.isfinite(fwd)
        pos_all = np.searchsorted(calendar, s.dates).astype(np.int64)
        exit_pos = np.full_like(pos_all, -1)
        exit_pos[: len(s) - config.horizon] = pos_all[config.horizon :]
        parts.append(
            _SymbolRows(
                X=F[keep],
                fwd=fwd[keep],
                y=y[keep],
                pos=pos_all[keep],
                end=exit_pos[keep],
                symbols=np.full(int(keep.sum()), s.symbol),
                dates=s.dates[keep],
            )
        )
    times = np.concatenate([p.pos for p in parts]) + config.bar_offset
    pooled_symbols = np.concatenate([p.symbols for p in parts])
    order = np.lexsort((pooled_symbols, times))
    if len(order) == 0:
        raise ValueError("no samples: series shorter than the feature warm-up plus horizon")
    return LabeledDataset(
        X=_sorted_read_only(np.concatenate([p.X for p in parts]), order),
        fwd=_sorted_read_only(np.concatenate([p.fwd for p in parts]), order),
        y=_sorted_read_only(np.concatenate([p.y for p in parts]), order),
        times=_sorted_read_only(times, order),
        label_end=_sorted_read_only(
            np.concatenate([p.end for p in parts]) + config.bar_offset, order
        ),
        symbols=_sorted_read_only(pooled_symbols, order),
        dates=_sorted_read_only(np.concatenate([p.dates for p in parts]), order),
        feature_names=feature_names(params),
        schema_hash=schema_hash(params),
        config=config,
    )


def training_series(config: DatasetConfig) -> list[BarSeries]:
    """The configured series, cut before ``cutoff`` and to the last ``max_bars`` bars."""
    out: list[BarSeries] = []
    for name in config.datasets:
        s = load_source(name, synthetic_bars=config.synthetic_bars, seed=config.seed)
        if config.cutoff is not None:
            k = int(np.searchsorted(s.dates, np.datetime64(config.cutoff, "D"), side="left"))
            s = s.take(slice(0, k))
        if config.max_bars is not None and len(s) > config.max_bars:
            s = s.take(slice(len(s) - config.max_bars, None))
        if len(s) == 0:
            raise ValueError(f"data set {name!r} has no bars before cutoff {config.cutoff}")
        out.append(s)
    return out


def holdout_series(config: DatasetConfig, warmup: int) -> list[BarSeries]:
    """Bars on or after the cutoff (plus ``warmup`` bars before it, for feature history)."""
    out: list[BarSeries] = []
    if config.cutoff is None:
        return out
    for name in config.datasets:
        s = load_source(name, synthetic_bars=config.synthetic_bars, seed=config.seed)
        k = int(np.searchsorted(s.dates, np.datetime64(config.cutoff, "D"), side="left"))
        if k < len(s):
            out.append(s.take(slice(max(0, k - warmup), None)))
    return out


def feature_rows(
    series: Sequence[BarSeries], config: DatasetConfig, params: FeatureParams = DEFAULT_PARAMS
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Finite feature rows (no labels needed) and their bar positions + bar_offset, pooled."""
    xs, ts = [], []
    for s in series:
        spreads = training_spreads(s.close, s.symbol, config)
        F = compute_features_batch(s.close, s.high, s.low, s.volume, spreads, params)
        keep = np.isfinite(F).all(axis=1)
        xs.append(F[keep])
        ts.append(np.flatnonzero(keep).astype(np.int64) + config.bar_offset)
    if not xs:
        return np.empty((0, len(feature_names(params)))), np.empty(0, dtype=np.int64)
    return np.concatenate(xs), np.concatenate(ts)


def load_training_dataset(
    config: DatasetConfig, params: FeatureParams = DEFAULT_PARAMS
) -> LabeledDataset:
    """``build_dataset`` over ``training_series``: nothing on or after the cutoff is read."""
    return build_dataset(training_series(config), config, params)
