"""Risk supervisor configuration (env prefix GEODESIC_RISK_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from geodesic.risk.guards import RolloutGuardConfig
from geodesic.serving.settings import RegistrySettings


class RiskSettings(RegistrySettings):
    model_config = SettingsConfigDict(
        env_prefix="GEODESIC_RISK_", frozen=True, extra="ignore", env_nested_delimiter="__"
    )

    signals_topic: str = "signals.scored"
    bars_topic: str = "md.bars"
    features_topic: str = "features.v1"
    outcomes_topic: str = "outcomes.v1"
    control_topic: str = "control.events"
    horizon_bars: int = Field(default=1, ge=1)
    cost_bp: float = Field(default=1.0, ge=0)
    winrate_window: int = Field(default=500, ge=10)
    checkpoint_interval_s: float = Field(default=1.0, ge=0)
    drift_window: int = Field(default=500, ge=20)
    rollout_guard: RolloutGuardConfig = Field(default_factory=RolloutGuardConfig)
