"""The promotion gate table: registry verification, offline gates, live gates.

Offline gates are the ones recorded in the model's *signed* manifest by `geodesic train`
(lifecycle.gates.offline_gates on the out-of-fold report), so they are trusted only after
the directory verifies. Live gates judge the model on the traffic it has seen as the
rollout candidate, from the risk supervisor's published status and the shadow's stats,
with the same statistics the supervisor's guards use (risk.guards): a canary that is not
significantly worse than the baseline, enough outcomes on both routes, no drift alarm and
no parity failures. As everywhere in Geodesic, missing evidence fails a gate: a metric
that is undefined never passes by default.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from geodesic.control.state import ControlSnapshot
from geodesic.operations.common import jsonable
from geodesic.risk.guards import (
    FeatureDrift,
    RolloutGuardConfig,
    canary_vs_baseline,
    drift_decision,
)

__all__ = [
    "GateRow",
    "all_pass",
    "failures",
    "gate_table",
    "live_rows",
    "model_checks",
    "offline_rows",
    "overridable",
    "verification_row",
]

Source = Literal["registry", "offline", "live"]


@dataclass(frozen=True, slots=True)
class GateRow:
    name: str
    source: Source
    passed: bool
    value: float | None = None
    limit: float | None = None
    comparison: str = ""
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = jsonable(asdict(self))
        return out


def verification_row(error: str | None, schema_hash: str | None = None) -> GateRow:
    """Signature, every file's sha256 and the schema hash (registry.verify_model_dir)."""
    if error is None:
        detail = "signature and sha256 of every file verified"
        if schema_hash:
            detail += f"; schema_hash {schema_hash}"
        return GateRow("verified", "registry", True, detail=detail)
    return GateRow("verified", "registry", False, detail=error)


def offline_rows(manifest: Mapping[str, Any]) -> list[GateRow]:
    """The gates recorded in a verified manifest; none recorded is itself a failure.

    ``passed`` is re-derived from value, comparison and limit, so a record can only be
    believed when its own numbers support it.
    """
    records = manifest.get("gates")
    if not isinstance(records, list) or not records:
        return [
            GateRow(
                "offline_gates_recorded",
                "offline",
                False,
                detail="the manifest records no offline gates (not registered by geodesic train)",
            )
        ]
    rows = []
    for rec in records:
        value = rec.get("value")
        limit = rec.get("limit")
        cmp_ = str(rec.get("comparison", ""))
        ok = bool(rec.get("passed")) and _holds(value, cmp_, limit)
        rows.append(
            GateRow(
                str(rec.get("name", "?")),
                "offline",
                ok,
                None if value is None else float(value),
                None if limit is None else float(limit),
                cmp_,
                "" if ok else "recorded as failed" if not rec.get("passed") else "inconsistent",
            )
        )
    return rows


def model_checks(registry: Path, model_id: str, *, gates: bool = True) -> list[GateRow]:
    """Registry verification (existence, signature, sha256, the serving schema hash), then
    the offline gates recorded in the verified manifest (an unverified one is not believed).

    The imports are local: verification needs the feature schema, which pulls numpy, and
    the emergency commands (kill-switch, halt) must not pay for it.
    """
    from geodesic.features.compute import SCHEMA_HASH
    from geodesic.lifecycle.registry import ModelVerificationError, verify_model_dir

    if not (registry / model_id).is_dir():
        return [verification_row(f"model {model_id!r} not found in registry {registry}")]
    try:
        manifest = verify_model_dir(registry / model_id, SCHEMA_HASH)
    except (ModelVerificationError, OSError) as exc:
        return [verification_row(str(exc))]
    rows = [verification_row(None, manifest.get("schema_hash"))]
    return rows + offline_rows(manifest) if gates else rows


def overridable(row: GateRow) -> bool:
    """Whether ``--force`` may override a failed row: offline and live gates are judgement
    calls an operator may overrule; a model that is missing, tampered with or built for
    another feature schema (source "registry") cannot serve at all, so never."""
    return row.source != "registry"


def _holds(value: Any, comparison: str, limit: Any) -> bool:
    if value is None or limit is None:
        return False
    v, lim = float(value), float(limit)
    if not (math.isfinite(v) and math.isfinite(lim)):
        return False
    return {
        ">": v > lim,
        ">=": v >= lim,
        "<": v < lim,
        "<=": v <= lim,
    }.get(comparison, False)


def _drifts(docs: Mapping[str, Any]) -> list[FeatureDrift]:
    out = []
    for name, d in docs.items():
        n = int(d.get("n") or 0)

        def num(key: str, default: float, d: Mapping[str, Any] = d) -> float:
            v = d.get(key)
            return default if v is None else float(v)

        out.append(
            FeatureDrift(
                name,
                n,
                num("psi", math.nan),
                num("psi_level", math.inf),
                num("ks", math.nan),
                num("ks_level", math.inf),
            )
        )
    return out


