"""Shadow configuration (env prefix GEODESIC_SHADOW_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from geodesic.serving.settings import ModelServingSettings


class ShadowSettings(ModelServingSettings):
    model_config = SettingsConfigDict(
        env_prefix="GEODESIC_SHADOW_", frozen=True, extra="ignore", env_nested_delimiter="__"
    )

    features_topic: str = "features.v1"
    live_topic: str = "signals.scored"
    out_topic: str = "signals.shadow"
    control_staleness_s: float = Field(default=5.0, gt=0)
    match_window: int = Field(default=500, ge=10)
    join_capacity: int = Field(default=20_000, ge=100)
    parity_tolerance: float = Field(default=1e-9, ge=0)
