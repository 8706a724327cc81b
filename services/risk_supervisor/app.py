"""Risk supervisor service: signals.scored + md.bars -> outcomes.v1, win rates, audit."""

from __future__ import annotations

from typing import Any

from geodesic.contracts.services import RISK_SUPERVISOR
from geodesic.runtime.checkpoint import CheckpointStore
from geodesic.runtime.service import LoopContext, Service
from risk_supervisor.processor import RiskMetrics, RiskProcessor
from risk_supervisor.settings import RiskSettings


class RiskSupervisorService(Service[RiskSettings]):
    spec = RISK_SUPERVISOR
    settings_class = RiskSettings

    def __init__(self, settings: RiskSettings | None = None) -> None:
        super().__init__(settings)
        self.metrics = RiskMetrics(self.registry)
        self._processor: RiskProcessor | None = None

    def topics(self) -> list[str]:
        s = self.settings
        return [s.signals_topic, s.bars_topic, s.features_topic]

    def processor(self, ctx: LoopContext) -> RiskProcessor:
        s = self.settings
        self._processor = RiskProcessor(
            redis=ctx.redis,
            prefix=s.redis_prefix,
            checkpoints=CheckpointStore(ctx.redis, self.spec.name, s.redis_prefix),
            signals_topic=s.signals_topic,
            bars_topic=s.bars_topic,
            features_topic=s.features_topic,
            outcomes_topic=s.outcomes_topic,
            control_topic=s.control_topic,
            horizon_bars=s.horizon_bars,
            cost_bp=s.cost_bp,
            winrate_window=s.winrate_window,
            checkpoint_interval_s=s.checkpoint_interval_s,
            guard=s.rollout_guard,
            registry_root=s.registry_root,
            drift_window=s.drift_window,
            metrics=self.metrics,
            dead_letters=self.dead_letters,
        )
        return self._processor

    def info(self) -> dict[str, Any]:
        proc = self._processor
        if proc is None:
            return {}
        return {"counts": dict(proc.counts), **proc.status()}
