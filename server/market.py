"""The market as plain Python: what the gRPC servicer calls, with no proto classes in sight.

Mutating calls take the caller's `Identity` (attached by the auth interceptor) and check
ownership: publishers manage only their own learnwares and signing keys, admins any.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lmdock.common.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from lmdock.common.market_types import LearnwareInfo, PackageHeader, SearchResult, SigningKeyInfo
from lmdock.common.package import TASK_KINDS, Manifest, PackageLimits
from lmdock.common.package_reader import read_package
from lmdock.common.profile import SpecProfile
from lmdock.common.signing import Signature, verify_possession
from lmdock.common.spec import ComparedProfile, Spec
from lmdock.common.task_vector import TaskVectorProfile
from lmdock.common.task_vector_search import TaskVectorIndexing
from lmdock.server.apikeys import KEY_CACHE_TTL_S, ApiKeys
from lmdock.server.base_models import BaseModels
from lmdock.server.blobs import BlobWriter, LocalBlobStore, StagedBlob
from lmdock.server.catalogue import Catalogue, Page
from lmdock.server.checks import check_package, check_task_vector
from lmdock.server.db import Database, utc_now
from lmdock.server.identity import Identity
from lmdock.server.index import SpecIndex
from lmdock.server.index.backends import IndexFactory, IndexSource, exact_index, index_factory
from lmdock.server.index.by_profile import ProfileIndexes, entry_as_indexed
from lmdock.server.replica import RETENTION_S, IndexFollower
from lmdock.server.signing_keys import SigningKeys

__all__ = ["Market", "MarketLimits"]

log = logging.getLogger("lmdock.market")

#: Seconds between polls of the change log when no notification came (see `replica`).
CHANGE_POLL_S = 2.0


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
        db: Database,
        blobs: LocalBlobStore,
        limits: MarketLimits = MarketLimits(),
        base_models: BaseModels | None = None,
        index: IndexFactory = exact_index,
        change_poll_s: float = CHANGE_POLL_S,
        change_retention_s: float = RETENTION_S,
        api_key_ttl_s: float = KEY_CACHE_TTL_S,
        added_profiles: Sequence[SpecProfile] = (),
        task_vector_profiles: Sequence[TaskVectorProfile] = (),
    ) -> None:
        """`index` builds each profile's search index from the catalogue's learnwares under it
        (`server/index/`). `profile` is the market's first; `added_profiles` (oldest first) are
        served beside it, each with its own index (docs/search.md, *Profiles side by side*);
        so are `task_vector_profiles` (oldest first), indexing the packages' task vectors.

        Any number of markets may share one database and blob store: each keeps its indexes in
        step with the catalogue's change log (`replica.IndexFollower`)."""
        self.profile = profile
        #: Every profile served, newest first: what GetSpecProfile lists.
        self.profiles = tuple(reversed((profile, *added_profiles)))
        #: Each served profile under every id it answers to (its v2 id and its v1 alias).
        self._by_id = {i: p for p in self.profiles for i in p.ids}
        #: Every task-vector profile served, newest first.
        self.task_vector_profiles = tuple(reversed(task_vector_profiles))
        self._task_vectors = {p.profile_id: TaskVectorIndexing(p) for p in self.task_vector_profiles}
        #: Every profile with an index: the kernel-mean ones, then the task-vector ones.
        self._indexed: tuple[ComparedProfile, ...] = (*self.profiles, *self._task_vectors.values())
        if len({p.profile_id for p in self._indexed}) != len(self._indexed):
            raise InvalidArgument("a market serves each profile once")
        self.db = db
        self.catalogue = Catalogue(db)
        self.api_keys = ApiKeys(db, ttl_s=api_key_ttl_s)
        self.signing_keys = SigningKeys(db)
        self.blobs = blobs
        self.limits = limits
        self.base_models = base_models or BaseModels()
        self._index_factory = index
        self.follower = IndexFollower(
            self.catalogue,
            self._build_index,
            accept=lambda lw: self.index.searchable(lw),
            poll_s=change_poll_s,
            retention_s=change_retention_s,
        )
        self.follower.catch_up()
        self.follower.start()
        # Blobs are shared by content (identical uploads stage the same sha256) and by every
        # market on the store; one is deleted only under the catalogue's lock, when no row names
        # it (`Catalogue.drop_unreferenced`). A market killed between committing a blob and its
        # row (or a row's removal and its blob's) leaves bytes nothing lists: drop them.
        for orphan in self.catalogue.unlisted(self.blobs.digests()):
            self.catalogue.drop_unreferenced(orphan, self.blobs.delete)

    @property
    def index(self) -> ProfileIndexes:
        """The search indexes, one per served profile (new ones after the follower rebuilt them)."""
        index = self.follower.index
        assert isinstance(index, ProfileIndexes)
        return index

    def _build_index(self) -> tuple[SpecIndex, int, int]:
        watermark = self.catalogue.last_change()  # before the rows: nothing after it is missed
        index = ProfileIndexes({p: self._index_factory(self._source(p)) for p in self._indexed})
        return index, watermark, self.catalogue.last_change()

    def _source(self, profile: ComparedProfile) -> IndexSource:
        ids, max_sigma = profile.ids, profile.max_sigma
        vectors = isinstance(profile, TaskVectorIndexing)  # the task vectors' rows, not the kernel means'
        return IndexSource(
            profile=profile,
            entries=lambda: (
                entry_as_indexed(profile, e)
                for e in self.catalogue.iter_index_entries(
                    profile_ids=ids, max_sigma=max_sigma, task_vectors=vectors
                )
            ),
            keys=lambda: self.catalogue.iter_index_keys(
                profile_ids=ids, max_sigma=max_sigma, task_vectors=vectors
            ),
            count=lambda: self.catalogue.count(profile_ids=ids, task_vectors=vectors),
        )

    def profile_of(self, spec: Spec) -> SpecProfile:
        """The served profile `spec` was computed under (by either of its ids); InvalidArgument
        for any other."""
        profile = self._by_id.get(spec.profile_id)
        if profile is None:
            vectors = (
                f" (task vectors: {', '.join(repr(i) for i in self._task_vectors)})"
                if self._task_vectors
                else ""
            )
            raise InvalidArgument(
                f"spec was computed under profile {spec.profile_id!r}, the market serves "
                f"{', '.join(repr(p.profile_id) for p in self.profiles)}{vectors}; fetch the market's "
                "profiles and recompute"
            )
        return profile

    @classmethod
    def open(
        cls,
        data_dir: Path,
        *,
        profile: SpecProfile,
        db_url: str = "",
        limits: MarketLimits = MarketLimits(),
        base_models: BaseModels | None = None,
        change_poll_s: float = CHANGE_POLL_S,
        change_retention_s: float = RETENTION_S,
        api_key_ttl_s: float = KEY_CACHE_TTL_S,
        index: str = "exact",
        added_profiles: Sequence[SpecProfile] = (),
        task_vector_profiles: Sequence[TaskVectorProfile] = (),
    ) -> Market:
        """A market storing its catalogue in `db_url` (default: SQLite in data_dir) and blobs on
        disk, searching with the `index` backend (`server/index/backends.py`)."""
        factory = index_factory(index, data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(db_url or default_db_url(data_dir))
        return cls(
            profile=profile,
            db=db,
            blobs=LocalBlobStore(data_dir / "blobs"),
            limits=limits,
            base_models=base_models,
            change_poll_s=change_poll_s,
            change_retention_s=change_retention_s,
            api_key_ttl_s=api_key_ttl_s,
            index=factory,
            added_profiles=added_profiles,
            task_vector_profiles=task_vector_profiles,
        )

    def close(self) -> None:
        self.follower.stop()
        self.index.close()
        self.blobs.close()
        self.db.close()

    # consumers

    def search(self, spec: Spec, *, top_k: int = 0, mixture: bool = False) -> SearchResult:
        """The learnwares nearest `spec`: under a kernel-mean profile by their kernel means, under
        a task-vector profile by their task vectors (cosine)."""
        indexing = self._task_vectors.get(spec.profile_id)
        spec.check_against(indexing if indexing is not None else self.profile_of(spec))
        if top_k < 0 or top_k > self.limits.max_top_k:
            raise InvalidArgument(f"top_k must be in 0..{self.limits.max_top_k}")
        return self.index.search(spec, top_k=top_k or self.limits.default_top_k, mixture=mixture)

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
        base_model: str = "",
        task_kind: str = "",
    ) -> Page:
        if page_size < 0 or page_size > self.limits.max_page_size:
            raise InvalidArgument(f"page_size must be in 0..{self.limits.max_page_size}")
        if task_kind and task_kind not in TASK_KINDS:  # "" lists every kind
            raise InvalidArgument(f"task_kind must be classification or generation, got {task_kind!r}")
        return self.catalogue.list(
            page_size=page_size or self.limits.default_page_size,
            page_token=page_token,
            domain=domain,
            tag=tag,
            publisher=publisher,
            base_model=base_model,
            task_kind=task_kind,
        )

    def download(self, learnware_id: str, *, offset: int = 0) -> tuple[PackageHeader, BinaryIO]:
        """The package's header and its bytes, open at `offset` (close the file when done)."""
        lw = self.catalogue.get(learnware_id)
        if offset < 0 or offset > lw.package_size:
            raise InvalidArgument(f"offset {offset} is outside the package (size {lw.package_size})")
        header = PackageHeader(learnware_id=lw.card.id, sha256=lw.package_sha256, size=lw.package_size)
        package = self.blobs.open(lw.package_sha256)
        package.seek(offset)
        return header, package

    def signing_key_list(self, publisher: str = "") -> builtins.list[SigningKeyInfo]:
        return self.signing_keys.list(publisher)

    # publishers

    def begin_upload(self, *, sha256: str, size: int) -> BlobWriter:
        """Receive a package's bytes as they arrive; then `publish` what `BlobWriter.finish` staged."""
        if self.catalogue.has_package(sha256):
            raise AlreadyExists(f"a package with sha256 {sha256} is already published")
        return self.blobs.writer(
            expected_sha256=sha256, expected_size=size, max_size=self.limits.max_package_bytes
        )

    def publish(self, caller: Identity, staged: StagedBlob) -> LearnwareInfo:
        """List a received package only if every check passes; a rejected one leaves nothing behind."""
        sha256, size = staged.sha256, staged.size
        try:
            limits = PackageLimits(max_package_bytes=self.limits.max_package_bytes)
            package = read_package(staged.path, limits=limits)  # checked in the staged blob: nothing unpacked
            manifest, signature = package.manifest, package.signature
            self._check_publisher(caller, manifest, signature)
            if self.catalogue.exists(manifest.card.id):
                raise AlreadyExists(f"a learnware with id {manifest.card.id!r} is already published")
            check_package(package, self.profile_of(manifest.spec), self.base_models)
            task_vector = check_task_vector(package, self._task_vectors)
            if caller.anonymous and not self.signing_keys.has_keys(manifest.card.publisher):
                # an open (local demo) market trusts a publisher's first key
                try:
                    self.signing_keys.register(
                        manifest.card.publisher, signature.public_key, registered_by=caller.principal
                    )
                except AlreadyExists:  # a concurrent upload registered it first: it must be this key
                    self.signing_keys.check_signer(manifest.card.publisher, signature)
            info = LearnwareInfo.from_manifest(
                manifest,
                sha256=sha256,
                size=size,
                created_at=utc_now(),
                signing_key_id=signature.key_id,
                task_vector=task_vector,
            )
            staged.durable()  # normally done by now (it overlapped the checks): not under the lock
            try:
                self.catalogue.add(info, store=staged.commit)  # the blob is committed under the lock
            except BaseException:
                self.catalogue.drop_unreferenced(sha256, self.blobs.delete)
                raise
        finally:
            staged.discard()
        self._catch_up()
        return info

    def _check_publisher(self, caller: Identity, manifest: Manifest, signature: Signature) -> None:
        """The caller may publish as the manifest's publisher, with a registered, unrevoked key."""
        publisher = manifest.card.publisher
        if caller.anonymous:
            if self.signing_keys.has_keys(publisher):
                self.signing_keys.check_signer(publisher, signature)
            return
        if not caller.may_manage(publisher):
            raise PermissionDenied(
                f"you publish as {caller.principal!r}; the manifest names publisher {publisher!r}"
            )
        self.signing_keys.check_signer(publisher, signature)

    def unpublish(self, caller: Identity, learnware_id: str) -> LearnwareInfo:
        lw = self.catalogue.get(learnware_id)
        if not caller.may_manage(lw.card.publisher):
            raise PermissionDenied(f"learnware {learnware_id!r} belongs to publisher {lw.card.publisher!r}")
        removed = self.catalogue.remove(learnware_id)
        self.catalogue.drop_unreferenced(removed.package_sha256, self.blobs.delete)
        self._catch_up()
        return removed

    def _catch_up(self) -> None:
        """Apply this write (and any before it) to the index now, so the caller reads it back."""
        try:
            self.follower.catch_up()
        except Exception as exc:  # committed all the same: the follower's next poll applies it
            log.warning("the index will learn of this change on the next poll: %s", exc)

    def register_signing_key(
        self, caller: Identity, public_key: str, *, proof: bytes, publisher: str = ""
    ) -> SigningKeyInfo:
        """Register `public_key` for `publisher` ("" = the caller) once `proof` shows the caller
        holds it: the key's signature over `registration_message(caller.principal, publisher,
        public_key)` (`lmdock.common.signing`). Binding the principal makes a proof useless to
        any other caller; without the private key no proof can be made, so nobody can claim a
        key they cannot sign with."""
        target = publisher or caller.principal
        if not caller.may_manage(target):
            raise PermissionDenied(f"{caller.principal!r} may not register signing keys for {target!r}")
        verify_possession(public_key, proof, principal=caller.principal, publisher=target)
        return self.signing_keys.register(target, public_key, registered_by=caller.principal)

    def revoke_signing_key(self, caller: Identity, key_id: str, *, publisher: str = "") -> SigningKeyInfo:
        """Revoke `publisher`'s key `key_id`; with no publisher, the one key with this id that the
        caller may manage. Another publisher's key is PERMISSION_DENIED, not NOT_FOUND: the keys
        are public (ListSigningKeys), so saying whose it is hides nothing."""
        if publisher and not caller.may_manage(publisher):
            raise PermissionDenied(f"{caller.principal!r} may not revoke signing keys of {publisher!r}")
        keys = [k for k in self.signing_keys.with_id(key_id) if k.publisher == publisher or not publisher]
        if not keys:
            raise NotFound(
                f"no signing key with id {key_id!r}" + (f" for {publisher!r}" if publisher else "")
            )
        mine = [k for k in keys if caller.may_manage(k.publisher)]
        if not mine:
            owners = ", ".join(repr(k.publisher) for k in keys)
            raise PermissionDenied(f"signing key {key_id} belongs to publisher {owners}")
        if len(mine) > 1:
            owners = ", ".join(repr(k.publisher) for k in mine)
            raise InvalidArgument(f"signing key {key_id} is registered for {owners}: name the publisher")
        return self.signing_keys.revoke(mine[0].publisher, key_id)


def default_db_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'catalogue.sqlite'}"
