"""The task-vector search's pure parts (issue 22): reciprocal-rank fusion by its formula, the
bounds a served task-vector profile puts on a vector, and the profile on the wire."""

from __future__ import annotations

import math

import numpy as np
import pytest
from lmdock.client.training.task_vector_search import RRF_K, Ranking, fuse
from lmdock.common import serde
from lmdock.common.market_types import Match, SearchResult
from lmdock.common.spec import EXACT, Spec, norm_bounds
from lmdock.common.task_vector import TaskVectorProfile
from lmdock.common.task_vector_search import TaskVectorIndexing
from lmdock.v1 import market_pb2 as pb

PROFILE = TaskVectorProfile(
    base_model="toy", base_sha256="a" * 64, dim=1000, steps=8, learning_rate=0.5, clip_norm=1.0
)


def ranking(kind: str, ids: list[str]) -> Ranking:
    matches = tuple(Match(i, i, "d", distance=0.0, score=0.0) for i in ids)
    return Ranking(kind, Spec("p", np.zeros(1, dtype=np.float32), EXACT), SearchResult(matches))


def test_fusion_sums_reciprocal_ranks_over_the_rankings_that_list_a_learnware() -> None:
    fused = fuse([ranking("kernel-mean", ["a", "b", "c"]), ranking("task-vector", ["b", "d", "a"])])
    score = {m.learnware_id: m.score for m in fused}
    assert score["a"] == pytest.approx(1 / (RRF_K + 1) + 1 / (RRF_K + 3))
    assert score["b"] == pytest.approx(1 / (RRF_K + 2) + 1 / (RRF_K + 1))
    assert score["c"] == pytest.approx(1 / (RRF_K + 3)) and score["d"] == pytest.approx(1 / (RRF_K + 2))
    assert [m.learnware_id for m in fused] == ["b", "a", "d", "c"]
    assert fused[0].ranks == {"kernel-mean": 2, "task-vector": 1} and fused[-1].ranks == {"kernel-mean": 3}


def test_a_served_profile_bounds_a_vector_by_its_recipe() -> None:
    indexing = TaskVectorIndexing(PROFILE)
    assert indexing.clip_radius == 0.5 * 8 * 1.0 == indexing.max_sigma  # R = eta T C
    assert (indexing.feature_dim, indexing.ids, indexing.kernel) == (1000, PROFILE.ids, "cosine")
    low, high = norm_bounds(0.0, indexing)
    assert low == 0.0 and high == pytest.approx(4.0, rel=1e-4)  # an exact vector: at most R
    low, high = norm_bounds(0.1, indexing)  # noise of sd 0.1 in each of 1000 coordinates
    assert low < 0.1 * math.sqrt(1000) < high


def test_the_profile_travels_whole_and_checked() -> None:
    message = serde.task_vector_profile_to_pb(PROFILE)
    assert serde.task_vector_profile_from_pb(message) == PROFILE
    response = pb.GetSpecProfileResponse(task_vector_profiles=[message])
    assert serde.supported_task_vector_profiles(response) == [PROFILE]
    message.steps += 1  # the id no longer matches: a profile this client cannot trust is skipped
    assert (
        serde.supported_task_vector_profiles(pb.GetSpecProfileResponse(task_vector_profiles=[message])) == []
    )
