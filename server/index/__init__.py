"""Search indexes over learnware specs: the `SpecIndex` protocol the market depends on.

`exact.ExactIndex` is the first implementation (every learnware scored on every search); an
ANN index or pgvector goes beside it and must keep the contract below.
"""

from __future__ import annotations

from typing import Protocol

from lmdock.common.market_types import LearnwareInfo, SearchResult
from lmdock.common.spec import Spec

__all__ = ["SpecIndex"]


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
