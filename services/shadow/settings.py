"""Shadow configuration (env prefix from geodesic.contracts.services.SHADOW)."""

from __future__ import annotations

from pydantic import Field

from geodesic.contracts.services import SHADOW
from geodesic.runtime.service import settings_config
from geodesic.serving.settings import ModelServingSettings


class ShadowSettings(ModelServingSettings):
    model_config = settings_config(SHADOW)

    features_topic: str = SHADOW.topic("in", "FeatureVector")
    live_topic: str = SHADOW.topic("in", "ScoredSignal")
    out_topic: str = SHADOW.topic("out", "ShadowScore")
    dlq_topic: str = SHADOW.dlq_topic()
    control_staleness_s: float = Field(default=5.0, gt=0)
    match_window: int = Field(default=500, ge=10)
    join_capacity: int = Field(default=20_000, ge=100)
    parity_tolerance: float = Field(default=1e-9, ge=0)
