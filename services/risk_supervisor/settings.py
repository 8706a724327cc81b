"""Risk supervisor configuration (env prefix from contracts.services.RISK_SUPERVISOR)."""

from __future__ import annotations

from pydantic import Field

from geodesic.contracts.services import RISK_SUPERVISOR
from geodesic.risk.guards import RolloutGuardConfig
from geodesic.runtime.service import settings_config
from geodesic.serving.settings import RegistrySettings


class RiskSettings(RegistrySettings):
    model_config = settings_config(RISK_SUPERVISOR)

    signals_topic: str = RISK_SUPERVISOR.topic("in", "ScoredSignal")
    bars_topic: str = RISK_SUPERVISOR.topic("in", "Bar")
    features_topic: str = RISK_SUPERVISOR.topic("in", "FeatureVector")
    outcomes_topic: str = RISK_SUPERVISOR.topic("out", "Outcome")
    control_topic: str = RISK_SUPERVISOR.topic("out", "ControlEvent")
    dlq_topic: str = RISK_SUPERVISOR.dlq_topic()
    horizon_bars: int = Field(default=1, ge=1)
    cost_bp: float = Field(default=1.0, ge=0)
    winrate_window: int = Field(default=500, ge=10)
    checkpoint_interval_s: float = Field(default=1.0, ge=0)
    drift_window: int = Field(default=500, ge=20)
    rollout_guard: RolloutGuardConfig = Field(default_factory=RolloutGuardConfig)
