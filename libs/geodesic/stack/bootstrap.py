"""A model for the scorer when the registry has none (first `geodesic up`).

Trained through the real pipeline pieces: real S&P 500 daily bars from the arch wheel,
the feature service's own batch feature code, and lorentzcore's AnalogModel.fit. The full
offline pipeline (purged K-fold, reports, signing) is `geodesic train`; this exists so a
fresh machine can run the stack before anyone has trained.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geodesic.features import FEATURE_NAMES, SCHEMA_HASH, compute_features_batch
from geodesic.marketdata import load_dataset
from lorentzcore.kernels import KernelConfig
from lorentzcore.model import AnalogModel, ScorerParams

BOOTSTRAP_ID = "bootstrap-sp500"


def build_bootstrap_model(
    registry: Path, model_id: str = BOOTSTRAP_ID, spread_bp: float = 2.0
) -> AnalogModel:
    series = load_dataset("sp500")
    close = np.asarray(series.close, dtype=np.float64)
    X = compute_features_batch(
        close,
        np.asarray(series.high, dtype=np.float64),
        np.asarray(series.low, dtype=np.float64),
        np.asarray(series.volume, dtype=np.float64),
        close * spread_bp / 1e4,
    )
    fwd = np.full(len(close), np.nan)
    fwd[:-1] = np.log(close[1:] / close[:-1])
    ok = np.isfinite(X).all(axis=1) & np.isfinite(fwd)
    y = (fwd[ok] > 0).astype(np.float32)
    return AnalogModel.fit(
        X[ok],
        y,
        np.flatnonzero(ok),
        directory=Path(registry) / model_id,
        model_id=model_id,
        feature_names=FEATURE_NAMES,
        schema_hash=SCHEMA_HASH,
        kernel=KernelConfig(period=5.0),
        params=ScorerParams(k=32, k_cand=128),
        extra={"source": "bootstrap: arch sp500 daily 1999-2018, 1-bar forward sign"},
    )


def ensure_model(registry: Path) -> str:
    """Return a model id present in the registry, building the bootstrap model if needed."""
    registry = Path(registry)
    if (registry / BOOTSTRAP_ID / "model.json").is_file():
        return BOOTSTRAP_ID
    build_bootstrap_model(registry)
    return BOOTSTRAP_ID
