"""`lmdock-lab eval --identification`: leave-one-data-set-out identification (issue 16).

For every data set D that a learnware of the reference market was trained on, one *fold*:

* hide the *specialists* of D (learnwares trained on D alone); *mixture* learnwares (trained on
  two or more sets, such as gen-domain-router) stay in every fold: they are what this protocol
  must catch, since a mixture's kernel mean sits near the centroid of everything;
* a user task is n records drawn from D's user part (u < 0.4, see `reference_market`: never in
  any learnware's data), released as a client releases it (`plan_release`, discrete Gaussian
  noise from the OS CSPRNG at (epsilon, delta); epsilon = inf sends the exact mean), and ranked
  by the market's exact index over the fold's learnwares;
* each draw scores whether the top-1's domain is D's domain, and whether the top-1 is a mixture.

No adapter is trained: a learnware's spec is the exact kernel mean of its training texts'
features, what its package carries. Embeddings are cached on disk by content (`embeddings`).
A fitted kind (`projected`) is fitted in each fold on the specs of that fold's market (the
visible learnwares' linear specs), as a market fits it on the specs it holds: the hidden
specialists never shape it.

Reported by n (`IdentSettings.sizes`, each capped at the fold's pool, and the whole pool) and
epsilon, pooled over the folds of domains with at least two data sets (the general domain has
one, so its fold has no right answer left: it is reported apart). Each pooled cell has
draws x folds Bernoulli outcomes; its 95 % interval is the Wilson interval's half-width.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from lmdock.common.features import build_feature_map
from lmdock.common.market_types import Match
from lmdock.common.profile import SpecProfile
from lmdock.common.profile_factory import (
    PROFILE_KINDS,
    PROJECTED_KIND,
    fit_projected_profile,
    make_profile,
    profile_of_kind,
)
from lmdock.common.spec import Spec, exact_spec, kernel_mean, plan_release
from lmdock.lab.datasets import load_records, position
from lmdock.lab.definitions import MarketDef, materialize
from lmdock.lab.embeddings import CachingEmbedder
from lmdock.server.index import IndexEntry, Listing
from lmdock.server.index.by_profile import ProfileIndexes, entry_as_indexed
from lmdock.server.index.exact import ExactIndex

__all__ = [
    "FULL_IDENT",
    "QUICK_IDENT",
    "Cell",
    "Fold",
    "IdentSettings",
    "Learnware",
    "Outcome",
    "ProfileOf",
    "calibration",
    "cells_of",
    "evaluate_identification",
    "folds_of",
    "learnwares_of",
    "market_index",
    "pools_of",
    "profiles_compared",
    "run_profile",
    "wilson_half_width",
]

Log = Callable[[str], None]
FloatArray = npt.NDArray[np.float64]
#: A compared kind's profile in one fold, given the linear specs of that fold's market (rows):
#: a built-in kind's is fixed; a fitted kind's is fitted on them.
ProfileOf = Callable[[FloatArray], SpecProfile]

#: Matches asked for per search (the market's default), over which confidences are computed.
TOP_K = 5
#: Bins of the top-1's confidence for the calibration table.
CONFIDENCE_BINS = (0.0, 0.5, 0.8, 0.95, 1.0)

#: The user part of every data set (as in `reference_market`).
USER_PART = (0.0, 0.4)


@dataclass(frozen=True)
class IdentSettings:
    quick: bool
    sizes: tuple[int, ...]  # the whole pool is always added
    epsilons: tuple[float, ...]
    draws: int  # per fold and cell (1 for the exact spec of the whole pool: it is deterministic)
    delta: float = 1e-6
    seed: int = 0
    pool_cap: int | None = None  # at most this many user records per fold (quick)


FULL_IDENT = IdentSettings(quick=False, sizes=(50, 100, 300), epsilons=(math.inf, 1.0, 0.5), draws=120)
QUICK_IDENT = IdentSettings(quick=True, sizes=(50,), epsilons=(math.inf, 1.0), draws=30, pool_cap=60)


@dataclass(frozen=True)
class Learnware:
    id: str
    domain: str
    datasets: tuple[str, ...]
    texts: tuple[str, ...]  # what its spec summarises

    @property
    def mixture(self) -> bool:
        return len(self.datasets) > 1


@dataclass(frozen=True)
class Fold:
    dataset: str
    domain: str
    hidden: tuple[str, ...]  # the specialists of `dataset`
    texts: tuple[str, ...]  # the user pool
    scored: bool  # its domain has a learnware left (a domain with at least two data sets)


def domain_of(dataset: str, learnwares: Sequence[Learnware]) -> str:
    """The domain of a data set: its specialists', else the folder it lives in (domain/name)."""
    domains = {lw.domain for lw in learnwares if lw.datasets == (dataset,)}
    if len(domains) > 1:
        raise ValueError(f"the specialists of {dataset} disagree on its domain: {sorted(domains)}")
    return domains.pop() if domains else dataset.split("/")[0]


