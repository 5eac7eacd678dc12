"""From scores and rankings to the reported figures (pure functions, no models, no market).

For a group of tasks (a domain, or all) and a set of repeated draws (r = 1..R):

* selected_r   = mean over tasks t of score(t, pick_r(t))     reported as mean ± std over r
* oracle       = mean over t of max_l score(t, l)
* best single  = max over l of mean over t of score(t, l)     (one learnware for every task)
* random       = mean over t of mean over all l of score(t, l)
* random (eligible) = the same over the learnwares that can answer t
* top-1_r      = share of tasks whose pick is one of the task's right learnwares
* top-3_r      = share of tasks with a right learnware among the first 3 candidates
* ties_r       = share of tasks whose pick scores as high as the oracle (a tie counts)
* selected / oracle = selected_r / oracle (ratio of the averages, as in the paper's tables)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from lmdock.lab.definitions import UserTask
from lmdock.lab.scoring import Scores
from lmdock.lab.selection import Ranking, pick, top

__all__ = ["baselines", "groups", "mean_std", "per_task", "selection_summary"]

TIE_TOLERANCE = 1e-9


def groups(tasks: Sequence[UserTask]) -> dict[str, list[UserTask]]:
    """'all' and then each domain, alphabetically (the order results/*.json keep their keys in,
    so a report rendered from the files matches the one rendered from the run)."""
    out: dict[str, list[UserTask]] = {"all": list(tasks)}
    for domain in sorted({t.domain for t in tasks}):
        out[domain] = [t for t in tasks if t.domain == domain]
    return out


def mean_std(values: Any) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(a.mean()), 4), "std": round(float(a.std()), 4)}


def _draws(
    tasks: Sequence[UserTask], scores: Scores, rankings: Mapping[str, Sequence[Ranking]], labels: bool
) -> dict[str, Any]:
    """(R, T) arrays of score, top-1, top-3 and tie for each draw r and task t."""
    repeats = {len(rankings[t.id]) for t in tasks}
    if len(repeats) != 1:
        raise ValueError(f"every task needs the same number of draws, got {sorted(repeats)}")
    shape = (repeats.pop(), len(tasks))
    out = {k: np.zeros(shape) for k in ("score", "top1", "top3", "tie")}
    for j, t in enumerate(tasks):
        can = scores.eligible[t.id] if labels else None
        row, oracle = scores.learnware[t.id], scores.oracle(t.id)
        for i, ranking in enumerate(rankings[t.id]):
            chosen = pick(ranking, can)
            out["score"][i, j] = row[chosen]
            out["top1"][i, j] = chosen in t.right
            out["top3"][i, j] = bool(set(top(ranking, can, 3)) & set(t.right))
            out["tie"][i, j] = row[chosen] >= oracle - TIE_TOLERANCE
    return out


def selection_summary(
    tasks: Sequence[UserTask], scores: Scores, rankings: Mapping[str, Sequence[Ranking]]
) -> dict[str, dict[str, Any]]:
    """Per group: selected score, ratio to oracle, top-1, top-3 and ties, for both pick rules."""
    summary: dict[str, dict[str, Any]] = {}
    for name, members in groups(tasks).items():
        oracle = float(np.mean([scores.oracle(t.id) for t in members]))
        entry: dict[str, Any] = {"tasks": len(members)}
        for rule, labels in (("labels", True), ("spec_only", False)):
            d = _draws(members, scores, rankings, labels)
            entry[rule] = {
                "selected": mean_std(d["score"].mean(axis=1)),
                "ratio_to_oracle": mean_std(d["score"].mean(axis=1) / max(oracle, 1e-12)),
                "top1": mean_std(d["top1"].mean(axis=1)),
                "top3": mean_std(d["top3"].mean(axis=1)),
                "ties": mean_std(d["tie"].mean(axis=1)),
            }
        summary[name] = entry
    return summary


def baselines(
    tasks: Sequence[UserTask], scores: Scores, retriever: Mapping[str, Ranking]
) -> dict[str, dict[str, Any]]:
    """Per group: base, oracle, best single learnware, random, random eligible, LoraRetriever-style."""
    out: dict[str, dict[str, Any]] = {}
    learnwares = sorted(next(iter(scores.learnware.values())))
    for name, members in groups(tasks).items():
        per_lw = {lw: float(np.mean([scores.learnware[t.id][lw] for t in members])) for lw in learnwares}
        best = max(learnwares, key=lambda lw: (per_lw[lw], lw))
        retrieved = [scores.learnware[t.id][pick(retriever[t.id], scores.eligible[t.id])] for t in members]
        retrieved_spec = [scores.learnware[t.id][retriever[t.id][0]] for t in members]
        out[name] = {
            "base": round(float(np.mean([scores.base[t.id] for t in members])), 4),
            "oracle": round(float(np.mean([scores.oracle(t.id) for t in members])), 4),
            "best_single": round(per_lw[best], 4),
            "best_single_id": best,
            "random": round(
                float(np.mean([np.mean(list(scores.learnware[t.id].values())) for t in members])), 4
            ),
            "random_eligible": round(
                float(
                    np.mean(
                        [
                            np.mean([scores.learnware[t.id][lw] for lw in scores.eligible[t.id]])
                            for t in members
                        ]
                    )
                ),
                4,
            ),
            "retriever": round(float(np.mean(retrieved)), 4),
            "retriever_spec_only": round(float(np.mean(retrieved_spec)), 4),
            "retriever_top1": round(
                float(np.mean([pick(retriever[t.id], scores.eligible[t.id]) in t.right for t in members])), 4
            ),
            "retriever_top1_spec_only": round(
                float(np.mean([retriever[t.id][0] in t.right for t in members])), 4
            ),
        }
    return out


def per_task(
    tasks: Sequence[UserTask],
    scores: Scores,
    rankings: Mapping[str, Sequence[Ranking]],
    retriever: Mapping[str, Ranking],
) -> list[dict[str, Any]]:
    """One row per task: what was picked how often, against the oracle and the baselines."""
    rows = []
    for t in tasks:
        row, oracle = scores.learnware[t.id], scores.oracle(t.id)
        picks = [pick(r, scores.eligible[t.id]) for r in rankings[t.id]]
        spec_picks = [r[0] for r in rankings[t.id]]
        counts = {lw: picks.count(lw) for lw in sorted(set(picks), key=lambda lw: -picks.count(lw))}
        rows.append(
            {
                "task": t.id,
                "domain": t.domain,
                "n": len(t.texts),
                "labels": len(t.label_set),
                "base": round(scores.base[t.id], 4),
                "selected": round(float(np.mean([row[p] for p in picks])), 4),
                "selected_spec_only": round(float(np.mean([row[p] for p in spec_picks])), 4),
                "oracle": round(oracle, 4),
                "oracle_ids": sorted(lw for lw, s in row.items() if s >= oracle - TIE_TOLERANCE),
                "right": list(t.right),
                "picks": {lw: c / len(picks) for lw, c in counts.items()},
                "spec_only_right": round(float(np.mean([p in t.right for p in spec_picks])), 4),
                "ties": round(float(np.mean([row[p] >= oracle - TIE_TOLERANCE for p in picks])), 4),
                "retriever_pick": pick(retriever[t.id], scores.eligible[t.id]),
                "eligible": len(scores.eligible[t.id]),
                "random": round(float(np.mean(list(row.values()))), 4),
            }
        )
    return rows
