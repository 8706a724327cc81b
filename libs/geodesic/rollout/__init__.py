"""Progressive delivery: a validated ramp plan, its pure state machine and the controller."""

from geodesic.rollout.plan import (
    AbortRules,
    Checks,
    Promotion,
    RolloutPlan,
    RolloutStep,
    WinRateCheck,
)

__all__ = ["AbortRules", "Checks", "Promotion", "RolloutPlan", "RolloutStep", "WinRateCheck"]
