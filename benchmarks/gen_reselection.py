"""The generative market's selection by spec kind, ε and spec size, from the committed scores.

`lmdock-lab eval --generative` scores every learnware on every user task's first 100 (60 for
open answers) examples once (results/generative/scores.json) and selects with a kernel-mean
spec of those texts only. Which learnware a user picks depends only on the market's ranking of
its spec, so the selection under another spec follows from the same scores without training or
scoring again (the reuse score of issue 22, and issue 15's ε = 1 shortfall):

* **kernel mean**: the learnwares' exact specs of their training texts (what their packages
  carry), each task's spec released as a client releases it (`plan_release`, the OS CSPRNG);
* **task vector**: the one-step task vector (`lab/task_vector_eval.py`: per-record gradient
  rows computed once and cached, the DP noise of a seeded generator), cosine-ranked against the
  learnwares' exact vectors of their first `--learnware-cap` training texts;
* **both**: each at ε / 2 and δ / 2, fused by reciprocal rank as `lmdock search --spec both`.

Each task's spec summarises its first m × (100 or 60) held-out texts, a superset of the scored
ones (checked; held out from every learnware's records, as `materialize` checks). Printed: per
kind, ε and m, each task's spec size and, per domain over the committed run's informative tasks,
selected / oracle (mean over draws) and the share of picks of the task's own data set; the
kernel mean at ε = 1, m = 1 reproduces the committed run's selection up to the draws.

    python benchmarks/gen_reselection.py --data ../shared/data [--kinds "kernel mean,task vector,both"]
        [--epsilons none,4,1,0.5] [--multiples 1,3] [--repeats 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
from lmdock.client.cache import default_cache_dir
from lmdock.client.training.task_vector import one_step_vector, task_vector_profile
from lmdock.client.training.task_vector_search import fuse
from lmdock.common.base_model_files import SMOLLM2
from lmdock.common.features import build_feature_map
from lmdock.common.profile_factory import make_profile
from lmdock.common.spec import exact_spec
from lmdock.lab.datasets import Selection
from lmdock.lab.definitions import MarketDef, materialize
from lmdock.lab.embeddings import CachingEmbedder, TextVectors
from lmdock.lab.gen_market import GEN_FULL
from lmdock.lab.gen_metrics import gen_summary
from lmdock.lab.gen_scoring import GenScores
from lmdock.lab.identification import Fold
from lmdock.lab.task_vector_eval import METHODS, FoldSearches, rows_file, rows_in_chunks

DELTA = 1e-6


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
    parser.add_argument("--kinds", default="kernel mean", help=f"comma-separated, of: {', '.join(METHODS)}")
    parser.add_argument("--epsilons", default="1", help="comma-separated; none: without DP")
    parser.add_argument("--multiples", default="1,3")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--learnware-cap", type=int, default=300)
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    if unknown := set(kinds) - set(METHODS):
        raise SystemExit(f"unknown kinds {sorted(unknown)} (choose from {', '.join(METHODS)})")
    epsilons = [math.inf if e == "none" else float(e) for e in args.epsilons.split(",")]
    started = time.perf_counter()
    results = Path(args.results)
    stored = json.loads((results / "scores.json").read_text(encoding="utf-8"))
    committed = json.loads((results / "summary.json").read_text(encoding="utf-8"))
    scores = GenScores(stored["per_example"], stored["metric"], stored["one_pass"], stored["seconds"])
    informative = {r["task"] for r in committed["per_task"] if r["informative"]}
    km_profile = make_profile()  # the embedded market's default, as the eval serves it
    run_profile = json.loads((results / "market.json").read_text(encoding="utf-8"))["profile_id"]
    if km_profile.profile_id != run_profile:
        raise SystemExit(f"profile {km_profile.profile_id} is not the committed run's {run_profile}")
    tv_profile = task_vector_profile(SMOLLM2)
    cache = default_cache_dir() / "generative" / "embeddings"
    embed = CachingEmbedder(km_profile, folder=cache).embed
    gradients = TextVectors(
        lambda batch: rows_in_chunks(batch, tv_profile, print),
        dim=tv_profile.dim,
        file=cache / rows_file(tv_profile),
    )
    feature_map = build_feature_map(km_profile)
    scored = materialize(GEN_FULL, Path(args.data))
    ids = [r.card.id for r in scored.recipes]
    texts = {r.card.id: r.summarised_texts[: args.learnware_cap] for r in scored.recipes}
    km_specs = {i: exact_spec(feature_map(embed(t)), km_profile).values for i, t in texts.items()}
    tv_specs = {}
    if kinds != ["kernel mean"]:
        tv_specs = {i: one_step_vector(gradients(t), tv_profile) for i, t in texts.items()}
    everyone = Fold("", "", (), (), True)  # no data set hidden: the whole market, as the eval
    domains = {r.card.id: r.card.domain for r in scored.recipes}
    searches = FoldSearches(everyone, km_profile, tv_profile, km_specs, tv_specs, domains)
    rng = np.random.default_rng(0)  # the task vector's simulated noise only (module docstring)

    def top(kind: str, features: np.ndarray, grads: np.ndarray | None, epsilon: float) -> list[str]:
        if kind == "kernel mean":
            ranking = searches.kernel_mean(features, epsilon, DELTA)
            return [m.learnware_id for m in ranking.result.matches]
        assert grads is not None
        if kind == "task vector":
            return [m.learnware_id for m in searches.task_vector(grads, epsilon, DELTA, rng).result.matches]
        pair = [
            searches.kernel_mean(features, epsilon / 2, DELTA / 2),
            searches.task_vector(grads, epsilon / 2, DELTA / 2, rng),
        ]
        return [m.learnware_id for m in fuse(pair)]

    rows = []
    for multiple in (int(m) for m in args.multiples.split(",")):
        tasks = materialize(with_task_sizes(GEN_FULL, multiple), Path(args.data)).tasks
        inputs = {}
        for small, big in zip(scored.tasks, tasks, strict=True):
            if big.texts[: len(small.texts)] != small.texts:
                raise SystemExit(f"{big.id}: the larger task does not start with the scored texts")
            grads = gradients(big.texts) if tv_specs else None
            inputs[big.id] = (feature_map(embed(big.texts)), grads)
        for kind in kinds:
            for epsilon in epsilons:
                repeats = 1 if math.isinf(epsilon) else args.repeats
                draws = {t: [top(kind, *inputs[t], epsilon) for _ in range(repeats)] for t in inputs}
                exact = {t: d[0] for t, d in draws.items()}  # unused: only the selected column is read
                summary = gen_summary(scored.tasks, scores, ids, draws, exact, {})
                if {r["task"] for r in summary["per_task"] if r["informative"]} != informative:
                    raise SystemExit("the informative tasks differ from the committed run's")
                right = [
                    sum(s for lw, s in r["picks"].items() if lw in r["right"])
                    for r in summary["per_task"]
                    if r["informative"]
                ]
                rows.append(
                    {
                        "kind": kind,
                        "epsilon": None if math.isinf(epsilon) else epsilon,
                        "multiple": multiple,
                        "spec_texts": {t.id: len(t.texts) for t in tasks},
                        "selected_over_oracle": over_oracle(summary["informative_domains"], "selected"),
                        "right_top1": round(sum(right) / len(right), 4),
                    }
                )
    out = {
        "repeats": args.repeats,
        "learnwares": len(ids),
        "delta": DELTA,
        "task_vector_profile": tv_profile.profile_id,
        "wire_bytes": {"kernel mean": 4 * km_profile.feature_dim, "task vector": 4 * tv_profile.dim},
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
