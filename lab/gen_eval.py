"""`lmdock-lab eval --generative`: the generative market, built, published, scored, selected.

1. read the catalogue's data (`definitions.materialize`: user tasks held out, as the classifier lab);
2. add the generalist recipe (`gen_market.generalist_recipe`), build (or read back) every package
   under the embedded market's profile (`building.build_packages`);
3. publish the learnwares into the market, the generalist into a market of its own (it is a
   column, not a candidate), and pull each one back like any client (`operations.pull`);
4. score the base, every learnware and the generalist on every task (`gen_scoring`);
5. per task: repeated (ε = 1)-DP specs -> market rankings, the exact spec's ranking, the
   market's mixture for one DP spec (`selection.draw_rankings`, `MarketClient.search`);
6. columns, domain averages and win/tie/loss (`gen_metrics`), with the time of every phase.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from lmdock.client.cache import AdapterCache
from lmdock.client.connection import MarketClient
from lmdock.client.device import pick_device, pick_dtype
from lmdock.client.operations import pull
from lmdock.client.spec_release import features_of
from lmdock.common.errors import InvalidArgument
from lmdock.common.spec import release
from lmdock.lab.building import Built, build_in
from lmdock.lab.definitions import MarketDef, MaterializedMarket, materialize
from lmdock.lab.embedded import embedded_market
from lmdock.lab.embeddings import CachingEmbedder
from lmdock.lab.eval import Clock, publish_packages
from lmdock.lab.gen_market import GEN_FULL, GEN_QUICK, GENERALIST_K, generalist_recipe
from lmdock.lab.gen_metrics import GENERALIST, gen_summary
from lmdock.lab.gen_scoring import score_models
from lmdock.lab.selection import draw_rankings

__all__ = ["GEN_FULL_SETTINGS", "GEN_QUICK_SETTINGS", "GenSettings", "evaluate_generative", "subset"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class GenSettings:
    quick: bool
    repeats: int  # DP specs per task at the headline epsilon
    examples: int  # scored examples per task (the rest of the task still feeds its spec)
    epsilon: float = 1.0
    delta: float = 1e-6
    seed: int = 0
    k: int = GENERALIST_K
    learnwares: tuple[str, ...] = ()  # a subset of the catalogue (a measured partial run); () = all
    tasks: tuple[str, ...] = ()
    #: Where adapters train and score, as `lmdock run` names them: cpu/float32 by default, so a
    #: run reproduces the committed results; cuda/bfloat16 on a GPU (`--device auto`).
    device: str = "cpu"
    dtype: str = "float32"


GEN_FULL_SETTINGS = GenSettings(quick=False, repeats=10, examples=100)
GEN_QUICK_SETTINGS = GenSettings(quick=True, repeats=3, examples=6)


def subset(catalogue: MarketDef, learnwares: Sequence[str], tasks: Sequence[str]) -> MarketDef:
    """The catalogue cut to the named learnwares and tasks (every name must exist)."""
    for kind, names, known in (
        ("learnware", learnwares, {d.id for d in catalogue.learnwares}),
        ("task", tasks, {t.id for t in catalogue.tasks}),
    ):
        unknown = sorted(set(names) - known)
        if unknown:
            raise InvalidArgument(f"no {kind} {', '.join(unknown)} in the {catalogue.name} market")
    kept = [d for d in catalogue.learnwares if not learnwares or d.id in learnwares]
    ids = {d.id for d in kept}
    chosen = [
        dataclasses.replace(t, right=tuple(r for r in t.right if r in ids))
        for t in catalogue.tasks
        if not tasks or t.id in tasks
    ]
    return dataclasses.replace(catalogue, learnwares=tuple(kept), tasks=tuple(chosen))


def _mixture(client: MarketClient, features: Any, profile: Any, settings: GenSettings) -> dict[str, float]:
    spec = release(features, profile, epsilon=settings.epsilon, delta=settings.delta).spec
    result = client.search(spec, mixture=True)
    return {c.learnware_id: c.weight for c in result.mixture}


def evaluate_generative(
    *, data_root: Path, workdir: Path, settings: GenSettings, log: Log = print, jobs: int = 1
) -> dict[str, Any]:
    """Everything the generative report needs, as plain data."""
    clock = Clock(log)
    catalogue = subset(GEN_QUICK if settings.quick else GEN_FULL, settings.learnwares, settings.tasks)
    market = materialize(catalogue, data_root, quick=settings.quick)
    device = pick_device(settings.device)
    dtype = str(pick_dtype(settings.dtype, device)).removeprefix("torch.")
    recipes = [dataclasses.replace(r, device=str(device), dtype=dtype) for r in market.recipes]
    generalist = generalist_recipe(recipes, k=settings.k)
    log(
        f"{catalogue.name}: {len(market.recipes)} learnwares + the generalist, {len(market.tasks)} user tasks"
    )
    clock.lap("data")
    with (
        tempfile.TemporaryDirectory() as tmp,
        embedded_market(Path(tmp) / "market") as (address, _),
        MarketClient(address) as client,
    ):
        profile = client.profile()
        embedder = CachingEmbedder(profile)
        built = build_in(
            workdir, [*recipes, generalist], profile=profile, log=log, embedder=embedder, jobs=jobs
        )
        clock.lap("build")
        learnwares, general = built[:-1], built[-1]
        cache = AdapterCache(Path(tmp) / "cache")
        publish_packages(address, learnwares)
        with (
            embedded_market(Path(tmp) / "generalist-market", profile=profile) as (apart, _),
            MarketClient(apart) as other,
        ):
            publish_packages(apart, [general])
            pull(other, cache, GENERALIST)
        for b in learnwares:
            pull(client, cache, b.recipe.card.id)
        clock.lap("publish_and_pull")
        ids = [b.recipe.card.id for b in learnwares]
        # Scoring is one process: with --jobs N it takes the N cores the builds had.
        threads = torch.get_num_threads()
        torch.set_num_threads(max(threads, jobs))
        try:
            scores = score_models(
                catalogue.base_model,
                {name: cache.folder(name) for name in [*ids, GENERALIST]},
                market.tasks,
                examples=settings.examples,
                workdir=workdir,
                log=log,
                versions={b.recipe.card.id: b.package.name for b in built},
                device=str(device),
                dtype=dtype,
            )
        finally:
            torch.set_num_threads(threads)
        clock.lap("scores")
        features = {t.id: features_of(t.texts, profile, embedder=embedder) for t in market.tasks}
        draws, exact, mixtures = {}, {}, {}
        for k, t in enumerate(market.tasks):
            common: dict[str, Any] = {
                "market_size": len(ids),
                "delta": settings.delta,
                "seed": settings.seed + k,
            }
            draws[t.id] = draw_rankings(
                client, features[t.id], profile, epsilon=settings.epsilon, repeats=settings.repeats, **common
            )
            exact[t.id] = draw_rankings(
                client, features[t.id], profile, epsilon=math.inf, repeats=1, **common
            )[0]
            mixtures[t.id] = _mixture(client, features[t.id], profile, settings)
        clock.lap("specs_and_searches")
    summary = gen_summary(market.tasks, scores, ids, draws, exact, mixtures)
    return {
        "settings": asdict(settings),
        "base_model": catalogue.base_model,
        "profile_id": profile.profile_id,
        "market": _market_table(market, built),
        "generalist": {
            "k": settings.k,
            "records": len(generalist.train_texts),
            "steps": math.ceil(len(generalist.train_texts) / generalist.training.batch_size),
            "rank": generalist.training.rank,
        },
        "tasks": [
            {
                "id": t.id,
                "domain": t.domain,
                "description": t.description,
                "texts": len(t.texts),
                "choices": list(t.choices),
                "prompt_tokens": t.prompt_tokens,
                "right": list(t.right),
                "datasets": list(t.datasets),
            }
            for t in market.tasks
        ],
        "licences": {d: market.licences[d] for d in sorted({d for t in market.tasks for d in t.datasets})},
        "scores": scores.to_dict(),
        "summary": summary,
        "timings": clock.laps + [{"step": f"scores:{k}", "seconds": v} for k, v in scores.seconds.items()],
    }


def _market_table(market: MaterializedMarket, built: Sequence[Built]) -> list[dict[str, Any]]:
    return [
        {
            "id": b.recipe.card.id,
            "domain": b.recipe.card.domain,
            "datasets": list(market.learnware_datasets.get(b.recipe.card.id, ("(all)",))),
            "train_records": len(b.recipe.train_texts),
            "epochs": b.recipe.training.epochs,
            "rank": b.recipe.training.rank,
            "learning_rate": b.recipe.training.learning_rate,
            "layers": b.recipe.training.layers,
            "max_tokens": b.recipe.training.max_tokens,
            "train_loss": round(b.stats.get("eval_train_loss", float("nan")), 4),
            "train_seconds": b.stats["train_seconds"],
            "package_bytes": b.stats["package_bytes"],
        }
        for b in built
    ]
