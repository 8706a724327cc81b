"""The demo ramps' inputs: real bars that continue the replay, and a plan that can finish."""

from __future__ import annotations

import numpy as np

from geodesic.demo.ramps import RAMP_BARS, demo_plan, ramp_series
from geodesic.marketdata import load_dataset


def test_ramp_bars_continue_the_replayed_close_with_the_real_returns() -> None:
    replayed = {n: load_dataset(n).take(slice(2000, 2200)) for n in ("sp500", "nasdaq")}
    after = next(iter(replayed.values())).dates[-1]
    parts = ramp_series(replayed, after)
    for (name, rep), part in zip(replayed.items(), parts, strict=True):
        full = load_dataset(name)
        k = int(np.searchsorted(full.dates, after, side="right"))
        assert len(part) == RAMP_BARS and part.dates[0] == full.dates[k]
        assert np.isclose(part.open[0], rep.close[-1])  # no price gap at the seam
        real = full.close[k : k + RAMP_BARS]
        assert np.allclose(np.diff(np.log(part.close)), np.diff(np.log(real)))


def test_ramp_bars_at_the_end_of_the_data_take_its_last_days() -> None:
    full = load_dataset("sp500")
    parts = ramp_series({"sp500": full.take(slice(len(full) - 50, len(full)))}, full.dates[-1])
    assert parts[0].dates[-1] == full.dates[-1] and len(parts[0]) == RAMP_BARS


def test_demo_plan_judges_without_drift_or_winrate_and_promotes() -> None:
    plan = demo_plan(seed=7)
    assert [s.fraction for s in plan.steps] == [0.25, 0.5, 1.0]
    assert plan.promotion.promote and plan.checks.winrate is None and not plan.checks.drift
    assert plan.checks.max_error_rate is not None and plan.abort.failed_windows == 2
