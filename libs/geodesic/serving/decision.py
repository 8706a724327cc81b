"""From a score to a signal: side, tradability and the reasons, as one pure function.

Trading states follow the REDUCING-before-HALTED rule of mature trading engines: a
symbol in REDUCING still lets exits (flat signals, i.e. "close what you hold") through and
blocks new entries; HALTED blocks everything. A stale control plane fails closed, and so
does stale input: a decision older than ``max_age_ms`` (or of unknown age) is not
tradable. A signal is tradable exactly when it carries no blocking reason
(geodesic.contracts.reasons.BLOCKING_REASONS); informational reasons never block.
"""

from __future__ import annotations

from dataclasses import dataclass

from geodesic.contracts import Side
from geodesic.contracts.reasons import BLOCKING_REASONS, SignalReason
from geodesic.control.state import TradingState


@dataclass(frozen=True, slots=True)
class Decision:
    side: Side
    tradable: bool
    halted: bool
    reasons: tuple[SignalReason, ...]


def side_for(prob_up: float, long_threshold: float, short_threshold: float) -> Side:
    if prob_up >= long_threshold:
        return "long"
    if prob_up <= short_threshold:
        return "short"
    return "flat"


def decide(
    *,
    prob_up: float,
    abstain: bool,
    long_threshold: float,
    short_threshold: float,
    state: TradingState | None,
    extra_reasons: tuple[SignalReason, ...] = (),
    age_ms: float | None = 0.0,
    max_age_ms: float | None = None,
    degrade_level: int = 0,
) -> Decision:
    """state None means the control plane is stale or unreachable: fail closed.

    ``max_age_ms`` None disables the age check (offline replays); otherwise an age over
    it, or an unknown age (None), adds ``stale_input``.
    """
    reasons = list(extra_reasons)
    side: Side = "flat" if abstain else side_for(prob_up, long_threshold, short_threshold)
    if abstain:
        reasons.append(SignalReason.ABSTAIN)
    if max_age_ms is not None and (age_ms is None or age_ms > max_age_ms):
        reasons.append(SignalReason.STALE_INPUT)
    if degrade_level > 0:
        reasons.append(SignalReason.DEGRADED)
    halted = state is None or state is TradingState.HALTED
    if state is None:
        reasons.append(SignalReason.CONTROL_PLANE_STALE)
    elif state is TradingState.HALTED:
        reasons.append(SignalReason.HALTED)
    elif state is TradingState.REDUCING and side != "flat":
        reasons.append(SignalReason.REDUCING_BLOCKS_ENTRY)
    tradable = not BLOCKING_REASONS.intersection(reasons)
    return Decision(side, tradable, halted, tuple(reasons))
