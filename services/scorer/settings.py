"""Scorer configuration (env prefix from geodesic.contracts.services.SCORER)."""

from __future__ import annotations

from pydantic import Field

from geodesic.contracts.services import SCORER
from geodesic.runtime.service import settings_config
from geodesic.serving.settings import ModelServingSettings


class ScorerSettings(ModelServingSettings):
    model_config = settings_config(SCORER)

    in_topic: str = SCORER.topic("in", "FeatureVector")
    out_topic: str = SCORER.topic("out", "ScoredSignal")
    dlq_topic: str = SCORER.dlq_topic()
    control_staleness_s: float = Field(
        default=2.0, gt=0, description="Fail closed when the control plane is older than this."
    )
    max_signal_age_ms: float = Field(
        default=500.0,
        gt=0,
        description="A signal decided more than this long (wall clock) after the tick that "
        "closed its bar entered the collector is stale_input, not tradable.",
    )
    degrade_budget_ms: float | None = Field(default=5.0, gt=0)
    recall_sample_rate: float = Field(default=0.01, ge=0, le=1)
    recall_eval_interval_s: float = Field(default=5.0, gt=0)
