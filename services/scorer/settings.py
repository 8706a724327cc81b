"""Scorer configuration (env prefix GEODESIC_SCORER_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, DirectoryPath, Field
from pydantic_settings import SettingsConfigDict

from geodesic.runtime.service import ServiceSettings


class ScorerSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="GEODESIC_SCORER_", frozen=True, extra="ignore", env_nested_delimiter="__"
    )

    in_topic: str = "features.v1"
    out_topic: str = "signals.scored"
    dlq_topic: str = "pipeline.dlq"
    registry_root: DirectoryPath = Field(
        default=Path("models/registry"),
        validate_default=True,  # a typo in the path fails at startup, naming the variable
        validation_alias=AliasChoices("GEODESIC_MODEL_REGISTRY", "registry_root"),
    )
    verify_models: bool = Field(
        default=True,
        description="Refuse models whose signature, file hashes or schema_hash do not match.",
    )
    control_poll_interval_s: float = Field(default=0.5, gt=0)
    control_staleness_s: float = Field(
        default=2.0, gt=0, description="Fail closed when the control plane is older than this."
    )
    degrade_budget_ms: float | None = Field(default=5.0, gt=0)
    recall_sample_rate: float = Field(default=0.01, ge=0, le=1)
    recall_eval_interval_s: float = Field(default=5.0, gt=0)
