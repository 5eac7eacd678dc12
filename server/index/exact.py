"""Exact search over the learnwares' kernel-mean specs, at about the cost of one float32 scan.

Distance: d_l = ||s - mu_l||^2 - (sigma^2 + sigma_l^2) D, the debiased squared distance between
the query spec s (noise sigma) and learnware l's spec mu_l (noise sigma_l, 0 when exact); see
`lmdock.common.spec`. Ranking: by d_l plus RANK_Z standard deviations of the noise that can
reorder it (`lmdock.common.ranking`); scores and mixtures as in `ranked`.

A search does one float32 matrix-vector product, ||mu_l||^2 - 2 <s, mu_l> + ||s||^2 with the
norms precomputed, and subtracts a rigorous bound of its rounding error (a float32 dot
product of D terms is off by at most D * eps * ||s|| * ||mu_l||), so each row gets a *lower*
bound of its ranking bound (the bound is increasing in d_l). `argpartition` takes the rows
with the smallest lower bounds; only those are scored exactly, in float64, by the same code
as before; if any row left out could still beat the last one needed, the shortlist grows.
So the answer is the one a full float64 scan and a stable sort give, bit for bit.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from lmdock.common.market_types import LearnwareInfo, SearchResult
from lmdock.common.ranking import rank_bound
from lmdock.common.spec import Spec
from lmdock.server.index import IndexEntry, Listing
from lmdock.server.index.ranked import Candidates, rows_needed

__all__ = ["ExactIndex", "LowerBounds"]

#: Error of a float32 dot product of D terms, per unit of ||s|| ||mu_l|| and per dimension,
#: with a factor 4 of margin over the textbook D * 2^-24.
_DOT_ERROR_PER_DIM = 2.0 * float(np.finfo(np.float32).eps)
#: Relative slack for the float64 arithmetic on both sides (the norms' expansion, the scan).
_F64_SLACK = 1e-9


class LowerBounds:
    """Lower bounds of every row's ranking bound from one float32 product (see the module doc)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def row_terms(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: ||mu_l||^2 (float64, summed as `distances` does), the norm less its slack,
        and the slope of the dot product's error bound in ||s||."""
        sq = np.sum(rows.astype(np.float64) ** 2, axis=1)
        low = sq * (1.0 - _F64_SLACK)
        slope = 2.0 * _DOT_ERROR_PER_DIM * self.dim * np.sqrt(sq)
        return sq, low, slope

    def keys(
        self, query: Spec, rows: np.ndarray, low: np.ndarray, slope: np.ndarray, sigmas: np.ndarray | None
    ) -> tuple[np.ndarray, float]:
        """(key per row, offset): with `sigmas` None (every row exact) the key is a lower bound of
        d_l less a constant `offset` (one increasing function maps it to the ranking bound for
        every row); otherwise it is the lower bound of the ranking bound itself and offset 0."""
        s = np.asarray(query.values, dtype=np.float32)
        s64 = s.astype(np.float64)
        ss = float(s64 @ s64)
        key = (rows @ s).astype(np.float64)
        key *= -2.0
        key += low
        key -= slope * np.sqrt(ss)
        offset = ss * (1.0 - _F64_SLACK) - _F64_SLACK - query.privacy.sigma**2 * self.dim
        if sigmas is None:
            return key, offset
        key += offset - sigmas**2 * self.dim
        return rank_bound(key, query.privacy.sigma, sigmas, self.dim), 0.0

    def bound(self, query: Spec, key: float, offset: float, exact_rows: bool) -> float:
        """The lower bound of the ranking bound that `key` stands for."""
        if not exact_rows or key == np.inf:
            return key
        return float(rank_bound(np.array([key + offset]), query.privacy.sigma, np.zeros(1), self.dim)[0])


