"""Small, fast lifecycle fixtures: one signed, registered model on synthetic data."""

from __future__ import annotations

from pathlib import Path

import pytest
from lifecycle_helpers import SMALL_CERTIFY, TEST_KEY, small_config

from geodesic.lifecycle.training import TrainResult, train


@pytest.fixture(autouse=True)
def _no_ambient_signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose their key explicitly; a developer's env must not leak in."""
    monkeypatch.delenv("GEODESIC_MODEL_SIGNING_KEY", raising=False)
    monkeypatch.delenv("GEODESIC_MODEL_SIGNING_KEY_FILE", raising=False)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    root = tmp_path_factory.mktemp("lifecycle")
    return train(
        small_config(),
        model_id="syn-test-1",
        registry_root=root / "models" / "registry",
        reports_root=root / "reports",
        certify=SMALL_CERTIFY,
        key=TEST_KEY,
    )


@pytest.fixture(scope="session")
def model_dir(trained: TrainResult) -> Path:
    assert trained.model_dir is not None
    return trained.model_dir
