"""The market as plain Python: what the gRPC servicer calls, with no proto classes in sight."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lmdock.common.errors import AlreadyExists, InvalidArgument
from lmdock.common.package import PackageLimits, unpack_package
from lmdock.common.profile import SpecProfile
from lmdock.common.records import LearnwareInfo, PackageHeader, SearchResult
from lmdock.common.spec import Spec
from lmdock.server.blobs import LocalBlobStore
from lmdock.server.catalogue import Catalogue, Page
from lmdock.server.checks import check_package
from lmdock.server.index import SpecIndex

__all__ = ["Market", "MarketLimits"]


@dataclass(frozen=True)
class MarketLimits:
    max_package_bytes: int = 2 * 1024**3
    chunk_bytes: int = 1024 * 1024
    default_top_k: int = 5
    max_top_k: int = 100
    default_page_size: int = 50
    max_page_size: int = 500


class Market:
    def __init__(
        self,
        *,
        profile: SpecProfile,
        catalogue: Catalogue,
        blobs: LocalBlobStore,
        limits: MarketLimits = MarketLimits(),
    ) -> None:
        self.profile = profile
        self.catalogue = catalogue
        self.blobs = blobs
        self.limits = limits
        self.index = SpecIndex(catalogue.iter_all(profile_id=profile.profile_id))

    @classmethod
    def open(
        cls, data_dir: Path, *, profile: SpecProfile, db_url: str = "", limits: MarketLimits = MarketLimits()
    ) -> Market:
        """A market storing its catalogue in `db_url` (default: SQLite in data_dir) and blobs on disk."""
        data_dir.mkdir(parents=True, exist_ok=True)
        catalogue = Catalogue(db_url or f"sqlite:///{data_dir / 'catalogue.sqlite'}")
        return cls(
            profile=profile, catalogue=catalogue, blobs=LocalBlobStore(data_dir / "blobs"), limits=limits
        )

    def close(self) -> None:
        self.catalogue.close()

    def search(self, spec: Spec, *, top_k: int = 0) -> SearchResult:
        spec.check_against(self.profile)
        if top_k < 0 or top_k > self.limits.max_top_k:
            raise InvalidArgument(f"top_k must be in 0..{self.limits.max_top_k}")
        return self.index.search(spec, top_k=top_k or self.limits.default_top_k)

    def get(self, learnware_id: str) -> LearnwareInfo:
        return self.catalogue.get(learnware_id)

    def list(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        domain: str = "",
        tag: str = "",
        publisher: str = "",
    ) -> Page:
        if page_size < 0 or page_size > self.limits.max_page_size:
            raise InvalidArgument(f"page_size must be in 0..{self.limits.max_page_size}")
        return self.catalogue.list(
            page_size=page_size or self.limits.default_page_size,
            page_token=page_token,
            domain=domain,
            tag=tag,
            publisher=publisher,
        )

    def download(self, learnware_id: str, *, offset: int = 0) -> tuple[PackageHeader, Iterator[bytes]]:
        """The package's header and its bytes from `offset` on, in chunks."""
        lw = self.catalogue.get(learnware_id)
        if offset < 0 or offset > lw.package_size:
            raise InvalidArgument(f"offset {offset} is outside the package (size {lw.package_size})")
        header = PackageHeader(learnware_id=lw.id, sha256=lw.package_sha256, size=lw.package_size)
        return header, self.blobs.read_range(lw.package_sha256, offset, self.limits.chunk_bytes)

    def upload(self, *, sha256: str, size: int, chunks: Iterable[bytes]) -> LearnwareInfo:
        """Accept a package only if every check passes; a rejected upload leaves nothing behind."""
        if self.catalogue.has_package(sha256):
            raise AlreadyExists(f"a package with sha256 {sha256} is already published")
        staged = self.blobs.stage(
            chunks, expected_sha256=sha256, expected_size=size, max_size=self.limits.max_package_bytes
        )
        workdir = self.blobs.temp_dir()
        try:
            limits = PackageLimits(max_package_bytes=self.limits.max_package_bytes)
            manifest, _signature = unpack_package(staged.path, workdir / "pkg", limits=limits)
            check_package(manifest, workdir / "pkg", self.profile)
            info = LearnwareInfo.from_manifest(
                manifest,
                sha256=sha256,
                size=size,
                created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            )
            staged.commit()
            try:
                self.catalogue.add(info)
            except BaseException:
                self.blobs.delete(sha256)
                raise
        finally:
            staged.discard()
            shutil.rmtree(workdir, ignore_errors=True)
        self.index.add(info)
        return info
