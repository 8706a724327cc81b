"""`geodesic replay` lays tick times so the collector accepts every one as it is sent."""

from __future__ import annotations

import numpy as np
import pytest

from geodesic.cli.replay_cmds import plan_ticks
from geodesic.marketdata.datasets import DatasetUnavailableError

NOW = 1_790_000_000 * 10**9
DAY = 86_400 * 10**9


@pytest.mark.parametrize(("dataset", "rate"), [("es_trades", 500.0), ("sp500", 2_000.0)])
def test_no_tick_is_ahead_of_its_send_time_or_older_than_a_day(dataset: str, rate: float):
    try:
        ticks = list(plan_ticks(dataset, 5_000, rate, NOW))
    except DatasetUnavailableError:
        pytest.skip("mlfinpy is not installed (make install adds it with --no-deps)")
    ts = np.array([t.ts_ns for t in ticks])
    send_at = NOW + np.arange(len(ts)) * (1e9 / rate)
    assert len(ticks) == 5_000
    assert (ts <= send_at).all()  # the collector refuses ticks from the future
    assert (ts > NOW - DAY).all()  # ... and ticks older than its max_age_s
    assert (np.diff(ts) >= 0).all()
    assert [t.seq for t in ticks] == sorted(t.seq for t in ticks)


def test_an_unknown_data_set_is_refused_with_the_names():
    with pytest.raises(LookupError, match="sp500"):
        list(plan_ticks("nope", 10, 100.0, NOW))
