"""Drift-robust features per closed bar, identical in streaming (serving) and batch (training).

Every feature is scale-free (a log return, a volatility of log returns, a ratio in basis
points or a z-score), so a drift in the price level does not move the feature distribution
the model was trained on. In this fixed order (default parameters):

    logret_1, logret_4, logret_16  log(close_t / close_{t-h})
    rvol_20      sample std (ddof=1) of the last 20 one-bar log returns
    pvol_20      Parkinson volatility: sqrt(mean(log(high/low)^2) / (4 ln 2)) over 20 bars
    spread_bp    mean_spread_t / close_t * 1e4
    rsi_14_z     Cutler RSI over 14 one-bar log returns as a z-score:
                 (RSI - 50) / (50 / sqrt(14)) = (up - down) / (up + down) * sqrt(14),
                 50/sqrt(n) being RSI's std under a symmetric equal-step random walk; 0 when flat
    close_z_50   (close_t - mean) / std (ddof=1) of the last 50 closes (current included)
    volume_z_50  the same for bar volume

Z-scores are 0 when the window is flat (std <= 1e-12 x |mean|, a relative bound so the rule is
itself scale-free). Horizons and windows count *emitted* bars: bars exist only for intervals
with ticks, and training must use the same md.bars sequence the service saw.

Warm-up: a vector needs ``warmup_bars(params)`` bars of history, 50 for the defaults (the
z-score windows; logret_16 needs 17, rvol_20 needs 21). Before that ``FeatureEngine.on_bar``
returns None and ``compute_features_batch`` leaves the row NaN. A row that would contain a
non-finite value (only possible for absurd inputs, e.g. a price ratio overflowing) is also
None / NaN: "no vector for this bar" has one meaning in both paths.

Why the two paths agree: each row is a pure function of the last ``warmup_bars`` bars,
computed by one compiled kernel (``_njit_row``). Batch runs it at every index of the full
arrays; streaming keeps the last ``warmup_bars`` bars per symbol in a ring buffer and runs it
at the last index of that window. Same code, same inputs, same operation order (no fastmath,
so no reassociation), hence the same floats. Windows are recomputed each bar instead of
updated incrementally, which avoids the drift of running sums at a cost of ~0.3k flops/bar.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Annotated, Any

import numpy as np
from numba import njit
from pydantic import BaseModel, ConfigDict, Field, field_validator

from geodesic.contracts import Bar, FeatureVector

FEATURE_CODE_VERSION = 1  # bump when a formula changes: it is part of the schema hash
#: /2 stores each symbol's history as the raw little-endian float64 bytes (base64): exact,
#: ~3x smaller than /1's JSON float lists and ~50x cheaper to write. /1 still restores.
SNAPSHOT_FORMAT = "geodesic.features.feature_engine/2"
SNAPSHOT_FORMAT_V1 = "geodesic.features.feature_engine/1"
_N_INPUTS = 5  # rows of the input matrix: close, high, low, volume, spread
_FOUR_LN2 = 4.0 * math.log(2.0)
_FLAT_REL_EPS = 1e-12


class FeatureParams(BaseModel):
    """Lookbacks, in bars. Part of the schema hash: a model trained on one set refuses another."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    horizons: tuple[Annotated[int, Field(ge=1)], ...] = (1, 4, 16)
    rvol_window: Annotated[int, Field(ge=2)] = 20
    pvol_window: Annotated[int, Field(ge=1)] = 20
    rsi_window: Annotated[int, Field(ge=1)] = 14
    zscore_window: Annotated[int, Field(ge=2)] = 50
    volume_window: Annotated[int, Field(ge=2)] = 50

    @field_validator("horizons")
    @classmethod
    def _strictly_increasing(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(b <= a for a, b in pairwise(value)):
            raise ValueError("horizons must be non-empty and strictly increasing")
        return value


def feature_names(params: FeatureParams) -> tuple[str, ...]:
    return (
        *(f"logret_{h}" for h in params.horizons),
        f"rvol_{params.rvol_window}",
        f"pvol_{params.pvol_window}",
        "spread_bp",
        f"rsi_{params.rsi_window}_z",
        f"close_z_{params.zscore_window}",
        f"volume_z_{params.volume_window}",
    )


def feature_lookbacks(params: FeatureParams) -> dict[str, int]:
    """Bars of history each feature's value is built from.

    Consecutive values of a feature computed over an L-bar window share L - 1 bars, so a
    run of n consecutive values holds about n / L independent observations; drift tests
    use this as their effective sample size.
    """
    names = feature_names(params)
    looks = (
        *params.horizons,
        params.rvol_window,
        params.pvol_window,
        1,
        params.rsi_window,
        params.zscore_window,
        1,  # volume z: today's volume against history; the current bar dominates
    )
    return dict(zip(names, looks, strict=True))


def warmup_bars(params: FeatureParams) -> int:
    """Bars of history needed for the first vector (the longest lookback, current bar included)."""
    return max(
        params.horizons[-1] + 1,
        params.rvol_window + 1,
        params.pvol_window,
        params.rsi_window + 1,
        params.zscore_window,
        params.volume_window,
    )


def schema_hash(params: FeatureParams) -> str:
    """Short sha256 over names, parameters and formula version; stamped on every vector."""
    payload = {
        "code_version": FEATURE_CODE_VERSION,
        "names": list(feature_names(params)),
        "params": params.model_dump(mode="json"),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


DEFAULT_PARAMS = FeatureParams()
FEATURE_NAMES: tuple[str, ...] = feature_names(DEFAULT_PARAMS)
SCHEMA_HASH: str = schema_hash(DEFAULT_PARAMS)
WARMUP_BARS: int = warmup_bars(DEFAULT_PARAMS)


# --- compiled kernels -------------------------------------------------------------------


@njit(cache=True)
def _njit_zscore(x: np.ndarray, t: int, w: int) -> float:
    mean = 0.0
    for i in range(t - w + 1, t + 1):
        mean += x[i]
    mean /= w
    ss = 0.0
    for i in range(t - w + 1, t + 1):
        d = x[i] - mean
        ss += d * d
    sd = math.sqrt(ss / (w - 1))
    if sd == 0.0 or sd <= _FLAT_REL_EPS * abs(mean):
        return 0.0
    return float((x[t] - mean) / sd)


@njit(cache=True)
def _njit_row(
    x: np.ndarray, t: int, horizons: np.ndarray, windows: np.ndarray, out: np.ndarray
) -> bool:
    """Features of bar ``t`` from ``x[:, t-warmup+1 : t+1]`` only; NaN row and False if any
    value is non-finite. ``windows`` = (rvol, pvol, rsi, zscore, volume)."""
    close = x[0]
    high = x[1]
    low = x[2]
    k = 0
    for j in range(horizons.shape[0]):
        out[k] = math.log(close[t] / close[t - horizons[j]])
        k += 1

    w = windows[0]
    mean = 0.0
    for i in range(t - w + 1, t + 1):
        mean += math.log(close[i] / close[i - 1])
    mean /= w
    ss = 0.0
    for i in range(t - w + 1, t + 1):
        d = math.log(close[i] / close[i - 1]) - mean
        ss += d * d
    out[k] = math.sqrt(ss / (w - 1))
    k += 1

    w = windows[1]
    acc = 0.0
    for i in range(t - w + 1, t + 1):
        hl = math.log(high[i] / low[i])
        acc += hl * hl
    out[k] = math.sqrt(acc / (_FOUR_LN2 * w))
    k += 1

    out[k] = x[4, t] / close[t] * 1e4
    k += 1

    w = windows[2]
    up = 0.0
    down = 0.0
    for i in range(t - w + 1, t + 1):
        r = math.log(close[i] / close[i - 1])
        if r > 0.0:
            up += r
        else:
            down -= r
    total = up + down
    out[k] = 0.0 if total == 0.0 else (up - down) / total * math.sqrt(w)
    k += 1

    out[k] = _njit_zscore(close, t, windows[3])
    k += 1
    out[k] = _njit_zscore(x[3], t, windows[4])

    for j in range(out.shape[0]):
        if not math.isfinite(out[j]):
            out[:] = np.nan
            return False
    return True


@njit(cache=True)
def _njit_batch(
    x: np.ndarray, horizons: np.ndarray, windows: np.ndarray, warmup: int, out: np.ndarray
) -> None:
    for t in range(warmup - 1, x.shape[1]):
        _njit_row(x, t, horizons, windows, out[t])


def _kernel_args(params: FeatureParams) -> tuple[np.ndarray, np.ndarray]:
    horizons = np.asarray(params.horizons, dtype=np.int64)
    windows = np.asarray(
        [
            params.rvol_window,
            params.pvol_window,
            params.rsi_window,
            params.zscore_window,
            params.volume_window,
        ],
        dtype=np.int64,
    )
    return horizons, windows


# --- batch (training) -------------------------------------------------------------------


def compute_features_batch(
    closes: np.ndarray,
    highs: np.ndarray,
    lows: np.ndarray,
    volumes: np.ndarray,
    spreads: np.ndarray,
    params: FeatureParams = DEFAULT_PARAMS,
) -> np.ndarray:
    """Features for a symbol's bar series (oldest first) -> float64 array (n, n_features).

    Rows before warm-up (and any non-finite row) are NaN. Inputs are the md.bars fields
    close, high, low, volume, mean_spread; they are checked like the Bar contract checks
    them, so training cannot silently run on data the service would never see.
    """
    cols = [np.asarray(a, dtype=np.float64) for a in (closes, highs, lows, volumes, spreads)]
    n = cols[0].shape[0]
    for name, col in zip(("closes", "highs", "lows", "volumes", "spreads"), cols, strict=True):
        if col.ndim != 1 or col.shape[0] != n:
            raise ValueError(f"{name} must be 1-D with length {n}, got shape {col.shape}")
        if not np.isfinite(col).all():
            raise ValueError(f"{name} contains non-finite values")
    if (cols[0] <= 0).any() or (cols[1] <= 0).any() or (cols[2] <= 0).any():
        raise ValueError("prices must be > 0")
    if (cols[3] < 0).any() or (cols[4] < 0).any():
        raise ValueError("volumes and spreads must be >= 0")
    if (cols[1] < cols[2]).any():
        raise ValueError("highs must be >= lows")

    x = np.ascontiguousarray(np.stack(cols))
    out = np.full((n, len(feature_names(params))), np.nan)
    horizons, windows = _kernel_args(params)
    _njit_batch(x, horizons, windows, warmup_bars(params), out)
    return out


# --- streaming (serving) ----------------------------------------------------------------


class FeatureState:
    """The last ``window`` bars of one symbol in a doubled ring buffer.

    Each value is written at ``pos`` and ``pos + window``, so the latest ``window`` values are
    always the contiguous slice ``[pos + 1, pos + 1 + window)``, oldest first, with no copy
    or reordering per bar.
    """

    __slots__ = ("_buf", "_pos", "filled", "last_bar_index", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self._buf = np.zeros((_N_INPUTS, 2 * window))
        self._pos = -1
        self.filled = 0
        self.last_bar_index: int | None = None

    def push(self, values: tuple[float, float, float, float, float]) -> None:
        pos = (self._pos + 1) % self.window
        self._buf[:, pos] = values
        self._buf[:, pos + self.window] = values
        self._pos = pos
        self.filled = min(self.filled + 1, self.window)

    def matrix(self) -> np.ndarray:
        """The full window as a C-contiguous (5, window) array, the same layout batch uses."""
        start = self._pos + 1
        return np.ascontiguousarray(self._buf[:, start : start + self.window])

    def encoded(self, last_bar_index: int | None) -> dict[str, Any]:
        """This symbol's snapshot entry (format /2): the ``filled`` latest bars as bytes."""
        rows = self.matrix()[:, self.window - self.filled :]
        raw = np.ascontiguousarray(rows, dtype="<f8").tobytes()
        return {
            "last_bar_index": last_bar_index,
            "bars": self.filled,
            "history_f64": base64.b64encode(raw).decode("ascii"),
        }

    def history(self) -> list[list[float]]:
        """The ``filled`` most recent bars per input row, oldest first."""
        if self.filled == 0:
            return [[] for _ in range(_N_INPUTS)]
        rows: list[list[float]] = self.matrix()[:, self.window - self.filled :].tolist()
        return rows


@dataclass(slots=True)
class FeatureStats:
    bars: int = 0
    vectors: int = 0
    warming_up: int = 0
    stale_bars: int = 0
    non_finite: int = 0


class _SymbolSnapshot(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    last_bar_index: int | None
    history: list[list[float]]


class _Snapshot(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = SNAPSHOT_FORMAT_V1
    schema_hash: str
    symbols: dict[str, _SymbolSnapshot]


class _SymbolSnapshotV2(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    last_bar_index: int | None
    bars: Annotated[int, Field(ge=0)]
    history_f64: str


class _SnapshotV2(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = SNAPSHOT_FORMAT
    schema_hash: str
    symbols: dict[str, _SymbolSnapshotV2]


class FeatureEngine:
    """Per-symbol streaming features: one ``on_bar`` call per closed bar, in bar order."""

    def __init__(self, params: FeatureParams = DEFAULT_PARAMS) -> None:
        self.params = params
        self.names = feature_names(params)
        self.schema_hash = schema_hash(params)
        self.warmup = warmup_bars(params)
        self.stats = FeatureStats()
        self._horizons, self._windows = _kernel_args(params)
        self._states: dict[str, FeatureState] = {}
        # symbol -> its snapshot entry, dropped when the symbol's history changes: a
        # checkpoint re-encodes only the symbols that closed a bar since the last one
        self._encoded: dict[str, dict[str, Any]] = {}

    def warmup_progress(self) -> dict[str, int]:
        """Bars of history held per symbol; a symbol scores once it holds ``warmup``."""
        return {symbol: state.filled for symbol, state in self._states.items()}

    def on_bar(self, bar: Bar) -> list[float] | None:
        """Feature values for this bar, or None while warming up (see ``stats`` for why).

        A bar whose index is not after the symbol's last one (a redelivery) is ignored, so
        at-least-once delivery cannot feed a bar into the history twice.
        """
        self.stats.bars += 1
        state = self._states.get(bar.symbol)
        if state is None:
            state = self._states[bar.symbol] = FeatureState(self.warmup)
        if state.last_bar_index is not None and bar.bar_index <= state.last_bar_index:
            self.stats.stale_bars += 1
            return None
        state.last_bar_index = bar.bar_index
        self._encoded.pop(bar.symbol, None)
        state.push((bar.close, bar.high, bar.low, bar.volume, bar.mean_spread))
        if state.filled < self.warmup:
            self.stats.warming_up += 1
            return None
        out = np.empty(len(self.names))
        if not _njit_row(state.matrix(), self.warmup - 1, self._horizons, self._windows, out):
            self.stats.non_finite += 1
            return None
        self.stats.vectors += 1
        return out.tolist()

    def vector(
        self, bar: Bar, values: list[float], hops: dict[str, int] | None = None
    ) -> FeatureVector:
        """Wrap ``on_bar`` output in the wire contract, stamped with this engine's schema."""
        return FeatureVector(
            symbol=bar.symbol,
            bar_index=bar.bar_index,
            ts_ns=bar.close_ts_ns,
            close=bar.close,
            values=values,
            schema_hash=self.schema_hash,
            hops=hops or {},
        )

    def snapshot(self) -> dict[str, Any]:
        """JSON-able history per symbol (format /2: exact float64 bytes, base64)."""
        symbols: dict[str, dict[str, Any]] = {}
        for symbol, state in self._states.items():
            entry = self._encoded.get(symbol)
            if entry is None:
                entry = self._encoded[symbol] = state.encoded(state.last_bar_index)
            symbols[symbol] = dict(entry)
        return {"format": SNAPSHOT_FORMAT, "schema_hash": self.schema_hash, "symbols": symbols}

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state with a snapshot (format /1 or /2) of an engine with the same
        schema hash."""
        fmt = state.get("format") if isinstance(state, dict) else None
        histories: dict[str, tuple[int | None, np.ndarray | list[list[float]]]] = {}
        if fmt == SNAPSHOT_FORMAT:
            snap2 = _SnapshotV2.model_validate(state)
            self._check_schema(snap2.schema_hash)
            for symbol, sym2 in snap2.symbols.items():
                histories[symbol] = (sym2.last_bar_index, self._decode(symbol, sym2))
        elif fmt == SNAPSHOT_FORMAT_V1:
            snap = _Snapshot.model_validate(state)
            self._check_schema(snap.schema_hash)
            for symbol, sym in snap.symbols.items():
                histories[symbol] = (sym.last_bar_index, sym.history)
        else:
            raise ValueError(f"unsupported snapshot format {fmt!r}")
        states: dict[str, FeatureState] = {}
        for symbol, (last_bar_index, rows) in histories.items():
            length = len(rows[0]) if len(rows) else 0
            if len(rows) != _N_INPUTS or any(len(r) != length for r in rows):
                raise ValueError(f"{symbol}: history must be {_N_INPUTS} rows of equal length")
            if length > self.warmup:
                raise ValueError(f"{symbol}: history of {length} bars > window {self.warmup}")
            fs = FeatureState(self.warmup)
            for values in zip(*rows, strict=True):
                fs.push(values)
            fs.last_bar_index = last_bar_index
            states[symbol] = fs
        self._states = states
        self._encoded = {}

    def _check_schema(self, snapshot_hash: str) -> None:
        if snapshot_hash != self.schema_hash:
            raise ValueError(
                f"snapshot schema_hash {snapshot_hash} != engine schema_hash {self.schema_hash}"
            )

    @staticmethod
    def _decode(symbol: str, sym: _SymbolSnapshotV2) -> np.ndarray:
        try:
            raw = base64.b64decode(sym.history_f64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"{symbol}: history_f64 is not base64: {exc}") from None
        if len(raw) != _N_INPUTS * sym.bars * 8:
            raise ValueError(
                f"{symbol}: history must be {_N_INPUTS} rows of equal length: "
                f"{len(raw)} bytes for {sym.bars} bars"
            )
        return np.frombuffer(raw, dtype="<f8").reshape(_N_INPUTS, sym.bars)

    def stats_dict(self) -> dict[str, int]:
        return asdict(self.stats)
