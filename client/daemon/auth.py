"""The local APIs' bearer token: generated once, kept in a file only its owner can read."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from lmdock.client.files import read_secret
from lmdock.common.errors import FailedPrecondition

__all__ = ["bearer_matches", "load_or_create_token", "read_token"]

MIN_TOKEN_CHARS = 16


def load_or_create_token(path: Path) -> str:
    """The token in `path`; a new random one (256 bits, mode 600) when the file does not exist."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return read_token(path)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
            out.flush()
            os.fsync(out.fileno())
        return token
    return read_token(path)


def read_token(path: Path) -> str:
    if not path.is_file():
        raise FailedPrecondition(
            f"no API token at {path}: start the daemon once (`lmdock daemon --config ...`) to create it"
        )
    token = read_secret(path, what="API token")
    if len(token) < MIN_TOKEN_CHARS:
        raise FailedPrecondition(f"the API token in {path} is shorter than {MIN_TOKEN_CHARS} characters")
    return token


def bearer_matches(header: str | None, token: str) -> bool:
    """True when `header` is exactly "Bearer <token>" (compared in constant time)."""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), token.encode())
