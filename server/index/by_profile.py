"""One search index per served spec profile, behind the `SpecIndex` protocol.

A market may serve several profiles side by side (docs/search.md, *Profiles side by side*):
specs under different profiles are never compared, so each profile has its own index, built
from the catalogue's learnwares under that profile. A learnware is added to the index of its
spec's profile (one the market does not serve is left out, as a search under it is refused); a
removal reaches every index; a search goes to the index of the query's profile. Each spec goes
in as its profile compares it (`lmdock.common.ranking.comparable`: as it is, or scaled to unit
norm under a "cosine" or "projected" profile), whether streamed at start (`entry_as_indexed`)
or added later, and a query as its profile compares it (`compared_query`).

Task-vector profiles (`lmdock.common.task_vector_search`) have indexes here too: a learnware
with a task vector goes into its kernel-mean profile's index and into its task-vector
profile's, each part only where its noise is within that profile's max_sigma.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from lmdock.common.errors import InvalidArgument
from lmdock.common.market_types import LearnwareInfo, SearchResult
from lmdock.common.ranking import comparable, compared_query
from lmdock.common.spec import ComparedProfile, Spec
from lmdock.server.index import IndexEntry, SpecIndex

__all__ = ["ProfileIndexes", "entry_as_indexed"]


def entry_as_indexed(profile: ComparedProfile, entry: IndexEntry) -> IndexEntry:
    values, sigma = comparable(profile, entry.values, entry.sigma)
    if values is entry.values and sigma == entry.sigma:  # the profile holds specs as they are
        return entry
    return entry._replace(values=values, sigma=sigma)


class ProfileIndexes:
    """`SpecIndex` over the indexes of several profiles, each found by any of its profile's ids
    (its current id and the v1 alias that specs made before it carry)."""

    def __init__(self, indexes: Mapping[ComparedProfile, SpecIndex]) -> None:
        self.indexes = {p.profile_id: index for p, index in indexes.items()}
        self._by_id = {i: (p, index) for p, index in indexes.items() for i in p.ids}

    def of(self, profile_id: str) -> SpecIndex:
        """A profile's index, to count or inspect: a search goes through `search`, which
        compares the query as the profile does (`compared_query`)."""
        return self._profile_and_index(profile_id)[1]

    def _profile_and_index(self, profile_id: str) -> tuple[ComparedProfile, SpecIndex]:
        try:
            return self._by_id[profile_id]
        except KeyError:
            raise InvalidArgument(f"no profile {profile_id!r} is served here") from None

    def searchable(self, learnware: LearnwareInfo) -> bool:
        """Whether any of the learnware's specs goes into an index here."""
        return any(self._served(spec) is not None for spec in (learnware.spec, learnware.task_vector))

    def _served(self, spec: Spec | None) -> tuple[ComparedProfile, SpecIndex] | None:
        # A learnware listed before the profile's max_sigma was lowered below its spec's noise
        # is ranked no more than an upload of it would be accepted.
        found = None if spec is None else self._by_id.get(spec.profile_id)
        if found is None or spec is None or spec.privacy.sigma > found[0].max_sigma:
            return None
        return found

    def add(self, learnware: LearnwareInfo) -> None:
        for spec in (learnware.spec, learnware.task_vector):
            found = self._served(spec)
            if found is None or spec is None:
                continue
            profile, index = found
            values, sigma = comparable(profile, spec.values, spec.privacy.sigma)
            privacy = dataclasses.replace(spec.privacy, sigma=sigma)
            indexed = dataclasses.replace(spec, values=values, privacy=privacy)
            index.add(dataclasses.replace(learnware, spec=indexed, task_vector=None))

    def remove(self, learnware_id: str) -> None:
        for index in self.indexes.values():
            index.remove(learnware_id)

    def search(self, query: Spec, *, top_k: int, mixture: bool = False) -> SearchResult:
        profile, index = self._profile_and_index(query.profile_id)
        return index.search(compared_query(profile, query), top_k=top_k, mixture=mixture)

    def __len__(self) -> int:
        return sum(len(index) for index in self.indexes.values())

    def close(self) -> None:
        for index in self.indexes.values():
            index.close()
