"""How often the ramp aborts a good canary, and catches a bad one, over whole ramps.

`python -m bench.rollout_false_abort --ramps 1000` simulates ramps through the real state
machine (geodesic.rollout.simulation; default plan fractions 5-10-25-50-100%, 200
outcomes per analysis window) and prints, per scenario, the share of ramps aborted by the
plan's sequential win-rate test and by a fresh z-test at the same alpha on every window.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from geodesic.rollout.machine import Phase
from geodesic.rollout.simulation import abort_rate, simulate_ramp, winrate_only_plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ramps", type=int, default=1000, help="ramps per scenario")
    ap.add_argument("--alpha", type=float, default=0.05, help="the plan's win-rate alpha")
    ap.add_argument("--delta", type=float, default=0.02, help="the plan's win-rate margin")
    ap.add_argument("--min-samples", type=int, default=300, help="outcomes per route per step")
    ap.add_argument("--p-base", type=float, default=0.55, help="baseline win rate")
    args = ap.parse_args()
    plan = winrate_only_plan(alpha=args.alpha, delta=args.delta, min_samples=args.min_samples)
    rows = []
    for name, pc in (
        ("equal", args.p_base),
        ("at_margin", args.p_base - args.delta),
        ("bad_-5pp", args.p_base - 0.05),
        ("bad_-10pp", args.p_base - 0.10),
    ):
        ends = [simulate_ramp(plan, args.p_base, pc, s) for s in range(args.ramps)]
        steps = Counter(e.step + 1 for e in ends if e.phase == Phase.ABORTED)
        rows.append(
            {
                "scenario": name,
                "p_canary": round(pc, 4),
                "aborted_sequential": sum(e.phase == Phase.ABORTED for e in ends) / args.ramps,
                "aborted_naive_z": abort_rate(plan, args.p_base, pc, args.ramps, naive=True),
                "abort_step_counts": dict(sorted(steps.items())),
            }
        )
    print(json.dumps({"alpha": args.alpha, "ramps": args.ramps, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
