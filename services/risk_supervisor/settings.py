"""Risk supervisor configuration (env prefix GEODESIC_RISK_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from geodesic.runtime.service import ServiceSettings


class RiskSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="GEODESIC_RISK_", frozen=True, extra="ignore", env_nested_delimiter="__"
    )

    signals_topic: str = "signals.scored"
    bars_topic: str = "md.bars"
    outcomes_topic: str = "outcomes.v1"
    control_topic: str = "control.events"
    horizon_bars: int = Field(default=1, ge=1)
    cost_bp: float = Field(default=1.0, ge=0)
    winrate_window: int = Field(default=500, ge=10)
    checkpoint_interval_s: float = Field(default=1.0, ge=0)
