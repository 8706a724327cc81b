"""Bars and drift-robust features: pure logic shared by the feature service and training."""

from geodesic.features.bars import BarBuilder, LateReason, PriceSource, TickResult
from geodesic.features.compute import (
    DEFAULT_PARAMS,
    FEATURE_NAMES,
    SCHEMA_HASH,
    WARMUP_BARS,
    FeatureEngine,
    FeatureParams,
    FeatureState,
    compute_features_batch,
    feature_names,
    schema_hash,
    warmup_bars,
)

__all__ = [
    "DEFAULT_PARAMS",
    "FEATURE_NAMES",
    "SCHEMA_HASH",
    "WARMUP_BARS",
    "BarBuilder",
    "FeatureEngine",
    "FeatureParams",
    "FeatureState",
    "LateReason",
    "PriceSource",
    "TickResult",
    "compute_features_batch",
    "feature_names",
    "schema_hash",
    "warmup_bars",
]