def folds_of(learnwares: Sequence[Learnware], pools: Mapping[str, Sequence[str]]) -> list[Fold]:
    """One fold per data set with a pool; a domain is scored when it spans two or more data sets."""
    sets_of_domain: dict[str, set[str]] = {}
    for lw in learnwares:
        for d in lw.datasets:
            sets_of_domain.setdefault(domain_of(d, learnwares), set()).add(d)
    out = []
    for dataset, texts in pools.items():
        domain = domain_of(dataset, learnwares)
        hidden = tuple(lw.id for lw in learnwares if lw.datasets == (dataset,))
        out.append(
            Fold(dataset, domain, hidden, tuple(texts), scored=len(sets_of_domain.get(domain, ())) >= 2)
        )
    return out


@dataclass(frozen=True)
class Outcome:
    """One search of one fold: the top matches as the market returned them."""

    right: bool  # the top-1's domain is the fold's
    mixture: bool  # the top-1 is a mixture learnware
    matches: tuple[Match, ...]
    sigma: float  # the query's noise
    agrees: bool  # the top-1 is the exact spec's top-1 for the same records


@dataclass(frozen=True)
class Cell:
    n: int | None  # None: the whole pool
    epsilon: float


def cells_of(settings: IdentSettings) -> list[Cell]:
    """Every (n, epsilon) of a run, the whole pool last for each epsilon."""
    return [Cell(n, e) for e in settings.epsilons for n in (*settings.sizes, None)]


def wilson_half_width(successes: int, total: int, *, z: float = 1.959964) -> float:
    """Half the width of the Wilson score interval for a binomial proportion (95 % by default)."""
    if total == 0:
        return math.nan
    p = successes / total
    return z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)


def _draws(
    fold: Fold,
    features: FloatArray,
    index: ProfileIndexes,
    profile: SpecProfile,
    cell: Cell,
    settings: IdentSettings,
    mixtures: set[str],
    rng: np.random.Generator,
) -> list[Outcome]:
    n = len(features) if cell.n is None else min(cell.n, len(features))
    exact = math.isinf(cell.epsilon)
    count = 1 if exact and n == len(features) else settings.draws
    plan = None if exact else plan_release(profile, epsilon=cell.epsilon, delta=settings.delta, units=n)
    out = []
    for _ in range(count):
        rows = features if n == len(features) else features[rng.choice(len(features), n, replace=False)]
        nearest = index.search(exact_spec(rows, profile), top_k=TOP_K).matches
        matches = nearest if plan is None else index.search(plan.release(rows).spec, top_k=TOP_K).matches
        top = matches[0]
        sigma = 0.0 if plan is None else plan.calibration.sigma
        agrees = top.learnware_id == nearest[0].learnware_id
        out.append(Outcome(top.domain == fold.domain, top.learnware_id in mixtures, matches, sigma, agrees))
    return out


def market_index(
    profile: SpecProfile,
    specs: Mapping[str, Spec],
    domains: Mapping[str, str],
) -> ProfileIndexes:
    """The market's exact index over `specs`, each held, and each query compared, as the
    market's index for this profile does (`ProfileIndexes`, `entry_as_indexed`)."""
    entries = [
        entry_as_indexed(profile, IndexEntry(Listing(i, i, domains[i]), spec.values, 0.0, ""))
        for i, spec in specs.items()
    ]
    return ProfileIndexes({profile: ExactIndex.from_entries(entries, expected=len(entries))})


