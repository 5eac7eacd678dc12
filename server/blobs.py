"""Content-addressed blob store on local disk.

A blob lives at ROOT/ab/cdef... (its sha256). Writes stream into ROOT/tmp/ (`BlobWriter`: the
upload handler pushes each chunk as it arrives, so a slow stream holds no thread), are fsync'd, checked
against the expected hash and size, then renamed into place, so a reader never sees a partial
blob and a crash leaves only temp files.
The `BlobStore` protocol is what the market uses, leaving room for an S3-compatible backend.

Several market processes (replicas) may share ROOT (a shared directory: NFS, CephFS, ...).
Each stages in a temp folder of its own, ROOT/tmp/<id>/, while holding an exclusive lock on
ROOT.locks/<id> (beside ROOT, which holds only blobs and temp files); on start a store removes
the temp folders whose lock it can take (their process is gone), never a live replica's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import BinaryIO, Protocol

from lmdock.common.errors import IntegrityError, InvalidArgument, NotFound, ResourceExhausted

__all__ = ["BlobStore", "BlobWriter", "LocalBlobStore", "StagedBlob"]

_HEX = set("0123456789abcdef")


class StagedBlob:
    """A fully received, verified blob in temp storage: `commit()` it or `discard()` it.

    Its bytes are flushed to disk (fsync) on a thread of its own, started when the upload
    finished, so the disk's wait overlaps the upload's checks instead of preceding them
    (0.1 s per 100 MB, docs/performance.md); `commit` waits for it, `durable` says when."""

    def __init__(self, store: LocalBlobStore, path: Path, sha256: str, size: int, out: BinaryIO) -> None:
        self._store, self.path, self.sha256, self.size = store, path, sha256, size
        self._sync_error: OSError | None = None
        self._sync = threading.Thread(target=self._fsync, args=(out,), name="blob-fsync", daemon=True)
        self._sync.start()

    def _fsync(self, out: BinaryIO) -> None:
        try:
            os.fsync(out.fileno())
        except OSError as exc:
            self._sync_error = exc
        finally:
            out.close()

    def durable(self) -> None:
        """Return once the bytes are on disk; raises the OSError if they could not be."""
        self._sync.join()
        if self._sync_error is not None:
            raise self._sync_error

    def commit(self) -> None:
        self.durable()
        self._store._commit(self)

    def discard(self) -> None:
        self._sync.join()
        self.path.unlink(missing_ok=True)


class BlobWriter:
    """A blob being received into temp storage: `write` its chunks, then `finish()` checks size
    and sha256 and hands over a `StagedBlob`. On any error, or `discard()`, nothing remains."""

    def __init__(self, store: LocalBlobStore, expected_sha256: str, expected_size: int) -> None:
        self._store, self.sha256, self.expected_size = store, expected_sha256, expected_size
        fd, name = tempfile.mkstemp(dir=store._tmp, suffix=".part")
        self.path = Path(name)
        self._out: BinaryIO | None = os.fdopen(fd, "wb")
        self._digest, self._size = hashlib.sha256(), 0
        # discard() may come from a cancelled call while a write runs on a worker thread
        self._lock = threading.Lock()

    def write(self, chunk: bytes) -> None:
        with self._lock:
            if self._out is None:
                raise InvalidArgument("the upload was already finished or discarded")
            self._size += len(chunk)
            if self._size > self.expected_size:
                self._discard()
                raise InvalidArgument(f"more bytes than the declared size {self.expected_size}")
            self._digest.update(chunk)
            self._out.write(chunk)

    def finish(self) -> StagedBlob:
        with self._lock:
            out = self._out
            if out is None:
                raise InvalidArgument("the upload was already finished or discarded")
            try:
                out.flush()  # the fsync follows on the staged blob's own thread
                if self._size != self.expected_size:
                    raise InvalidArgument(
                        f"received {self._size} bytes, the header declared {self.expected_size}"
                    )
                if self._digest.hexdigest() != self.sha256:
                    raise IntegrityError("received bytes do not match the declared sha256")
            except BaseException:
                self._discard()
                raise
            self._out = None  # the staged blob closes it once synced
            return StagedBlob(self._store, self.path, self.sha256, self._size, out)

    def discard(self) -> None:
        with self._lock:
            if self._out is not None:
                self._discard()

    def _discard(self) -> None:  # lock held
        if self._out is not None:
            self._out.close()
            self._out = None
        self.path.unlink(missing_ok=True)


class BlobStore(Protocol):
    def writer(self, *, expected_sha256: str, expected_size: int, max_size: int) -> BlobWriter: ...
    def open(self, sha256: str) -> BinaryIO: ...
    def size(self, sha256: str) -> int: ...
    def exists(self, sha256: str) -> bool: ...
    def delete(self, sha256: str) -> None: ...
    def digests(self) -> set[str]: ...
    def close(self) -> None: ...


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        locks, temps = _locks_dir(root), root / "tmp"
        locks.mkdir(parents=True, exist_ok=True)
        temps.mkdir(parents=True, exist_ok=True)
        for leftover in temps.iterdir():  # files of the single-process layout: nobody owns them
            if not leftover.is_dir():
                leftover.unlink(missing_ok=True)
        for lock in locks.iterdir():  # garbage of uploads whose process died
            _remove_if_abandoned(lock, temps / lock.name)
        name = uuid.uuid4().hex
        self._lock_file = (locks / name).open("wb")
        fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._tmp = temps / name
        self._tmp.mkdir()

    def close(self) -> None:
        """Remove this store's temp folder and lock (a store is also cleaned up after a crash)."""
        shutil.rmtree(self._tmp, ignore_errors=True)
        (_locks_dir(self.root) / self._tmp.name).unlink(missing_ok=True)
        self._lock_file.close()

    def _path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not set(sha256) <= _HEX:
            raise InvalidArgument(f"not a sha256 hex digest: {sha256[:80]!r}")
        return self.root / sha256[:2] / sha256[2:]

    def writer(self, *, expected_sha256: str, expected_size: int, max_size: int) -> BlobWriter:
        """Receive a blob of `expected_size` bytes (at most `max_size`) hashing to `expected_sha256`."""
        if expected_size > max_size:
            raise ResourceExhausted(f"declared size {expected_size} exceeds the limit of {max_size} bytes")
        self._path(expected_sha256)  # validates the digest's form
        return BlobWriter(self, expected_sha256, expected_size)

    def _commit(self, staged: StagedBlob) -> None:
        final = self._path(staged.sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.path, final)
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def open(self, sha256: str) -> BinaryIO:
        try:
            return self._path(sha256).open("rb")
        except FileNotFoundError:
            raise NotFound(f"blob {sha256} is missing from the store") from None

    def size(self, sha256: str) -> int:
        try:
            return self._path(sha256).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {sha256} is missing from the store") from None

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def delete(self, sha256: str) -> None:
        self._path(sha256).unlink(missing_ok=True)

    def digests(self) -> set[str]:
        """The sha256 of every committed blob."""
        found = (p.parent.name + p.name for p in self.root.glob("??/*") if p.is_file())
        return {d for d in found if len(d) == 64 and set(d) <= _HEX}


def _locks_dir(root: Path) -> Path:
    return root.with_name(root.name + ".locks")


def _remove_if_abandoned(lock: Path, temp: Path) -> None:
    """Remove `temp` and `lock` if no live process holds the lock."""
    try:
        handle = lock.open("rb")
    except FileNotFoundError:  # its owner closed meanwhile
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # a live replica's
        shutil.rmtree(temp, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
