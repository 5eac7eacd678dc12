"""The client's state: owner-only from the first byte, whatever the umask; no leftovers (issue 14, item 8).

Run under umask 0, where anything created with default permissions is world-readable and
world-writable: every file and folder the client makes must still be 600 / 700.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lmdock.client.daemon.app import configure_logging
from lmdock.client.daemon.config import DaemonConfig, TaskSettings
from lmdock.client.daemon.registry import TaskRegistry
from lmdock.client.daemon.runfile import RunInfo, hold_lock, write_runfile
from lmdock.client.ledger import Ledger
from lmdock.common.accounting import Release
from lmdock.common.signing import generate_key, save_private_key


@pytest.fixture()
def open_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _modes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): oct(stat.S_IMODE(p.stat().st_mode)) for p in sorted(root.rglob("*"))}


def test_ledger_key_and_daemon_state_are_owner_only(tmp_path: Path, open_umask: None) -> None:
    ledger = Ledger(tmp_path / "home" / "ledger.jsonl")
    ledger.record("d" * 64, Release(epsilon=1.0, delta=1e-6, noise_multiplier=1.0), kind="training")
    save_private_key(generate_key(), tmp_path / "home" / "keys" / "publisher.key")
    state = tmp_path / "home" / "state"
    lock = hold_lock(state)
    try:
        write_runfile(state, RunInfo(pid=1, http="127.0.0.1:1", grpc="127.0.0.1:2", started_at=0.0))
        TaskRegistry(state / "tasks.json").add(TaskSettings(name="triage", data="/d.csv"))
    finally:
        lock.close()
    modes = _modes(tmp_path / "home")
    loose = {name: mode for name, mode in modes.items() if int(mode, 8) & 0o077}
    assert loose == {}, modes
    assert {"ledger.jsonl", "ledger.jsonl.head", "ledger.jsonl.lock", "keys/publisher.key"} <= set(modes)


def test_the_daemon_log_is_owner_only(tmp_path: Path, open_umask: None) -> None:
    config = DaemonConfig.from_dict({"daemon": {"log_file": str(tmp_path / "logs" / "daemon.log")}})
    configure_logging(config)
    try:
        assert stat.S_IMODE((tmp_path / "logs" / "daemon.log").stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "logs").stat().st_mode) == 0o700
    finally:
        import logging

        logging.getLogger("lmdock").handlers[:] = []


def test_a_file_left_loose_by_an_older_version_is_closed_on_next_write(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    release = Release(epsilon=1.0, delta=1e-7, noise_multiplier=1.0)  # two fit: 2e-7 <= 1e-6
    ledger.record("d" * 64, release, kind="training")
    ledger.path.chmod(0o644)
    ledger.record("d" * 64, dataclasses.replace(release), kind="training")
    assert stat.S_IMODE(ledger.path.stat().st_mode) == 0o600


def test_an_interrupted_install_leaves_no_staging_folder_behind(tmp_path: Path) -> None:
    from lmdock.client.cache import STALE_STAGING_S, AdapterCache

    cache = AdapterCache(tmp_path / "cache")
    learnwares = tmp_path / "cache" / "learnwares"
    old, fresh = learnwares / ".unpack-killed", learnwares / ".unpack-running"
    for folder in (old, fresh):
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"x" * 1000)
    then = time.time() - STALE_STAGING_S - 60
    os.utime(old, (then, then))
    assert cache.enforce_cap(10**9) == []
    assert not old.exists() and fresh.exists()  # a younger one may be another process's install
