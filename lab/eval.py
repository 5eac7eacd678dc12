"""`lmdock-lab eval`: build the reference market, run the user tasks, write the figures.

1. read the catalogue's data and check that user tasks are held out (`catalogue.materialize`);
2. start an embedded market, take its spec profile, build (or read back from the cache) every
   learnware under that profile, and publish each one with `MarketClient.upload`;
3. score every learnware on every task it can answer, and the base model (`scoring`);
4. for each task, repeated DP specs -> market rankings -> picks (`selection`), at epsilon = 1
   with the whole task, then along the epsilon grid and the task-size grid;
5. cost figures (`cost`), then results/*.json, plots and docs/results.md (`report`).

Training, data splits and subsets are seeded; the DP noise is not (OS CSPRNG), which is why
every selection figure is a mean ± std over repeated draws.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lmdock.client.cache import AdapterCache
from lmdock.client.connection import MarketClient
from lmdock.client.spec_release import features_of
from lmdock.common.errors import InvalidArgument
from lmdock.lab.building import Built, build_in
from lmdock.lab.cost import measure_cost
from lmdock.lab.definitions import MaterializedMarket, materialize
from lmdock.lab.embedded import embedded_market
from lmdock.lab.embeddings import CachingEmbedder
from lmdock.lab.metrics import baselines, per_task, selection_summary
from lmdock.lab.reference_market import FULL, QUICK
from lmdock.lab.scoring import compute_scores
from lmdock.lab.selection import Ranking, draw_rankings, retriever_ranking

__all__ = ["FULL_SETTINGS", "QUICK_SETTINGS", "Clock", "Settings", "evaluate", "publish_packages"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class Settings:
    quick: bool
    epsilons: tuple[float, ...]
    sizes: tuple[int, ...]
    repeats: int
    epsilon: float = 1.0
    delta: float = 1e-6
    seed: int = 0


FULL_SETTINGS = Settings(
    quick=False,
    epsilons=(0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 6.0, 8.0, math.inf),
    sizes=(25, 50, 100, 200, 300),
    repeats=20,
)
QUICK_SETTINGS = Settings(quick=True, epsilons=(0.5, 1.0, math.inf), sizes=(25, 100), repeats=3)


class Clock:
    """Seconds spent in each step of the run (printed as it goes)."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.laps: list[dict[str, Any]] = []  # a list: JSON objects lose their order
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps.append({"step": name, "seconds": round(now - self._last, 1)})
        self._last = now
        self.log(f"[{name}: {self.laps[-1]['seconds']} s]")


def publish_packages(address: str, built: list[Built]) -> list[float]:
    seconds = []
    with MarketClient(address) as publisher:
        for b in built:
            started = time.perf_counter()
            publisher.upload(b.package)
            seconds.append(time.perf_counter() - started)
    return seconds


def _curve(
    client: MarketClient,
    market: MaterializedMarket,
    features: dict[str, Any],
    profile: Any,
    settings: Settings,
    *,
    epsilon: float,
    n: int | None,
) -> dict[str, list[Ranking]] | str:
    """Rankings of every task at one (epsilon, n) point, or why the point cannot be released."""
    repeats = 1 if math.isinf(epsilon) and n is None else settings.repeats
    try:
        return {
            t.id: draw_rankings(
                client,
                features[t.id],
                profile,
                epsilon=epsilon,
                delta=settings.delta,
                repeats=repeats,
                market_size=len(market.recipes),
                n=n,
                seed=settings.seed + k,
            )
            for k, t in enumerate(market.tasks)
        }
    except InvalidArgument as exc:  # e.g. delta too small for the sampler at a large epsilon
        return str(exc)