def live_rows(
    model_id: str,
    snapshot: ControlSnapshot,
    risk_status: Mapping[str, Any] | None,
    shadow_stats: Mapping[str, Any] | None,
    cfg: RolloutGuardConfig | None = None,
) -> list[GateRow]:
    """Live evidence for promoting ``model_id`` (the rollout candidate) to active.

    ``cfg`` should equal the risk supervisor's rollout_guard config; the defaults match its
    defaults.
    """
    cfg = cfg or RolloutGuardConfig()
    r = snapshot.rollout
    is_candidate = r.mode in ("canary", "full") and r.candidate == model_id
    rows = [
        GateRow(
            "rollout_candidate",
            "live",
            is_candidate,
            detail=(
                f"{r.mode} rollout at {r.canary_fraction:.2%}, seed {r.seed}"
                if is_candidate
                else f"not the rollout candidate (rollout {r.mode}, candidate "
                f"{r.candidate or 'none'}): no live evidence for {model_id}"
            ),
        )
    ]
    status = risk_status or {}
    winrates = status.get("winrates") or {}
    base, canary = winrates.get("active") or {}, winrates.get("canary") or {}
    nb, nc = int(base.get("n") or 0), int(canary.get("n") or 0)
    wb, wc = int(base.get("wins") or 0), int(canary.get("wins") or 0)
    if not risk_status:
        missing = "no risk-supervisor status published"
        rows += [
            GateRow("canary_samples", "live", False, None, float(cfg.min_samples), ">=", missing),
            GateRow("canary_winrate", "live", False, None, cfg.winrate_delta, "", missing),
        ]
    else:
        enough = is_candidate and min(nb, nc) >= cfg.min_samples
        rows.append(
            GateRow(
                "canary_samples",
                "live",
                enough,
                float(min(nb, nc)),
                float(cfg.min_samples),
                ">=",
                f"outcomes: canary {nc}, baseline {nb}"
                + ("" if is_candidate else " (not this model's)"),
            )
        )
        d = canary_vs_baseline(wb, nb, wc, nc, cfg)
        rows.append(
            GateRow(
                "canary_winrate",
                "live",
                is_candidate and d.verdict == "ok",
                d.value,
                cfg.winrate_delta,
                "not significantly >",
                d.reason if d.verdict != "insufficient_data" else f"insufficient data: {d.reason}",
            )
        )
    drift_docs = status.get("drift")
    if isinstance(drift_docs, Mapping) and drift_docs:
        dd = drift_decision(_drifts(drift_docs), cfg)
        detail = dd.reason
        if dd.verdict == "insufficient_data":
            detail = f"insufficient data: {dd.reason}"
        rows.append(
            GateRow("no_drift_alarm", "live", dd.verdict == "ok", dd.value, dd.limit, "<", detail)
        )
    else:
        guard = (status.get("guards") or {}).get("drift") or {}
        rows.append(
            GateRow(
                "no_drift_alarm",
                "live",
                False,
                detail=guard.get("reason") or "no drift data from the risk supervisor",
            )
        )
    rows.append(_parity_row(status, shadow_stats, cfg))
    return rows


def _parity_row(
    status: Mapping[str, Any], shadow_stats: Mapping[str, Any] | None, cfg: RolloutGuardConfig
) -> GateRow:
    """Failures since the current rollout began (the supervisor's count) when published,
    else the shadow's running total (stricter: it spans every rollout)."""
    guard = (status.get("guards") or {}).get("parity") or {}
    if guard.get("value") is not None:
        failures, source = float(guard["value"]), "since this rollout (risk supervisor)"
    elif shadow_stats and shadow_stats.get("parity_fail") is not None:
        failures, source = float(shadow_stats["parity_fail"]), "since the shadow started"
    else:
        return GateRow(
            "parity",
            "live",
            False,
            None,
            float(cfg.parity_max_failures),
            "<=",
            "no parity data (shadow stats / risk status missing)",
        )
    return GateRow(
        "parity",
        "live",
        failures <= cfg.parity_max_failures,
        failures,
        float(cfg.parity_max_failures),
        "<=",
        f"{int(failures)} parity failures {source}",
    )


def all_pass(rows: Iterable[GateRow]) -> bool:
    rows = list(rows)
    return bool(rows) and all(r.passed for r in rows)


def failures(rows: Iterable[GateRow]) -> list[str]:
    """One line per failed gate, for a refusal message."""
    out = []
    for r in rows:
        if not r.passed:
            out.append(f"{r.source} gate {r.name} failed" + (f": {r.detail}" if r.detail else ""))
    return out


def gate_table(model_id: str, rows: list[GateRow]) -> dict[str, Any]:
    return {
        "model_id": model_id,
        "passed": all_pass(rows),
        "failed": [r.name for r in rows if not r.passed],
        "gates": [r.as_dict() for r in rows],
    }
