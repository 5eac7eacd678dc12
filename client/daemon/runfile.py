"""The daemon's run file: where a running daemon listens, for `lmdock status` and `lmdock task`.

`<state_dir>/daemon.json` is written once both APIs listen and removed on a clean stop;
`<state_dir>/daemon.lock` is held (flock) while a daemon runs, so a second one refuses to start
and a stale run file (after kill -9) is recognised.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from lmdock.client.files import atomic_write_text, open_private, private_dir
from lmdock.common.errors import FailedPrecondition, Unavailable

__all__ = ["RunInfo", "hold_lock", "read_runfile", "remove_runfile", "write_runfile"]

RUNFILE = "daemon.json"
LOCKFILE = "daemon.lock"


@dataclass(frozen=True)
class RunInfo:
    pid: int
    http: str
    grpc: str
    started_at: float


def hold_lock(state_dir: Path) -> IO[str]:
    """Take the daemon lock for this state folder; keep the returned file open while running."""
    private_dir(state_dir)
    handle = os.fdopen(open_private(state_dir / LOCKFILE, os.O_RDWR | os.O_APPEND), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        info = _read(state_dir)
        pid = f" (pid {info.pid})" if info else ""
        raise FailedPrecondition(
            f"a daemon is already running with state folder {state_dir}{pid}; stop it first "
            "(kill -TERM <pid>) or give this one another daemon.state_dir"
        ) from None
    return handle


def _is_locked(state_dir: Path) -> bool:
    path = state_dir / LOCKFILE
    if not path.exists():
        return False
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def write_runfile(state_dir: Path, info: RunInfo) -> None:
    atomic_write_text(state_dir / RUNFILE, json.dumps(asdict(info), indent=2))


def remove_runfile(state_dir: Path) -> None:
    (state_dir / RUNFILE).unlink(missing_ok=True)


def _read(state_dir: Path) -> RunInfo | None:
    try:
        return RunInfo(**json.loads((state_dir / RUNFILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def read_runfile(state_dir: Path, *, config_hint: str = "lmdock.toml") -> RunInfo:
    """Where the daemon for `state_dir` listens; Unavailable when none is running."""
    info = _read(state_dir)
    if info is None or not _is_locked(state_dir):
        raise Unavailable(
            f"the lmdock daemon is not running (state folder {state_dir}); "
            f"start it with `lmdock daemon --config {config_hint}`"
        )
    return info
