"""Rollout guards: the statistics that decide rollbacks and halts (pure, no I/O).

Every decision is sample-size aware and says why; too few samples is a decision of its
own ("insufficient_data"), never a fake 0.0 or a silent pass.

- Canary vs baseline: one-sided test that the canary's win rate is worse than the
  baseline's by more than `winrate_delta`: rollback when
  (p_base - p_canary - delta) / se > z(1 - alpha), se the unpooled standard error.
- Drift, PSI: under no drift, PSI (a symmetrised KL on B bins) times the effective sample
  size n_eff = 1 / (1/n + 1/m) is approximately chi-square with B - 1 degrees of freedom,
  so the alarm level is max(psi_limit, chi2_{B-1}(1 - alpha) / n_eff). A fixed cut-off
  over-triggers on small windows (noise alone gives PSI ~ (B-1)/n) and under-triggers on
  large ones; this one does neither. `psi_limit` is the practical-significance floor.
  The chi-square law needs ~5 expected samples per bin, hence `drift_min_window` >= 20
  bins' worth by default (200 for deciles); below it the guard answers insufficient_data.
  Consecutive values of a feature built over an L-bar window share L - 1 bars, so n is
  replaced by the effective size n / L (features.compute.feature_lookbacks); persistence
  beyond the window (volatility clustering) is left in, since a regime change is drift.
  Empty bins are floored at PSI_EPS (1e-4) of mass before the log (lorentzcore.metrics).
- Drift, KS: alarm when KS > max(ks_limit, c(alpha) * sqrt((n + m) / (n m))), with
  c(alpha) = sqrt(-ln(alpha / 2) / 2). Per-feature alphas are Bonferroni-corrected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Verdict = Literal["ok", "rollback", "insufficient_data", "alarm", "halt", "reduce"]


class RolloutGuardConfig(BaseModel):
    """The `rollout_guard` config; every limit is validated and named in errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    winrate_delta: Annotated[float, Field(ge=0, le=1)] = 0.05
    min_samples: Annotated[int, Field(ge=10)] = 100
    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.05
    psi_limit: Annotated[float, Field(gt=0)] = 0.1
    ks_limit: Annotated[float, Field(gt=0, le=1)] = 0.1
    drift_min_window: Annotated[int, Field(ge=20)] = 200
    drift_alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.01
    drift_features_required: Annotated[int, Field(ge=1)] = 2
    parity_max_failures: Annotated[int, Field(ge=0)] = 0
    vol_halt_multiple: Annotated[float, Field(gt=1)] = 3.0
    vol_min_bars: Annotated[int, Field(ge=1)] = 5
    precision_floor: Annotated[float, Field(ge=0, le=1)] = 0.40
    precision_min_samples: Annotated[int, Field(ge=10)] = 200
    cooldown_s: Annotated[float, Field(ge=0)] = 900.0
    eval_interval_s: Annotated[float, Field(gt=0)] = 1.0


@dataclass(frozen=True)
class GuardDecision:
    guard: str
    verdict: Verdict
    reason: str
    value: float | None = None
    limit: float | None = None


def _z(alpha: float) -> float:
    return NormalDist().inv_cdf(1.0 - alpha)


def canary_vs_baseline(
    wins_base: int, n_base: int, wins_canary: int, n_canary: int, cfg: RolloutGuardConfig
) -> GuardDecision:
    if n_base < cfg.min_samples or n_canary < cfg.min_samples:
        return GuardDecision(
            "canary_winrate",
            "insufficient_data",
            f"need {cfg.min_samples} outcomes per route, have base={n_base} canary={n_canary}",
        )
    pb, pc = wins_base / n_base, wins_canary / n_canary
    se = math.sqrt(pb * (1 - pb) / n_base + pc * (1 - pc) / n_canary)
    shortfall = pb - pc - cfg.winrate_delta
    stat = shortfall / se if se > 0 else (math.inf if shortfall > 0 else -math.inf)
    crit = _z(cfg.alpha)
    if stat > crit:
        return GuardDecision(
            "canary_winrate",
            "rollback",
            f"canary win rate {pc:.3f} < baseline {pb:.3f} - {cfg.winrate_delta} "
            f"(z={stat:.2f} > {crit:.2f}, n={n_canary}/{n_base})",
            value=pb - pc,
            limit=cfg.winrate_delta,
        )
    return GuardDecision(
        "canary_winrate",
        "ok",
        f"canary {pc:.3f} vs baseline {pb:.3f} (z={stat:.2f})",
        value=pb - pc,
        limit=cfg.winrate_delta,
    )


