"""Model signing key and HMAC-SHA256 signatures over canonical JSON.

Why HMAC and not Ed25519: HMAC-SHA256 is in the standard library; Ed25519 needs the
``cryptography`` package. The trade-off is that HMAC is symmetric: whoever can verify a
model can also sign one, so the key must be kept from anything that only needs to verify
it. That holds here (trainers and scorers are the same operator-run services); if
verification ever moves to less trusted hosts, switch to Ed25519 (public key on the
scorers, private key on the trainer) behind the same ``sign`` / ``verify`` functions.

Key sources, first match wins:
  1. GEODESIC_MODEL_SIGNING_KEY       the key itself (>= 32 characters)
  2. GEODESIC_MODEL_SIGNING_KEY_FILE  a file holding it
  3. dev only: <models>/.signing-key, created (mode 0600, 256 random bits) when a model is
     signed and no key is configured; a warning says so. Never used when 1 or 2 is set.
The key is never logged or printed; ``key_id`` (an HMAC of a constant) names it safely.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ALGORITHM",
    "ENV_KEY",
    "ENV_KEY_FILE",
    "SigningKey",
    "SigningKeyError",
    "canonical_json",
    "resolve_signing_key",
]

log = logging.getLogger(__name__)

ALGORITHM = "HMAC-SHA256"
ENV_KEY = "GEODESIC_MODEL_SIGNING_KEY"
ENV_KEY_FILE = "GEODESIC_MODEL_SIGNING_KEY_FILE"
DEV_KEY_NAME = ".signing-key"
MIN_KEY_BYTES = 32
_KEY_ID_LABEL = b"geodesic.model-signing.key-id/1"


class SigningKeyError(RuntimeError):
    """No usable key (message names the source, never the key)."""


def canonical_json(obj: Any) -> bytes:
    """The one byte form that is signed and written: sorted keys, 2-space indent, ASCII,
    no NaN, trailing newline. A file is only accepted if it is exactly this form."""
    return (
        json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False) + "\n"
    ).encode()


@dataclass(frozen=True)
class SigningKey:
    """A secret and where it came from; repr never shows the secret."""

    secret: bytes
    source: str

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r}, source={self.source!r})"

    @property
    def key_id(self) -> str:
        """A public name for the key: lets a verifier say "signed with another key"."""
        return hmac.new(self.secret, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]

    def sign(self, payload: bytes) -> str:
        return hmac.new(self.secret, payload, hashlib.sha256).hexdigest()

    def verify(self, payload: bytes, signature: str) -> bool:
        return hmac.compare_digest(self.sign(payload), signature)


def _checked(secret: bytes, source: str) -> SigningKey:
    secret = secret.strip()
    if len(secret) < MIN_KEY_BYTES:
        raise SigningKeyError(f"signing key from {source} is shorter than {MIN_KEY_BYTES} bytes")
    return SigningKey(secret, source)


def _read_key_file(path: Path, source: str) -> SigningKey:
    try:
        mode = path.stat().st_mode
        secret = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read signing key file {path} ({source}): {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("signing key file %s is accessible by group/others; chmod 600 it", path)
    return _checked(secret, source)


def resolve_signing_key(dev_key_path: Path | None = None, *, create: bool = False) -> SigningKey:
    """The configured key (env var, then key file), else the dev key file.

    ``create`` (signing only) makes the dev key when it does not exist yet; verification
    never creates one, since a fresh key cannot verify anything.
    """
    env = os.environ.get(ENV_KEY)
    if env:
        return _checked(env.encode(), f"${ENV_KEY}")
    env_file = os.environ.get(ENV_KEY_FILE)
    if env_file:
        return _read_key_file(Path(env_file), f"${ENV_KEY_FILE}")
    if dev_key_path is None:
        raise SigningKeyError(f"no signing key: set {ENV_KEY} or {ENV_KEY_FILE}")
    if dev_key_path.exists():
        log.warning(
            "no %s / %s set: using the DEV signing key file %s (not for production)",
            ENV_KEY,
            ENV_KEY_FILE,
            dev_key_path,
        )
        return _read_key_file(dev_key_path, f"dev key file {dev_key_path}")
    if not create:
        raise SigningKeyError(
            f"no signing key: set {ENV_KEY} or {ENV_KEY_FILE} (no dev key at {dev_key_path})"
        )
    dev_key_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(dev_key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return _read_key_file(dev_key_path, f"dev key file {dev_key_path}")
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    log.warning(
        "no %s / %s set: created a DEV signing key file %s (mode 0600); "
        "configure a real key for production",
        ENV_KEY,
        ENV_KEY_FILE,
        dev_key_path,
    )
    return _read_key_file(dev_key_path, f"dev key file {dev_key_path}")
