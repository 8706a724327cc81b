"""Invalid configuration and broken model artifacts fail loudly, naming what is wrong.

Settings reject nonsense with an error that names the field; ``python -m <service>``
turns it into exit status 2 and one line naming the environment variable (no traceback,
no secret). A damaged model file is refused with an error that names the file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from collector.settings import CollectorSettings
from feature.settings import FeatureSettings
from geodesic.features import FEATURE_NAMES, SCHEMA_HASH
from geodesic.lifecycle.registry import ModelVerificationError, load_verified, sign_model
from geodesic.lifecycle.signing import SigningKey
from geodesic.runtime.kafka import KafkaSettings
from geodesic.serving import ModelCache
from geodesic.serving.models import ModelUnavailableError, model_loader
from lorentzcore.kernels import KernelConfig
from lorentzcore.model import AnalogModel, ScorerParams
from risk_supervisor.settings import RiskSettings
from scorer.settings import ScorerSettings
from shadow.settings import ShadowSettings

SECRET = "hunter2-do-not-print"
KEY = SigningKey(b"c" * 40, "test")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("GEODESIC_") and name not in ("GEODESIC_RUN_DIR",):
            monkeypatch.delenv(name)
    (tmp_path / "registry").mkdir()
    monkeypatch.setenv("GEODESIC_MODEL_REGISTRY", str(tmp_path / "registry"))


BAD_SETTINGS = [
    (FeatureSettings, "GEODESIC_FEATURE_BAR_SECONDS", "0", "bar_seconds"),
    (FeatureSettings, "GEODESIC_FEATURE_PRICE_SOURCE", "bid", "price_source"),
    (FeatureSettings, "GEODESIC_FEATURE_IDLE_FLUSH_GRACE_S", "-1", "idle_flush_grace_s"),
    (CollectorSettings, "GEODESIC_COLLECTOR_MAX_BYTES", "10", "max_bytes"),
    (CollectorSettings, "GEODESIC_COLLECTOR_HTTP_PORT", "70000", "http_port"),
    (ScorerSettings, "GEODESIC_SCORER_CONTROL_STALENESS_S", "0", "control_staleness_s"),
    (ScorerSettings, "GEODESIC_SCORER_RECALL_SAMPLE_RATE", "1.5", "recall_sample_rate"),
    (ScorerSettings, "GEODESIC_MODEL_REGISTRY", "/nonexistent/registry", "GEODESIC_MODEL_REGISTRY"),
    (ShadowSettings, "GEODESIC_MODEL_REGISTRY", "/nonexistent/registry", "GEODESIC_MODEL_REGISTRY"),
    (RiskSettings, "GEODESIC_MODEL_REGISTRY", "/nonexistent/registry", "GEODESIC_MODEL_REGISTRY"),
    (RiskSettings, "GEODESIC_RISK_SUPERVISOR_HORIZON_BARS", "0", "horizon_bars"),
    (ShadowSettings, "GEODESIC_SHADOW_MATCH_WINDOW", "1", "match_window"),
    (ScorerSettings, "GEODESIC_REDIS_TIMEOUT_S", "0", "GEODESIC_REDIS_TIMEOUT_S"),
    (KafkaSettings, "GEODESIC_KAFKA_SECURITY_PROTOCOL", "TLS", "security_protocol"),
    (KafkaSettings, "GEODESIC_KAFKA_BROKER_FLAVOR", "redpanda", "broker_flavor"),
    (KafkaSettings, "GEODESIC_KAFKA_SASL_MECHANISM", "GSSAPI", "sasl_mechanism"),
    (KafkaSettings, "GEODESIC_KAFKA_SSL_CAFILE", "/nonexistent/ca.pem", "ssl_cafile"),
    (KafkaSettings, "GEODESIC_KAFKA_HEARTBEAT_INTERVAL_MS", "20000", "heartbeat_interval_ms"),
    (KafkaSettings, "GEODESIC_KAFKA_BOOTSTRAP", "", "bootstrap"),
]


@pytest.mark.parametrize(("cls", "var", "value", "named"), BAD_SETTINGS)
def test_settings_reject_nonsense_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, cls: type, var: str, value: str, named: str
):
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError) as info:
        cls()
    assert named in str(info.value)


def test_a_service_setting_read_through_the_shared_kafka_block_names_it_too(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("GEODESIC_KAFKA_SECURITY_PROTOCOL", "TLS")
    with pytest.raises(ValidationError, match="security_protocol"):
        FeatureSettings()


def test_sasl_without_credentials_names_what_is_missing_and_never_echoes_the_password(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("GEODESIC_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("GEODESIC_KAFKA_SASL_PASSWORD", SECRET)
    with pytest.raises(ValidationError) as info:
        KafkaSettings()
    assert "sasl_mechanism" in str(info.value) and "sasl_username" in str(info.value)
    assert SECRET not in str(info.value)


CLI_CASES = [
    (
        "feature",
        {"GEODESIC_FEATURE_BAR_SECONDS": "0"},
        "GEODESIC_FEATURE_BAR_SECONDS (bar_seconds)",
    ),
    (
        "collector",
        {"GEODESIC_KAFKA_SECURITY_PROTOCOL": "bogus"},
        "GEODESIC_KAFKA_SECURITY_PROTOCOL (security_protocol)",
    ),
    (
        "scorer",
        {"GEODESIC_MODEL_REGISTRY": "/nonexistent/registry"},
        "GEODESIC_MODEL_REGISTRY (registry_root)",
    ),
    (
        "risk_supervisor",
        {"GEODESIC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "GEODESIC_KAFKA_SASL_PASSWORD": SECRET},
        "needs sasl_mechanism, sasl_username",
    ),
]


@pytest.mark.parametrize(("module", "env", "expected"), CLI_CASES)
def test_python_m_service_exits_2_naming_the_variable_without_a_traceback_or_secret(
    tmp_path: Path, module: str, env: dict[str, str], expected: str
):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GEODESIC_")}
    clean["GEODESIC_MODEL_REGISTRY"] = str(tmp_path / "registry")
    proc = subprocess.run(
        [sys.executable, "-m", module],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr and SECRET not in proc.stderr + proc.stdout


# ---- model artifacts -------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(1)
    d = len(FEATURE_NAMES)
    X = rng.standard_normal((300, d))
    model = AnalogModel.fit(
        X,
        (X[:, 0] > 0).astype(np.float32),
        np.arange(300),
        directory=tmp_path_factory.mktemp("models") / "registry" / "m-art",
        model_id="m-art",
        feature_names=FEATURE_NAMES,
        schema_hash=SCHEMA_HASH,
        kernel=KernelConfig(period=5.0),
        params=ScorerParams(k=8, k_cand=32),
    )
    sign_model(model, KEY)
    return Path(model.directory)


def damaged_copy(model_dir: Path, tmp_path: Path, rel: str, how: str) -> Path:
    copy = tmp_path / "registry" / model_dir.name
    shutil.copytree(model_dir, copy)
    target = copy / rel
    if how == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    else:
        target.unlink()
    return copy


ARTIFACTS = ["ann/vectors.npy", "ann/index.bin", "ann/ann_meta.json", "whitener.npz"]
ARTIFACTS += ["labels.npy", "times.npy", "model.json", "manifest.json"]


@pytest.mark.parametrize("how", ["truncate", "delete"])
@pytest.mark.parametrize("rel", ARTIFACTS)
def test_a_damaged_model_file_is_refused_naming_the_file(
    signed_model: Path, tmp_path: Path, rel: str, how: str
):
    broken = damaged_copy(signed_model, tmp_path, rel, how)
    with pytest.raises(ModelVerificationError) as info:
        load_verified(broken, SCHEMA_HASH, key=KEY)
    assert info.value.path == broken / rel and rel in str(info.value)


async def test_the_scorers_model_cache_reports_the_damaged_file(
    signed_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    broken = damaged_copy(signed_model, tmp_path, "ann/vectors.npy", "truncate")
    monkeypatch.setenv("GEODESIC_MODEL_SIGNING_KEY", KEY.secret.decode())
    cache = ModelCache(broken.parent, loader=model_loader(verify=True))
    with pytest.raises(ModelUnavailableError, match=r"ann/vectors\.npy"):
        await cache.ensure("m-art")
    assert "vectors.npy" in (cache.failure("m-art") or "")
    assert cache.get("m-art") is None  # the scorer fails closed: model_unavailable


UNVERIFIED = [
    rel
    for rel in ARTIFACTS
    if rel != "manifest.json"  # only verification reads the manifest
]


@pytest.mark.parametrize("rel", UNVERIFIED)
def test_unverified_loading_still_names_a_truncated_file(
    signed_model: Path, tmp_path: Path, rel: str
):
    broken = damaged_copy(signed_model, tmp_path, rel, "truncate")
    with pytest.raises(Exception) as info:
        AnalogModel.load(broken)
    assert Path(rel).name in str(info.value)


def test_a_redis_password_in_the_url_is_never_shown_by_the_settings(monkeypatch):
    monkeypatch.setenv("GEODESIC_REDIS_URL", "redis://svc-scorer:hunter2-secret@10.0.0.9:6379/0")
    settings = CollectorSettings()
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    assert settings.redis_url.get_secret_value().endswith("@10.0.0.9:6379/0")
