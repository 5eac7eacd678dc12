"""Streaming sha256 of files."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

__all__ = ["Digest", "hash_file_into", "sha256_file"]


class Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


def hash_file_into(digest: Digest, path: Path, *, chunk: int = 1024 * 1024) -> None:
    """Feed `path`'s bytes to `digest` (to go on hashing what is appended after them)."""
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)


def sha256_file(path: Path, *, chunk: int = 1024 * 1024) -> str:
    h = hashlib.sha256()
    hash_file_into(h, path, chunk=chunk)
    return h.hexdigest()
