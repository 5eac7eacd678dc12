"""API keys in the market database, stored hashed.

A key reads `lmk_<key id>_<secret>`. The key id (12 hex digits) is public and names the row; the
secret is 32 random bytes (base64url). Only sha256(secret) is stored: a fast hash suffices
because the secret is uniformly random (there is no dictionary to try), and comparison is
constant-time. A key is shown once, at creation.

A key's row, once read, is trusted for `KEY_CACHE_TTL_S` seconds (the secret is still checked
on every call), so a call with a key costs no database read: a revocation takes effect at once
on the market process that made it and within the TTL on every other one sharing the database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from lmdock.common.errors import InvalidArgument, NotFound, Unauthenticated
from lmdock.server.db import Database, utc_now
from lmdock.server.identity import Identity, Role
from lmdock.server.tables import ApiKeyRow
from sqlalchemy import select

__all__ = ["KEY_CACHE_TTL_S", "ApiKeyInfo", "ApiKeys"]

#: Seconds a key's row is trusted without reading it again (the bound on revocation's delay).
KEY_CACHE_TTL_S = 5.0
#: Keys remembered at most (least recently used first out).
MAX_CACHED_KEYS = 10_000

PREFIX = "lmk"
_KEY = re.compile(r"^lmk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_PRINCIPAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class _Cached:
    expires: float
    secret_sha256: str
    info: ApiKeyInfo


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
    def __init__(
        self, db: Database, *, ttl_s: float = KEY_CACHE_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.db = db
        self.ttl_s, self._clock = ttl_s, clock
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._cache_lock = threading.Lock()

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
        with self._cache_lock:
            self._cache.pop(key_id, None)
        return _info(row)

    def authenticate(self, key: str) -> Identity:
        """The identity of a presented key; Unauthenticated for a malformed, unknown or revoked key."""
        key_id, secret = _parse(key)
        return _identity(key_id, secret, self._lookup(key_id))

    def authenticate_cached(self, key: str) -> Identity | None:
        """As `authenticate` while the key's row is fresh in the cache, else None: never a
        database read, so the event loop answers it without a worker hop."""
        key_id, secret = _parse(key)
        cached = self._fresh(key_id)
        return None if cached is None else _identity(key_id, secret, cached)

    def _fresh(self, key_id: str) -> _Cached | None:
        with self._cache_lock:
            cached = self._cache.get(key_id)
            if cached is not None and cached.expires > self._clock():
                self._cache.move_to_end(key_id)
                return cached
        return None

    def _lookup(self, key_id: str) -> _Cached | None:
        """The key's row, from the cache while fresh; unknown ids are not remembered."""
        fresh = self._fresh(key_id)
        if fresh is not None:
            return fresh
        now = self._clock()
        with self.db.session() as session:
            row = session.get(ApiKeyRow, key_id)
        if row is None:
            return None
        cached = _Cached(expires=now + self.ttl_s, secret_sha256=row.secret_sha256, info=_info(row))
        with self._cache_lock:
            self._cache[key_id] = cached
            self._cache.move_to_end(key_id)
            while len(self._cache) > MAX_CACHED_KEYS:
                self._cache.popitem(last=False)
        return cached


def _parse(key: str) -> tuple[str, str]:
    match = _KEY.match(key)
    if match is None:
        raise Unauthenticated("malformed API key (expected lmk_<id>_<secret>)")
    key_id, secret = match.groups()
    return key_id, secret


def _identity(key_id: str, secret: str, cached: _Cached | None) -> Identity:
    if cached is None or not hmac.compare_digest(cached.secret_sha256, _hash(secret)):
        raise Unauthenticated("unknown API key")
    info = cached.info
    if info.revoked_at:
        raise Unauthenticated(f"API key {key_id} was revoked at {info.revoked_at}")
    return Identity(
        principal=info.principal, role=Role.parse(info.role), authenticated_by="api-key", key_id=key_id
    )
