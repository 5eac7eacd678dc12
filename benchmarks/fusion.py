"""How to combine the kernel mean and the task vector: budget split x rank weight, leave one data set out.

`lmdock search --spec both` spends (epsilon/2, delta/2) on each spec and fuses the two rankings
by reciprocal rank with equal weights (`client/training/task_vector_search.py`). This study asks
whether another split or a weight does better, on the protocol of `lmdock-lab eval --task-vector`
(the generative market's folds, the same per-record gradient rows and embeddings, read from
that command's cache: run it first with the same `--workdir`). For every fold, cell (epsilon, n)
and draw it releases the kernel mean at f * epsilon and the task vector at (1 - f) * epsilon
(deltas alike) for f in SPLITS, and scores the weighted fusion w / (60 + r_km) + (1 - w) /
(60 + r_tv) for w in WEIGHTS (f = 1 is the kernel mean alone, f = 0 the task vector alone).
It also reports a leave-one-fold-out choice of (f, w) among the fused ones, scored on the fold
left out, beside the kernel mean alone. Prints one JSON object:

    python benchmarks/fusion.py --workdir ~/.cache/lmdock/reference [--draws 40] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from lmdock.client.training.task_vector import one_step_vector, task_vector_profile
from lmdock.common.base_model_files import SMOLLM2
from lmdock.common.features import build_feature_map
from lmdock.common.profile_factory import make_profile
from lmdock.common.spec import exact_spec
from lmdock.lab import task_vector_eval as tv_eval
from lmdock.lab.embeddings import CachingEmbedder, TextVectors
from lmdock.lab.gen_market import GEN_FULL
from lmdock.lab.identification import Learnware, folds_of, learnwares_of, pools_of

SPLITS = (1.0, 0.75, 0.5, 0.0)  # the kernel mean's share of the budget
WEIGHTS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)  # the kernel mean's rank weight
RRF_K = 60


def _fused_top(km: Sequence[str], tv: Sequence[str], w: float) -> str:
    score: dict[str, float] = defaultdict(float)
    for rank, learnware in enumerate(km, 1):
        score[learnware] += w / (RRF_K + rank)
    for rank, learnware in enumerate(tv, 1):
        score[learnware] += (1 - w) / (RRF_K + rank)
    return max(score, key=lambda lw: (score[lw], -km.index(lw)))


def _top(draw: Mapping, f: float, w: float) -> str:
    if f == 1.0:
        return str(draw["km"][1.0][0])
    if f == 0.0:
        return str(draw["tv"][1.0][0])
    return _fused_top(draw["km"][f], draw["tv"][1.0 - f], w)


def _rate(draws: Sequence[Mapping], domains: Mapping[str, str], f: float, w: float) -> float:
    return sum(domains[_top(d, f, w)] == d["domain"] for d in draws) / max(1, len(draws))


def _draws(data_root: Path, cache: Path, draws: int) -> tuple[list[dict], dict[str, str]]:
    km_profile, tv_profile, settings = make_profile(), task_vector_profile(SMOLLM2), tv_eval.FULL_TV
    learnwares = [
        Learnware(lw.id, lw.domain, lw.datasets, lw.texts[: settings.learnware_cap])
        for lw in learnwares_of(GEN_FULL, data_root, False)
    ]
    folds = folds_of(learnwares, pools_of(learnwares, data_root, settings.pool_cap))
    embed = CachingEmbedder(km_profile, folder=cache).embed

    def uncached(texts: Sequence[str]) -> np.ndarray:
        raise SystemExit("gradient rows are not cached: run lmdock-lab eval --task-vector first")

    gradients = TextVectors(uncached, dim=tv_profile.dim, file=cache / tv_eval.rows_file(tv_profile))
    feature_map = build_feature_map(km_profile)
    domains = {lw.id: lw.domain for lw in learnwares}
    km_specs = {lw.id: exact_spec(feature_map(embed(lw.texts)), km_profile).values for lw in learnwares}
    tv_specs = {lw.id: one_step_vector(gradients(lw.texts), tv_profile) for lw in learnwares}
    out = []
    for k, fold in enumerate(folds):
        if not fold.scored:
            continue
        searches = tv_eval.FoldSearches(fold, km_profile, tv_profile, km_specs, tv_specs, domains)
        features, rows = feature_map(embed(fold.texts)), gradients(fold.texts)
        rng = np.random.default_rng([settings.seed, k])
        for epsilon in settings.epsilons:
            for size in settings.sizes:
                n = min(size, len(fold.texts))
                for _ in range(1 if math.isinf(epsilon) and n == len(fold.texts) else draws):
                    pick = rng.choice(len(fold.texts), n, replace=False)
                    draw: dict = {
                        "fold": fold.dataset,
                        "domain": fold.domain,
                        "epsilon": None if math.isinf(epsilon) else epsilon,
                        "n": size,
                        "km": {},
                        "tv": {},
                    }
                    for f in SPLITS:
                        if f > 0:
                            ranking = searches.kernel_mean(features[pick], epsilon * f, settings.delta * f)
                            draw["km"][f] = [m.learnware_id for m in ranking.result.matches]
                        if f < 1:
                            share = 1.0 - f
                            ranking = searches.task_vector(
                                rows[pick], epsilon * share, settings.delta * share, rng
                            )
                            draw["tv"][share] = [m.learnware_id for m in ranking.result.matches]
                    out.append(draw)
    return out, domains


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", type=Path, required=True, help="lmdock-lab eval --task-vector's --workdir"
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--draws", type=int, default=40)
    args = parser.parse_args()
    started = time.perf_counter()
    draws, domains = _draws(args.data, args.workdir / "embeddings", args.draws)
    fused = [(f, w) for f in SPLITS if 0 < f < 1 for w in WEIGHTS]
    cells = []
    for epsilon, n in sorted({(d["epsilon"], d["n"]) for d in draws}, key=lambda c: (c[0] or math.inf, c[1])):
        cell = [d for d in draws if (d["epsilon"], d["n"]) == (epsilon, n)]
        cells.append(
            {
                "epsilon": epsilon,
                "n": n,
                "searches": len(cell),
                "kernel_mean": round(_rate(cell, domains, 1.0, 1.0), 4),
                "task_vector": round(_rate(cell, domains, 0.0, 0.0), 4),
                "fused": {f"{f:g}/{w:g}": round(_rate(cell, domains, f, w), 4) for f, w in fused},
            }
        )
    chosen = []
    for epsilon in sorted({d["epsilon"] for d in draws}, key=lambda e: e or math.inf):
        right = total = 0
        for fold in sorted({d["fold"] for d in draws}):
            train = [d for d in draws if d["fold"] != fold and d["epsilon"] == epsilon]
            test = [d for d in draws if d["fold"] == fold and d["epsilon"] == epsilon]
            f, w = max(fused, key=lambda g: _rate(train, domains, *g))
            right += sum(domains[_top(d, f, w)] == d["domain"] for d in test)
            total += len(test)
        alone = [d for d in draws if d["epsilon"] == epsilon]
        chosen.append(
            {
                "epsilon": epsilon,
                "fused_chosen_on_other_folds": round(right / total, 4),
                "kernel_mean": round(_rate(alone, domains, 1.0, 1.0), 4),
            }
        )
    print(
        json.dumps(
            {
                "cpus": os.cpu_count(),
                "load_1m": round(os.getloadavg()[0], 2),
                "draws_per_fold_and_cell": args.draws,
                "split_weight": "f/w: the kernel mean's share of (epsilon, delta) / its rank weight",
                "cells": cells,
                "leave_one_fold_out": chosen,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
