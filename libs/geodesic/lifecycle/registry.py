"""The model registry: signed, checksummed model directories, and the verified loader.

A registered model is ``<registry>/<model_id>/``::

    model.json whitener.npz labels.npy times.npy ann/{index.bin,vectors.npy,ann_meta.json}
    drift_reference.json
    manifest.json   id, created_at, schema_hash, feature_names, thresholds, parameters,
                    fold report summary, gate results, sha256 of every other file
    manifest.sig    HMAC-SHA256 of manifest.json (see ``lifecycle.signing``)

manifest.json and manifest.sig are written in canonical JSON and accepted only in that
exact byte form, so any edit, even one JSON would parse the same, is caught. Verification
refuses a directory when the signature, any file's sha256, a missing file, an unlisted
file, a symlink, or the schema hash is wrong, and the error names the file. Models are
built in a staging directory and renamed into place, so a half-written model is never
visible under its id. JSON and .npy/.npz only: nothing is unpickled anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from geodesic.lifecycle.signing import (
    ALGORITHM,
    DEV_KEY_NAME,
    SigningKey,
    SigningKeyError,
    canonical_json,
    resolve_signing_key,
)
from lorentzcore.model import AnalogModel
from lorentzcore.model_id import MODEL_ID_PATTERN, is_model_id

__all__ = [
    "MANIFEST_FILE",
    "SIGNATURE_FILE",
    "ModelVerificationError",
    "demo_promotion_reason",
    "dev_key_path_for_model",
    "dev_key_path_for_registry",
    "discard",
    "list_models",
    "load_manifest",
    "load_verified",
    "publish",
    "sha256_file",
    "sign_model_dir",
    "staging_dir",
    "verify_model_dir",
]

MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
MANIFEST_FORMAT = "geodesic.model_manifest/1"
SIGNATURE_FORMAT = "geodesic.model_signature/1"
_RESERVED = {MANIFEST_FILE, SIGNATURE_FILE}


class ModelVerificationError(ValueError):
    """A model directory failed verification; ``path`` is the offending file."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dev_key_path_for_registry(registry_root: Path) -> Path:
    """models/registry -> models/.signing-key (the dev key lives beside the registry)."""
    return Path(registry_root).resolve().parent / DEV_KEY_NAME


def dev_key_path_for_model(model_dir: Path) -> Path:
    return dev_key_path_for_registry(Path(model_dir).resolve().parent)


def _walk_files(model_dir: Path) -> dict[str, Path]:
    """Every entry under model_dir as 'a/b' -> path; symlinks are refused outright."""
    found: dict[str, Path] = {}
    for root, dirs, files in os.walk(model_dir, followlinks=False):
        base = Path(root)
        for name in [*dirs, *files]:
            p = base / name
            if p.is_symlink():
                raise ModelVerificationError(p, "symlinks are not allowed in a model directory")
        for name in files:
            p = base / name
            found[p.relative_to(model_dir).as_posix()] = p
    return found


def _artifact_hashes(model_dir: Path) -> dict[str, str]:
    return {
        rel: sha256_file(p)
        for rel, p in sorted(_walk_files(model_dir).items())
        if rel not in _RESERVED
    }


