"""A rollout plan: how far a candidate is ramped, how each step is judged, when to stop.

Modelled on Argo Rollouts (steps with a weight and a pause, an analysis with success and
inconclusive limits) and Flagger (an interval, a threshold of failed checks), with two
changes their users asked for: a check with too few samples is INCONCLUSIVE, never
green (Flagger #1098), and the guard continues for a while after promotion (Flagger #616).

Everything is frozen and validated; an error names the field (pydantic's loc), so a plan
file with a typo or a nonsense value is refused before a rollout starts.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Annotated, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

CheckName = Literal[
    "p95_latency_ms", "error_rate", "shadow_match_rate", "parity_failures", "drift", "winrate"
]
Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
Seconds = Annotated[float, Field(ge=0.0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RolloutStep(_Frozen):
    """One weight of the ramp and what it takes to leave it."""

    fraction: Fraction
    #: the step lasts at least this long, however green its checks are
    min_duration_s: Seconds = 300.0
    #: outcomes (win-rate) and signals (latency, errors) per route, counted in this step,
    #: below which the checks that need them are INCONCLUSIVE
    min_samples: Annotated[int, Field(ge=1)] = 100
    #: how long past min_duration_s the step may stay inconclusive before it PAUSES for an
    #: operator (it never advances on missing evidence)
    inconclusive_limit_s: Seconds = 1800.0


class WinRateCheck(_Frozen):
    """Canary worse than baseline by more than `delta`, judged by an always-valid test.

    A mixture sequential probability ratio test (mSPRT, Johari et al. 2017) on the
    difference of win rates, mixed over a half-normal prior of scale `mixing_sd` on the
    harmful side. Its ratio is a martingale under the null, so by Ville's inequality the
    chance it ever crosses 1/alpha over the whole ramp, however often it is looked at,
    is at most alpha: the repeated looks that inflate a fresh z-test every window do not.
    """

    delta: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.02
    alpha: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.05
    #: the harm (in win-rate units) the test is most sensitive to
    mixing_sd: Annotated[float, Field(gt=0.0, le=1.0)] = 0.05


class Checks(_Frozen):
    """The checks run in every analysis window; a check set to None is not run."""

    #: p95 of the candidate's scoring latency (ScoredSignal.latency_ms["score_total"])
    p95_latency_ms: Annotated[float, Field(gt=0.0)] | None = 50.0
    #: signals on the candidate's route its model failed to score, over its signals
    max_error_rate: Annotated[float, Field(ge=0.0, le=1.0)] | None = 0.01
    #: shadow/live same-side rate (the shadow service's rolling window); None: not run
    min_shadow_match_rate: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    #: joined shadow/live pairs the match rate needs to be read
    shadow_min_samples: Annotated[int, Field(ge=1)] = 100
    #: shadow parity failures counted since the step started
    max_parity_failures: Annotated[int, Field(ge=0)] | None = 0
    #: the drift guard (PSI/KS against the model's reference) must not call for rollback
    drift: bool = True
    winrate: WinRateCheck | None = Field(default_factory=WinRateCheck)


class AbortRules(_Frozen):
    """When red checks end the rollout (the candidate goes back to 0%)."""

    #: consecutive analysis windows with a red check that abort (or roll back after
    #: promotion); one red window of a noisy point estimate (latency, errors, shadow
    #: match rate) is a warning
    failed_windows: Annotated[int, Field(ge=1)] = 2
    #: checks that are tests already (the always-valid win-rate test, the drift guard's
    #: sample-size-aware alarm, parity failures): red aborts at once, without waiting for
    #: the analysis window to close
    immediate: frozenset[CheckName] = frozenset({"winrate", "drift", "parity_failures"})
    #: the rollback cooldown an automatic abort starts (blocks re-promotion flapping)
    cooldown_s: Seconds = 900.0


class Promotion(_Frozen):
    """What happens once the last step is green."""

    #: candidate -> active slot, the old active -> previous slot (kept warm: a rollback
    #: is a slot flip, the model is never unloaded)
    promote: bool = True
    #: after promotion the checks keep running on the active route; a red window in
    #: this period rolls back to the previous model automatically
    guard_window_s: Seconds = 1800.0
    #: signals on the active route the guard needs before its checks can be red or green
    guard_min_samples: Annotated[int, Field(ge=1)] = 100


class RolloutPlan(_Frozen):
    """A whole ramp. `RolloutPlan()` is the default 5% -> 10% -> 25% -> 50% -> 100%."""

    steps: tuple[RolloutStep, ...] = (
        RolloutStep(fraction=0.05),
        RolloutStep(fraction=0.10),
        RolloutStep(fraction=0.25),
        RolloutStep(fraction=0.50),
        RolloutStep(fraction=1.00),
    )
    #: how often checks are judged (one decision per window)
    analysis_window_s: Annotated[float, Field(gt=0.0)] = 60.0
    #: consecutive all-green windows required to advance a step
    green_windows: Annotated[int, Field(ge=1)] = 2
    checks: Checks = Field(default_factory=Checks)
    abort: AbortRules = Field(default_factory=AbortRules)
    promotion: Promotion = Field(default_factory=Promotion)
    #: canary routing seed (route_for): the same seed routes a replay identically
    seed: int = 0

    @model_validator(mode="after")
    def _ramp_increases(self) -> Self:
        if not self.steps:
            raise ValueError("steps: a plan needs at least one step")
        fractions = [s.fraction for s in self.steps]
        if any(b <= a for a, b in pairwise(fractions)):
            raise ValueError(f"steps: fractions must strictly increase, got {fractions}")
        if self.promotion.promote and fractions[-1] != 1.0:
            raise ValueError(
                f"steps: the last step must be 1.0 when promotion.promote is set, "
                f"got {fractions[-1]}"
            )
        return self

    @classmethod
    def from_file(cls, path: Path) -> RolloutPlan:
        """A plan from YAML or JSON (JSON is YAML); unknown keys are refused."""
        doc = yaml.safe_load(Path(path).read_text()) or {}
        return cls.model_validate(doc)
