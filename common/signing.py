"""Ed25519 publisher signatures over the canonical encoding of a learnware manifest.

The manifest lists the sha256 of every file in the package, so one signature over the
manifest's canonical encoding covers all bytes. Which encoding is decided by the manifest's own
`format` field, and by nothing else (`signed_bytes`): "lmdock-learnware/2" signs its RFC 8785
(JCS) bytes, "lmdock-learnware/1" (packages from before v2) lmdock's first canonical JSON. The
field is inside the signed bytes, so changing it breaks the signature, and a verifier never
tries the other encoding: no package can be moved to the encoding it was not signed in.
A key is named by its key id: the first 16 hex digits of sha256 of the raw 32-byte public key.

Registering a key with a market needs a proof of possession (`prove_possession`): the key's
signature over `registration_message`, which binds the caller's authenticated principal, the
publisher the key is registered for and the key itself, behind a context prefix of its own. A
proof made for one caller is worthless to another, and no proof can be made without the key.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from lmdock.common.canonical import canonical_json, jcs, sha256_hex
from lmdock.common.errors import IntegrityError, InvalidArgument, PermissionDenied

__all__ = [
    "MANIFEST_ENCODINGS",
    "Signature",
    "generate_key",
    "key_id",
    "load_private_key",
    "prove_possession",
    "public_key_from_b64",
    "public_key_to_b64",
    "registration_message",
    "save_private_key",
    "sign_manifest",
    "signed_bytes",
    "verify_manifest",
    "verify_possession",
]

#: Set apart from every other signed message (canonical JSON starts with "{"), so a registration
#: proof can never pass for a manifest signature, nor the other way round.
REGISTRATION_CONTEXT = b"lmdock/v1 register-signing-key\0"

#: The bytes a manifest's signature covers, by the manifest's `format` field (the package
#: formats of `lmdock.common.package`, oldest first).
MANIFEST_ENCODINGS: dict[str, Callable[[Any], bytes]] = {
    "lmdock-learnware/1": canonical_json,
    "lmdock-learnware/2": jcs,
}


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


def signed_bytes(manifest: dict[str, Any]) -> bytes:
    """What a signature of `manifest` signs: its encoding under its own `format` (see above)."""
    fmt = manifest.get("format") if isinstance(manifest, dict) else None  # a stranger's JSON
    encode = MANIFEST_ENCODINGS.get(fmt) if isinstance(fmt, str) else None
    if encode is None:
        raise InvalidArgument(
            f"package format {str(fmt)[:64]!r} is not supported (need one of {', '.join(MANIFEST_ENCODINGS)})"
        )
    return encode(manifest)


def sign_manifest(manifest: dict[str, Any], key: Ed25519PrivateKey) -> Signature:
    public = public_key_to_b64(key.public_key())
    sig = key.sign(signed_bytes(manifest))
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
    message = signed_bytes(manifest)
    try:
        public.verify(base64.b64decode(signature.signature), message)
    except (InvalidSignature, ValueError):
        raise IntegrityError("publisher signature does not verify: the manifest was altered") from None


def registration_message(*, principal: str, publisher: str, public_key: str) -> bytes:
    """What a registration proof signs: the context, then the JCS encoding of the three fields
    (for strings alone it is byte for byte the v1 form, so proofs made before JCS still verify)."""
    fields = {"principal": principal, "publisher": publisher, "public_key": public_key}
    return REGISTRATION_CONTEXT + jcs(fields)


def prove_possession(key: Ed25519PrivateKey, *, principal: str, publisher: str) -> bytes:
    """The proof that `principal` holds `key` and registers it for `publisher` (64 bytes)."""
    public = public_key_to_b64(key.public_key())
    return key.sign(registration_message(principal=principal, publisher=publisher, public_key=public))


def verify_possession(public_key: str, proof: bytes, *, principal: str, publisher: str) -> None:
    """InvalidArgument for a missing or malformed proof; PermissionDenied for one that does not
    verify (made with another key, or for another caller or publisher)."""
    key = public_key_from_b64(public_key)
    if len(proof) != 64:
        raise InvalidArgument(
            f"proof must be the 64-byte Ed25519 signature of the registration message, got {len(proof)} "
            "bytes: sign it with the key being registered (`lmdock keys register` does)"
        )
    message = registration_message(principal=principal, publisher=publisher, public_key=public_key)
    try:
        key.verify(proof, message)
    except InvalidSignature:
        raise PermissionDenied(
            f"the proof does not verify for signing key {key_id(public_key)}: it must be made with that "
            f"key, for caller {principal!r} registering it for publisher {publisher!r}"
        ) from None


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
