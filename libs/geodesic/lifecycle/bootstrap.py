"""A model for the scorer when the registry has none (first `geodesic up`).

It is trained by the real offline pipeline (`geodesic train` with its defaults: real
S&P 500 + NASDAQ daily bars, purged K-fold evaluation, signed registration), so the
scorer's signature and schema checks apply to it like to any other model. It lives with
the lifecycle, not with the stack launcher, so starting infrastructure never imports the
training pipeline.
"""

from __future__ import annotations

from pathlib import Path

from geodesic.features import SCHEMA_HASH
from geodesic.lifecycle.config import TrainConfig
from geodesic.lifecycle.registry import ModelVerificationError, list_models, verify_model_dir
from geodesic.lifecycle.training import train

BOOTSTRAP_ID = "bootstrap-analog"


def usable_models(registry: Path) -> list[str]:
    """Registered models that verify and match the live feature schema."""
    ok = []
    for model_id in list_models(registry):
        try:
            verify_model_dir(Path(registry) / model_id, SCHEMA_HASH)
        except (ModelVerificationError, OSError, ValueError):
            continue
        ok.append(model_id)
    return ok


def ensure_model(registry: Path, reports_root: Path = Path("reports")) -> str:
    """A verified model id in the registry, training the bootstrap model if none is."""
    models = usable_models(registry)
    if models:
        return BOOTSTRAP_ID if BOOTSTRAP_ID in models else models[-1]
    result = train(
        TrainConfig(),
        model_id=BOOTSTRAP_ID,
        registry_root=Path(registry),
        reports_root=Path(reports_root),
        run_certify=False,
    )
    return result.model_id
