"""The reference eval's selection under each spec kind, without retraining.

`lmdock-lab eval` scores every learnware on every user task once (results/scores.json); which
learnware a user picks depends only on the market's ranking of its DP spec. So the selection
figures of another spec kind follow from the same scores and that kind's rankings: the
learnwares' exact specs (the kernel means of their training texts, what their packages carry),
each user task's ε = 1 spec of the whole task (the release a client makes: discrete Gaussian
noise from the OS CSPRNG), ranked by the market's exact index as it holds specs under that
profile (the projected kind fitted on all the learnwares' linear specs, as the market fits
it). Printed: per kind, selected/oracle (pick rule "spec + labels" and "spec only") and
top-1, mean over draws, as `lmdock-lab eval` reports them.

    python benchmarks/reselection.py --data ../shared/data [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from lmdock.client.cache import default_cache_dir
from lmdock.common.features import build_feature_map
from lmdock.common.profile_factory import make_profile
from lmdock.common.spec import exact_spec, kernel_mean, release
from lmdock.lab.definitions import materialize
from lmdock.lab.embeddings import CachingEmbedder
from lmdock.lab.identification import market_index, profiles_compared
from lmdock.lab.metrics import selection_summary
from lmdock.lab.reference_market import FULL
from lmdock.lab.scoring import Scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--scores", default="results/scores.json")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    started = time.perf_counter()
    stored = json.loads(Path(args.scores).read_text(encoding="utf-8"))
    market = materialize(FULL, Path(args.data))
    ids = [r.card.id for r in market.recipes]
    # the file keeps the eligible learnwares' scores; the others score 0 (they cannot answer)
    rows = {t: {lw: row.get(lw, 0.0) for lw in ids} for t, row in stored["learnware"].items()}
    scores = Scores(rows, stored["base"], stored["eligible"], [])
    out: dict[str, object] = {}
    embed = CachingEmbedder(make_profile(), folder=default_cache_dir() / "reference" / "embeddings").embed
    domains = {r.card.id: r.card.domain for r in market.recipes}
    # the market's first (linear) specs, on which a fitted kind is fitted, as the market fits it
    linear = np.stack([kernel_mean(embed(r.summarised_texts)) for r in market.recipes])
    for kind, profile_of in profiles_compared(quick=False).items():
        profile = profile_of(linear)
        feature_map = build_feature_map(profile)
        specs = {
            r.card.id: exact_spec(feature_map(embed(r.summarised_texts)), profile) for r in market.recipes
        }
        index = market_index(profile, specs, domains)
        rankings = {}
        for t in market.tasks:
            features = feature_map(embed(t.texts))
            rankings[t.id] = [
                [
                    m.learnware_id
                    for m in index.search(
                        release(features, profile, epsilon=1.0, delta=1e-6).spec, top_k=len(specs)
                    ).matches
                ]
                for _ in range(args.repeats)
            ]
        overall = selection_summary(market.tasks, scores, rankings)["all"]
        out[kind] = {
            rule: {k: overall[rule][k]["mean"] for k in ("ratio_to_oracle", "selected", "top1")}
            for rule in ("labels", "spec_only")
        }
    out["learnwares"] = len(ids)
    out["repeats"] = args.repeats
    out["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
