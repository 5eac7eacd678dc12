"""The score of every learnware on every user task, and of the base model.

Scoring rule (the same for the selected learnware, the oracle, the best single and the random
learnware): a classification learnware answers a task with the best-scoring of *its own*
labels that the task uses (its head restricted to the shared labels); accuracy is exact match
with the gold label. A learnware that shares no label with the task cannot answer it and
scores 0 — it is never run. The base model answers zero-shot: the task label whose name
embeds closest to the text.

Learnwares are pulled from the market and verified like any client would (`operations.pull`).
The matrix is cached in WORKDIR keyed by the packages' fingerprints and the tasks' content.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmdock.client.cache import AdapterCache
from lmdock.client.connection import MarketClient
from lmdock.client.files import atomic_write_text
from lmdock.client.operations import pull, score_predictions
from lmdock.client.runtime import load_learnware, zero_shot_classify
from lmdock.common.canonical import canonical_json, sha256_hex
from lmdock.common.embedder_files import DEFAULT_EMBEDDER
from lmdock.common.profile import SpecProfile
from lmdock.lab.building import Built
from lmdock.lab.definitions import UserTask

__all__ = ["SCORING_VERSION", "Scores", "compute_scores", "eligible"]

#: Bump when the scoring rule changes, so cached matrices are recomputed.
SCORING_VERSION = 1


def eligible(task: UserTask, labels: Sequence[str]) -> bool:
    """Can a learnware with these labels answer the task at all (one shared label)?"""
    return bool(set(task.label_set) & set(labels))


@dataclass(frozen=True)
class Scores:
    learnware: dict[str, dict[str, float]]  # task id -> learnware id -> accuracy (0 if not eligible)
    base: dict[str, float]  # task id -> base model zero-shot accuracy
    eligible: dict[str, list[str]]  # task id -> learnwares sharing a label with it
    run_seconds: list[float]  # load + predict time of each (learnware, task) run

    def oracle(self, task_id: str) -> float:
        return max(self.learnware[task_id].values())

    def to_dict(self) -> dict[str, object]:
        return {
            "version": SCORING_VERSION,
            "learnware": self.learnware,
            "base": self.base,
            "eligible": self.eligible,
            "run_seconds": self.run_seconds,
        }


def _key(built: Sequence[Built], tasks: Sequence[UserTask], profile: SpecProfile) -> str:
    return sha256_hex(
        canonical_json(
            {
                "version": SCORING_VERSION,
                "packages": sorted(b.package.name for b in built),
                "profile": profile.profile_id,
                "tasks": [[t.id, list(t.texts), list(t.labels)] for t in tasks],
            }
        )
    )[:16]


def compute_scores(
    built: Sequence[Built],
    tasks: Sequence[UserTask],
    *,
    client: MarketClient,
    cache: AdapterCache,
    profile: SpecProfile,
    workdir: Path,
    log: Callable[[str], None],
) -> Scores:
    """Run every learnware on every task it can answer (cached)."""
    path = workdir / f"scores-{_key(built, tasks, profile)}.json"
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        return Scores(data["learnware"], data["base"], data["eligible"], data["run_seconds"])
    matrix = {t.id: {b.recipe.card.id: 0.0 for b in built} for t in tasks}
    can = {t.id: [b.recipe.card.id for b in built if eligible(t, b.recipe.labels)] for t in tasks}
    seconds = []
    for b in built:
        lw = b.recipe.card.id
        todo = [t for t in tasks if lw in can[t.id]]
        if not todo:
            continue
        started = time.perf_counter()
        manifest = pull(client, cache, lw)
        model = load_learnware(cache.folder(lw), base_model=manifest.base_model, task=manifest.task)
        load = time.perf_counter() - started
        for t in todo:
            started = time.perf_counter()
            predictions = model.predict(t.texts, labels=t.label_set)
            matrix[t.id][lw] = score_predictions(predictions, t.labels) or 0.0
            seconds.append(round(load + time.perf_counter() - started, 3))
        log(f"  scored {lw} on {len(todo)} task(s)")
    base = {
        t.id: score_predictions(zero_shot_classify(DEFAULT_EMBEDDER, t.texts, t.label_set), t.labels) or 0.0
        for t in tasks
    }
    scores = Scores(matrix, base, can, seconds)
    atomic_write_text(path, json.dumps(scores.to_dict(), sort_keys=True))
    return scores
