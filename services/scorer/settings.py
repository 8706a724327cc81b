"""Scorer configuration (env prefix GEODESIC_SCORER_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from geodesic.serving.settings import ModelServingSettings


class ScorerSettings(ModelServingSettings):
    model_config = SettingsConfigDict(
        env_prefix="GEODESIC_SCORER_", frozen=True, extra="ignore", env_nested_delimiter="__"
    )

    in_topic: str = "features.v1"
    out_topic: str = "signals.scored"
    dlq_topic: str = "pipeline.dlq"
    control_staleness_s: float = Field(
        default=2.0, gt=0, description="Fail closed when the control plane is older than this."
    )
    degrade_budget_ms: float | None = Field(default=5.0, gt=0)
    recall_sample_rate: float = Field(default=0.01, ge=0, le=1)
    recall_eval_interval_s: float = Field(default=5.0, gt=0)
