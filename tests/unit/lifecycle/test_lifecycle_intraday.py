"""Sub-daily bars: time bars from trades, and the real E-mini trades shipped in mlfinpy."""

from __future__ import annotations

import numpy as np
import pytest
from lifecycle_helpers import small_config

from geodesic.lifecycle.config import DatasetConfig
from geodesic.lifecycle.evaluation import cross_validate
from geodesic.lifecycle.training_data import load_training_dataset
from geodesic.marketdata.datasets import (
    INTRADAY,
    DatasetUnavailableError,
    Trades,
    load_dataset,
    load_trades,
    time_bars,
)

S = 1_000_000_000


def test_time_bars_aggregate_trades_and_skip_empty_buckets():
    ts = np.array([0, 10, 59, 60, 200, 230], dtype=np.int64) * S  # 60 s bars; 120..179 empty
    trades = Trades(ts, np.array([10.0, 12.0, 9.0, 11.0, 13.0, 12.5]), np.arange(1.0, 7.0))
    bars = time_bars(trades, 60, "X")
    assert bars.dates.dtype == np.dtype("datetime64[s]")
    assert bars.dates.astype(np.int64).tolist() == [0, 60, 180]
    assert bars.open.tolist() == [10.0, 11.0, 13.0]
    assert bars.high.tolist() == [12.0, 11.0, 13.0]
    assert bars.low.tolist() == [9.0, 11.0, 12.5]
    assert bars.close.tolist() == [9.0, 11.0, 12.5]
    assert bars.volume.tolist() == [6.0, 4.0, 11.0]
    with pytest.raises(ValueError, match="bar_seconds"):
        time_bars(trades, 0, "X")


def _es_path():
    try:
        return INTRADAY["es_1min"].path()
    except DatasetUnavailableError:
        pytest.skip("mlfinpy is not installed (make install adds it with --no-deps)")


def test_real_emini_trades_become_minute_bars_and_evaluate(tmp_path):
    trades = load_trades(_es_path())
    assert trades.ts_ns.shape[0] > 400_000 and np.all(np.diff(trades.ts_ns) >= 0)
    bars = load_dataset("es_1min")
    assert bars.symbol == "ES" and bars.volume.sum() == trades.size.sum()
    span = (bars.dates[-1] - bars.dates[0]).astype(np.int64)
    assert len(bars) > 2000 and span < 3 * 86_400  # sub-daily bars over three sessions
    cfg = small_config().model_copy(
        update={
            "data": DatasetConfig(datasets=("es_1min",), cutoff="2013-09-03"),
            "n_permutations": 40,
            "n_bootstrap": 40,
        }
    )
    ds = load_training_dataset(cfg.data)
    assert ds.dates.max() < np.datetime64("2013-09-03")  # the cutoff holds for bar times
    cv = cross_validate(ds, cfg, tmp_path / "folds", "es")
    assert cv.honest is not None and cv.honest.forecasters["analog"].auc_mean is not None
