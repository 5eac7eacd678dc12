"""`lmdock-lab eval --task-vector`: kernel mean vs task vector vs both, leave one data set out (issue 22).

The protocol of `identification` (folds, pools, scoring: is the top-1's domain the fold's?) on the
generative reference market, with three ways to search from the same n user records:

* **kernel mean**: the market's first profile, released as a client releases it (`plan_release`);
* **task vector**: the one-step task vector of the records (`client/training/task_vector.py`),
  -eta * mean_i clip(g_i, C) + N(0, sigma^2 I), sigma = eta z C / n with the z `plan_task_vector`
  calibrates to (epsilon, delta), ranked by cosine against the learnwares' exact vectors;
* **both**: each of the two at epsilon / 2 (basic composition: the pair is (epsilon, 2 delta')-DP
  with delta' the release delta; the eval uses delta / 2 each so the pair is (epsilon, delta)-DP),
  their two full rankings fused by reciprocal rank as `lmdock search --spec both` fuses them
  (`task_vector_search.fuse`: score sum_r 1 / (60 + rank_r)).

A one-step vector is a mean of per-record rows, so each text's gradient g_i is computed once
(`record_gradients`, kept on disk by content with `--embeddings`) and every draw's vector is a mean
of the drawn rows: the same distribution a client's Opacus release has (tests/test_task_vector.py
holds the two equal, and the DP one's noise to its stated sd). The noise of this simulation comes
from a seeded numpy generator, for a reproducible evaluation; a client's from ChaCha20. A
learnware's vector summarises at most `learnware_cap` of its texts (the first, in split order).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from lmdock.client.training.task_vector import one_step_vector, plan_task_vector, record_gradients
from lmdock.client.training.task_vector_search import KERNEL_MEAN, TASK_VECTOR, Ranking, fuse
from lmdock.common.features import build_feature_map
from lmdock.common.profile import SpecProfile
from lmdock.common.spec import ComparedProfile, Privacy, Spec, exact_spec, plan_release
from lmdock.common.task_vector import TaskVectorProfile
from lmdock.common.task_vector_search import TaskVectorIndexing
from lmdock.lab.definitions import MarketDef
from lmdock.lab.embeddings import CachingEmbedder, TextVectors
from lmdock.lab.identification import Fold, Learnware, folds_of, learnwares_of, pools_of, wilson_half_width
from lmdock.server.index import IndexEntry, Listing
from lmdock.server.index.by_profile import entry_as_indexed
from lmdock.server.index.exact import ExactIndex

__all__ = [
    "FULL_TV",
    "METHODS",
    "QUICK_TV",
    "FoldSearches",
    "TVSettings",
    "evaluate_task_vectors",
    "rows_file",
    "rows_in_chunks",
]

Log = Callable[[str], None]
METHODS = ("kernel mean", "task vector", "both")
#: Texts per `record_gradients` call (a progress line each).
ROWS_CHUNK = 256


@dataclass(frozen=True)
class TVSettings:
    quick: bool
    sizes: tuple[int, ...]
    epsilons: tuple[float, ...]
    draws: int  # per fold and cell
    delta: float = 1e-6
    seed: int = 0
    pool_cap: int | None = 600
    learnware_cap: int = 300


FULL_TV = TVSettings(quick=False, sizes=(50, 100, 300), epsilons=(math.inf, 4.0, 1.0, 0.5), draws=40)
QUICK_TV = TVSettings(
    quick=True, sizes=(20,), epsilons=(math.inf, 4.0), draws=4, pool_cap=30, learnware_cap=24
)


def _index(
    profile: ComparedProfile,
    specs: Mapping[str, npt.NDArray[np.float32]],
    domains: Mapping[str, str],
) -> ExactIndex:
    """An exact index of exact specs as the market holds them under `profile`'s kernel."""
    entries = [
        entry_as_indexed(profile, IndexEntry(Listing(i, i, domains[i]), v, 0.0, "")) for i, v in specs.items()
    ]
    return ExactIndex.from_entries(entries, expected=len(entries))


def _ranking(kind: str, index: ExactIndex, spec: Spec) -> Ranking:
    """The index's whole ranking of `spec`, as a client holds a search's answer."""
    return Ranking(kind, spec, index.search(spec, top_k=len(index)))


