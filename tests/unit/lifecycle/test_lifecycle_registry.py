import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from lifecycle_helpers import TEST_KEY

from geodesic.features.compute import SCHEMA_HASH
from geodesic.lifecycle.registry import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    ModelVerificationError,
    list_models,
    load_manifest,
    load_verified,
    sign_model_dir,
    staging_dir,
    verify_model_dir,
)
from geodesic.lifecycle.signing import (
    ENV_KEY,
    ENV_KEY_FILE,
    SigningKey,
    SigningKeyError,
    resolve_signing_key,
)
from lorentzcore.model import AnalogModel
from lorentzcore.model_id import is_model_id


def _all_files(d: Path) -> list[str]:
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())


def _copy(model_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "registry" / model_dir.name
    shutil.copytree(model_dir, dst)
    return dst


def test_registered_model_lists_every_artifact_and_loads_verified(model_dir):
    manifest = verify_model_dir(model_dir, SCHEMA_HASH, key=TEST_KEY)
    files = set(_all_files(model_dir)) - {MANIFEST_FILE, SIGNATURE_FILE}
    assert set(manifest["files"]) == files
    for name in ("model.json", "whitener.npz", "labels.npy", "times.npy", "drift_reference.json"):
        assert name in files
    assert {"ann/index.bin", "ann/vectors.npy", "ann/ann_meta.json"} <= files
    for key in ("model_id", "created_at", "schema_hash", "feature_names", "thresholds"):
        assert key in manifest
    assert manifest["parameters"]["kernel"]["period"] == 5.0
    assert manifest["fold_report"]["folds"] and manifest["gates"]
    model = load_verified(model_dir, SCHEMA_HASH, key=TEST_KEY)
    assert isinstance(model, AnalogModel)
    assert model.spec.model_id == manifest["model_id"] == "syn-test-1"
    assert list_models(model_dir.parent) == ["syn-test-1"]


def test_flipping_one_byte_in_any_file_is_refused_and_names_the_file(model_dir, tmp_path):
    for rel in _all_files(model_dir):
        copy = tmp_path / rel.replace("/", "_")
        d = _copy(model_dir, copy)
        target = d / rel
        data = bytearray(target.read_bytes())
        pos = len(data) // 2
        data[pos] ^= 0xFF
        target.write_bytes(bytes(data))
        with pytest.raises(ModelVerificationError) as err:
            load_verified(d, key=TEST_KEY)
        named = err.value.path.name
        # a tampered artifact is named itself; a tampered manifest/signature names one of them
        if rel in (MANIFEST_FILE, SIGNATURE_FILE):
            assert named in (MANIFEST_FILE, SIGNATURE_FILE), (rel, err.value)
        else:
            assert named == Path(rel).name, (rel, err.value)
            assert "sha256" in str(err.value)


def test_wrong_key_is_refused(model_dir):
    with pytest.raises(ModelVerificationError, match="key id"):
        load_verified(model_dir, key=SigningKey(b"z" * 40, "other"))


def test_same_key_id_but_forged_signature_is_refused(model_dir, tmp_path):
    d = _copy(model_dir, tmp_path)
    sig = json.loads((d / SIGNATURE_FILE).read_text())
    sig["signature"] = "0" * 64
    (d / SIGNATURE_FILE).write_text(json.dumps(sig, sort_keys=True, indent=2) + "\n")
    with pytest.raises(ModelVerificationError, match="signature does not match"):
        verify_model_dir(d, key=TEST_KEY)


def test_schema_hash_mismatch_is_refused(model_dir):
    with pytest.raises(ModelVerificationError, match="schema_hash"):
        load_verified(model_dir, "0000000000000000", key=TEST_KEY)


def test_edited_but_valid_manifest_is_refused(model_dir, tmp_path):
    d = _copy(model_dir, tmp_path)
    doc = json.loads((d / MANIFEST_FILE).read_text())
    doc["thresholds"]["long"] = 0.51  # a plausible, well-formed edit
    (d / MANIFEST_FILE).write_text(json.dumps(doc, sort_keys=True, indent=2) + "\n")
    with pytest.raises(ModelVerificationError, match="signature does not match"):
        verify_model_dir(d, key=TEST_KEY)


def test_unlisted_missing_and_symlinked_files_are_refused(model_dir, tmp_path):
    d = _copy(model_dir, tmp_path / "extra")
    (d / "ann" / "notes.txt").write_text("hello")
    with pytest.raises(ModelVerificationError, match="not listed") as err:
        verify_model_dir(d, key=TEST_KEY)
    assert err.value.path.name == "notes.txt"

    d = _copy(model_dir, tmp_path / "missing")
    (d / "labels.npy").unlink()
    with pytest.raises(ModelVerificationError, match="missing") as err:
        verify_model_dir(d, key=TEST_KEY)
    assert err.value.path.name == "labels.npy"

    d = _copy(model_dir, tmp_path / "link")
    target = d / "times.npy"
    real = tmp_path / "times_elsewhere.npy"
    shutil.move(target, real)
    os.symlink(real, target)
    with pytest.raises(ModelVerificationError, match="symlink"):
        verify_model_dir(d, key=TEST_KEY)


def test_resigning_after_a_legitimate_change_verifies_again(model_dir, tmp_path):
    d = _copy(model_dir, tmp_path)
    times = np.load(d / "times.npy")
    np.save(d / "times.npy", times + 7, allow_pickle=False)
    with pytest.raises(ModelVerificationError):
        verify_model_dir(d, key=TEST_KEY)
    fields = {k: v for k, v in load_manifest(d).items() if k not in ("format", "files", "signing")}
    sign_model_dir(d, fields, TEST_KEY)
    assert load_verified(d, key=TEST_KEY).times[0] == times[0] + 7


def test_key_from_env_and_key_file(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_KEY, "e" * 40)
    key = resolve_signing_key(tmp_path / ".signing-key", create=True)
    assert key.secret == b"e" * 40 and not (tmp_path / ".signing-key").exists()
    assert "e" * 40 not in repr(key)
    monkeypatch.delenv(ENV_KEY)
    key_file = tmp_path / "k.txt"
    key_file.write_text("f" * 40 + "\n")
    monkeypatch.setenv(ENV_KEY_FILE, str(key_file))
    assert resolve_signing_key().secret == b"f" * 40
    monkeypatch.setenv(ENV_KEY, "short")
    with pytest.raises(SigningKeyError, match="shorter"):
        resolve_signing_key()


def test_dev_key_is_created_0600_with_a_warning_and_never_created_on_verify(tmp_path, caplog):
    path = tmp_path / "models" / ".signing-key"
    with pytest.raises(SigningKeyError, match="no signing key"):
        resolve_signing_key(path)  # verification must not invent a key
    assert not path.exists()
    with caplog.at_level("WARNING"):
        key = resolve_signing_key(path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "DEV signing key" in caplog.text and key.secret.decode() not in caplog.text
    assert resolve_signing_key(path).secret == key.secret


def test_published_model_is_readable_by_other_services(model_dir):
    assert stat.S_IMODE(model_dir.stat().st_mode) == 0o755
    assert stat.S_IMODE((model_dir / MANIFEST_FILE).stat().st_mode) == 0o644


def test_demo_promotion_reason_names_every_failed_gate(model_dir):
    from geodesic.lifecycle.registry import demo_promotion_reason

    failed = [g["name"] for g in load_manifest(model_dir)["gates"] if not g["passed"]]
    assert failed  # no holdout in the small config: at least the holdout gates fail
    reason = demo_promotion_reason(model_dir, "initial model")
    assert reason.startswith("initial model; DEMO model promoted past")
    assert all(name in reason for name in failed)


def test_uninformative_spread_is_excluded_and_recorded_but_monitored_as_live(model_dir):
    """Daily bars have no quotes: the training spread is constant, the model drops it and
    says so; the drift reference still expects the replay's jittered live spread."""
    manifest = load_manifest(model_dir)
    assert manifest["excluded_features"] == [
        {"name": "spread_bp", "reason": "no information in training (constant column)"}
    ]
    spec = json.loads((model_dir / "model.json").read_text())
    names = spec["feature_names"]
    assert spec["feature_mask"][names.index("spread_bp")] is False
    drift = json.loads((model_dir / "drift_reference.json").read_text())
    assert drift["features"]["spread_bp"]["std"] > 0.01


@pytest.mark.parametrize("model_id", ["..", ".", "a/b", "", "x" * 129, "bad id"])
def test_registry_refuses_a_model_id_that_is_not_one_directory_name(tmp_path, model_id):
    assert not is_model_id(model_id)
    with pytest.raises(ValueError, match="model id"):
        staging_dir(tmp_path / "registry", model_id)


def test_a_model_id_of_path_safe_characters_is_accepted(tmp_path):
    assert is_model_id("demo-active_2.v1") and is_model_id("x" * 128)
    assert staging_dir(tmp_path / "registry", "demo-active_2.v1").is_dir()
