"""The adapter cache: verified learnware packages, unpacked, one folder per learnware.

Layout under ROOT:
    partial/<sha256>.tar      downloads in progress (resumed from their current size)
    learnwares/<id>/          unpacked and verified package (manifest.json, signature.json, ...)
    learnwares/<id>.sha256    sha256 of the package it came from
    publishers.json           publisher -> pinned public key (trust on first pull)

Everything is re-verified when loaded (every file's sha256 and the publisher signature against
the pinned key), so loading needs no market and a tampered cache is never used.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lmdock.common.errors import IntegrityError, NotFound
from lmdock.common.package import Manifest, unpack_package, verify_folder
from lmdock.common.records import LearnwareInfo

__all__ = ["AdapterCache", "default_cache_dir"]


def default_cache_dir() -> Path:
    if "LMDOCK_HOME" in os.environ:
        return Path(os.environ["LMDOCK_HOME"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "lmdock"


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
        data = json.loads(self._pins.read_text())
        return {str(k): str(v) for k, v in data.items()}

    def _pin(self, publisher: str, public_key: str) -> None:
        pins = self._read_pins()
        pins[publisher] = public_key
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self._pins.with_suffix(".tmp")
        tmp.write_text(json.dumps(pins, indent=2, sort_keys=True))
        tmp.replace(self._pins)

    def install(self, info: LearnwareInfo, archive: Path) -> Manifest:
        """Verify the downloaded `archive` against `info` and the pinned key, then unpack it."""
        trusted = self.pinned_key(info.publisher)
        manifest, signature = unpack_package(archive, self.folder(info.id), trusted_key=trusted)
        if manifest.id != info.id or manifest.publisher != info.publisher:
            shutil.rmtree(self.folder(info.id), ignore_errors=True)
            raise IntegrityError(
                f"package claims to be {manifest.id!r} by {manifest.publisher!r}, not {info.id!r}"
            )
        if trusted is None:
            self._pin(info.publisher, signature.public_key)
        self._sidecar(info.id).write_text(info.package_sha256)
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
        trusted = self.pinned_key(manifest.publisher)
        if trusted is not None and trusted != signature.public_key:
            raise IntegrityError(
                f"cached {learnware_id!r} is signed by a key other than the one pinned "
                f"for {manifest.publisher!r}"
            )
        return manifest

    def evict(self, learnware_id: str) -> None:
        shutil.rmtree(self.folder(learnware_id), ignore_errors=True)
        self._sidecar(learnware_id).unlink(missing_ok=True)
