"""Feature service configuration (env prefix GEODESIC_FEATURE_)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from geodesic.runtime.service import ServiceSettings


class FeatureSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="GEODESIC_FEATURE_", frozen=True, extra="ignore", env_nested_delimiter="__"
    )

    in_topic: str = "md.ticks"
    bars_topic: str = "md.bars"
    features_topic: str = "features.v1"
    bar_seconds: int = Field(default=60, ge=1)
    price_source: Literal["last", "mid"] = "last"
    idle_flush_grace_s: float | None = Field(
        default=2.0,
        ge=0,
        description="Close an idle symbol's bar this long after its end (event-time clock); "
        "None closes bars only when a later tick arrives.",
    )
