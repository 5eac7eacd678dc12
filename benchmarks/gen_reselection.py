"""The generative market's ε = 1 selection when the user's spec summarises more of its task.

`lmdock-lab eval --generative` scores every learnware on every user task's first 100 (60 for
open answers) examples once (results/generative/scores.json) and sends a spec of those texts
only. Which learnware a user picks depends only on the market's ranking of its spec, so the
selection with a spec of more task texts follows from the same scores without training or
scoring again: the learnwares' exact specs (the kernel means of their training texts, what their
packages carry), each user task's ε = 1 spec of its first m × (100 or 60) texts (a superset of
the scored ones, checked; held out from every learnware's records, as `materialize` checks),
ranked by the market's exact index under the market's default profile. Printed: per multiple m,
each task's spec size and, per domain over the informative tasks of the committed run,
selected / oracle at ε = 1 (mean over draws) and without DP, as the eval reports them; m = 1
reproduces the committed run's selection up to the draws.

    python benchmarks/gen_reselection.py --data ../shared/data [--multiples 1,3] [--repeats 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from lmdock.client.cache import default_cache_dir
from lmdock.client.spec_release import features_of, public_spec
from lmdock.common.profile_factory import make_profile
from lmdock.common.spec import exact_spec, release
from lmdock.lab.datasets import Selection
from lmdock.lab.definitions import MarketDef, materialize
from lmdock.lab.embeddings import CachingEmbedder
from lmdock.lab.gen_market import GEN_FULL
from lmdock.lab.gen_metrics import gen_summary
from lmdock.lab.gen_scoring import GenScores
from lmdock.server.index import IndexEntry, Listing
from lmdock.server.index.by_profile import entry_as_indexed
from lmdock.server.index.exact import ExactIndex


def with_task_sizes(catalogue: MarketDef, multiple: int) -> MarketDef:
    """Every user task drawing `multiple` times its records (the same records first)."""

    def larger(s: Selection) -> Selection:
        return dataclasses.replace(s, limit=None if s.limit is None else s.limit * multiple)

    tasks = [dataclasses.replace(t, data=tuple(larger(s) for s in t.data)) for t in catalogue.tasks]
    return dataclasses.replace(catalogue, tasks=tuple(tasks))


def over_oracle(domains: dict[str, dict[str, float]], column: str) -> dict[str, float]:
    return {d: round(v[column] / v["oracle"], 4) for d, v in domains.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--results", default="results/generative")
    parser.add_argument("--multiples", default="1,3")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--epsilon", type=float, default=1.0)
    args = parser.parse_args()
    started = time.perf_counter()
    stored = json.loads((Path(args.results) / "scores.json").read_text(encoding="utf-8"))
    committed = json.loads((Path(args.results) / "summary.json").read_text(encoding="utf-8"))
    scores = GenScores(stored["per_example"], stored["metric"], stored["one_pass"], stored["seconds"])
    informative = {r["task"] for r in committed["per_task"] if r["informative"]}
    profile = make_profile()  # the embedded market's default, as the eval serves it
    run_profile = json.loads((Path(args.results) / "market.json").read_text(encoding="utf-8"))["profile_id"]
    if profile.profile_id != run_profile:
        raise SystemExit(f"profile {profile.profile_id} is not the committed run's {run_profile}")
    embedder = CachingEmbedder(profile, folder=default_cache_dir() / "generative" / "embeddings")
    scored = materialize(GEN_FULL, Path(args.data))
    ids = [r.card.id for r in scored.recipes]
    index = ExactIndex.from_entries(
        [
            entry_as_indexed(
                profile,
                IndexEntry(
                    Listing(r.card.id, r.card.name, r.card.domain),
                    public_spec(r.summarised_texts, profile, embedder=embedder).values,
                    0.0,
                    "",
                ),
            )
            for r in scored.recipes
        ]
    )

    def ranking(spec: object) -> list[str]:
        return [m.learnware_id for m in index.search(spec, top_k=len(ids)).matches]  # type: ignore[arg-type]

    out: dict[str, object] = {"epsilon": args.epsilon, "repeats": args.repeats, "learnwares": len(ids)}
    rows = []
    for multiple in (int(m) for m in args.multiples.split(",")):
        tasks = materialize(with_task_sizes(GEN_FULL, multiple), Path(args.data)).tasks
        draws, exact, sizes = {}, {}, {}
        for small, big in zip(scored.tasks, tasks, strict=True):
            if big.texts[: len(small.texts)] != small.texts:
                raise SystemExit(f"{big.id}: the larger task does not start with the scored texts")
            features = features_of(big.texts, profile, embedder=embedder)
            sizes[big.id] = len(big.texts)
            exact[big.id] = ranking(exact_spec(features, profile))
            draws[big.id] = [
                ranking(release(features, profile, epsilon=args.epsilon, delta=1e-6).spec)
                for _ in range(args.repeats)
            ]
        summary = gen_summary(scored.tasks, scores, ids, draws, exact, {})
        if {r["task"] for r in summary["per_task"] if r["informative"]} != informative:
            raise SystemExit("the informative tasks differ from the committed run's")
        domains = summary["informative_domains"]
        rows.append(
            {
                "multiple": multiple,
                "spec_texts": sizes,
                "selected_over_oracle": over_oracle(domains, "selected"),
                "no_dp_over_oracle": over_oracle(domains, "selected_no_dp"),
                "right_top1": round(
                    sum(
                        sum(s for lw, s in r["picks"].items() if lw in r["right"])
                        for r in summary["per_task"]
                        if r["informative"]
                    )
                    / len(informative),
                    4,
                ),
            }
        )
    out["rows"] = rows
    out["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
