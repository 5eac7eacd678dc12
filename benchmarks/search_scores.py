"""What search scores look like on real text: same task, other tasks, and a mixed task.

Four learnwares' specs (exact, from 300 training texts of each shipped sample) sit in a search
index; users with 300 held-out texts of one sample, or 150 + 150 of two samples, search with an
(epsilon = 1, delta = 1e-6) DP spec. Prints JSON: per user, each learnware's score and
distance, and the mixture answer. Run: python benchmarks/search_scores.py
"""

from __future__ import annotations

import json

import numpy as np
from lmdock.client.embedder import Embedder
from lmdock.client.spec_release import features_of
from lmdock.common.card import Card
from lmdock.common.market_types import LearnwareInfo
from lmdock.common.package import TaskInfo
from lmdock.common.profile_factory import make_profile
from lmdock.common.spec import exact_spec, release
from lmdock.lab.refdata import load_split
from lmdock.server.index.exact import ExactIndex

SAMPLES = ("tfns", "banking77", "medquad", "math_competition")
N = 300


def main() -> None:
    profile = make_profile()
    embedder = Embedder(profile)

    def features(sample: str, split: str, n: int) -> np.ndarray:
        return features_of(load_split(sample, split)[0][:n], profile, embedder=embedder)

    index = ExactIndex(
        LearnwareInfo(
            card=Card(id=sample, name=sample, domain=sample, licence="-", publisher="-"),
            base_model="-",
            task=TaskInfo("generation"),
            spec=exact_spec(features(sample, "train", N), profile),
            package_sha256="0" * 64,
            package_size=1,
        )
        for sample in SAMPLES
    )
    users = {sample: features(sample, "task", N) for sample in SAMPLES}
    users["medquad+tfns"] = np.vstack([features("medquad", "task", N // 2), features("tfns", "task", N // 2)])
    report = {}
    for name, rows in users.items():
        spec = release(rows, profile, epsilon=1.0, delta=1e-6).spec
        result = index.search(spec, top_k=len(SAMPLES), mixture=True)
        report[name] = {
            "matches": {
                m.learnware_id: {"score": round(m.score, 3), "distance": round(m.distance, 4)}
                for m in result.matches
            },
            "mixture": {c.learnware_id: round(c.weight, 3) for c in result.mixture},
            "mixture_residual": round(result.mixture_residual, 4),
        }
    print(json.dumps({"n": N, "epsilon": 1.0, "delta": 1e-6, "users": report}, indent=2))


if __name__ == "__main__":
    main()
