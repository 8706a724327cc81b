"""Pure control-plane state and the deterministic canary router (no Redis here)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

RolloutMode = Literal["disabled", "canary", "full"]


class TradingState(StrEnum):
    """Per-symbol trading state, as in nautilus_trader: halts block entries before exits."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"  # only exits (flat signals) are tradable
    HALTED = "HALTED"  # nothing is tradable


@dataclass(frozen=True, slots=True)
class Rollout:
    mode: RolloutMode = "disabled"
    canary_fraction: float = 0.0
    seed: int = 0
    candidate: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("disabled", "canary", "full"):
            raise ValueError(f"rollout.mode: unknown mode {self.mode!r}")
        if not 0.0 <= self.canary_fraction <= 1.0:
            raise ValueError(f"rollout.canary_fraction: {self.canary_fraction} not in [0, 1]")
        if self.mode != "disabled" and not self.candidate:
            raise ValueError("rollout.candidate: required when mode is canary or full")


@dataclass(frozen=True, slots=True)
class ControlSnapshot:
    active: str | None = None
    shadow: str | None = None
    previous: str | None = None
    rollout: Rollout = field(default_factory=Rollout)
    kill_global: bool = False
    kill_symbols: frozenset[str] = frozenset()
    symbol_states: dict[str, TradingState] = field(default_factory=dict)
    global_state: TradingState = TradingState.ACTIVE
    cooldown_until_ns: int = 0
    version: int = 0

    def flags(self) -> dict[str, object]:
        """Everything an operator or guard can change, as plain JSON data (no version)."""
        r = self.rollout
        return {
            "active": self.active,
            "shadow": self.shadow,
            "previous": self.previous,
            "rollout": [r.mode, r.canary_fraction, r.seed, r.candidate],
            "kill_global": self.kill_global,
            "kill_symbols": sorted(self.kill_symbols),
            "global_state": self.global_state.value,
            "symbol_states": {k: v.value for k, v in sorted(self.symbol_states.items())},
            "cooldown_until_ns": self.cooldown_until_ns,
        }

    def digest(self) -> str:
        """A fingerprint of :meth:`flags`: equal digests, equal control state."""
        blob = json.dumps(self.flags(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def trading_state(self, symbol: str) -> TradingState:
        """The most restrictive of kill switches, the global halt and the symbol's state."""
        if self.kill_global or symbol in self.kill_symbols:
            return TradingState.HALTED
        order = [TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED]
        sym = self.symbol_states.get(symbol, TradingState.ACTIVE)
        return max(sym, self.global_state, key=order.index)

    def route(self, symbol: str, bar_index: int) -> tuple[str | None, Literal["active", "canary"]]:
        """Which model scores this event, and on which route."""
        r = self.rollout
        if r.mode == "full" and r.candidate:
            return r.candidate, "canary"
        if (
            r.mode == "canary"
            and r.candidate
            and route_for(r.seed, symbol, bar_index, r.canary_fraction)
        ):
            return r.candidate, "canary"
        return self.active, "active"


def route_for(seed: int, symbol: str, bar_index: int, fraction: float) -> bool:
    """True when (seed, symbol, bar_index) falls in the canary fraction.

    A keyed hash, not a random draw, so a replay routes every event exactly as before and
    two scorer replicas agree without coordination.
    """
    if fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    digest = hashlib.blake2b(
        f"{symbol}|{bar_index}".encode(), digest_size=8, key=str(seed).encode()
    ).digest()
    u = int.from_bytes(digest, "big") / 2**64
    return u < fraction
