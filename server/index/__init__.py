"""Search indexes over learnware specs: the `SpecIndex` protocol the market depends on.

Backends: `exact.ExactIndex` (every learnware bounded on every search, near a plain numpy
scan), `hnsw.HnswIndex` (an approximate graph shortlist) and `ivf.IvfIndex` (an approximate
inverted-file shortlist), the two re-ranked exactly and persisted in the market's data dir by
what they share, `shortlist.ShortlistIndex`. `backends.index_factory` picks one by name for
`lmdock-market serve --index`. Another backend goes beside them and must keep the contract
below.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np
from lmdock.common.market_types import LearnwareInfo, SearchResult
from lmdock.common.spec import Spec

__all__ = ["IndexEntry", "Listing", "SpecIndex"]


class Listing(NamedTuple):
    """What a match names besides its scores; an index holds one per learnware."""

    learnware_id: str
    name: str
    domain: str


class IndexEntry(NamedTuple):
    """One searchable learnware as the catalogue streams it at start: no full record built."""

    listing: Listing
    values: np.ndarray  # float32, the spec's D coordinates
    sigma: float  # the spec's noise (0 for an exact spec)
    package_sha256: str  # with the id, what a persisted index checks the catalogue against

    @classmethod
    def of(cls, lw: LearnwareInfo) -> IndexEntry:
        listing = Listing(lw.card.id, lw.card.name, lw.card.domain)
        return cls(listing, lw.spec.values, lw.spec.privacy.sigma, lw.package_sha256)


class SpecIndex(Protocol):
    """The learnwares a market can find, ranked by an upper bound of their debiased distance to
    a query spec (`lmdock.common.ranking`).

    Safe for concurrent use: a search sees the index before or after an update, never half
    of one. Ranking, scores and mixture answers follow `lmdock.server.index.exact`; ties keep
    the order in which learnwares were added.
    """

    def add(self, learnware: LearnwareInfo) -> None: ...

    def remove(self, learnware_id: str) -> None:
        """Forget a learnware; an unknown id is not an error."""
        ...

    def search(self, query: Spec, *, top_k: int, mixture: bool = False) -> SearchResult: ...

    def __len__(self) -> int: ...

    def close(self) -> None:
        """Keep what the next start can reuse (a persisted index); nothing for an in-memory one."""
        ...
