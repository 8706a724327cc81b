"""Market-data sources: real daily history, tick replay onto md.ticks.raw, synthetic markets,
and recordings of md.bars / features.v1 for training.

Library code only: ``publish`` takes a producer the caller owns; the one exception is
``recorder.record``, which opens its own group-less consumer when called (importing opens
nothing).
"""

from geodesic.marketdata.datasets import (
    DATASETS,
    BarSeries,
    CleaningReport,
    DatasetSpec,
    DatasetUnavailableError,
    available_datasets,
    clean_ohlcv,
    load_dataset,
    load_source,
    register_dataset,
    split_by_date,
    split_fraction,
)
from geodesic.marketdata.recording import (
    BarRecorder,
    FeatureRecorder,
    RecorderStats,
    load_bars_npz,
    read_recording,
)
from geodesic.marketdata.replay import (
    FaultInjector,
    FaultKind,
    FaultTally,
    Message,
    Producer,
    PublishResult,
    ReplayConfig,
    backfill_start_ns,
    bar_ticks,
    encode_ticks,
    inject_faults,
    interleave,
    live_start_ns,
    publish,
    replay_messages,
    replay_ticks,
)
from geodesic.marketdata.synthetic import Regime, SyntheticConfig, SyntheticTruth, generate_market

__all__ = [
    "DATASETS",
    "BarRecorder",
    "BarSeries",
    "CleaningReport",
    "DatasetSpec",
    "DatasetUnavailableError",
    "FaultInjector",
    "FaultKind",
    "FaultTally",
    "FeatureRecorder",
    "Message",
    "Producer",
    "PublishResult",
    "RecorderStats",
    "Regime",
    "ReplayConfig",
    "SyntheticConfig",
    "SyntheticTruth",
    "available_datasets",
    "backfill_start_ns",
    "bar_ticks",
    "clean_ohlcv",
    "encode_ticks",
    "generate_market",
    "inject_faults",
    "interleave",
    "live_start_ns",
    "load_bars_npz",
    "load_dataset",
    "load_source",
    "publish",
    "read_recording",
    "register_dataset",
    "replay_messages",
    "replay_ticks",
    "split_by_date",
    "split_fraction",
]
