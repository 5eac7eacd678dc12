"""Who is calling: roles and the identity the auth interceptor attaches to every call.

Roles are ordered: a publisher may do whatever a consumer may, an admin whatever a publisher
may. Ownership (a publisher manages only its own learnwares and keys) is checked by the
market's handlers with `may_manage`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from lmdock.common.errors import InvalidArgument, PermissionDenied

__all__ = ["ANONYMOUS", "Identity", "Role"]

ANONYMOUS = "anonymous"


class Role(enum.IntEnum):
    CONSUMER = 1  # search, list, get, download
    PUBLISHER = 2  # + upload, unpublish own learnwares, manage own signing keys
    ADMIN = 3  # + manage every publisher's learnwares and keys

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise InvalidArgument(f"role must be consumer, publisher or admin, got {text!r}") from None


@dataclass(frozen=True)
class Identity:
    """An authenticated caller. For publishers, `principal` is the publisher name."""

    principal: str
    role: Role
    authenticated_by: str  # "api-key", "mtls" or "anonymous"
    key_id: str = ""  # the API key's id, for limits and logs

    @property
    def anonymous(self) -> bool:
        return self.authenticated_by == ANONYMOUS

    @property
    def limit_key(self) -> str:
        """What rate and stream limits count against."""
        return f"{self.authenticated_by}:{self.key_id or self.principal}"

    def require(self, role: Role, action: str) -> None:
        if self.role < role:
            raise PermissionDenied(
                f"{action} needs the {role.label} role; {self.principal!r} is a {self.role.label}"
            )

    def may_manage(self, publisher: str) -> bool:
        """Whether this caller may act for `publisher` (unpublish, manage signing keys)."""
        if self.role >= Role.ADMIN:
            return True
        return self.role >= Role.PUBLISHER and not self.anonymous and self.principal == publisher