def evaluate(
    *, data_root: Path, workdir: Path, settings: Settings, log: Log = print, jobs: int = 1
) -> dict[str, Any]:
    """Everything the report needs, as plain data."""
    started = time.perf_counter()
    clock = Clock(log)
    catalogue = QUICK if settings.quick else FULL
    market = materialize(catalogue, data_root, quick=settings.quick)
    log(f"{catalogue.name}: {len(market.recipes)} learnwares, {len(market.tasks)} user tasks")
    with (
        tempfile.TemporaryDirectory() as tmp,
        embedded_market(Path(tmp) / "market") as (address, _),
        MarketClient(address) as client,
    ):
        profile = client.profile()  # the market decides the profile; specs are recomputed under it
        embedder = CachingEmbedder(profile)
        built = build_in(workdir, market.recipes, profile=profile, log=log, embedder=embedder, jobs=jobs)
        clock.lap("build")
        upload_seconds = publish_packages(address, built)
        clock.lap("publish")
        log(f"published {len(built)} learnwares on {address} (profile {profile.profile_id})")
        scores = compute_scores(
            built,
            market.tasks,
            client=client,
            cache=AdapterCache(Path(tmp) / "cache"),
            profile=profile,
            workdir=workdir,
            log=log,
        )
        clock.lap("scores")
        log("scores ready; drawing private specs")
        features = {t.id: features_of(t.texts, profile, embedder=embedder) for t in market.tasks}
        means = {b.recipe.card.id: b.mean_embedding for b in built}
        retriever = {
            t.id: retriever_ranking(embedder.embed(t.texts).astype(np.float64).mean(axis=0), means)
            for t in market.tasks
        }
        main = _curve(client, market, features, profile, settings, epsilon=settings.epsilon, n=None)
        if isinstance(main, str):
            raise InvalidArgument(f"cannot release at the headline epsilon: {main}")
        # the headline draws double as the curves' point at (epsilon, whole task)
        largest = max(market.tasks, key=lambda t: len(t.texts))
        by_epsilon = {
            e: main
            if e == settings.epsilon
            else _curve(client, market, features, profile, settings, epsilon=e, n=None)
            for e in settings.epsilons
        }
        by_size = {
            n: main
            if n >= len(largest.texts)
            else _curve(client, market, features, profile, settings, epsilon=settings.epsilon, n=n)
            for n in settings.sizes
        }
        clock.lap("specs_and_searches")
        log("measuring cost")
        cost = measure_cost(
            address,
            profile,
            largest.texts,
            built,
            epsilon=settings.epsilon,
            delta=settings.delta,
            upload_seconds=upload_seconds,
            repeats=1 if settings.quick else 3,
        )
        clock.lap("cost")
    cost["run"] = {
        "seconds_median": round(float(np.median(scores.run_seconds)), 3) if scores.run_seconds else None
    }

    def summarise(rankings: dict[str, list[Ranking]] | str) -> dict[str, Any]:
        if isinstance(rankings, str):
            return {"unavailable": rankings}
        return selection_summary(market.tasks, scores, rankings)

    return {
        "settings": asdict(settings)
        | {"epsilons": [None if math.isinf(e) else e for e in settings.epsilons]},
        "profile": profile.to_dict() | {"profile_id": profile.profile_id, "centre": len(profile.centre)},
        "market": _market_table(market, built),
        "tasks": [
            {
                "id": t.id,
                "domain": t.domain,
                "description": t.description,
                "n": len(t.texts),
                "labels": list(t.label_set),
                "right": list(t.right),
                "datasets": list(t.datasets),
            }
            for t in market.tasks
        ],
        "licences": market.licences,
        "scores": scores.to_dict(),
        "reuse": {"baselines": baselines(market.tasks, scores, retriever), "selection": summarise(main)},
        "per_task": per_task(market.tasks, scores, main, retriever),
        "privacy": {
            "epsilon": [
                {"epsilon": None if math.isinf(e) else e, **summarise(r)} for e, r in by_epsilon.items()
            ],
            "size": [{"n": n, **summarise(r)} for n, r in by_size.items()],
        },
        "cost": cost,
        "seconds": round(time.perf_counter() - started, 1),
        "timings": clock.laps,
    }


def _market_table(market: MaterializedMarket, built: list[Built]) -> list[dict[str, Any]]:
    return [
        {
            "id": b.recipe.card.id,
            "domain": b.recipe.card.domain,
            "name": b.recipe.card.name,
            "datasets": list(market.learnware_datasets.get(b.recipe.card.id, ())),
            "labels": list(b.recipe.labels),
            "train_records": len(b.recipe.train_texts),
            "epochs": b.recipe.training.epochs,
            "max_tokens": b.recipe.training.max_tokens,
            "eval_accuracy": round(b.stats["eval_accuracy"], 4),
            "eval_base_accuracy": round(b.stats["eval_base_accuracy"], 4),
            "eval_majority": round(b.stats["eval_majority"], 4),
            "train_seconds": b.stats["train_seconds"],
            "package_bytes": b.stats["package_bytes"],
        }
        for b in built
    ]


if __name__ == "__main__":
    import sys

    from lmdock.lab.cli import main

    sys.exit(main(["eval", *sys.argv[1:]]))
