"""`lmdock-lab eval --task-vector`'s protocol on a known geometry: two domains of two data sets
each, a tiny Llama for the task vectors and the real embedder for the kernel means."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from lmdock.client.embedder import Embedder
from lmdock.client.training.task_vector import record_gradients, task_vector_profile
from lmdock.common.profile import SpecProfile
from lmdock.lab.embeddings import TextVectors
from lmdock.lab.identification import Learnware, folds_of
from lmdock.lab.task_vector_eval import METHODS, TVSettings, _pooled, run_searches

TEMPLATES = {  # a domain's two sets differ in a word or two: what a random tiny model's gradients see
    "medical/clinic": "the patient has a fever of {} degrees and the doctor gave {} pills",
    "medical/ward": "the patient has a cough of {} days and the nurse gave {} pills",
    "finance/markets": "the bank shares rose {} percent and the bond price fell {} percent",
    "finance/loans": "the bank loans rose {} percent and the stock price fell {} percent",
}


def _texts(dataset: str, n: int, offset: int) -> tuple[str, ...]:
    return tuple(TEMPLATES[dataset].format(i + offset, 2 * i + offset + 5) for i in range(n))


def test_each_spec_finds_the_right_domain_of_a_hidden_data_set(
    tiny_llama: Path, profile: SpecProfile
) -> None:
    tv_profile = task_vector_profile(str(tiny_llama), layers=2, rank=4, max_tokens=24, clip_norm=0.5)
    learnwares = [Learnware(d.split("/")[1], d.split("/")[0], (d,), _texts(d, 12, 0)) for d in TEMPLATES]
    folds = folds_of(learnwares, {d: list(_texts(d, 30, 500)) for d in TEMPLATES})
    assert all(f.scored for f in folds)
    settings = TVSettings(quick=True, sizes=(20,), epsilons=(math.inf, 8.0), draws=3, pool_cap=30)
    embedder = Embedder(profile)
    outcomes = run_searches(
        learnwares,
        folds,
        profile,
        tv_profile,
        TextVectors(embedder.embed, dim=profile.embedding_dim),
        TextVectors(lambda texts: record_gradients(texts, tv_profile), dim=tv_profile.dim),
        settings,
    )
    assert len(outcomes) == len(folds) * 2 * 3 * len(METHODS)
    pooled = {(c["method"], c["epsilon"]): c for c in _pooled(outcomes, settings)}
    # hidden its own set, each fold's nearest learnware is the other set of its domain
    for method in METHODS:
        assert pooled[(method, None)]["right"] == pytest.approx(1.0), method
        assert pooled[(method, None)]["searches"] == len(folds) * 3
    assert all(0 <= pooled[(m, 8.0)]["right"] <= 1 for m in METHODS)
