"""How often the drift guard alarms on real history with the demo's 200-sample window.

`python -m bench.drift_window_alarms` builds the drift reference a demo model gets (the
sp500 + nasdaq features before 2007-01-01, replay spreads), then streams each calendar
year of the same history, both symbols interleaved by day, through the risk supervisor's
DriftMonitor (window 200, `drift_min_window` 200, other guard limits at their defaults)
and prints, per year, the share of evaluations whose verdict is `rollback`. Years before
2007 are inside the reference's own period: a calibrated guard would rarely alarm there.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from geodesic.lifecycle.config import DatasetConfig
from geodesic.lifecycle.drift import DriftReference, drift_reference
from geodesic.lifecycle.training_data import load_training_dataset
from geodesic.risk.guards import RolloutGuardConfig, drift_decision
from geodesic.risk.supervisor import DriftMonitor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cutoff", default="2007-01-01", help="reference: the days before this")
    ap.add_argument("--window", type=int, default=200, help="drift window in samples")
    args = ap.parse_args()
    data = DatasetConfig(cutoff=None, spread_model="replay", ticks_per_bar=(8, 12))
    ds = load_training_dataset(data)
    order = np.lexsort((ds.symbols, ds.dates))
    X, dates = ds.X[order], ds.dates[order]
    ref_rows = dates < np.datetime64(args.cutoff)
    ref = DriftReference(drift_reference(X[ref_rows], ds.feature_names))
    cfg = RolloutGuardConfig(drift_min_window=args.window)
    years = dates.astype("datetime64[Y]")
    print(f"{'year':<6}{'in reference':<14}{'evaluations':>12}{'rollback':>10}  most alarmed")
    for year in np.unique(years):
        rows = np.flatnonzero(years == year)
        mon = DriftMonitor.from_reference("reference", ref, window=args.window)
        verdicts, alarmed = Counter[str](), Counter[str]()
        for i in rows:
            mon.update([float(v) for v in X[i]])
            drifts = mon.drifts(cfg)
            if min(d.n for d in drifts) < args.window:
                continue
            verdicts[drift_decision(drifts, cfg).verdict] += 1
            alarmed.update(d.feature for d in drifts if d.alarm)
        n = sum(verdicts.values())
        share = verdicts["rollback"] / n if n else float("nan")
        top = ", ".join(f for f, _ in alarmed.most_common(3))
        inside = str(year < np.datetime64(args.cutoff, "Y"))
        print(f"{year!s:<6}{inside:<14}{n:>12}{share:>10.2f}  {top}")


if __name__ == "__main__":
    main()
