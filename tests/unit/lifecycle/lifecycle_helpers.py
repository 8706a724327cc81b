"""Shared helpers for the lifecycle tests (a uniquely named module, importable by tests)."""

from __future__ import annotations

from geodesic.lifecycle.config import CertifyConfig, DatasetConfig, TrainConfig
from geodesic.lifecycle.signing import SigningKey

TEST_KEY = SigningKey(b"k" * 40, "test")
# A generous latency budget: these tests check the sweep's logic, not this machine's speed.
SMALL_CERTIFY = CertifyConfig(
    ef_grid=(8, 32),
    k_cand_multiples=(1, 4),
    queries=20,
    recall_queries=100,
    warmup=2,
    rounds=2,
    latency_budget_ms=100.0,
)


def small_config(**data: object) -> TrainConfig:
    """600 synthetic bars, 3 folds, K=8: a full train in about a second."""
    data_cfg = DatasetConfig(datasets=("synthetic:3",), cutoff=None, synthetic_bars=600, **data)
    return TrainConfig(data=data_cfg, folds=3, k=8, k_cand=32, ef_construction=50)
