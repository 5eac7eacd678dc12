"""Small file helpers for the client: atomic writes, owner-only state and secrets.

Everything the client keeps (the ledger, the cache's pins, the daemon's state and log, keys)
is about the user's private data, so it is created readable by its owner only from the first
byte, whatever the process's umask: a file made world-readable and chmod-ed afterwards can be
opened by another user in between.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from lmdock.common.errors import FailedPrecondition

__all__ = [
    "PRIVATE_FILE",
    "atomic_write_text",
    "check_owner_only",
    "fsync_dir",
    "open_private",
    "private_dir",
    "read_secret",
]

PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700


def private_dir(path: Path) -> Path:
    """`path` as a folder, created owner-only when it does not exist yet."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    return path


def open_private(path: Path, flags: int) -> int:
    """os.open of `path`, creating it owner-only (mode 600, not subject to the umask)."""
    fd = os.open(path, flags | os.O_CREAT, PRIVATE_FILE)
    info = os.fstat(fd)
    if info.st_mode & 0o077 and info.st_uid == os.getuid():
        os.fchmod(fd, PRIVATE_FILE)  # made before this rule by an older lmdock: close it now
    return fd


def atomic_write_text(path: Path, text: str, *, mode: int = PRIVATE_FILE) -> None:
    """Write `text` so that `path` holds either the old or the new content, never a mix.

    temp file in the same folder -> write -> fsync -> rename over `path` -> fsync the folder.
    The file is owner-only unless `mode` says otherwise (mkstemp creates it 600).
    """
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in folder `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_owner_only(path: Path) -> None:
    """Refuse a secret file that users other than its owner can read or write (as ssh does)."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise FailedPrecondition(
            f"{path} is accessible by other users (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}` and start again"
        )


def read_secret(path: Path, *, what: str) -> str:
    """The stripped content of an owner-only secret file (a token, an API key)."""
    if not path.is_file():
        raise FailedPrecondition(f"the {what} file {path} does not exist")
    check_owner_only(path)
    secret = path.read_text(encoding="utf-8").strip()
    if not secret:
        raise FailedPrecondition(f"the {what} file {path} is empty")
    return secret
