"""Publishers' package-signing keys, registered with the market and revocable.

An upload is accepted only when its signature comes from a registered, unrevoked key of the
publisher the manifest names. Revoked keys stay listed (with `revoked_at`) so clients can
refuse packages they signed; a revoked key can never be registered again for its publisher.

Keys are scoped per publisher: a row is (publisher, key id), and two publishers holding the same
key each register and revoke their own. This store checks no proof of possession; the market
does, before it registers a key a caller sent (`Market.register_signing_key`).
"""

from __future__ import annotations

from lmdock.common.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from lmdock.common.market_types import SigningKeyInfo
from lmdock.common.signing import Signature, key_id, public_key_from_b64
from lmdock.server.db import Database, utc_now
from lmdock.server.tables import SigningKeyRow
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as SqlIntegrityError

__all__ = ["SigningKeys"]

#: More keys than this per publisher is a sign of misuse, not of rotation.
MAX_KEYS_PER_PUBLISHER = 64


def _info(row: SigningKeyRow) -> SigningKeyInfo:
    return SigningKeyInfo(
        key_id=row.key_id,
        publisher=row.publisher,
        public_key=row.public_key,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class SigningKeys:
    def __init__(self, db: Database) -> None:
        self.db = db

    def register(self, publisher: str, public_key: str, *, registered_by: str) -> SigningKeyInfo:
        public_key_from_b64(public_key)  # InvalidArgument unless a raw Ed25519 key in base64
        if not publisher.strip() or len(publisher) > 256:
            raise InvalidArgument("publisher must be a non-empty name of at most 256 characters")
        kid = key_id(public_key)
        with self.db.session() as session:
            existing = session.get(SigningKeyRow, (publisher, kid))
            if existing is not None:
                state = "revoked" if existing.revoked_at else "registered"
                raise AlreadyExists(f"signing key {kid} is already {state} for publisher {publisher!r}")
            owned = select(func.count()).where(SigningKeyRow.publisher == publisher)
            count = session.scalar(owned) or 0
            if count >= MAX_KEYS_PER_PUBLISHER:
                raise InvalidArgument(f"publisher {publisher!r} already has {count} signing keys (the limit)")
            row = SigningKeyRow(
                key_id=kid,
                publisher=publisher,
                public_key=public_key,
                registered_by=registered_by,
                created_at=utc_now(),
                revoked_at="",
            )
            session.add(row)
            try:
                session.commit()
            except SqlIntegrityError:  # registered by a concurrent call since the check above
                raise AlreadyExists(
                    f"signing key {kid} is already registered for publisher {publisher!r}"
                ) from None
            return _info(row)

    def with_id(self, kid: str) -> list[SigningKeyInfo]:
        """Every publisher's key with this id (one public key, registered by each holder)."""
        query = select(SigningKeyRow).where(SigningKeyRow.key_id == kid).order_by(SigningKeyRow.publisher)
        with self.db.session() as session:
            return [_info(r) for r in session.scalars(query)]

    def list(self, publisher: str = "") -> list[SigningKeyInfo]:
        query = select(SigningKeyRow).order_by(SigningKeyRow.publisher, SigningKeyRow.created_at)
        if publisher:
            query = query.where(SigningKeyRow.publisher == publisher)
        with self.db.session() as session:
            return [_info(r) for r in session.scalars(query)]

    def has_keys(self, publisher: str) -> bool:
        return bool(self.list(publisher))

    def revoke(self, publisher: str, kid: str) -> SigningKeyInfo:
        with self.db.session() as session:
            row = session.get(SigningKeyRow, (publisher, kid))
            if row is None:
                raise NotFound(f"publisher {publisher!r} has no signing key with id {kid!r}")
            if not row.revoked_at:
                row.revoked_at = utc_now()
                session.commit()
            return _info(row)

    def check_signer(self, publisher: str, signature: Signature) -> SigningKeyInfo:
        """`publisher`'s registered key that made `signature`; PermissionDenied otherwise."""
        with self.db.session() as session:
            row = session.get(SigningKeyRow, (publisher, signature.key_id))
        if row is None or row.public_key != signature.public_key:
            raise PermissionDenied(
                f"package is signed by key {signature.key_id}, which is not registered for publisher "
                f"{publisher!r} on this market; register it first (RegisterSigningKey)"
            )
        if row.revoked_at:
            raise PermissionDenied(
                f"package is signed by key {signature.key_id}, revoked at {row.revoked_at}"
            )
        return _info(row)
