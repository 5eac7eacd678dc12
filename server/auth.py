"""Authentication: who a call comes from, and which role each RPC needs.

A caller is identified by, in this order:

1. an API key in the `authorization: Bearer lmk_...` metadata (see `apikeys`); a key that is
   presented must be valid, even for a public RPC;
2. else the client certificate of an mTLS connection (the server's `--client-ca` verified it):
   the principal is the certificate's subject CN, the role its OU (consumer, publisher or
   admin; anything else counts as consumer);
3. else, only when the market allows it, the anonymous caller with the configured role.

Public RPCs (ListSigningKeys, so anyone can fetch revocations) need no credentials.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from lmdock.common.errors import Unauthenticated
from lmdock.server.apikeys import ApiKeys
from lmdock.server.identity import ANONYMOUS, Identity, Role

__all__ = ["METHOD_ROLES", "AccessPolicy", "Authenticator"]

#: The least role each MarketService RPC needs; None = public. RPCs missing here are refused.
METHOD_ROLES: dict[str, Role | None] = {
    "GetSpecProfile": Role.CONSUMER,
    "Search": Role.CONSUMER,
    "GetLearnware": Role.CONSUMER,
    "ListLearnwares": Role.CONSUMER,
    "Download": Role.CONSUMER,
    "WhoAmI": Role.CONSUMER,
    "Upload": Role.PUBLISHER,
    "Unpublish": Role.PUBLISHER,
    "RegisterSigningKey": Role.PUBLISHER,
    "RevokeSigningKey": Role.PUBLISHER,
    "ListSigningKeys": None,
}

_BEARER = "bearer "


@dataclass(frozen=True)
class AccessPolicy:
    """`anonymous_role`: what callers without credentials may do (None: nothing but public RPCs).

    `AccessPolicy.open_demo()` lets anonymous callers search, download and publish -- for a
    local, single-user market (the embedded demo), never for a shared one.
    """

    anonymous_role: Role | None = None

    @classmethod
    def open_demo(cls) -> AccessPolicy:
        return cls(anonymous_role=Role.PUBLISHER)


def _metadata_value(metadata: Sequence[Any], key: str) -> str | None:
    for item in metadata or ():
        if item.key == key:
            value = item.value
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None


def _api_key(metadata: Sequence[Any]) -> str | None:
    header = _metadata_value(metadata, "authorization")
    if header is None:
        return None
    if not header.lower().startswith(_BEARER):
        raise Unauthenticated("authorization metadata must read 'Bearer <API key>'")
    return header[len(_BEARER) :].strip()


def _certificate_identity(auth_context: dict[str, list[bytes]]) -> Identity | None:
    pems = auth_context.get("x509_pem_cert")
    if not pems:
        return None
    cert = x509.load_pem_x509_certificate(pems[0])
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise Unauthenticated("client certificate has no subject CN")
    units = [
        str(a.value).strip().upper()
        for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    ]
    role = next((Role[u] for u in units if u in Role.__members__), Role.CONSUMER)
    return Identity(principal=str(names[0].value), role=role, authenticated_by="mtls")


class Authenticator:
    def __init__(self, api_keys: ApiKeys, policy: AccessPolicy) -> None:
        self.api_keys = api_keys
        self.policy = policy

    def identify(
        self, metadata: Sequence[Any], auth_context: dict[str, list[bytes]], *, public: bool
    ) -> Identity:
        """The caller's identity; Unauthenticated when it has none and the RPC is not public."""
        key = _api_key(metadata)
        if key is not None:
            return self.api_keys.authenticate(key)
        return self._without_key(auth_context, public=public)

    def identify_cached(
        self, metadata: Sequence[Any], auth_context: dict[str, list[bytes]], *, public: bool
    ) -> Identity | None:
        """As `identify`, or None when that needs a database read (an API key not fresh in the
        cache): what the event loop answers itself, sending only the rest to a worker."""
        key = _api_key(metadata)
        if key is not None:
            return self.api_keys.authenticate_cached(key)
        return self._without_key(auth_context, public=public)

    def _without_key(self, auth_context: dict[str, list[bytes]], *, public: bool) -> Identity:
        from_certificate = _certificate_identity(auth_context)
        if from_certificate is not None:
            return from_certificate
        if self.policy.anonymous_role is not None:
            return Identity(principal=ANONYMOUS, role=self.policy.anonymous_role, authenticated_by=ANONYMOUS)
        if public:
            return Identity(principal=ANONYMOUS, role=Role.CONSUMER, authenticated_by=ANONYMOUS)
        raise Unauthenticated("this market needs credentials: an API key (--api-key) or a client certificate")
