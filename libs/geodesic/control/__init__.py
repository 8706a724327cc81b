"""The live control plane in Redis: model slots, rollout, kill switches, halts, cooldown."""

from geodesic.control.plane import ControlPlane
from geodesic.control.state import (
    ControlSnapshot,
    Rollout,
    RolloutMode,
    TradingState,
    route_for,
)
from geodesic.control.watcher import ControlWatcher

__all__ = [
    "ControlPlane",
    "ControlSnapshot",
    "ControlWatcher",
    "Rollout",
    "RolloutMode",
    "TradingState",
    "route_for",
]
