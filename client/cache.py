"""The adapter cache: verified learnware packages, unpacked, one folder per learnware.

Layout under ROOT:
    partial/<sha256>.tar      downloads in progress (resumed from their current size)
    learnwares/<id>/          unpacked and verified package (manifest.json, signature.json, ...)
    learnwares/<id>.sha256    sha256 of the package it came from; its mtime is the last use
    publishers.json           publisher -> pinned public key (trust on first pull)

Everything is re-verified when loaded (every file's sha256 and the publisher signature against
the pinned key), so loading needs no market and a tampered cache is never used. Small files are
written atomically (temp + fsync + rename); packages appear only once verified (see
`unpack_package`). `enforce_cap` evicts the least recently used learnwares above a size cap.

An install interrupted mid-unpack (kill -9) leaves a `learnwares/.unpack-*` staging folder;
the next install or cap check removes those older than STALE_STAGING_S (younger ones may be
another process's install in progress).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from lmdock.client.files import atomic_write_text
from lmdock.common.errors import IntegrityError, NotFound
from lmdock.common.market_types import LearnwareInfo
from lmdock.common.package import Manifest
from lmdock.common.package_reader import unpack_package, verify_folder

__all__ = ["AdapterCache", "CachedLearnware", "default_cache_dir"]

#: A staging folder this old belongs to no running install: an hour is far above any unpack.
STALE_STAGING_S = 3600.0


def default_cache_dir() -> Path:
    if "LMDOCK_HOME" in os.environ:
        return Path(os.environ["LMDOCK_HOME"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "lmdock"


@dataclass(frozen=True)
class CachedLearnware:
    learnware_id: str
    size: int  # bytes on disk
    last_used: float  # POSIX time of the last install or load


class AdapterCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._learnwares = root / "learnwares"
        self._partial = root / "partial"
        self._pins = root / "publishers.json"

    def partial_path(self, sha256: str) -> Path:
        return self._partial / f"{sha256}.tar"

    def folder(self, learnware_id: str) -> Path:
        return self._learnwares / learnware_id

    def has(self, learnware_id: str) -> bool:
        return (self.folder(learnware_id) / "manifest.json").is_file()

    def pinned_key(self, publisher: str) -> str | None:
        pins = self._read_pins()
        return pins.get(publisher)

    def _read_pins(self) -> dict[str, str]:
        if not self._pins.exists():
            return {}
        try:
            data = json.loads(self._pins.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise IntegrityError(
                f"{self._pins} is damaged: publisher keys cannot be checked; "
                "remove the cache folder and pull again"
            ) from None
        return {str(k): str(v) for k, v in data.items()}

    def _pin(self, publisher: str, public_key: str) -> None:
        pins = self._read_pins()
        pins[publisher] = public_key
        atomic_write_text(self._pins, json.dumps(pins, indent=2, sort_keys=True))

    def install(self, info: LearnwareInfo, archive: Path) -> Manifest:
        """Verify the downloaded `archive` against `info` and the pinned key, then unpack it."""
        card = info.card
        self.remove_stale_staging()
        trusted = self.pinned_key(card.publisher)
        manifest, signature = unpack_package(archive, self.folder(card.id), trusted_key=trusted)
        claimed = manifest.card
        if claimed.id != card.id or claimed.publisher != card.publisher:
            shutil.rmtree(self.folder(card.id), ignore_errors=True)
            raise IntegrityError(
                f"package claims to be {claimed.id!r} by {claimed.publisher!r}, not {card.id!r}"
            )
        if trusted is None:
            self._pin(card.publisher, signature.public_key)
        atomic_write_text(self._sidecar(card.id), info.package_sha256)
        archive.unlink(missing_ok=True)
        return manifest

    def _sidecar(self, learnware_id: str) -> Path:
        return self._learnwares / f"{learnware_id}.sha256"

    def installed_sha256(self, learnware_id: str) -> str | None:
        """sha256 of the package a cached learnware was unpacked from, if cached."""
        path = self._sidecar(learnware_id)
        return path.read_text().strip() if path.is_file() and self.has(learnware_id) else None

    def load(self, learnware_id: str) -> Manifest:
        """The verified manifest of a cached learnware; IntegrityError if anything was altered."""
        folder = self.folder(learnware_id)
        if not (folder / "manifest.json").is_file():
            raise NotFound(
                f"learnware {learnware_id!r} is not in the cache {self.root}; run `lmdock pull` first"
            )
        manifest, signature = verify_folder(folder)
        trusted = self.pinned_key(manifest.card.publisher)
        if trusted is None:
            raise IntegrityError(
                f"no key is pinned for publisher {manifest.card.publisher!r} of cached {learnware_id!r} "
                f"({self._pins} was lost or edited); pull the learnware again"
            )
        if trusted != signature.public_key:
            raise IntegrityError(
                f"cached {learnware_id!r} is signed by a key other than the one pinned "
                f"for {manifest.card.publisher!r}"
            )
        if self._sidecar(learnware_id).is_file():
            os.utime(self._sidecar(learnware_id))  # recency for LRU eviction
        return manifest

    def remove_stale_staging(self) -> None:
        """Delete the staging folders of interrupted installs (see module doc)."""
        cutoff = time.time() - STALE_STAGING_S
        for folder in self._learnwares.glob(".unpack-*"):  # nothing when the folder is absent
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)

    def evict(self, learnware_id: str) -> None:
        shutil.rmtree(self.folder(learnware_id), ignore_errors=True)
        self._sidecar(learnware_id).unlink(missing_ok=True)

    def entries(self) -> list[CachedLearnware]:
        """Every cached learnware with its size and last use, least recently used first."""
        if not self._learnwares.is_dir():
            return []
        out = []
        for folder in self._learnwares.iterdir():
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            sidecar = self._sidecar(folder.name)
            size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
            last_used = (sidecar if sidecar.is_file() else folder).stat().st_mtime
            out.append(CachedLearnware(folder.name, size, last_used))
        return sorted(out, key=lambda e: (e.last_used, e.learnware_id))

    def enforce_cap(self, max_bytes: int, *, keep: frozenset[str] = frozenset()) -> list[str]:
        """Evict least recently used learnwares, except those in `keep`, until the total fits.

        Returns the evicted ids. Learnwares in `keep` are never evicted, so the total can stay
        above the cap when they alone exceed it.
        """
        self.remove_stale_staging()
        entries = self.entries()
        total = sum(e.size for e in entries)
        evicted: list[str] = []
        for entry in entries:
            if total <= max_bytes:
                break
            if entry.learnware_id in keep:
                continue
            self.evict(entry.learnware_id)
            total -= entry.size
            evicted.append(entry.learnware_id)
        return evicted