@dataclass(frozen=True)
class _Snapshot:
    """What one search reads: rows [0, n) of the arrays, with `listings[i]` naming row i.

    The arrays and `listings` may run longer (later adds write past n), but rows below n never
    change while a snapshot holds them: adds write past them, removes copy `dead` (and a
    compaction builds new arrays).
    """

    n: int
    listings: list[Listing]
    rows: np.ndarray  # float32 (capacity, D)
    sigmas: np.ndarray  # float64
    sq_norms: np.ndarray  # float64: ||mu_l||^2
    low: np.ndarray  # float64: ||mu_l||^2 less its slack
    slope: np.ndarray  # float64: the dot product's error bound per unit of ||s||
    dead: np.ndarray  # bool: removed, not yet compacted away
    removed: int  # how many of rows [0, n) are dead
    noisy: int  # how many live rows have sigma > 0


class ExactIndex:
    """Every learnware bounded on every search; rows kept in arrays that grow by doubling.

    A removal marks its row dead (a search copies nothing); once dead rows are a quarter of
    all, the live ones are copied into fresh arrays, keeping their order.
    """

    def __init__(self, learnwares: Iterable[LearnwareInfo] = ()) -> None:
        self._lock = threading.Lock()
        self._positions: dict[str, int] = {}
        self._bounds: LowerBounds | None = None
        self._empty()
        self.extend(IndexEntry.of(lw) for lw in learnwares)

    @classmethod
    def from_entries(cls, entries: Iterable[IndexEntry], *, expected: int = 0) -> ExactIndex:
        """An index of streamed entries; `expected` (a count, if known) sizes the arrays once."""
        index = cls()
        index.extend(entries, expected=expected)
        return index

    def _empty(self) -> None:
        self._n = self._removed = self._noisy = 0
        self._listings: list[Listing] = []
        self._rows = np.zeros((0, 0), np.float32)
        self._sigmas = self._sq = self._low = self._slope = np.zeros(0, np.float64)
        self._dead = np.zeros(0, bool)
        self._publish()

    def _publish(self) -> None:
        self._snapshot = _Snapshot(
            self._n,
            self._listings,
            self._rows,
            self._sigmas,
            self._sq,
            self._low,
            self._slope,
            self._dead,
            self._removed,
            self._noisy,
        )

    def __len__(self) -> int:
        return self._n - self._removed

    def close(self) -> None:
        """Nothing to keep: the exact index is rebuilt from the catalogue at each start."""

    def add(self, lw: LearnwareInfo) -> None:
        self.extend([IndexEntry.of(lw)])

    def live(self) -> tuple[list[Listing], np.ndarray, np.ndarray]:
        """The live rows in order: listings, float32 vectors, sigmas (what a backend persists)."""
        with self._lock:
            snap = self._snapshot
        keep = np.flatnonzero(~snap.dead[: snap.n])
        return [snap.listings[int(i)] for i in keep], snap.rows[keep], snap.sigmas[keep]

    def extend(self, entries: Iterable[IndexEntry], *, expected: int = 0, chunk: int = 4096) -> None:
        """Add entries in order, in chunks (one lock, one snapshot and one norm pass per chunk)."""
        batch: list[IndexEntry] = []
        for entry in entries:
            batch.append(entry)
            if len(batch) == chunk:
                self._append(batch, expected)
                batch = []
        if batch:
            self._append(batch, expected)

    def _append(self, batch: list[IndexEntry], expected: int) -> None:
        with self._lock:
            n, k = self._n, len(batch)
            if self._bounds is None:
                self._bounds = LowerBounds(batch[0].values.shape[0])
            if n + k > len(self._rows):  # full: copy into twice the room (amortised O(1) per add)
                self._grow(max(2 * len(self._rows), n + k, expected, 8))
            rows = self._rows[n : n + k]
            rows[:] = np.stack([e.values for e in batch])
            self._sigmas[n : n + k] = [e.sigma for e in batch]
            sq, low, slope = self._bounds.row_terms(rows)
            self._sq[n : n + k], self._low[n : n + k], self._slope[n : n + k] = sq, low, slope
            replaced = [
                self._positions[e.listing.learnware_id]
                for e in batch
                if e.listing.learnware_id in self._positions
            ]
            if replaced:  # an add of a listed id replaces it
                self._mark_dead(replaced)
            for i, entry in enumerate(batch):
                self._positions[entry.listing.learnware_id] = n + i
            self._listings.extend(e.listing for e in batch)
            self._noisy += sum(1 for e in batch if e.sigma > 0)
            self._n = n + k
            self._publish()

    def _grow(self, capacity: int) -> None:
        n, dim = self._n, self._bounds.dim if self._bounds else 0
        rows = np.zeros((capacity, dim), np.float32)
        if n:
            rows[:n] = self._rows[:n]
        self._rows = rows
        self._sigmas, self._sq, self._low, self._slope = (
            _resized(a, capacity, n) for a in (self._sigmas, self._sq, self._low, self._slope)
        )
        self._dead = _resized(self._dead, capacity, n)

    def remove(self, learnware_id: str) -> None:
        with self._lock:
            i = self._positions.pop(learnware_id, None)
            if i is None:
                return
            self._mark_dead([i])
            if 4 * self._removed >= self._n:
                self._compact()
            self._publish()

    def _mark_dead(self, rows: list[int]) -> None:
        dead = self._dead.copy()  # a search may still read the old mask
        dead[rows] = True
        self._dead = dead
        self._removed += len(rows)
        self._noisy -= int(np.count_nonzero(self._sigmas[rows] > 0))

    def _compact(self) -> None:
        """Copy the live rows into fresh arrays (in order, so ties keep the order of adding)."""
        live = np.flatnonzero(~self._dead[: self._n])
        self._listings = [self._listings[int(i)] for i in live]
        self._rows = self._rows[live]
        self._sigmas, self._sq, self._low, self._slope = (
            a[live] for a in (self._sigmas, self._sq, self._low, self._slope)
        )
        self._dead = np.zeros(len(live), bool)
        self._n, self._removed = len(live), 0
        self._positions = {x.learnware_id: i for i, x in enumerate(self._listings)}

    def search(self, query: Spec, *, top_k: int, mixture: bool = False) -> SearchResult:
        found = self.candidates(query, rows_needed(top_k, mixture))
        if found is None:
            return SearchResult(matches=())
        return found.result(query, top_k=top_k, mixture=mixture)

    def candidates(self, query: Spec, wanted: int) -> Candidates | None:
        """At least the first `wanted` rows by the bound (all rows, when fewer), scored exactly
        and sorted; their `order` is their position among this index's rows. None when empty."""
        with self._lock:  # updates replace the snapshot whole; the search runs on the one it took
            snap = self._snapshot
        want = min(wanted, snap.n - snap.removed)
        if want <= 0 or self._bounds is None:
            return None
        n, bounds = snap.n, self._bounds
        exact_rows = snap.noisy == 0
        key, offset = bounds.keys(
            query,
            snap.rows[:n],
            snap.low[:n],
            snap.slope[:n],
            None if exact_rows else snap.sigmas[:n],
        )
        if snap.removed:
            key[snap.dead[:n]] = np.inf
        size = min(n, 2 * want + 16)
        while True:
            if size < n:
                part = np.argpartition(key, size)
                shortlist, next_key = part[:size], float(key[part[size]])
            else:
                shortlist, next_key = np.arange(n), np.inf
            if snap.removed:
                shortlist = shortlist[~snap.dead[shortlist]]
            found = Candidates.score(
                query,
                snap.rows[shortlist],
                snap.sigmas[shortlist],
                snap.sq_norms[shortlist],
                [snap.listings[int(i)] for i in shortlist],
                shortlist,
            )
            # Done when no row left out can reach the last bound needed (ties go by position,
            # so an equal one could still come first: strictly above).
            if bounds.bound(query, next_key, offset, exact_rows) > found.estimates.bound[want - 1]:
                return found
            size = min(n, 4 * size)


def _resized(a: np.ndarray, capacity: int, n: int) -> np.ndarray:
    grown = np.zeros(capacity, a.dtype)
    grown[:n] = a[:n]
    return grown
