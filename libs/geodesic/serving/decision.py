"""From a score to a signal: side, tradability and the reasons, as one pure function.

Trading states follow the REDUCING-before-HALTED rule of mature trading engines: a
symbol in REDUCING still lets exits (flat signals, i.e. "close what you hold") through and
blocks new entries; HALTED blocks everything. A stale control plane fails closed.
"""

from __future__ import annotations

from dataclasses import dataclass

from geodesic.control.state import TradingState

Side = str


@dataclass(frozen=True, slots=True)
class Decision:
    side: Side
    tradable: bool
    halted: bool
    reasons: tuple[str, ...]


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
    extra_reasons: tuple[str, ...] = (),
) -> Decision:
    """state None means the control plane is stale or unreachable: fail closed."""
    reasons = list(extra_reasons)
    side = "flat" if abstain else side_for(prob_up, long_threshold, short_threshold)
    if abstain:
        reasons.append("abstain")
    if state is None:
        reasons.append("control_plane_stale")
        return Decision(side, False, True, tuple(reasons))
    if state is TradingState.HALTED:
        reasons.append("halted")
        return Decision(side, False, True, tuple(reasons))
    if state is TradingState.REDUCING and side != "flat":
        reasons.append("reducing_blocks_entry")
        return Decision(side, False, False, tuple(reasons))
    return Decision(side, not extra_reasons, False, tuple(reasons))
