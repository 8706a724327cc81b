"""Shadow configuration (env prefix GEODESIC_SHADOW_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, DirectoryPath, Field
from pydantic_settings import SettingsConfigDict

from geodesic.runtime.service import ServiceSettings


class ShadowSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="GEODESIC_SHADOW_", frozen=True, extra="ignore", env_nested_delimiter="__"
    )

    features_topic: str = "features.v1"
    live_topic: str = "signals.scored"
    out_topic: str = "signals.shadow"
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
    control_staleness_s: float = Field(default=5.0, gt=0)
    match_window: int = Field(default=500, ge=10)
    join_capacity: int = Field(default=20_000, ge=100)
    parity_tolerance: float = Field(default=1e-9, ge=0)