def chi2_quantile(q: float, dof: int) -> float:
    """Wilson-Hilferty approximation (relative error < 2% for dof >= 3, q in [0.9, 0.999])."""
    z = NormalDist().inv_cdf(q)
    k = float(dof)
    return k * (1.0 - 2.0 / (9.0 * k) + z * math.sqrt(2.0 / (9.0 * k))) ** 3


def psi_alarm_level(n: float, m: int, bins: int, alpha: float, psi_limit: float) -> float:
    n_eff = 1.0 / (1.0 / n + 1.0 / m)
    return max(psi_limit, chi2_quantile(1.0 - alpha, bins - 1) / n_eff)


def ks_alarm_level(n: float, m: int, alpha: float, ks_limit: float) -> float:
    c = math.sqrt(-math.log(alpha / 2.0) / 2.0)
    return max(ks_limit, c * math.sqrt((n + m) / (n * m)))


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    n: int
    psi: float
    psi_level: float
    ks: float
    ks_level: float

    @property
    def alarm(self) -> bool:
        return self.psi > self.psi_level or self.ks > self.ks_level


def drift_decision(drifts: list[FeatureDrift], cfg: RolloutGuardConfig) -> GuardDecision:
    """Rollback-grade drift when at least `drift_features_required` features alarm."""
    ready = [d for d in drifts if d.n >= cfg.drift_min_window]
    if not ready:
        have = max((d.n for d in drifts), default=0)
        return GuardDecision(
            "drift", "insufficient_data", f"window {have} < {cfg.drift_min_window}"
        )
    alarmed = [d for d in ready if d.alarm]
    worst = max(ready, key=lambda d: d.psi / d.psi_level)
    if len(alarmed) >= min(cfg.drift_features_required, len(ready)):
        names = ", ".join(
            f"{d.feature} psi={d.psi:.3f}>{d.psi_level:.3f}"
            if d.psi > d.psi_level
            else f"{d.feature} ks={d.ks:.3f}>{d.ks_level:.3f}"
            for d in alarmed
        )
        return GuardDecision(
            "drift",
            "rollback",
            f"drift on {len(alarmed)} features: {names}",
            value=worst.psi,
            limit=worst.psi_level,
        )
    return GuardDecision(
        "drift",
        "ok",
        f"{len(alarmed)} of {len(ready)} features alarm",
        value=worst.psi,
        limit=worst.psi_level,
    )


def parity_decision(failures: int, cfg: RolloutGuardConfig) -> GuardDecision:
    if failures > cfg.parity_max_failures:
        return GuardDecision(
            "parity",
            "rollback",
            f"{failures} shadow parity failures",
            value=float(failures),
            limit=float(cfg.parity_max_failures),
        )
    return GuardDecision("parity", "ok", f"{failures} parity failures", value=float(failures))


def volatility_decision(
    realized_vol: float, reference_vol: float, bars: int, cfg: RolloutGuardConfig
) -> GuardDecision:
    """HALT beyond 2x the multiple, REDUCE beyond the multiple: entries stop first."""
    if bars < cfg.vol_min_bars or reference_vol <= 0:
        return GuardDecision("volatility", "insufficient_data", f"{bars} bars")
    ratio = realized_vol / reference_vol
    if ratio > 2 * cfg.vol_halt_multiple:
        verdict: Verdict = "halt"
    elif ratio > cfg.vol_halt_multiple:
        verdict = "reduce"
    else:
        verdict = "ok"
    return GuardDecision(
        "volatility",
        verdict,
        f"realized vol {ratio:.2f}x reference",
        value=ratio,
        limit=cfg.vol_halt_multiple,
    )


def precision_decision(wins: int, n: int, cfg: RolloutGuardConfig) -> GuardDecision:
    """REDUCE when the active model's precision is significantly under the floor."""
    if n < cfg.precision_min_samples:
        return GuardDecision("precision", "insufficient_data", f"{n} outcomes")
    p = wins / n
    se = math.sqrt(max(p * (1 - p), 1e-12) / n)
    if (cfg.precision_floor - p) / se > _z(cfg.alpha):
        return GuardDecision(
            "precision",
            "reduce",
            f"precision {p:.3f} below floor {cfg.precision_floor}",
            value=p,
            limit=cfg.precision_floor,
        )
    return GuardDecision(
        "precision", "ok", f"precision {p:.3f}", value=p, limit=cfg.precision_floor
    )
