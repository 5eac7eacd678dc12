"""Ed25519 publisher signatures over the canonical encoding of a learnware manifest.

The manifest lists the sha256 of every file in the package, so one signature over
canonical_json(manifest) covers all bytes. A key is named by its key id: the first 16 hex
digits of sha256 of the raw 32-byte public key.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from lmdock.common.canonical import canonical_json, sha256_hex
from lmdock.common.errors import IntegrityError, InvalidArgument

__all__ = [
    "Signature",
    "generate_key",
    "key_id",
    "load_private_key",
    "public_key_from_b64",
    "public_key_to_b64",
    "save_private_key",
    "sign_manifest",
    "verify_manifest",
]


@dataclass(frozen=True)
class Signature:
    key_id: str
    public_key: str  # base64 of the raw 32-byte Ed25519 public key
    signature: str  # base64 of the 64-byte signature
    algorithm: str = "ed25519"

    def to_dict(self) -> dict[str, str]:
        return {
            "algorithm": self.algorithm,
            "key_id": self.key_id,
            "public_key": self.public_key,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Signature:
        if not isinstance(data, dict) or data.get("algorithm") != "ed25519":
            raise InvalidArgument("signature.json must be an object with algorithm 'ed25519'")
        try:
            signature = cls(
                key_id=str(data["key_id"]),
                public_key=str(data["public_key"]),
                signature=str(data["signature"]),
            )
        except KeyError as exc:
            raise InvalidArgument(f"signature.json lacks {exc.args[0]!r}") from None
        public_key_from_b64(signature.public_key)  # InvalidArgument before anything decodes it
        try:
            base64.b64decode(signature.signature, validate=True)
        except ValueError:
            raise InvalidArgument("signature.json: signature is not base64") from None
        return signature


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_key_to_b64(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise InvalidArgument(f"not a base64 Ed25519 public key: {exc}") from None


def key_id(public_key_b64: str) -> str:
    return sha256_hex(base64.b64decode(public_key_b64))[:16]


def sign_manifest(manifest: dict[str, Any], key: Ed25519PrivateKey) -> Signature:
    public = public_key_to_b64(key.public_key())
    sig = key.sign(canonical_json(manifest))
    return Signature(
        key_id=key_id(public), public_key=public, signature=base64.b64encode(sig).decode("ascii")
    )


def verify_manifest(
    manifest: dict[str, Any], signature: Signature, *, trusted_key: str | None = None
) -> None:
    """Raise IntegrityError unless `signature` is a valid signature of `manifest`.

    With `trusted_key` (base64 public key) the signature must also come from that key.
    """
    if trusted_key is not None and trusted_key != signature.public_key:
        raise IntegrityError(f"package signed by key {signature.key_id}, expected {key_id(trusted_key)}")
    if key_id(signature.public_key) != signature.key_id:
        raise IntegrityError("signature key_id does not match its public key")
    public = public_key_from_b64(signature.public_key)
    try:
        public.verify(base64.b64decode(signature.signature), canonical_json(manifest))
    except (InvalidSignature, ValueError):
        raise IntegrityError("publisher signature does not verify: the manifest was altered") from None


def save_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write the key as unencrypted PKCS#8 PEM, readable by the owner only."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)  # a leftover of an interrupted write; O_EXCL below needs it gone
    # owner-only from the first byte (a chmod after writing leaves a window for other users)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        out.write(pem)
    tmp.replace(path)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot read signing key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidArgument(f"{path} is not an Ed25519 private key")
    return key
