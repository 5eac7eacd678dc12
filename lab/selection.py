"""How a user picks a learnware: DP spec -> market ranking -> the first one that can answer.

* `draw_rankings`: the market's ranking (over real gRPC) for repeated private specs of a task,
  each a fresh (epsilon, delta)-DP release from the OS CSPRNG; with `n`, each repeat first takes
  a seeded random subset of n texts (a user with a smaller data set). epsilon = inf sends the
  exact kernel mean.
* `pick`: the user knows which labels it needs (the label names, never the data), so it takes
  the best-ranked learnware that shares a label with the task ("spec + labels"); "spec only"
  takes the first of the ranking, whatever it answers.
* `retriever_ranking`: the LoraRetriever-style baseline, without privacy: cosine similarity
  between the mean sentence embedding of the task and that of each learnware's training texts.

The eval repeats private releases for many simulated users and so calls `release` directly;
a real client goes through `operations.search_task`, which also books each release.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from lmdock.client.connection import MarketClient
from lmdock.common.profile import SpecProfile
from lmdock.common.spec import exact_spec, release

__all__ = ["draw_rankings", "pick", "retriever_ranking", "top"]

Ranking = list[str]


def draw_rankings(
    client: MarketClient,
    features: npt.NDArray[np.float64],
    profile: SpecProfile,
    *,
    epsilon: float,
    delta: float,
    repeats: int,
    market_size: int,
    n: int | None = None,
    seed: int = 0,
) -> list[Ranking]:
    """The full ranking the market returns for each of `repeats` specs of (a subset of) `features`."""
    rng = np.random.default_rng(seed)  # the subsets only; the DP noise never comes from here
    out = []
    for _ in range(repeats):
        rows = features
        if n is not None and n < len(features):
            rows = features[np.sort(rng.choice(len(features), size=n, replace=False))]
        spec = (
            exact_spec(rows, profile)
            if math.isinf(epsilon)
            else release(rows, profile, epsilon=epsilon, delta=delta).spec
        )
        result = client.search(spec, top_k=market_size)
        out.append([m.learnware_id for m in result.matches])
    return out


def pick(ranking: Ranking, can_answer: Sequence[str] | None) -> str:
    """The selected learnware: the first that can answer the task (any first, when None)."""
    for learnware_id in ranking:
        if can_answer is None or learnware_id in can_answer:
            return learnware_id
    raise ValueError("no learnware in the ranking can answer the task")


def top(ranking: Ranking, can_answer: Sequence[str] | None, k: int) -> list[str]:
    return [lw for lw in ranking if can_answer is None or lw in can_answer][:k]


def retriever_ranking(
    task_mean: npt.NDArray[np.float64], learnware_means: dict[str, npt.NDArray[np.float64]]
) -> Ranking:
    """Learnwares by decreasing cosine similarity of mean embeddings (ties: by id)."""

    def cosine(v: npt.NDArray[np.float64]) -> float:
        return float(task_mean @ v / (np.linalg.norm(task_mean) * np.linalg.norm(v)))

    return sorted(learnware_means, key=lambda lw: (-cosine(learnware_means[lw]), lw))
