"""An always-valid test that the canary's win rate is worse than the baseline's.

Why not a z-test every window: a fresh test at level alpha on each look rejects a good
canary with probability well above alpha over a ramp of many windows (each look is
another chance to cross by noise); tests/unit/test_rollout_machine.py measures it.

The mixture SPRT (Robbins 1970; Johari, Pekelis, Walsh 2017, "always valid p-values"):
with theta = p_base - p_canary, theta_hat its estimate and V its variance, the score
S = (theta_hat - delta) / V is approximately Brownian motion with drift (theta - delta)
in information time I = 1/V. For every u, exp(u S - u^2 I / 2) is a martingale when
theta = delta; mixing u over a half-normal of scale tau on the harmful side (u > 0) keeps
it one, and gives the closed form

    Lambda = 2 / (tau sqrt(c)) * exp(a^2 / (2 c)) * Phi(a / sqrt(c)),
    a = (theta_hat - delta) / V,   c = 1 / V + 1 / tau^2.

Ville's inequality: P(sup Lambda >= 1/alpha) <= alpha under theta <= delta, at any number
of looks and any stopping rule. The always-valid p-value is 1 / max(1, sup Lambda).
Binomial outcomes make S Brownian only in the CLT limit, hence a minimum sample count
before the test is read; the simulation test checks the level at realistic sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

_PHI = NormalDist()


@dataclass(frozen=True)
class WinRateEvidence:
    """Cumulative outcomes of both routes since the rollout started."""

    wins_base: int = 0
    n_base: int = 0
    wins_canary: int = 0
    n_canary: int = 0

    def add(self, route: str, win: bool) -> WinRateEvidence:
        if route == "canary":
            return WinRateEvidence(
                self.wins_base, self.n_base, self.wins_canary + win, self.n_canary + 1
            )
        return WinRateEvidence(
            self.wins_base + win, self.n_base + 1, self.wins_canary, self.n_canary
        )


def log_mixture_ratio(ev: WinRateEvidence, delta: float, tau: float) -> float:
    """log Lambda for H0: p_base - p_canary <= delta against harm beyond delta.

    Rates are shrunk by one pseudo-win and one pseudo-loss (p = (w + 1) / (n + 2)) so the
    variance is never 0 at small n or a rate of exactly 0 or 1.
    """
    if ev.n_base == 0 or ev.n_canary == 0:
        return 0.0
    pb = (ev.wins_base + 1) / (ev.n_base + 2)
    pc = (ev.wins_canary + 1) / (ev.n_canary + 2)
    var = pb * (1 - pb) / ev.n_base + pc * (1 - pc) / ev.n_canary
    a = (ev.wins_base / ev.n_base - ev.wins_canary / ev.n_canary - delta) / var
    c = 1.0 / var + 1.0 / (tau * tau)
    z = a / math.sqrt(c)
    # log Phi(z) without underflow far in the left tail
    if z > -30:
        log_phi = math.log(_PHI.cdf(z))
    else:  # Mills ratio: Phi(z) ~ phi(z) / -z
        log_phi = -0.5 * z * z - math.log(-z * math.sqrt(2 * math.pi))
    return math.log(2.0) - math.log(tau * math.sqrt(c)) + a * a / (2.0 * c) + log_phi


@dataclass(frozen=True)
class SequentialWinRate:
    """The test's running state: the evidence and the largest ratio seen so far."""

    evidence: WinRateEvidence = field(default_factory=WinRateEvidence)
    max_log_ratio: float = 0.0

    def look(self, delta: float, tau: float) -> SequentialWinRate:
        """One look at the evidence (any number of looks keeps the level)."""
        lr = log_mixture_ratio(self.evidence, delta, tau)
        return SequentialWinRate(self.evidence, max(self.max_log_ratio, lr))

    def p_value(self) -> float:
        """Always-valid p-value: the smallest alpha at which harm has been shown."""
        return min(1.0, math.exp(-self.max_log_ratio))

    def rejects(self, alpha: float) -> bool:
        return self.max_log_ratio >= -math.log(alpha)