def run_profile(
    profile_of: ProfileOf,
    learnwares: Sequence[Learnware],
    folds: Sequence[Fold],
    embed: Callable[[Sequence[str]], npt.NDArray[np.float32]],
    settings: IdentSettings,
) -> tuple[dict[tuple[str, Cell], list[Outcome]], dict[str, SpecProfile]]:
    """Every fold's outcomes in every cell under the profile `profile_of` gives the fold (the
    subsets seeded, the noise not), and each fold's profile."""
    embedded = {lw.id: embed(lw.texts) for lw in learnwares}  # once: every fold maps them again
    linear = {i: kernel_mean(e) for i, e in embedded.items()}
    domains = {lw.id: lw.domain for lw in learnwares}
    mixtures = {lw.id for lw in learnwares if lw.mixture}
    cells = cells_of(settings)
    out: dict[tuple[str, Cell], list[Outcome]] = {}
    profiles: dict[str, SpecProfile] = {}
    for k, fold in enumerate(folds):
        visible = [lw for lw in learnwares if lw.id not in fold.hidden]
        profile = profiles[fold.dataset] = profile_of(np.stack([linear[lw.id] for lw in visible]))
        feature_map = build_feature_map(profile)
        specs = {lw.id: exact_spec(feature_map(embedded[lw.id]), profile) for lw in visible}
        index = market_index(profile, specs, domains)
        features = feature_map(embed(fold.texts))
        rng = np.random.default_rng([settings.seed, k])  # which records; never the noise
        for cell in cells:
            out[(fold.dataset, cell)] = _draws(fold, features, index, profile, cell, settings, mixtures, rng)
    return out, profiles


def _rate(outcomes: Sequence[Outcome], what: str) -> dict[str, float | int]:
    hits = sum(getattr(o, what) for o in outcomes)
    return {
        "rate": round(hits / len(outcomes), 4) if outcomes else math.nan,
        "ci95": round(wilson_half_width(hits, len(outcomes)), 4),
        "draws": len(outcomes),
    }


def summarise(
    folds: Sequence[Fold], outcomes: Mapping[tuple[str, Cell], list[Outcome]], settings: IdentSettings
) -> dict[str, Any]:
    """Pooled cells (scored folds), the general domain apart, each fold's rates, and every
    epsilon whose right-domain rate falls with n beyond the two intervals."""
    cells = cells_of(settings)

    def label(cell: Cell) -> dict[str, Any]:
        return {
            "n": "whole" if cell.n is None else cell.n,
            "epsilon": None if math.isinf(cell.epsilon) else cell.epsilon,
        }

    pooled, apart = [], []
    for cell in cells:
        scored = [o for f in folds if f.scored for o in outcomes[(f.dataset, cell)]]
        other = [o for f in folds if not f.scored for o in outcomes[(f.dataset, cell)]]
        pooled.append({**label(cell), "right": _rate(scored, "right"), "mixture": _rate(scored, "mixture")})
        apart.append({**label(cell), "right": _rate(other, "right"), "mixture": _rate(other, "mixture")})
    falls = []
    for e in settings.epsilons:
        row = [p for p in pooled if p["epsilon"] == (None if math.isinf(e) else e)]
        for a, b in itertools.combinations(row, 2):  # every smaller n against every larger one
            if b["right"]["rate"] + b["right"]["ci95"] < a["right"]["rate"] - a["right"]["ci95"]:
                falls.append({"epsilon": a["epsilon"], "from_n": a["n"], "to_n": b["n"]})
    per_fold = [
        {
            "dataset": f.dataset,
            "domain": f.domain,
            "scored": f.scored,
            "hidden": list(f.hidden),
            "pool": len(f.texts),
            "cells": [
                {
                    **label(cell),
                    "right": _rate(outcomes[(f.dataset, cell)], "right")["rate"],
                    "mixture": _rate(outcomes[(f.dataset, cell)], "mixture")["rate"],
                }
                for cell in cells
            ],
        }
        for f in folds
    ]
    noisy = [
        o
        for f in folds
        if f.scored
        for c in cells
        if not math.isinf(c.epsilon)
        for o in outcomes[(f.dataset, c)]
    ]
    return {
        "pooled": pooled,
        "apart": apart,
        "falls": falls,
        "folds": per_fold,
        "calibration": calibration(noisy),
    }


