"""Market-data sources: real daily history, tick replay onto md.ticks.raw, synthetic markets.

Library code only (no Kafka connection is opened here): ``publish`` takes a producer the
caller owns.
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
    register_dataset,
    split_by_date,
    split_fraction,
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
    "BarSeries",
    "CleaningReport",
    "DatasetSpec",
    "DatasetUnavailableError",
    "FaultInjector",
    "FaultKind",
    "FaultTally",
    "Message",
    "Producer",
    "PublishResult",
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
    "load_dataset",
    "publish",
    "register_dataset",
    "replay_messages",
    "replay_ticks",
    "split_by_date",
    "split_fraction",
]
