"""The privacy unit: a named data set, and what lets the ledger recognise its records.

A user declares the data set a release reads (`--dataset NAME`, default the task file's name;
a daemon task's name). The ledger stores each data set's cap when it is first booked, and the
fingerprints of its records: the first 64 bits of sha256 of each record after
`normalize_text` (NFKC, case fold, whitespace collapsed). A release whose records share a
fingerprint with a registered data set is charged to that data set too, so a trailing space, a
duplicated, removed or appended record, or a new name for the same records gives no fresh
budget (docs/privacy.md, "the privacy unit").
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmdock.client.task.normalize import normalize_text
from lmdock.common.canonical import sha256_hex
from lmdock.common.errors import InvalidArgument

__all__ = [
    "NAME",
    "DataSet",
    "check_name",
    "dataset_id",
    "decode_fingerprints",
    "default_name",
    "encode_fingerprints",
]

#: A data set's name, and a daemon task's (it names the task's data set); match with fullmatch.
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_CONTENT_KEY = re.compile(r"[0-9a-f]{64}")
_FINGERPRINT_BYTES = 8


def check_name(name: str) -> str:
    """A data set name: 1-64 characters of a-z, 0-9, '.', '_', '-' (not a 64-hex content key)."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or _CONTENT_KEY.fullmatch(name):
        raise InvalidArgument(
            f"data set name {name!r} must be 1-64 characters of a-z, 0-9, '.', '_', '-', starting "
            "with a letter or digit (and not a 64-digit hex string)"
        )
    return name


def is_content_key(text: str) -> bool:
    """Whether `text` is a content key (`dataset_id`) rather than a name."""
    return bool(_CONTENT_KEY.fullmatch(text))


def default_name(path: Path) -> str:
    """The data set a task file stands for when none is named: its file name without suffix."""
    name = re.sub(r"[^a-z0-9._-]+", "-", path.stem.casefold()).strip("-._")[:64]
    return check_name(name or "data")


def dataset_id(texts: Sequence[str]) -> str:
    """sha256 over the sorted sha256 of each exact text: the content key of these records (the
    data set id of ledgers written before data sets were named, and the cache key of a spec)."""
    if not texts:
        raise InvalidArgument("a data set needs at least one record")
    digests = sorted(hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts)
    return sha256_hex("\n".join(digests).encode())


def _fingerprint(text: str) -> int:
    digest = hashlib.sha256(normalize_text(text).encode("utf-8")).digest()
    return int.from_bytes(digest[:_FINGERPRINT_BYTES], "big")


def encode_fingerprints(fingerprints: Iterable[int]) -> str:
    return base64.b64encode(
        b"".join(f.to_bytes(_FINGERPRINT_BYTES, "big") for f in sorted(fingerprints))
    ).decode("ascii")


def decode_fingerprints(text: str) -> frozenset[int]:
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) % _FINGERPRINT_BYTES:
        raise ValueError("fingerprints are 8 bytes each")
    return frozenset(
        int.from_bytes(raw[i : i + _FINGERPRINT_BYTES], "big") for i in range(0, len(raw), _FINGERPRINT_BYTES)
    )


@dataclass(frozen=True)
class DataSet:
    """The records one release reads, as the ledger sees them."""

    name: str | None  # declared by the user; None: whichever registered data set holds them
    key: str  # dataset_id of the exact texts
    fingerprints: frozenset[int]
    records: int

    @classmethod
    def of(cls, texts: Sequence[str], *, name: str | None = None) -> DataSet:
        return cls(
            name=None if name is None else check_name(name),
            key=dataset_id(texts),
            fingerprints=frozenset(_fingerprint(t) for t in texts),
            records=len(texts),
        )