def calibration(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """Per bin of the top-1's confidence: how many searches, their mean confidence, how often
    the top-1 was the exact spec's top-1 (what the confidence claims) and of the right domain."""
    bins = []
    for lo, hi in itertools.pairwise(CONFIDENCE_BINS):
        inside = [
            o for o in outcomes if lo <= o.matches[0].confidence < hi or o.matches[0].confidence == hi == 1.0
        ]
        mean = float(np.mean([o.matches[0].confidence for o in inside])) if inside else math.nan
        bins.append(
            {
                "bin": [lo, hi],
                "confidence": round(mean, 4),
                "agrees": _rate(inside, "agrees"),
                "right": _rate(inside, "right"),
            }
        )
    return bins


def learnwares_of(catalogue: MarketDef, data_root: Path, quick: bool) -> list[Learnware]:
    market = materialize(catalogue, data_root, quick=quick)
    return [
        Learnware(r.card.id, r.card.domain, market.learnware_datasets[r.card.id], tuple(r.summarised_texts))
        for r in market.recipes
    ]


def pools_of(learnwares: Sequence[Learnware], data_root: Path, cap: int | None) -> dict[str, list[str]]:
    """Each data set's user records (u in USER_PART), less any text a learnware summarises."""
    used = {" ".join(t.lower().split()) for lw in learnwares for t in lw.texts}
    lo, hi = USER_PART
    pools = {}
    for dataset in sorted({d for lw in learnwares for d in lw.datasets}):
        texts = [
            r.text
            for r in load_records(data_root, dataset)
            if lo <= position(dataset, r.id) < hi and " ".join(r.text.lower().split()) not in used
        ]
        pools[dataset] = texts[:cap]
    return pools


def profiles_compared(*, quick: bool) -> dict[str, ProfileOf]:
    """The spec kinds the evaluation compares, by name (today's first): the built-in ones, and
    the projected kind fitted on each fold's market as `lmdock-market add-profile` fits it."""

    def fixed(profile: SpecProfile) -> ProfileOf:
        return lambda specs: profile

    kinds = {kind: fixed(profile_of_kind(kind)) for kind in PROFILE_KINDS}
    base = profile_of_kind("linear")
    kinds[PROJECTED_KIND] = lambda specs: fit_projected_profile(specs, np.zeros(len(specs)), base=base)
    return kinds


def evaluate_identification(
    *,
    catalogue: MarketDef,
    data_root: Path,
    profiles: Mapping[str, ProfileOf],
    settings: IdentSettings,
    embeddings: Path | None,
    log: Log = print,
) -> dict[str, Any]:
    """The protocol under each of `profiles` (sharing the linear profile's embedder), as plain data."""
    started = time.perf_counter()
    first = make_profile()
    learnwares = learnwares_of(catalogue, data_root, settings.quick)
    folds = folds_of(learnwares, pools_of(learnwares, data_root, settings.pool_cap))
    embedder = CachingEmbedder(first, folder=embeddings)
    texts = list(
        dict.fromkeys([t for lw in learnwares for t in lw.texts] + [t for f in folds for t in f.texts])
    )
    log(f"identification: {len(learnwares)} learnwares, {len(folds)} folds, {len(texts)} texts to embed")
    embedder.embed(texts)
    results: dict[str, Any] = {}
    for name, profile_of in profiles.items():
        log(f"identification under {name}")
        outcomes, used = run_profile(profile_of, learnwares, folds, embedder.embed, settings)
        if {(p.embedder_sha256, p.max_tokens) for p in used.values()} != {
            (first.embedder_sha256, first.max_tokens)
        }:
            raise ValueError(f"{name}'s profiles do not share the linear profile's embedder and token limit")
        ids = sorted({p.profile_id for p in used.values()})
        results[name] = {
            "profile_id": ids[0] if len(ids) == 1 else None,  # None: one per fold, below
            "fold_profile_ids": {dataset: p.profile_id for dataset, p in used.items()},
            "kernel": next(iter(used.values())).kernel,
            "feature_dims": sorted({p.feature_dim for p in used.values()}),
            **summarise(folds, outcomes, settings),
        }
    return {
        "settings": {
            "sizes": list(settings.sizes),
            "epsilons": [None if math.isinf(e) else e for e in settings.epsilons],
            "draws": settings.draws,
            "delta": settings.delta,
            "pool_cap": settings.pool_cap,
            "quick": settings.quick,
        },
        "learnwares": [{"id": lw.id, "domain": lw.domain, "mixture": lw.mixture} for lw in learnwares],
        "profiles": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
