"""The recording format: md.bars / features.v1 in .npz files that training reads back.

Why record at all: a model should be trained on the bar sequence the live feature service
actually emitted (the bars the scorer's features came from), not on a re-derivation of it.

Pure part. :class:`BarRecorder` and :class:`FeatureRecorder` accumulate contracts and
write them with :meth:`~BarRecorder.to_npz`. Delivery is at-least-once, so each keeps the
first record of a (symbol, bar_index) and counts repeats (``duplicates``), and among those
the repeats whose event fields differ from the kept one (``conflicts``: a re-emission
after a restart that saw different ticks; processing-time stamps such as
``emitted_ts_ns`` and ``hops`` are ignored). Payloads that do not parse, or that do not
fit the recording (a second ``bar_seconds`` or feature schema), are counted by reason and
left out, never silently dropped: ``received == kept + duplicates + sum(rejected)``.
Rows are written sorted by (symbol, bar_index).

File format (``np.savez``, plain arrays, readable with ``allow_pickle=False``):

- both: ``format`` and ``kind`` (0-d unicode), counters ``n_received``, ``n_duplicates``,
  ``n_conflicts``, ``n_rejected`` (0-d int64), ``symbol`` (unicode), ``bar_index`` (int64).
- bars: ``bar_seconds``, ``n_ticks``, ``open_ts_ns``, ``close_ts_ns``, ``emitted_ts_ns``
  (int64); ``open``, ``high``, ``low``, ``close``, ``vwap``, ``volume``, ``mean_spread``
  (float64).
- features: ``ts_ns`` (int64), ``close`` (float64), ``values`` (n, d) float64,
  ``schema_hash`` (0-d unicode), ``n_features`` (0-d int64, = d even when n == 0).

Dates for training. :func:`load_bars_npz` returns one ``BarSeries`` per symbol, and
``BarSeries.dates`` are whole days (``datetime64[D]``). Days derived from ``close_ts_ns``
collide for any intraday bar (1-second replay bars, the feature service's 60-second
default: a whole session falls on one or two dates), which ``BarSeries`` rightly refuses.
So the date of a recorded bar is day number ``bar_index`` since the epoch: for daily bars
(``bar_seconds == 86400``) that *is* the UTC date of the bar (its ``open_ts_ns`` and
``close_ts_ns`` day); for shorter bars it is an ordinal calendar that is strictly
increasing per symbol and shared across symbols (one bar_index, one date), which is what
``lifecycle.training_data.build_dataset`` uses dates for. Its sample times are then positions in
that calendar; with no missing bar intervals, ``bar_offset = min(bar_index)`` puts them
back in the live bar-index space. The real timestamps stay in the file.

Reading the topics from Kafka into a recording is :mod:`geodesic.marketdata.recorder`;
this module has no Kafka in it, so training reads recordings without a broker client.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy as np
from pydantic import ValidationError

from geodesic.contracts import Bar, FeatureVector, load_topics
from geodesic.marketdata.series import BarSeries

__all__ = [
    "FORMAT",
    "BarRecorder",
    "FeatureRecorder",
    "RecordKind",
    "RecorderStats",
    "kind_of_topic",
    "load_bars_npz",
    "make_recorder",
    "read_recording",
]

log = logging.getLogger(__name__)

FORMAT = "geodesic.recording/1"
RecordKind = Literal["bars", "features"]

_KIND_BY_SCHEMA: Mapping[str, RecordKind] = {"Bar": "bars", "FeatureVector": "features"}
_COUNTERS = ("n_received", "n_duplicates", "n_conflicts", "n_rejected")
_BAR_INT = ("bar_seconds", "n_ticks", "open_ts_ns", "close_ts_ns", "emitted_ts_ns")
_BAR_FLOAT = ("open", "high", "low", "close", "vwap", "volume", "mean_spread")
_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "bars": ("symbol", "bar_index", *_BAR_INT, *_BAR_FLOAT),
    "features": ("symbol", "bar_index", "ts_ns", "close", "values"),
}

C = TypeVar("C", Bar, FeatureVector)


@dataclass(slots=True)
class RecorderStats:
    """What happened to every record offered: ``received == kept + duplicates + rejected``."""

    received: int = 0
    kept: int = 0
    duplicates: int = 0
    conflicts: int = 0  # duplicates whose event fields differ from the kept record
    rejected: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "kept": self.kept,
            "duplicates": self.duplicates,
            "conflicts": self.conflicts,
            "rejected": dict(self.rejected),
        }


class _Recorder(Generic[C]):
    """Dedup by (symbol, bar_index), first wins; subclasses say what fits and how to write."""

    kind: ClassVar[RecordKind]
    #: Processing-time fields: they differ between re-emissions of the same event.
    processing_fields: ClassVar[frozenset[str]]

    def __init__(self) -> None:
        self._kept: dict[tuple[str, int], C] = {}
        self.stats = RecorderStats()

    def __len__(self) -> int:
        return len(self._kept)

    def add(self, item: C) -> bool:
        """Keep ``item`` unless it is a repeat or does not fit; True if it was kept."""
        self.stats.received += 1
        reason = self._misfit(item)
        if reason is not None:
            self.stats.rejected[reason] += 1
            return False
        key = (item.symbol, item.bar_index)
        kept = self._kept.get(key)
        if kept is not None:
            self.stats.duplicates += 1
            if self._event(kept) != self._event(item):
                self.stats.conflicts += 1
            return False
        self._kept[key] = item
        self.stats.kept += 1
        return True

    def add_raw(self, raw: bytes | str | None) -> bool:
        """Parse a Kafka record value and :meth:`add` it; unparseable ones count as rejected."""
        if raw is None:
            self.stats.received += 1
            self.stats.rejected["empty"] += 1
            return False
        try:
            item = self._parse(raw)
        except ValidationError:
            self.stats.received += 1
            self.stats.rejected["invalid"] += 1
            return False
        return self.add(item)

    def items(self) -> list[C]:
        """Kept records sorted by (symbol, bar_index)."""
        return [self._kept[key] for key in sorted(self._kept)]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Everything :meth:`to_npz` writes, as arrays."""
        items = self.items()
        arrays: dict[str, np.ndarray] = {
            "format": np.array(FORMAT),
            "kind": np.array(self.kind),
            "n_received": np.array(self.stats.received, dtype=np.int64),
            "n_duplicates": np.array(self.stats.duplicates, dtype=np.int64),
            "n_conflicts": np.array(self.stats.conflicts, dtype=np.int64),
            "n_rejected": np.array(self.stats.rejected.total(), dtype=np.int64),
            "symbol": np.array([i.symbol for i in items], dtype=np.str_),
            "bar_index": np.array([i.bar_index for i in items], dtype=np.int64),
        }
        arrays.update(self._columns(items))
        return arrays

    def to_npz(self, path: str | os.PathLike[str]) -> Path:
        """Write the recording atomically (temp file + rename): a crash leaves no half file."""
        return _write_npz(Path(path), self.to_arrays())

    def _event(self, item: C) -> dict[str, Any]:
        return item.model_dump(exclude=set(self.processing_fields))

    def _misfit(self, item: C) -> str | None:
        return None

    def _columns(self, items: list[C]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _parse(self, raw: bytes | str) -> C:
        """The record's contract model (raises ValidationError)."""
        raise NotImplementedError


class BarRecorder(_Recorder[Bar]):
    """Closed bars of one ``bar_seconds`` (bar_index means nothing across bar lengths).

    ``bar_seconds=None`` takes it from the first bar; bars of another length are rejected
    as ``bar_seconds_mismatch``.
    """

    kind = "bars"
    processing_fields = frozenset({"emitted_ts_ns"})

    def __init__(self, bar_seconds: int | None = None) -> None:
        super().__init__()
        self.bar_seconds = bar_seconds

    def _parse(self, raw: bytes | str) -> Bar:
        return Bar.model_validate_json(raw)

    def _misfit(self, item: Bar) -> str | None:
        if self.bar_seconds is None:
            self.bar_seconds = item.bar_seconds
        return None if item.bar_seconds == self.bar_seconds else "bar_seconds_mismatch"

    def _columns(self, items: list[Bar]) -> dict[str, np.ndarray]:
        out = {n: np.array([getattr(b, n) for b in items], dtype=np.int64) for n in _BAR_INT}
        out.update(
            {n: np.array([getattr(b, n) for b in items], dtype=np.float64) for n in _BAR_FLOAT}
        )
        return out


class FeatureRecorder(_Recorder[FeatureVector]):
    """Feature vectors of one schema, stored as an (n, d) matrix.

    ``schema_hash=None`` takes the schema (and d) from the first vector; vectors of another
    schema or length are rejected (``schema_mismatch`` / ``feature_count_mismatch``), since
    mixing feature orders in one matrix would corrupt every column.
    """

    kind = "features"
    processing_fields = frozenset({"hops"})

    def __init__(self, schema_hash: str | None = None) -> None:
        super().__init__()
        self.schema_hash = schema_hash
        self.n_features: int | None = None

    def _parse(self, raw: bytes | str) -> FeatureVector:
        return FeatureVector.model_validate_json(raw)

    def _misfit(self, item: FeatureVector) -> str | None:
        if self.schema_hash is None:
            self.schema_hash = item.schema_hash
        if item.schema_hash != self.schema_hash:
            return "schema_mismatch"
        if self.n_features is None:
            self.n_features = len(item.values)
        return None if len(item.values) == self.n_features else "feature_count_mismatch"

    def _columns(self, items: list[FeatureVector]) -> dict[str, np.ndarray]:
        d = self.n_features or 0
        return {
            "ts_ns": np.array([f.ts_ns for f in items], dtype=np.int64),
            "close": np.array([f.close for f in items], dtype=np.float64),
            "values": np.array([f.values for f in items], dtype=np.float64).reshape(len(items), d),
            "schema_hash": np.array(self.schema_hash or ""),
            "n_features": np.array(d, dtype=np.int64),
        }


def make_recorder(kind: RecordKind) -> BarRecorder | FeatureRecorder:
    if kind == "bars":
        return BarRecorder()
    if kind == "features":
        return FeatureRecorder()
    raise ValueError(f"kind must be 'bars' or 'features', got {kind!r}")


def kind_of_topic(topic: str) -> RecordKind:
    """The recording kind of a topics.yaml topic (schema Bar or FeatureVector)."""
    spec = load_topics().get(topic)
    if spec is None:
        raise ValueError(f"topic {topic!r} is not in topics.yaml: say which kind it holds")
    kind = _KIND_BY_SCHEMA.get(spec.schema)
    if kind is None:
        raise ValueError(f"topic {topic!r} carries {spec.schema}; only Bar and FeatureVector")
    return kind


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    # A file object, not a name: np.savez would append ".npz" to a name lacking it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


# --- reading back ----------------------------------------------------------------------------


def read_recording(
    path: str | os.PathLike[str], *, kind: RecordKind | None = None
) -> dict[str, np.ndarray]:
    """All arrays of a recording, checked: format, kind, column lengths, sorted unique keys."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    found = str(arrays.get("format", ""))
    if found != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} recording (format {found!r})")
    got = str(arrays.get("kind", ""))
    columns = _COLUMNS.get(got)
    if columns is None:
        raise ValueError(f"{path}: unknown kind {got!r}")
    if kind is not None and got != kind:
        raise ValueError(f"{path}: holds {got}, expected {kind}")
    missing = [c for c in (*columns, *_COUNTERS) if c not in arrays]
    if got == "features":
        missing += [c for c in ("schema_hash", "n_features") if c not in arrays]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}")
    n = arrays["symbol"].shape[0]
    for name in columns:
        want = (n, int(arrays["n_features"])) if name == "values" else (n,)
        if arrays[name].shape != want:
            raise ValueError(f"{path}: {name} has shape {arrays[name].shape}, expected {want}")
    sym, idx = arrays["symbol"], arrays["bar_index"]
    if n > 1:
        same = sym[1:] == sym[:-1]
        ordered = (sym[1:] > sym[:-1]) | (same & (idx[1:] > idx[:-1]))
        if not ordered.all():
            raise ValueError(f"{path}: rows not strictly sorted by (symbol, bar_index)")
    return arrays


def load_bars_npz(path: str | os.PathLike[str]) -> dict[str, BarSeries]:
    """One validated ``BarSeries`` per symbol, ready for ``lifecycle.training_data.build_dataset``.

    Dates are day ``bar_index`` since the epoch (module docstring): the real date for
    daily bars, an ordinal calendar shared by all symbols for shorter ones.
    """
    a = read_recording(path, kind="bars")
    lengths = np.unique(a["bar_seconds"])
    if lengths.shape[0] > 1:
        raise ValueError(f"{path}: mixes bar_seconds {lengths.tolist()}; bar_index differs")
    symbols, starts = np.unique(a["symbol"], return_index=True)
    bounds = [*starts.tolist(), a["symbol"].shape[0]]
    out: dict[str, BarSeries] = {}
    for k, symbol in enumerate(symbols.tolist()):
        rows = slice(bounds[k], bounds[k + 1])
        out[symbol] = BarSeries(
            symbol=symbol,
            dates=a["bar_index"][rows].astype("datetime64[D]"),
            open=a["open"][rows],
            high=a["high"][rows],
            low=a["low"][rows],
            close=a["close"][rows],
            volume=a["volume"][rows],
        )
    return out