class FoldSearches:
    """One fold's indexes and the three searches of a drawn subset of its pool."""

    def __init__(
        self,
        fold: Fold,
        km_profile: SpecProfile,
        tv_profile: TaskVectorProfile,
        km_specs: Mapping[str, npt.NDArray[np.float32]],
        tv_specs: Mapping[str, npt.NDArray[np.float32]],
        domains: Mapping[str, str],
    ) -> None:
        kept = [i for i in km_specs if i not in fold.hidden]
        self.km_profile, self.tv_profile = km_profile, tv_profile
        self.km = _index(km_profile, {i: km_specs[i] for i in kept}, domains)
        vectors = {i: tv_specs[i] for i in kept if i in tv_specs}  # none: kernel-mean searches only
        self.tv = _index(TaskVectorIndexing(tv_profile), vectors, domains)

    def kernel_mean(self, features: npt.NDArray[np.float64], epsilon: float, delta: float) -> Ranking:
        if math.isinf(epsilon):
            return _ranking(KERNEL_MEAN, self.km, exact_spec(features, self.km_profile))
        plan = plan_release(self.km_profile, epsilon=epsilon, delta=delta, units=len(features))
        return _ranking(KERNEL_MEAN, self.km, plan.release(features).spec)

    def task_vector(
        self, grads: npt.NDArray[np.float32], epsilon: float, delta: float, rng: np.random.Generator
    ) -> Ranking:
        p, n = self.tv_profile, len(grads)
        values = one_step_vector(grads, p).astype(np.float64)
        sigma = 0.0
        if not math.isinf(epsilon):
            z = plan_task_vector(p, records=n, epsilon=epsilon, delta=delta).noise_multiplier
            sigma = p.learning_rate * z * p.clip_norm / n
            values += rng.normal(0.0, sigma, size=values.shape)
        privacy = Privacy(epsilon=None if sigma == 0 else epsilon, delta=delta, sigma=sigma, size_bucket=n)
        return _ranking(TASK_VECTOR, self.tv, Spec(p.profile_id, values.astype(np.float32), privacy))


def evaluate_task_vectors(
    *,
    catalogue: MarketDef,
    data_root: Path,
    km_profile: SpecProfile,
    tv_profile: TaskVectorProfile,
    settings: TVSettings,
    cache: Path | None,
    log: Log = print,
) -> dict[str, Any]:
    """The three searches on every fold, cell and draw, as plain data (module docstring)."""
    started = time.perf_counter()
    learnwares = [
        Learnware(lw.id, lw.domain, lw.datasets, lw.texts[: settings.learnware_cap])
        for lw in learnwares_of(catalogue, data_root, settings.quick)
    ]
    folds = folds_of(learnwares, pools_of(learnwares, data_root, settings.pool_cap))
    texts = list(
        dict.fromkeys([t for lw in learnwares for t in lw.texts] + [t for f in folds for t in f.texts])
    )
    log(f"task vectors: {len(learnwares)} learnwares, {len(folds)} folds, {len(texts)} texts")
    embed = CachingEmbedder(km_profile, folder=cache).embed
    gradients = TextVectors(
        lambda batch: rows_in_chunks(batch, tv_profile, log),
        dim=tv_profile.dim,
        file=None if cache is None else cache / rows_file(tv_profile),
    )
    t0 = time.perf_counter()
    gradients(texts)
    gradient_seconds = time.perf_counter() - t0
    outcomes = run_searches(learnwares, folds, km_profile, tv_profile, embed, gradients, settings)
    return {
        "settings": {
            "sizes": list(settings.sizes),
            "epsilons": [None if math.isinf(e) else e for e in settings.epsilons],
            "draws": settings.draws,
            "delta": settings.delta,
            "pool_cap": settings.pool_cap,
            "learnware_cap": settings.learnware_cap,
            "quick": settings.quick,
        },
        "kernel_mean_profile": km_profile.profile_id,
        "task_vector_profile": tv_profile.to_dict() | {"profile_id": tv_profile.profile_id},
        "wire_bytes": {"kernel mean": 4 * km_profile.feature_dim, "task vector": 4 * tv_profile.dim},
        "learnwares": [{"id": lw.id, "domain": lw.domain, "mixture": lw.mixture} for lw in learnwares],
        "pooled": _pooled(outcomes, settings),
        "seconds": {
            "all": round(time.perf_counter() - started, 1),
            "gradients": round(gradient_seconds, 1),
            "texts": len(texts),
        },
    }


