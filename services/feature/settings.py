"""Feature service configuration (env prefix from geodesic.contracts.services.FEATURE)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from geodesic.contracts.services import FEATURE
from geodesic.runtime.service import ServiceSettings, settings_config


class FeatureSettings(ServiceSettings):
    model_config = settings_config(FEATURE)

    in_topic: str = FEATURE.topic("in", "Tick")
    bars_topic: str = FEATURE.topic("out", "Bar")
    features_topic: str = FEATURE.topic("out", "FeatureVector")
    dlq_topic: str = FEATURE.dlq_topic()
    bar_seconds: int = Field(default=60, ge=1)
    price_source: Literal["last", "mid"] = "last"
    idle_flush_grace_s: float | None = Field(
        default=2.0,
        ge=0,
        description="Close an idle symbol's bar this long after its end (event-time clock); "
        "None closes bars only when a later tick arrives.",
    )
