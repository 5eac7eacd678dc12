"""One search index per served spec profile, behind the `SpecIndex` protocol.

A market may serve several profiles side by side (docs/search.md, *Profiles side by side*):
specs under different profiles are never compared, so each profile has its own index, built
from the catalogue's learnwares under that profile. A learnware is added to the index of its
spec's profile (one the market does not serve is left out, as a search under it is refused); a
removal reaches every index; a search goes to the index of the query's profile.
"""

from __future__ import annotations

from collections.abc import Mapping

from lmdock.common.errors import InvalidArgument
from lmdock.common.market_types import LearnwareInfo, SearchResult
from lmdock.common.spec import Spec
from lmdock.server.index import SpecIndex

__all__ = ["ProfileIndexes"]


class ProfileIndexes:
    """`SpecIndex` over the indexes of several profiles, keyed by profile id."""

    def __init__(self, indexes: Mapping[str, SpecIndex]) -> None:
        self.indexes = dict(indexes)

    def of(self, profile_id: str) -> SpecIndex:
        try:
            return self.indexes[profile_id]
        except KeyError:
            raise InvalidArgument(f"no profile {profile_id!r} is served here") from None

    def add(self, learnware: LearnwareInfo) -> None:
        index = self.indexes.get(learnware.spec.profile_id)
        if index is not None:
            index.add(learnware)

    def remove(self, learnware_id: str) -> None:
        for index in self.indexes.values():
            index.remove(learnware_id)

    def search(self, query: Spec, *, top_k: int, mixture: bool = False) -> SearchResult:
        return self.of(query.profile_id).search(query, top_k=top_k, mixture=mixture)

    def __len__(self) -> int:
        return sum(len(index) for index in self.indexes.values())

    def close(self) -> None:
        for index in self.indexes.values():
            index.close()
