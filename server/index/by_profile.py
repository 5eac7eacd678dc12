"""One search index per served spec profile, behind the `SpecIndex` protocol.

A market may serve several profiles side by side (docs/search.md, *Profiles side by side*):
specs under different profiles are never compared, so each profile has its own index, built
from the catalogue's learnwares under that profile. A learnware is added to the index of its
spec's profile (one the market does not serve is left out, as a search under it is refused); a
removal reaches every index; a search goes to the index of the query's profile. Each spec goes
in as its profile compares it (`lmdock.common.ranking.comparable`: as it is, or scaled to unit
norm under a "cosine" profile), whether streamed at start (`entry_as_indexed`) or added later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from lmdock.common.errors import InvalidArgument
from lmdock.common.market_types import LearnwareInfo, SearchResult
from lmdock.common.profile import SpecProfile
from lmdock.common.ranking import comparable
from lmdock.common.spec import Spec
from lmdock.server.index import IndexEntry, SpecIndex

__all__ = ["ProfileIndexes", "entry_as_indexed"]


def entry_as_indexed(profile: SpecProfile, entry: IndexEntry) -> IndexEntry:
    values, sigma = comparable(profile.kernel, entry.values, entry.sigma)
    if values is entry.values and sigma == entry.sigma:  # the profile holds specs as they are
        return entry
    return entry._replace(values=values, sigma=sigma)


class ProfileIndexes:
    """`SpecIndex` over the indexes of several profiles, each found by any of its profile's ids
    (its current id and the v1 alias that specs made before it carry)."""

    def __init__(self, indexes: Mapping[SpecProfile, SpecIndex]) -> None:
        self.indexes = {p.profile_id: index for p, index in indexes.items()}
        self._by_id = {i: (p.kernel, index) for p, index in indexes.items() for i in p.ids}

    def of(self, profile_id: str) -> SpecIndex:
        try:
            return self._by_id[profile_id][1]
        except KeyError:
            raise InvalidArgument(f"no profile {profile_id!r} is served here") from None

    def add(self, learnware: LearnwareInfo) -> None:
        spec = learnware.spec
        found = self._by_id.get(spec.profile_id)
        if found is not None:
            kernel, index = found
            values, sigma = comparable(kernel, spec.values, spec.privacy.sigma)
            privacy = dataclasses.replace(spec.privacy, sigma=sigma)
            index.add(
                dataclasses.replace(learnware, spec=dataclasses.replace(spec, values=values, privacy=privacy))
            )

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