def run_searches(
    learnwares: Sequence[Learnware],
    folds: Sequence[Fold],
    km_profile: SpecProfile,
    tv_profile: TaskVectorProfile,
    embed: Callable[[Sequence[str]], npt.NDArray[np.float32]],
    gradients: Callable[[Sequence[str]], npt.NDArray[np.float32]],
    settings: TVSettings,
) -> list[dict[str, Any]]:
    """Every fold's three searches in every cell and draw: one outcome each (the subsets and
    the simulated task-vector noise seeded; the kernel mean's noise from the OS CSPRNG)."""
    feature_map = build_feature_map(km_profile)
    domains = {lw.id: lw.domain for lw in learnwares}
    km_specs = {lw.id: exact_spec(feature_map(embed(lw.texts)), km_profile).values for lw in learnwares}
    tv_specs = {lw.id: one_step_vector(gradients(lw.texts), tv_profile) for lw in learnwares}
    outcomes: list[dict[str, Any]] = []
    for k, fold in enumerate(folds):
        searches = FoldSearches(fold, km_profile, tv_profile, km_specs, tv_specs, domains)
        features = feature_map(embed(fold.texts))
        grads = gradients(fold.texts)
        rng = np.random.default_rng([settings.seed, k])
        for epsilon in settings.epsilons:
            for size in settings.sizes:
                n = min(size, len(fold.texts))
                for _ in range(1 if math.isinf(epsilon) and n == len(fold.texts) else settings.draws):
                    pick = rng.choice(len(fold.texts), n, replace=False)
                    half = epsilon / 2
                    km = searches.kernel_mean(features[pick], epsilon, settings.delta)
                    tv = searches.task_vector(grads[pick], epsilon, settings.delta, rng)
                    fused = fuse(
                        [
                            searches.kernel_mean(features[pick], half, settings.delta / 2),
                            searches.task_vector(grads[pick], half, settings.delta / 2, rng),
                        ]
                    )
                    tops = (km.result.matches[0], tv.result.matches[0], fused[0])
                    for method, top in zip(METHODS, (t.learnware_id for t in tops), strict=True):
                        outcomes.append(
                            {
                                "fold": fold.dataset,
                                "scored": fold.scored,
                                "method": method,
                                "n": size,
                                "epsilon": None if math.isinf(epsilon) else epsilon,
                                "right": domains[top] == fold.domain,
                            }
                        )
    return outcomes


def rows_in_chunks(texts: Sequence[str], profile: TaskVectorProfile, log: Log) -> npt.NDArray[np.float32]:
    rows = []
    for start in range(0, len(texts), ROWS_CHUNK):
        rows.append(record_gradients(texts[start : start + ROWS_CHUNK], profile))
        log(f"task vectors: gradient rows of {start + len(rows[-1])} / {len(texts)} texts")
    return np.concatenate(rows)


def rows_file(profile: TaskVectorProfile) -> str:
    """The cache file of the gradient rows, named by what a row depends on: the profile less the
    clip norm, learning rate and steps."""
    shaping = {k: v for k, v in profile.to_dict().items() if k not in ("clip_norm", "learning_rate", "steps")}
    return f"task-vector-rows-{hashlib.sha256(repr(sorted(shaping.items())).encode()).hexdigest()[:16]}.npz"


def _pooled(outcomes: Sequence[dict[str, Any]], settings: TVSettings) -> list[dict[str, Any]]:
    """Right-domain rate with its Wilson 95 % half-width per method, n and epsilon (scored folds)."""
    out = []
    for method in METHODS:
        for epsilon in settings.epsilons:
            eps = None if math.isinf(epsilon) else epsilon
            for n in settings.sizes:
                cell = [
                    o
                    for o in outcomes
                    if o["scored"] and (o["method"], o["epsilon"], o["n"]) == (method, eps, n)
                ]
                right = sum(o["right"] for o in cell)
                out.append(
                    {
                        "method": method,
                        "epsilon": eps,
                        "n": n,
                        "searches": len(cell),
                        "right": round(right / len(cell), 4) if cell else None,
                        "ci95": round(wilson_half_width(right, len(cell)), 4) if cell else None,
                    }
                )
    return out
