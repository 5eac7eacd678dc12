"""Lower-layer activations shared by the versions of one data set (`objectives.LowerCaches`).

The generative market trains three versions of each data set (`lab/gen_market.VERSIONS`: two
disjoint parts and their union), LoRA on the top layers of SmolLM2, so the union's lower-layer
activations are mostly the other two's. This trains one data set's three versions, their
records cut to `--fraction` of each (the overlap is kept: each keeps its first records), with a
cache each and with a cache per `lab/building.lower_layer_groups` group (as the build shares
them), twice each, alternated, and prints one JSON object: seconds each way, the ratio of the
means, and the records the union shares with the other two.

    python benchmarks/lower_sharing.py --data ../shared/data [--prefix gen-fin-sentiment] [--fraction 0.2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch
from lmdock.client.publish.training import train_adapter
from lmdock.client.training.objectives import LowerCaches
from lmdock.common.package import TaskInfo
from lmdock.lab.building import Recipe, lower_layer_groups
from lmdock.lab.definitions import materialize
from lmdock.lab.gen_market import GEN_FULL


def _cut(recipe: Recipe, fraction: float) -> Recipe:
    n = max(8, round(len(recipe.train_texts) * fraction))
    return dataclasses.replace(
        recipe, train_texts=recipe.train_texts[:n], train_labels=recipe.train_labels[:n]
    )


def _train_all(recipes: list[Recipe], shared: bool) -> float:
    """Seconds to train every recipe: each with a cache of its own, or as the build does, one
    `LowerCaches` per `lower_layer_groups` group."""
    groups = lower_layer_groups(recipes) if shared else [[r] for r in recipes]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for group in groups:
            caches = LowerCaches()
            for r in group:
                train_adapter(
                    base_model=r.base_model,
                    task=TaskInfo(kind="generation"),
                    texts=r.train_texts,
                    targets=r.train_labels,
                    out_dir=Path(tmp) / r.card.id,
                    config=r.training,
                    lower_caches=caches,
                )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--prefix", default="gen-fin-sentiment")
    parser.add_argument("--fraction", type=float, default=0.2)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as one build job of `lmdock-lab eval --generative --jobs 2`
    market = materialize(GEN_FULL, Path(args.data))
    versions = [_cut(r, args.fraction) for r in market.recipes if r.card.id.rsplit("-", 1)[0] == args.prefix]
    groups = lower_layer_groups(versions)
    union = max(versions, key=lambda r: len(r.train_texts))
    others = {t for r in versions if r is not union for t in zip(r.train_texts, r.train_labels, strict=True)}
    shared_records = sum(t in others for t in zip(union.train_texts, union.train_labels, strict=True))
    _train_all(versions[:1], shared=False)  # load and convert the base once, outside the timings
    runs: dict[bool, list[float]] = {False: [], True: []}
    for shared in (False, True, True, False):  # alternated, so a drift in the box's load cancels
        runs[shared].append(_train_all(versions, shared=shared))
    separate, shared = (sum(runs[k]) / len(runs[k]) for k in (False, True))
    print(
        json.dumps(
            {
                "versions": [r.card.id for r in versions],
                "records": [len(r.train_texts) for r in versions],
                "groups": [[r.card.id for r in g] for g in groups],
                "union_records_shared": shared_records,
                "separate_s": [round(x, 1) for x in runs[False]],
                "shared_s": [round(x, 1) for x in runs[True]],
                "shared_over_separate": round(shared / separate, 3),
                "torch_threads": 1,
            }
        )
    )


if __name__ == "__main__":
    main()
