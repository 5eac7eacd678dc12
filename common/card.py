"""The learnware's descriptive card: who publishes what, under which id, name, domain and licence.

One value, validated once, that the manifest, the market's records, the publisher's card file
and the lab's recipes all hold. Its dict form is the manifest's flat fields (`to_dict`), in the
order manifest.json has always written them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lmdock.common.errors import InvalidArgument

__all__ = ["Card", "check_text_field"]

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")
MAX_FIELD_CHARS = 256


@dataclass(frozen=True)
class Card:
    id: str
    name: str
    domain: str
    licence: str
    publisher: str
    description: str = ""
    tags: tuple[str, ...] = ()
    version: str = "1.0.0"

    def __post_init__(self) -> None:
        if not _ID.match(self.id):
            raise InvalidArgument(f"learnware id {self.id!r} must be 3-64 chars of a-z, 0-9, '.', '_', '-'")
        for key in ("name", "domain", "licence", "publisher"):
            check_text_field(key, getattr(self, key))
        for key in ("description", "version"):
            _check_no_nul(key, getattr(self, key))
        for tag in self.tags:
            _check_no_nul("tags", tag)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "domain": self.domain,
            "tags": list(self.tags),
            "description": self.description,
            "licence": self.licence,
            "publisher": self.publisher,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Card:
        """The card from a dict holding its fields (and maybe others); KeyError for a missing one."""
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            version=str(data.get("version", "1.0.0")),
            domain=str(data["domain"]),
            tags=tuple(str(t) for t in data.get("tags", [])),
            description=str(data.get("description", "")),
            licence=str(data["licence"]),
            publisher=str(data["publisher"]),
        )


def check_text_field(key: str, value: Any) -> None:
    """A required short text field of a learnware: a non-empty string of at most 256 chars."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_FIELD_CHARS:
        raise InvalidArgument(
            f"manifest field {key!r} must be a non-empty string (<= {MAX_FIELD_CHARS} chars)"
        )
    _check_no_nul(key, value)


def _check_no_nul(key: str, value: str) -> None:
    """No catalogue can hold a NUL (PostgreSQL's text cannot): refused before the market
    registers or stores anything of the package."""
    if "\0" in value:
        raise InvalidArgument(f"manifest field {key!r} contains a NUL character")
