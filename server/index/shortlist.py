"""A faiss structure for the shortlist, the exact ranking on top of it: what the `hnsw` and `ivf`
indexes share (each names its structure and how wide a query searches it).

Exact specs (sigma_l = 0, what the reference market publishes) go into the structure: for them
||s - mu_l||^2 = d_l + sigma^2 D, so its nearest rows are those with the smallest debiased
distance. Its shortlist is scored by the code the exact index uses (`ranked.Candidates`:
float64 distances, the RANK_Z bound, scores, mixtures), so every returned distance, score and
bound equals the exact index's. The bound is increasing in d_l, so rows past the shortlist's
last distance cannot beat a bound below that; when they could, the shortlist grows. What is
approximate is only whether the structure finds the nearest rows (recall: docs/performance.md).

DP-noisy specs are scanned exactly (`ExactIndex`) beside the structure. A graph or a clustering
cannot hold them: a noisy spec is far from every row (its own noise, ||z_l||^2 ~ sigma_l^2 D)
while its debiased distance to a query can be the smallest. The two answers merge by the bound,
ties by the order of adding across both.

faiss keeps the one copy of each row's vector (shortlist rows are read back from it). Removed
learnwares stay in the structure, never returned, until a start finds a quarter of its rows
removed and rebuilds. Everything persists in the market's data dir (on `close`, and after each
build) with a header naming the profile, the structure and the format, and a watermark of the
catalogue (the ids and package digests indexed); a start that finds any of them different
rebuilds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import sys
import threading
from array import array
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from lmdock.common.market_types import LearnwareInfo, SearchResult
from lmdock.common.ranking import rank_bound
from lmdock.common.spec import Spec
from lmdock.server.index import IndexEntry, Listing
from lmdock.server.index.backends import IndexSource
from lmdock.server.index.exact import ExactIndex
from lmdock.server.index.ranked import Candidates, rows_needed

__all__ = ["FORMAT", "ShortlistIndex", "key_hash", "watermark"]

log = logging.getLogger("lmdock.market.index")

#: Version of the files written; another version is rebuilt, never read.
FORMAT = 1
_F32_L2_ERROR = 2.0 * float(np.finfo(np.float32).eps)  # of faiss' float32 distances, per dimension
_MASK = (1 << 64) - 1


def key_hash(learnware_id: str, package_sha256: str) -> int:
    digest = hashlib.blake2b(f"{learnware_id}\0{package_sha256}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def watermark(keys: Iterable[tuple[str, str]]) -> tuple[int, int]:
    """(count, sum of key hashes mod 2^64) of a set of (id, package sha256): order-free, so the
    index keeps it up to date from its own rows and a start recomputes it from the catalogue."""
    count = total = 0
    for learnware_id, sha256 in keys:
        count += 1
        total = (total + key_hash(learnware_id, sha256)) & _MASK
    return count, total


class _ReadWriteLock:
    """Searches run together; an update waits for them and holds new ones back until it is done."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = self._writers_waiting = 0
        self._writing = False

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class ShortlistIndex:
    """A faiss shortlist + exact re-ranking; `open` loads or (re)builds the persisted index.

    A subclass names its structure (`NAME`, `_structure_header`), makes it (`_new_structure`,
    `_build`, `_add_rows`), says how wide a query searches it (`_search_parameters`) and when a
    persisted one is stale (`_stale`).
    """

    NAME = ""

    def __init__(self, dim: int, *, profile_id: str = "", directory: Path | None = None) -> None:
        self.dim, self.profile_id, self.directory = dim, profile_id, directory
        self._structure: Any = self._new_structure()
        self._rw = _ReadWriteLock()
        self._next_seq = 0  # position in the order of adding, over both parts
        # the structure's rows, by faiss position, as columns: a Listing is made only for the rows a
        # search returns, and the numbers are typed arrays (at 1M: 190 MB less than a tuple, a
        # domain string and three Python ints per row, docs/performance.md)
        self._ids: list[str] = []
        self._names: list[str] = []
        self._domains: list[str] = []
        self._hashes = array("Q")
        self._seqs = array("q")
        self._positions: dict[str, int] = {}
        self._dead: set[int] = set()
        self._selector: tuple[Any, ...] = ()  # faiss objects excluding the dead, kept alive together
        # the scanned (noisy) rows: (seq, key hash) by id
        self._scanned = ExactIndex()
        self._scanned_keys: dict[str, tuple[int, int]] = {}
        self._saved = False  # the files hold exactly this index

    # building and persistence

    # what a structure says about itself

    def _new_structure(self) -> Any:
        raise NotImplementedError

    def _structure_header(self) -> dict[str, Any]:
        """Its parameters: a persisted structure with others is rebuilt."""
        raise NotImplementedError

    def _search_parameters(self, query: Spec, size: int, live: int) -> Any:
        """faiss search parameters for a shortlist of `size` rows of `live` (no selector)."""
        raise NotImplementedError

    def _build(self, source: IndexSource) -> None:
        """Fill this empty index from the catalogue."""
        self.extend(source.entries())

    def _add_rows(self, rows: np.ndarray) -> None:
        self._structure.add(rows)

    def _structure_meta(self) -> dict[str, Any]:
        """What `_stale` reads back from a persisted index."""
        return {}

    def _stale(self, meta: dict[str, Any], live: int) -> str:
        """Why a loaded structure must be rebuilt ("" when it need not)."""
        return ""

    def _loaded(self, meta: dict[str, Any]) -> None:
        """Set up a structure just read from disk (`meta`: what `_structure_meta` wrote)."""

    # building and persistence

    @classmethod
    def open(cls, source: IndexSource, *, directory: Path | None) -> Any:
        """The persisted index if it still matches the catalogue, else one built from it (and saved)."""
        profile = source.profile
        index = cls(profile.feature_dim, profile_id=profile.profile_id, directory=directory)
        reason = index._load(source) if directory is not None else "no data dir"
        if reason:
            log.info("building the %s index (%s)", cls.NAME.upper(), reason)
            index = cls(profile.feature_dim, profile_id=profile.profile_id, directory=directory)
            index._build(source)
            index.save()
        return index

    def _paths(self) -> tuple[Path, Path, Path]:
        assert self.directory is not None
        return (
            self.directory / f"{self.NAME}.faiss",
            self.directory / f"{self.NAME}-scanned.npy",
            self.directory / f"{self.NAME}.json",
        )

    def _header(self) -> dict[str, Any]:
        return {"format": FORMAT, "profile_id": self.profile_id, "dim": self.dim, **self._structure_header()}

    def _load(self, source: IndexSource) -> str:
        """Load the persisted index into this empty one; why not ("" when loaded)."""
        structure_path, scanned_path, meta_path = self._paths()
        if not meta_path.is_file():
            return f"none persisted in {self.directory}"
        try:
            meta = json.loads(meta_path.read_text())
            if not isinstance(meta, dict) or meta.get("header") != self._header():
                return f"{meta_path.name} is for another profile or format"
            graph, scanned = meta["graph"], meta["scanned"]  # "graph": the structure's rows
            if 4 * len(graph["dead"]) > len(graph["ids"]) > 0:
                return "a quarter of its rows were removed"
            if stale := self._stale(meta.get("structure", {}), len(graph["ids"]) - len(graph["dead"])):
                return stale
            stored = (int(meta["live"]), int(meta["watermark"]))
            hashes, seqs = array("Q", graph["hashes"]), array("q", graph["seqs"])
        except (OSError, ValueError, KeyError, TypeError, OverflowError) as exc:
            return f"unreadable {meta_path.name}: {exc}"
        if watermark(source.keys()) != stored:
            return "the catalogue changed since it was saved"
        try:
            structure = faiss.read_index(str(structure_path))
            scanned_rows = np.load(scanned_path, allow_pickle=False)
        except (OSError, ValueError, RuntimeError) as exc:  # faiss reports a damaged file as RuntimeError
            return f"unreadable {structure_path.name} or {scanned_path.name}: {exc}"
        rows_listed = {len(graph[c]) for c in ("ids", "names", "domains")} | {len(hashes), len(seqs)}
        if rows_listed != {structure.ntotal} or structure.d != self.dim:
            return f"{structure_path.name} does not match {meta_path.name}"
        if scanned_rows.shape != (len(scanned["ids"]), self.dim):
            return f"{scanned_path.name} does not match {meta_path.name}"
        self._structure, self._next_seq = structure, int(meta["next_seq"])
        self._ids, self._names = graph["ids"], graph["names"]
        self._domains = [sys.intern(d) for d in graph["domains"]]  # few distinct: one string each
        self._hashes, self._seqs, self._dead = hashes, seqs, set(graph["dead"])
        self._positions = {x: i for i, x in enumerate(self._ids) if i not in self._dead}
        self._loaded(meta.get("structure", {}))
        self._select_live()
        entries = zip(_listings(scanned), scanned_rows, scanned["sigmas"], strict=True)
        self._scanned.extend(IndexEntry(listing, values, sigma, "") for listing, values, sigma in entries)
        self._scanned_keys = {
            x.learnware_id: (seq, h)
            for x, seq, h in zip(_listings(scanned), scanned["seqs"], scanned["hashes"], strict=True)
        }
        log.info("loaded the %s index of %d learnwares from %s", self.NAME.upper(), len(self), meta_path)
        self._saved = True
        return ""

    def save(self) -> None:
        """Write the files atomically (a crash leaves the old set, or no header: a rebuild);
        nothing when they already hold this index."""
        if self.directory is None or self._saved:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        structure_path, scanned_path, meta_path = self._paths()
        with self._rw.writing():
            listings, rows, sigmas = self._scanned.live()
            rows = rows.reshape(len(listings), self.dim)  # (0, 0) while it never held a row
            keys = [self._scanned_keys[x.learnware_id] for x in listings]
            live_hashes = [self._hashes[i] for i in self._positions.values()] + [h for _, h in keys]
            meta = {
                "header": self._header(),
                "live": len(live_hashes),
                "watermark": str(sum(live_hashes) & _MASK),
                "next_seq": self._next_seq,
                "structure": self._structure_meta(),
                "graph": {
                    "ids": self._ids,
                    "names": self._names,
                    "domains": self._domains,
                    "hashes": self._hashes.tolist(),
                    "seqs": self._seqs.tolist(),
                    "dead": sorted(self._dead),
                },
                "scanned": {
                    **_columns(listings),
                    "sigmas": sigmas.tolist(),
                    "seqs": [seq for seq, _ in keys],
                    "hashes": [h for _, h in keys],
                },
            }
            meta_path.unlink(missing_ok=True)  # no header names files half replaced
            _write_atomically(structure_path, lambda tmp: faiss.write_index(self._structure, str(tmp)))
            _write_atomically(scanned_path, lambda tmp: tmp.write_bytes(_npy_bytes(rows)))
            text = json.dumps(meta)
            _write_atomically(meta_path, lambda tmp: tmp.write_text(text))
            self._saved = True

    def close(self) -> None:
        self.save()

    # updates

    def __len__(self) -> int:
        return len(self._positions) + len(self._scanned)

    def add(self, lw: LearnwareInfo) -> None:
        self.extend([IndexEntry.of(lw)])

    def extend(self, entries: Iterable[IndexEntry], *, chunk: int = 8192) -> None:
        batch: list[IndexEntry] = []
        for entry in entries:
            batch.append(entry)
            if len(batch) == chunk:
                self._append(batch)
                batch = []
        if batch:
            self._append(batch)

    def _append(self, batch: list[IndexEntry]) -> None:
        exact = [e for e in batch if e.sigma == 0]
        rows = np.stack([e.values for e in exact]).astype(np.float32) if exact else None
        with self._rw.writing():
            for entry in batch:
                self._forget(entry.listing.learnware_id)  # an add of a listed id replaces it
                if entry.sigma > 0:
                    key = key_hash(entry.listing.learnware_id, entry.package_sha256)
                    self._scanned_keys[entry.listing.learnware_id] = (self._next_seq, key)
                    self._scanned.extend([entry])
                else:
                    listing = entry.listing
                    self._positions[listing.learnware_id] = len(self._ids)
                    self._ids.append(listing.learnware_id)
                    self._names.append(listing.name)
                    self._domains.append(listing.domain)
                    self._hashes.append(key_hash(entry.listing.learnware_id, entry.package_sha256))
                    self._seqs.append(self._next_seq)
                self._next_seq += 1
            if rows is not None:
                self._add_rows(rows)
            self._saved = False

    def remove(self, learnware_id: str) -> None:
        with self._rw.writing():
            self._forget(learnware_id)

    def _forget(self, learnware_id: str) -> None:
        """Drop a learnware from whichever part holds it (write lock held)."""
        position = self._positions.pop(learnware_id, None)
        if position is not None:
            self._dead.add(position)
            self._select_live()
            self._saved = False
        elif self._scanned_keys.pop(learnware_id, None) is not None:
            self._scanned.remove(learnware_id)
            self._saved = False

    def _select_live(self) -> None:
        if not self._dead:
            self._selector = ()
            return
        dead = faiss.IDSelectorBatch(np.fromiter(self._dead, np.int64, len(self._dead)))
        self._selector = (faiss.IDSelectorNot(dead), dead)

    # search

    def search(self, query: Spec, *, top_k: int, mixture: bool = False) -> SearchResult:
        want = rows_needed(top_k, mixture)
        with self._rw.reading():
            found = self._shortlist(query, want)
            scanned = self._scanned.candidates(query, want)
            if scanned is not None:
                seqs = np.array([self._scanned_keys[x.learnware_id][0] for x in scanned.listings], np.int64)
                scanned = dataclasses.replace(scanned, order=seqs)
                found = scanned if found is None else found.merged(scanned)
        if found is None:
            return SearchResult(matches=())
        return found.result(query, top_k=top_k, mixture=mixture)

    def _shortlist(self, query: Spec, wanted: int) -> Candidates | None:
        """At least the structure's first `wanted` rows by the bound, as far as it finds them;
        `order` holds their positions in the order of adding (read lock held)."""
        live = len(self._positions)
        want = min(wanted, live)
        if want <= 0:
            return None
        vector = np.asarray(query.values, np.float32)[None]
        size = min(live, 2 * want + 16)
        while True:
            params = self._search_parameters(query, size, live)
            if self._selector:
                params.sel = self._selector[0]
            sq_distances, labels = self._structure.search(vector, size, params=params)
            returned = labels[0] >= 0
            positions = labels[0][returned]
            rows = self._structure.reconstruct_batch(positions)
            found = Candidates.score(
                query,
                rows,
                np.zeros(len(positions)),
                np.sum(rows.astype(np.float64) ** 2, axis=1),
                [Listing(self._ids[i], self._names[i], self._domains[i]) for i in positions.tolist()],
                np.array([self._seqs[i] for i in positions.tolist()], np.int64),
            )
            if len(positions) >= live:
                return found
            if len(positions) >= want:
                # Rows the structure ranks past the last have ||s - mu_l||^2 at least this (less
                # float32 rounding), so d_l at least `beyond` and a bound at least rank_bound(beyond).
                last = float(sq_distances[0][returned][-1])
                beyond = last * (1.0 - _F32_L2_ERROR * self.dim) - query.privacy.sigma**2 * self.dim
                floor = float(rank_bound(np.array([beyond]), query.privacy.sigma, np.zeros(1), self.dim)[0])
                if floor > found.estimates.bound[want - 1]:
                    return found
            if size >= live:  # the structure found fewer rows than it holds live: its best
                return found
            size = min(live, 4 * size)


def _columns(listings: list[Listing]) -> dict[str, list[str]]:
    return {
        "ids": [x.learnware_id for x in listings],
        "names": [x.name for x in listings],
        "domains": [x.domain for x in listings],
    }


def _listings(columns: dict[str, Any]) -> list[Listing]:
    return [Listing(*x) for x in zip(columns["ids"], columns["names"], columns["domains"], strict=True)]


def _npy_bytes(rows: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, rows, allow_pickle=False)
    return buffer.getvalue()


def _write_atomically(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
