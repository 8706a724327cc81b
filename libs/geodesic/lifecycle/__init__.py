"""Offline model lifecycle: dataset, purged K-fold evaluation, training, signing, registry,
certification and offline gates (DESIGN.md sections 3 and 4).

Import the submodules for the full API; the names below are the ones other packages use.
"""

from geodesic.lifecycle.config import (
    CertifyConfig,
    DatasetConfig,
    GateThresholds,
    TrainConfig,
)
from geodesic.lifecycle.offline_gates import GateResult, all_passed, offline_gates
from geodesic.lifecycle.registry import (
    ModelVerificationError,
    list_models,
    load_manifest,
    load_verified,
    verify_model_dir,
)

__all__ = [
    "CertifyConfig",
    "DatasetConfig",
    "GateResult",
    "GateThresholds",
    "ModelVerificationError",
    "TrainConfig",
    "all_passed",
    "list_models",
    "load_manifest",
    "load_verified",
    "offline_gates",
    "verify_model_dir",
]
