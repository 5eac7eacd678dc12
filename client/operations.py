"""The client's main job as plain functions: search with a private spec, pull, run locally."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lmdock.client.cache import AdapterCache
from lmdock.client.connection import MarketClient
from lmdock.client.ledger import Debit, Ledger
from lmdock.client.progress import Progress
from lmdock.client.spec_release import SpecBooking, private_spec
from lmdock.client.task import TaskData
from lmdock.common.errors import FailedPrecondition, IntegrityError, InvalidArgument
from lmdock.common.market_types import SearchResult
from lmdock.common.package import Manifest
from lmdock.common.spec import Spec

__all__ = [
    "RunResult",
    "SearchOutcome",
    "count_matches",
    "pull",
    "run_task",
    "score_predictions",
    "search_task",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchOutcome:
    spec: Spec  # what was sent
    result: SearchResult
    debit: Debit | None  # what the ledger holds for it; None without a ledger


def search_task(
    client: MarketClient,
    texts: Sequence[str],
    *,
    epsilon: float,
    delta: float,
    top_k: int = 0,
    progress: Progress | None = None,
    ledger: Ledger | None = None,
    persons: Sequence[str] = (),
    dataset: str | None = None,
    checkpoint: Path | None = None,
) -> SearchOutcome:
    """Compute the DP spec of `texts` locally and send only it; return it with the ranking.

    With a `ledger` (the CLI and the daemon always pass one), the release is debited before it
    is sent: a release over the ledger's budget raises BudgetExceeded before any request leaves
    (for a borderline case, after the profile request only, before embedding), and a spec
    already released for these texts, parameters and profile is re-sent from the ledger at no
    cost; a market with no learnwares is refused before anything is embedded. Without one,
    the caller accounts for the release itself. `persons` (one id per text) makes the person
    the privacy unit; `dataset` names the data set the ledger books (None:
    the registered data set holding these records, else one named after their content).
    `checkpoint` (with a ledger): a file where embedding saves its progress and resumes from.
    """
    if ledger is None:
        _refuse_an_empty_market(client)
        profile = client.profile()
        spec = private_spec(
            texts, profile, epsilon=epsilon, delta=delta, persons=persons, progress=progress
        ).spec
        debit = None
    else:
        booking = SpecBooking.open(  # refuses what the ledger alone can, before any request
            ledger, texts, epsilon=epsilon, delta=delta, persons=persons, dataset=dataset
        )
        _refuse_an_empty_market(client)
        profile = client.profile()
        spec, debit = booking.spec(
            profile, destination=client.address, progress=progress, checkpoint=checkpoint
        )
    p = spec.privacy  # parameters only in logs: never a text, never a vector
    if debit is not None and not debit.fresh:
        log.info("re-sending the spec already released for this data set (no new privacy cost)")
    else:
        log.info(
            "released a spec: epsilon=%g delta=%g sigma=%.4g size bucket %d per %s",
            p.epsilon,
            p.delta,
            p.sigma,
            p.size_bucket,
            p.unit,
        )
    return SearchOutcome(spec, client.search(spec, top_k=top_k), debit)


def _refuse_an_empty_market(client: MarketClient) -> None:
    """Checked before any release: a search of a market with no learnwares costs nothing."""
    if not client.has_learnwares():
        raise FailedPrecondition(
            f"the market at {client.address} has no learnwares yet: nothing to search for; "
            "no privacy was spent"
        )


def pull(client: MarketClient, cache: AdapterCache, learnware_id: str) -> Manifest:
    """Download (resuming), verify and cache a learnware; a no-op when already cached intact."""
    info = client.get(learnware_id)
    if cache.installed_sha256(learnware_id) == info.package_sha256:
        try:
            return cache.load(learnware_id)
        except (IntegrityError, InvalidArgument):  # damaged cache entry: fetch it again
            cache.evict(learnware_id)
    archive = cache.partial_path(info.package_sha256)
    client.download(learnware_id, archive)
    return cache.install(info, archive)


@dataclass(frozen=True)
class RunResult:
    learnware_id: str
    predictions: tuple[str, ...]
    metric: str
    score: float | None  # None when the task file has no gold labels/answers


def count_matches(predictions: Sequence[str], gold: Sequence[str]) -> int:
    """Exact matches after trimming and lower-casing."""
    return sum(p.strip().lower() == g.strip().lower() for p, g in zip(predictions, gold, strict=True))


def score_predictions(predictions: Sequence[str], gold: Sequence[str | None]) -> float | None:
    """Accuracy (exact match after trimming and lower-casing); None without gold answers."""
    if not gold or any(g is None for g in gold):
        return None
    return count_matches(predictions, [str(g) for g in gold]) / len(gold)


def run_task(cache: AdapterCache, learnware_id: str, task: TaskData, *, device: str = "auto") -> RunResult:
    """Run a cached learnware on `task` locally; never contacts the market."""
    manifest = cache.load(learnware_id)  # a learnware not cached is refused before torch loads
    from lmdock.client.runtime import load_learnware

    loaded = load_learnware(
        cache.folder(learnware_id), base_model=manifest.base_model, task=manifest.task, device=device
    )
    predictions = loaded.predict(task.texts)
    if manifest.task.kind == "classification":
        gold, metric = task.labels, "accuracy"
    else:
        gold, metric = task.answers, "exact_match"
    if not task.texts:
        raise InvalidArgument("task has no texts")
    return RunResult(
        learnware_id=learnware_id,
        predictions=tuple(predictions),
        metric=metric,
        score=score_predictions(predictions, gold),
    )