def sign_model_dir(model_dir: Path, fields: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """Hash every artifact, write manifest.json (fields + files) and manifest.sig."""
    model_dir = Path(model_dir)
    manifest = dict(fields)
    manifest["format"] = MANIFEST_FORMAT
    manifest["files"] = _artifact_hashes(model_dir)
    manifest["signing"] = {"algorithm": ALGORITHM, "key_id": key.key_id}
    blob = canonical_json(manifest)
    signature = {
        "format": SIGNATURE_FORMAT,
        "algorithm": ALGORITHM,
        "key_id": key.key_id,
        "manifest_sha256": hashlib.sha256(blob).hexdigest(),
        "signature": key.sign(blob),
    }
    _atomic_bytes(model_dir / MANIFEST_FILE, blob)
    _atomic_bytes(model_dir / SIGNATURE_FILE, canonical_json(signature))
    return manifest


def _atomic_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_canonical(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelVerificationError(path, "missing") from None
    except OSError as exc:
        raise ModelVerificationError(path, f"unreadable ({exc})") from exc
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelVerificationError(path, f"not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ModelVerificationError(path, "not a JSON object")
    try:
        canonical = canonical_json(doc)
    except ValueError as exc:
        raise ModelVerificationError(path, f"not canonical JSON ({exc})") from exc
    if raw != canonical:
        raise ModelVerificationError(path, "not in canonical form (edited after signing?)")
    return doc


def load_manifest(model_dir: Path) -> dict[str, Any]:
    """The manifest, parsed but NOT verified (for display); use verify_model_dir to trust it."""
    return _read_canonical(Path(model_dir) / MANIFEST_FILE)


def demo_promotion_reason(model_dir: Path, reason: str) -> str:
    """The audit reason for promoting a bootstrap / demo model without an operator.

    The default model on daily index data fails its offline gates (that is the honest
    outcome); `geodesic up` and the demo still need an active model. They promote it as
    an explicit DEMO model and the failed gates go into the audit entry, so the override
    is recorded, never silent.
    """
    failed = [g["name"] for g in load_manifest(model_dir).get("gates", []) if not g["passed"]]
    if not failed:
        return reason
    return f"{reason}; DEMO model promoted past {len(failed)} failed offline gates: " + (
        ", ".join(failed)
    )


def verify_model_dir(
    model_dir: str | os.PathLike[str],
    expected_schema_hash: str | None = None,
    *,
    key: SigningKey | None = None,
) -> dict[str, Any]:
    """Check signature, every file's sha256, no missing/unlisted files, schema hash.

    Returns the verified manifest; raises ModelVerificationError naming the file.
    """
    d = Path(model_dir)
    if not d.is_dir():
        raise ModelVerificationError(d, "not a directory")
    manifest_path, sig_path = d / MANIFEST_FILE, d / SIGNATURE_FILE
    manifest = _read_canonical(manifest_path)
    sig = _read_canonical(sig_path)
    if sig.get("format") != SIGNATURE_FORMAT or sig.get("algorithm") != ALGORITHM:
        raise ModelVerificationError(
            sig_path, f"unsupported signature {sig.get('format')!r}/{sig.get('algorithm')!r}"
        )
    if key is None:
        try:
            key = resolve_signing_key(dev_key_path_for_model(d))
        except SigningKeyError as exc:
            raise ModelVerificationError(sig_path, f"cannot verify: {exc}") from exc
    if sig.get("key_id") != key.key_id:
        raise ModelVerificationError(
            sig_path,
            f"signed with key id {sig.get('key_id')!r}, but the verifying key "
            f"({key.source}) is {key.key_id!r}",
        )
    blob = manifest_path.read_bytes()
    if not isinstance(sig.get("signature"), str) or not key.verify(blob, sig["signature"]):
        raise ModelVerificationError(
            manifest_path, "signature does not match (manifest or signature tampered with)"
        )
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ModelVerificationError(manifest_path, f"format {manifest.get('format')!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ModelVerificationError(manifest_path, "lists no files")
    present = {rel: p for rel, p in _walk_files(d).items() if rel not in _RESERVED}
    for rel in sorted(set(present) - set(files)):
        raise ModelVerificationError(d / rel, "not listed in the manifest (unexpected file)")
    for rel, digest in sorted(files.items()):
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts or rel in _RESERVED:
            raise ModelVerificationError(manifest_path, f"bad file entry {rel!r}")
        if rel not in present:
            raise ModelVerificationError(d / rel, "listed in the manifest but missing")
        if sha256_file(present[rel]) != digest:
            raise ModelVerificationError(d / rel, "sha256 does not match the manifest")
    if expected_schema_hash is not None and manifest.get("schema_hash") != expected_schema_hash:
        raise ModelVerificationError(
            manifest_path,
            f"schema_hash {manifest.get('schema_hash')!r} != expected {expected_schema_hash!r} "
            "(model trained on other features)",
        )
    return manifest


def load_verified(
    model_dir: str | os.PathLike[str],
    expected_schema_hash: str | None = None,
    *,
    key: SigningKey | None = None,
) -> AnalogModel:
    """Verify (see ``verify_model_dir``), then load; the spec must agree with the manifest.

    The signature is checked before any artifact is parsed, so a tampered file never
    reaches numpy or hnswlib (which trusts index.bin blindly).
    """
    d = Path(model_dir)
    manifest = verify_model_dir(d, expected_schema_hash, key=key)
    model = AnalogModel.load(d)
    spec = model.spec
    for field_name, actual in (
        ("model_id", spec.model_id),
        ("schema_hash", spec.schema_hash),
        ("feature_names", list(spec.feature_names)),
    ):
        if manifest.get(field_name) != actual:
            raise ModelVerificationError(
                d / "model.json",
                f"{field_name} {actual!r} disagrees with the manifest "
                f"({manifest.get(field_name)!r})",
            )
    return model


def staging_dir(registry_root: Path, model_id: str) -> Path:
    """A fresh private directory on the registry's filesystem (so publish is a rename)."""
    if not is_model_id(model_id):
        raise ValueError(f"model id {model_id!r} must match {MODEL_ID_PATTERN} and not be . or ..")
    if (Path(registry_root) / model_id).exists():
        raise FileExistsError(f"model {model_id!r} already exists in {registry_root}")
    root = Path(registry_root) / ".staging"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=root, prefix=f"{model_id}."))


def publish(staging: Path, registry_root: Path, model_id: str, key: SigningKey) -> Path:
    """Rename a complete, signed staging directory to <registry>/<model_id> (never overwrite)."""
    target = Path(registry_root) / model_id
    verify_model_dir(staging, key=key)  # the bytes we publish are the bytes we signed
    _make_readable(staging)
    try:
        target.mkdir()  # exclusive claim of the id; rename then replaces the empty dir
    except FileExistsError:
        raise FileExistsError(f"model {model_id!r} already exists in {registry_root}") from None
    try:
        os.replace(staging, target)
    except OSError:
        target.rmdir()
        raise
    return target


def _make_readable(model_dir: Path) -> None:
    """Staging is private (mkdtemp 0700, mkstemp 0600); a published model is read by the
    scorer services, possibly as another user. Integrity comes from the signature, not
    from secrecy, so 0755 / 0644."""
    for root, _dirs, files in os.walk(model_dir):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(Path(root) / name, 0o644)


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def list_models(registry_root: Path) -> list[str]:
    """Model ids present in the registry (directories with a manifest), sorted."""
    root = Path(registry_root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / MANIFEST_FILE).is_file())


def sign_model(model: AnalogModel, key: SigningKey | None = None) -> dict[str, Any]:
    """Sign a model directory in place (for tools and tests that fit outside `train`).

    The manifest carries what verification compares with the model spec; models from
    `geodesic train` also carry the fold report and gate results.
    """
    d = Path(model.directory)
    key = key or resolve_signing_key(dev_key_path_for_model(d), create=True)
    spec = model.spec
    fields = {
        "model_id": spec.model_id,
        "created_at": datetime.now(UTC).isoformat(),
        "schema_hash": spec.schema_hash,
        "feature_names": list(spec.feature_names),
        "parameters": spec.params.model_dump(mode="json"),
    }
    manifest = sign_model_dir(d, fields, key)
    _make_readable(d)
    return manifest
