"""Content-addressed blob store on local disk.

A blob lives at ROOT/ab/cdef... (its sha256). Writes stream into ROOT/tmp/, are fsync'd, checked
against the expected hash and size, then renamed into place, so a reader never sees a partial
blob and a crash leaves only temp files, which `LocalBlobStore()` removes on start.
The `BlobStore` protocol is what the market uses, leaving room for an S3-compatible backend.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from lmdock.common.errors import IntegrityError, InvalidArgument, NotFound, ResourceExhausted

__all__ = ["BlobStore", "LocalBlobStore", "StagedBlob"]

_HEX = set("0123456789abcdef")


class StagedBlob:
    """A fully written, verified blob in temp storage: `commit()` it or `discard()` it."""

    def __init__(self, store: LocalBlobStore, path: Path, sha256: str, size: int) -> None:
        self._store, self.path, self.sha256, self.size = store, path, sha256, size

    def commit(self) -> None:
        self._store._commit(self)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class BlobStore(Protocol):
    def stage(
        self, chunks: Iterable[bytes], *, expected_sha256: str, expected_size: int, max_size: int
    ) -> StagedBlob: ...
    def open(self, sha256: str) -> BinaryIO: ...
    def size(self, sha256: str) -> int: ...
    def exists(self, sha256: str) -> bool: ...
    def delete(self, sha256: str) -> None: ...
    def read_range(self, sha256: str, offset: int, chunk_size: int) -> Iterator[bytes]: ...
    def temp_dir(self) -> Path: ...
    def digests(self) -> set[str]: ...


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():  # garbage of uploads that never finished
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)

    def _path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not set(sha256) <= _HEX:
            raise InvalidArgument(f"not a sha256 hex digest: {sha256[:80]!r}")
        return self.root / sha256[:2] / sha256[2:]

    def temp_dir(self) -> Path:
        """A fresh folder under the store's temp area (cleaned on start if left behind)."""
        return Path(tempfile.mkdtemp(dir=self._tmp))

    def stage(
        self, chunks: Iterable[bytes], *, expected_sha256: str, expected_size: int, max_size: int
    ) -> StagedBlob:
        """Write `chunks` to a temp file, checking size and sha256; nothing remains on error."""
        if expected_size > max_size:
            raise ResourceExhausted(f"declared size {expected_size} exceeds the limit of {max_size} bytes")
        self._path(expected_sha256)  # validates the digest's form
        fd, name = tempfile.mkstemp(dir=self._tmp, suffix=".part")
        path = Path(name)
        try:
            digest, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > expected_size:
                        raise InvalidArgument(f"more bytes than the declared size {expected_size}")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if size != expected_size:
                raise InvalidArgument(f"received {size} bytes, the header declared {expected_size}")
            if digest.hexdigest() != expected_sha256:
                raise IntegrityError("received bytes do not match the declared sha256")
            return StagedBlob(self, path, expected_sha256, size)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

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

    def read_range(self, sha256: str, offset: int, chunk_size: int) -> Iterator[bytes]:
        with self.open(sha256) as fh:
            fh.seek(offset)
            while block := fh.read(chunk_size):
                yield block
