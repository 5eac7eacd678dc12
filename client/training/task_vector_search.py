"""Searching a market with the task-vector spec, alone or beside the kernel mean (issue 22).

Task vector: the market's newest task-vector profile, the consumer's DP task vector of the
task's texts (`release_task_vector`: booked in the ledger before its first step; record-level),
one Search under that profile (cosine ranking over the learnwares' task vectors).

Both: the privacy budget is split in half between the two releases, (epsilon/2, delta/2) each;
the ledger composes the two into what the data set spent, never more than (epsilon, delta)
(`client/ledger`). The two rankings are fused by reciprocal rank (Cormack, Clarke & Buettcher
2009): a learnware's score is sum over rankings r of 1 / (60 + rank_r), rank from 1, a ranking
that does not list it adding nothing. Fusing reads only the two answers: post-processing, free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lmdock.client.connection import MarketClient
from lmdock.client.ledger import Debit, Ledger
from lmdock.client.operations import search_task
from lmdock.client.privacy_unit import DataSet
from lmdock.client.progress import Progress
from lmdock.client.training.task_vector import release_task_vector
from lmdock.common.market_types import SearchResult
from lmdock.common.spec import Spec

__all__ = [
    "KERNEL_MEAN",
    "RRF_K",
    "TASK_VECTOR",
    "FusedMatch",
    "Ranking",
    "fuse",
    "search_both",
    "search_by_task_vector",
]

#: The constant of reciprocal-rank fusion (its authors' value).
RRF_K = 60
KERNEL_MEAN, TASK_VECTOR = "kernel-mean", "task-vector"


@dataclass(frozen=True)
class Ranking:
    kind: str  # KERNEL_MEAN or TASK_VECTOR
    spec: Spec  # what was sent
    result: SearchResult
    debit: Debit | None = None  # what the ledger holds after this release; None: no ledger (the lab)


@dataclass(frozen=True)
class FusedMatch:
    learnware_id: str
    name: str
    domain: str
    score: float  # sum of 1 / (RRF_K + rank) over the rankings that list it
    ranks: dict[str, int] = field(default_factory=dict)  # its rank (from 1) in each ranking listing it


def fuse(rankings: Sequence[Ranking]) -> list[FusedMatch]:
    """Reciprocal-rank fusion of `rankings`, best first (ties keep the first ranking's order)."""
    fused: dict[str, FusedMatch] = {}
    for ranking in rankings:
        for rank, match in enumerate(ranking.result.matches, start=1):
            seen = fused.get(match.learnware_id) or FusedMatch(
                match.learnware_id, match.name, match.domain, 0.0
            )
            fused[match.learnware_id] = FusedMatch(
                seen.learnware_id,
                seen.name,
                seen.domain,
                seen.score + 1.0 / (RRF_K + rank),
                {**seen.ranks, ranking.kind: rank},
            )
    return sorted(fused.values(), key=lambda m: -m.score)


def search_by_task_vector(
    client: MarketClient,
    texts: Sequence[str],
    *,
    epsilon: float,
    delta: float,
    ledger: Ledger,
    dataset: DataSet,
    top_k: int = 0,
    progress: Progress | None = None,
) -> Ranking:
    """The consumer's DP task vector of `texts` (booked to `dataset` first), and the market's
    ranking of its learnwares' task vectors against it."""
    profile = client.task_vector_profile()
    spec, debit = release_task_vector(
        texts,
        profile,
        ledger=ledger,
        dataset=dataset,
        epsilon=epsilon,
        delta=delta,
        destination=client.address,
        progress=progress,
    )
    return Ranking(TASK_VECTOR, spec, client.search(spec, top_k=top_k), debit)


def search_both(
    client: MarketClient,
    texts: Sequence[str],
    *,
    epsilon: float,
    delta: float,
    ledger: Ledger,
    dataset: DataSet,
    top_k: int = 0,
    progress: Progress | None = None,
) -> tuple[Ranking, Ranking]:
    """Both searches at (epsilon/2, delta/2) each (see the module doc); the whole (epsilon,
    delta) is checked against the data set's budget before either release."""
    ledger.state().check_spec_budget(dataset, epsilon=epsilon, delta=delta, unit="record")
    kernel = search_task(
        client,
        texts,
        epsilon=epsilon / 2,
        delta=delta / 2,
        top_k=top_k,
        progress=progress,
        ledger=ledger,
        dataset=dataset.name,
    )
    vector = search_by_task_vector(
        client, texts, epsilon=epsilon / 2, delta=delta / 2, ledger=ledger, dataset=dataset, top_k=top_k
    )
    assert kernel.debit is not None  # a search with a ledger is always booked
    return Ranking(KERNEL_MEAN, kernel.spec, kernel.result, kernel.debit), vector
