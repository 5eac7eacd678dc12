"""The search half of `lmdock-lab eval --federated`: k sites holding one user task's records
identify its learnware together, or each alone, at the same epsilon per site.

The classifier reference market's learnwares are indexed by their exact specs (the kernel mean
of their training texts, as `identification` takes them: no training). Each draw takes n of a
user task's records at random and deals them out in equal shares to the k sites, then ranks:

* **alone**: each site's own DP spec of its n/k records (`plan_release`, the client's release
  at (epsilon, delta)); every site's top-1 is one outcome;
* **joint (secure sum)**: the sites' snapped kernel sums plus each one's share of distributed
  discrete Gaussian noise, summed (`federated/secure_spec`: what SecAgg+ reveals to the
  aggregator is exactly this sum, so summing the contributions in this process is what
  `federate_search` sees), over n records at the same epsilon per site, t = 2 noise shares
  of the k = 3 sites' (SecAgg+'s threshold must be below k): with all k in the sum its noise is
  sqrt(k / t) times a central release's;
* **mean of site specs**: the count-weighted mean of the sites' own DP specs
  (`federated/joint_spec`, how `federate build` forms a learnware's spec): post-processing of
  the alone releases, no secure aggregation, and noise sqrt(k) times the secure sum's;
* **no noise**: the exact kernel mean of the n records (and of one site's n/k, for reference).

A draw is right-domain when its top-1's domain is the task's, right-learnware when its top-1
is one of the task's right learnwares (`TaskDef.right`). Rates are pooled over tasks with the
Wilson 95 % half-width. The noise comes from the OS CSPRNG, the record draws from a seeded
generator. `flower_check` runs the real `federate_search` (SecAgg+ through Flower) on one task
and compares the noise of its joint spec with the calibrated sigma and with one in-process draw.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from lmdock.client.spec_release import features_of
from lmdock.common.accounting import Budget
from lmdock.common.errors import InvalidArgument
from lmdock.common.features import build_feature_map
from lmdock.common.profile import SpecProfile
from lmdock.common.spec import ReleasePlan, Spec, exact_spec, plan_release
from lmdock.federated.joint_spec import weighted_mean
from lmdock.federated.secure_spec import SecureSpecPlan, plan_secure_spec
from lmdock.federated.simulation import federate_search
from lmdock.federated.site import Site
from lmdock.lab.definitions import MarketDef, UserTask, materialize
from lmdock.lab.embeddings import CachingEmbedder
from lmdock.lab.identification import TOP_K, learnwares_of, market_index, wilson_half_width
from lmdock.server.index.exact import ExactIndex

__all__ = ["METHODS", "IdentSettings", "flower_check", "run_identification"]

Log = Callable[[str], None]
FloatArray = npt.NDArray[np.float64]

METHODS = ("alone", "joint", "mean of site specs", "alone, no noise", "joint, no noise")


@dataclass(frozen=True)
class IdentSettings:
    quick: bool
    sites: int
    epsilons: tuple[float, ...]
    draws: int  # per task and epsilon
    n: int | None = None  # records per task in all (None: the whole task)
    #: noise shares the secure sum relies on: SecAgg+ needs its reconstruction threshold below
    #: the number of sites, so at most k - 1 (2 of 3: each site's default trust, `HONEST_SITES`)
    shares: int = 2
    learnware_cap: int | None = None  # each learnware's spec summarises its first texts (quick)
    task_cap: int | None = None  # each task's first records (quick)
    delta: float = 1e-6
    seed: int = 0


@dataclass
class _Tally:
    domain: int = 0
    learnware: int = 0
    total: int = 0
    refused: int = 0  # a site release refused by its own checks (< 20 records, sigma over max_sigma)

    def add(self, right_domain: bool, right_learnware: bool) -> None:
        self.domain += right_domain
        self.learnware += right_learnware
        self.total += 1

    def to_dict(self) -> dict[str, Any]:
        def rate(hits: int) -> dict[str, float]:
            return {
                "rate": round(hits / self.total, 4) if self.total else math.nan,
                "ci95": round(wilson_half_width(hits, self.total), 4),
            }

        return {
            "right_domain": rate(self.domain),
            "right_learnware": rate(self.learnware),
            "draws": self.total,
            "refused": self.refused,
        }


class _Ranker:
    def __init__(self, index: ExactIndex, task: UserTask) -> None:
        self.index, self.task = index, task

    def score(self, spec: Spec, tally: _Tally) -> None:
        top = self.index.search(spec, top_k=TOP_K).matches[0]
        tally.add(top.domain == self.task.domain, top.learnware_id in self.task.right)


def _one_task(
    ranker: _Ranker,
    features: FloatArray,
    profile: SpecProfile,
    settings: IdentSettings,
    epsilon: float,
    tallies: Mapping[str, _Tally],
    rng: np.random.Generator,
) -> None:
    k = settings.sites
    n = len(features) if settings.n is None else min(settings.n, len(features))
    secure: SecureSpecPlan = plan_secure_spec(
        profile, epsilon=epsilon, delta=settings.delta, shares=settings.shares, sites=k
    )
    plans: dict[int, ReleasePlan | None] = {}
    for _ in range(settings.draws):
        chosen = features[rng.permutation(len(features))[:n]]
        parts = np.array_split(chosen, k)
        site_specs = []
        for rows in parts:
            if len(rows) not in plans:
                try:
                    plans[len(rows)] = plan_release(
                        profile, epsilon=epsilon, delta=settings.delta, units=len(rows)
                    )
                except InvalidArgument:
                    plans[len(rows)] = None
            plan = plans[len(rows)]
            if plan is None:
                tallies["alone"].refused += 1
                tallies["alone"].add(False, False)
            else:
                spec = plan.release(rows).spec
                site_specs.append((spec, len(rows)))
                ranker.score(spec, tallies["alone"])
            ranker.score(exact_spec(rows, profile), tallies["alone, no noise"])
        total = sum(secure.contribution(rows) for rows in parts)
        ranker.score(secure.joint_spec(total, records=n, contributors=k), tallies["joint"])
        if len(site_specs) == k:
            ranker.score(weighted_mean(site_specs), tallies["mean of site specs"])
        else:
            tallies["mean of site specs"].refused += 1
            tallies["mean of site specs"].add(False, False)
        ranker.score(exact_spec(chosen, profile), tallies["joint, no noise"])


def _market(
    settings: IdentSettings, catalogue: MarketDef, data_root: Path, profile: SpecProfile, embed: Any
) -> Any:
    learnwares = [
        replace(lw, texts=lw.texts[: settings.learnware_cap])
        for lw in learnwares_of(catalogue, data_root, settings.quick)
    ]
    tasks = [
        replace(t, texts=t.texts[: settings.task_cap], labels=t.labels[: settings.task_cap])
        for t in materialize(catalogue, data_root, quick=settings.quick).tasks
    ]
    feature_map = build_feature_map(profile)
    embed([t for lw in learnwares for t in lw.texts] + [t for task in tasks for t in task.texts])
    specs = {lw.id: exact_spec(feature_map(embed(lw.texts)), profile) for lw in learnwares}
    index = market_index(profile, specs, {lw.id: lw.domain for lw in learnwares})
    return learnwares, tasks, index, feature_map


def run_identification(
    settings: IdentSettings,
    *,
    catalogue: MarketDef,
    data_root: Path,
    profile: SpecProfile,
    embeddings: Path | None,
    log: Log = print,
) -> dict[str, Any]:
    """Every method's pooled rates by epsilon, and the real Flower search's check."""
    started = time.perf_counter()
    embedder = CachingEmbedder(profile, folder=embeddings)
    learnwares, tasks, index, feature_map = _market(settings, catalogue, data_root, profile, embedder.embed)
    log(f"federated search: {len(learnwares)} learnwares, {len(tasks)} tasks, {settings.sites} sites")
    cells = []
    for e, epsilon in enumerate(settings.epsilons):
        tallies = {m: _Tally() for m in METHODS}
        for t, task in enumerate(tasks):
            rng = np.random.default_rng([settings.seed, e, t])  # which records; never the noise
            features = feature_map(embedder.embed(task.texts))
            _one_task(_Ranker(index, task), features, profile, settings, epsilon, tallies, rng)
        cells.append({"epsilon": epsilon, **{m: tallies[m].to_dict() for m in METHODS}})
    sizes = [len(t.texts) if settings.n is None else min(settings.n, len(t.texts)) for t in tasks]
    return {
        "settings": {
            "sites": settings.sites,
            "epsilons": list(settings.epsilons),
            "draws": settings.draws,
            "n": settings.n,
            "delta": settings.delta,
            "shares": settings.shares,
            "learnware_cap": settings.learnware_cap,
            "task_cap": settings.task_cap,
        },
        "learnwares": len(learnwares),
        "tasks": len(tasks),
        "task_records": {"min": min(sizes), "max": max(sizes), "mean": round(float(np.mean(sizes)), 1)},
        "cells": cells,
        "flower": flower_check(
            tasks[0], index, profile, settings, feature_map(embedder.embed(tasks[0].texts))
        ),
        "seconds": round(time.perf_counter() - started, 1),
    }


def flower_check(
    task: UserTask, index: ExactIndex, profile: SpecProfile, settings: IdentSettings, features: FloatArray
) -> dict[str, Any]:
    """One real `federate_search` (Flower, SecAgg+, each site embedding its own file and booking
    its ledger) at the first epsilon: its joint spec's sigma against the in-process plan's, and the
    noise each leaves around the exact mean (root mean square per coordinate, over sigma)."""
    k, epsilon = settings.sites, settings.epsilons[0]
    n = len(task.texts) if settings.n is None else min(settings.n, len(task.texts))
    texts = list(task.texts[:n])
    shares = [texts[j::k] for j in range(k)]  # each site's records, dealt out
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sites = []
        for j, part in enumerate(shares):
            path = root / f"site{j}.jsonl"
            path.write_text("\n".join(json.dumps({"text": x}, ensure_ascii=False) for x in part) + "\n")
            sites.append(
                Site(
                    f"site{j}",
                    path,
                    root / f"site{j}" / "ledger.jsonl",
                    f"task-{j}",
                    Budget(epsilon=10.0, delta=1e-6),
                )
            )
        t0 = time.perf_counter()
        summary = federate_search(
            sites,
            profile,
            root / "search.json",
            epsilon=epsilon,
            delta=settings.delta,
            shares=settings.shares,
            market="",
            top_k=TOP_K,
        )
        seconds = time.perf_counter() - t0
        site_features = [features_of(part, profile) for part in shares]
    flower = Spec.from_dict(summary["spec"])
    exact = exact_spec(np.concatenate(site_features), profile).values.astype(np.float64)
    plan = plan_secure_spec(profile, epsilon=epsilon, delta=settings.delta, shares=settings.shares, sites=k)
    local = plan.joint_spec(sum(plan.contribution(f) for f in site_features), records=n, contributors=k)

    def rms(spec: Spec) -> float:
        return float(np.sqrt(np.mean((spec.values.astype(np.float64) - exact) ** 2)))

    top = index.search(flower, top_k=TOP_K).matches[0]
    return {
        "task": task.id,
        "epsilon": epsilon,
        "records": summary["records"],
        "contributors": summary["contributors"],
        "sigma_flower": flower.privacy.sigma,
        "sigma_in_process": local.privacy.sigma,
        "rms_over_sigma_flower": round(rms(flower) / flower.privacy.sigma, 3),
        "rms_over_sigma_in_process": round(rms(local) / local.privacy.sigma, 3),
        "top1": top.learnware_id,
        "top1_right": top.learnware_id in task.right,
        "seconds": round(seconds, 1),
    }
