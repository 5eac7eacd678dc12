"""API keys in the market database, stored hashed.

A key reads `lmk_<key id>_<secret>`. The key id (12 hex digits) is public and names the row; the
secret is 32 random bytes (base64url). Only sha256(secret) is stored: a fast hash suffices
because the secret is uniformly random (there is no dictionary to try), and comparison is
constant-time. A key is shown once, at creation; revoking it takes effect on the next call.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from lmdock.common.errors import InvalidArgument, NotFound, Unauthenticated
from lmdock.server.db import Database, utc_now
from lmdock.server.identity import Identity, Role
from lmdock.server.tables import ApiKeyRow
from sqlalchemy import select

__all__ = ["ApiKeyInfo", "ApiKeys"]

PREFIX = "lmk"
_KEY = re.compile(r"^lmk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_PRINCIPAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class ApiKeyInfo:
    key_id: str
    principal: str
    role: str
    note: str
    created_at: str
    revoked_at: str


def _info(row: ApiKeyRow) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=row.key_id,
        principal=row.principal,
        role=row.role,
        note=row.note,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class ApiKeys:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, principal: str, role: Role, *, note: str = "") -> tuple[ApiKeyInfo, str]:
        """A new key for `principal` (a publisher's name, for publishers); returns (info, key)."""
        if not _PRINCIPAL.match(principal):
            raise InvalidArgument(
                f"principal {principal!r} must be 1-128 chars of letters, digits, '.', '_', '@', '-'"
            )
        if len(note) > 1024:
            raise InvalidArgument("note is at most 1024 characters")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        row = ApiKeyRow(
            key_id=key_id,
            secret_sha256=_hash(secret),
            principal=principal,
            role=role.label,
            note=note,
            created_at=utc_now(),
            revoked_at="",
        )
        with self.db.session() as session:
            session.add(row)
            session.commit()
        return _info(row), f"{PREFIX}_{key_id}_{secret}"

    def list(self) -> list[ApiKeyInfo]:
        with self.db.session() as session:
            return [_info(r) for r in session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at))]

    def revoke(self, key_id: str) -> ApiKeyInfo:
        with self.db.session() as session:
            row = session.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound(f"no API key with id {key_id!r}")
            if not row.revoked_at:
                row.revoked_at = utc_now()
                session.commit()
            return _info(row)

    def authenticate(self, key: str) -> Identity:
        """The identity of a presented key; Unauthenticated for a malformed, unknown or revoked key."""
        match = _KEY.match(key)
        if match is None:
            raise Unauthenticated("malformed API key (expected lmk_<id>_<secret>)")
        key_id, secret = match.groups()
        with self.db.session() as session:
            row = session.get(ApiKeyRow, key_id)
        if row is None or not hmac.compare_digest(row.secret_sha256, _hash(secret)):
            raise Unauthenticated("unknown API key")
        if row.revoked_at:
            raise Unauthenticated(f"API key {key_id} was revoked at {row.revoked_at}")
        return Identity(
            principal=row.principal, role=Role.parse(row.role), authenticated_by="api-key", key_id=key_id
        )
