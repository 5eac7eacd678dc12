"""The generative market's columns, domain averages and win/tie/loss (pure functions, no models).

Per user task, each column is a mean over the task's scored examples:

* base         the base model alone
* random       the mean over every learnware (the expected score of a uniform draw)
* selected     the learnware the market ranks first for a (ε = 1, δ)-DP spec of the task, averaged
               over repeated draws; *selected, no DP* for the exact spec
* oracle       the best learnware on this task
* generalist   one adapter on the union of all training records (k x a learnware's steps)
* mixture      the market's mixture weights w for the task's spec (ε = 1): Σ_l w_l score_l, the
               expected score when each example goes to a component drawn with its weight

Win / tie / loss of *selected* against a column: the paired per-example difference's 95%
interval (mean ± 1.96 · sd / √n) lies above 0 / contains 0 / lies below 0. A task is
*informative* when the oracle beats the base beyond that interval (the issue's targets are
checked on those; the others are reported apart).

Where *selected* falls short of the oracle, `shortfall` splits the gap by where the lost picks
went: the gap is Σ_p share_p · (oracle − score_p) over the private searches' picks p, summed apart
over picks outside the task's own data set and picks of another version of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from lmdock.lab.definitions import UserTask
from lmdock.lab.gen_scoring import BASE, GenScores
from lmdock.lab.metrics import groups
from lmdock.lab.selection import Ranking

__all__ = ["COLUMNS", "GENERALIST", "gen_summary", "interval", "shortfall"]

GENERALIST = "generalist"
COLUMNS = ("base", "random", "selected", "selected_no_dp", "oracle", "generalist", "mixture")
Z = 1.96


def interval(values: Any) -> tuple[float, float]:
    """(mean, 95% half-width) of per-example values."""
    a = np.asarray(values, dtype=np.float64)
    if len(a) < 2:
        return float(a.mean()), float("inf")
    return float(a.mean()), Z * float(a.std(ddof=1)) / np.sqrt(len(a))


def _outcome(difference: Any) -> str:
    mean, half = interval(difference)
    return "win" if mean - half > 0 else ("loss" if mean + half < 0 else "tie")


def _vectors(
    task: UserTask,
    scores: GenScores,
    learnwares: Sequence[str],
    draws: Sequence[Ranking],
    exact: Ranking,
    mixture: Mapping[str, float],
) -> tuple[dict[str, Any], str, dict[str, float]]:
    row = {m: np.asarray(v, dtype=np.float64) for m, v in scores.per_example[task.id].items()}
    oracle = max(learnwares, key=lambda lw: (row[lw].mean(), lw))
    picks = [r[0] for r in draws]
    vectors = {
        "base": row[BASE],
        "random": np.mean([row[lw] for lw in learnwares], axis=0),
        "selected": np.mean([row[p] for p in picks], axis=0),
        "selected_no_dp": row[exact[0]],
        "oracle": row[oracle],
        "generalist": row[GENERALIST],
    }
    if mixture:
        vectors["mixture"] = sum(w * row[lw] for lw, w in mixture.items())
    shares = {lw: picks.count(lw) / len(picks) for lw in sorted(set(picks), key=lambda lw: -picks.count(lw))}
    return vectors, oracle, shares


def gen_summary(
    tasks: Sequence[UserTask],
    scores: GenScores,
    learnwares: Sequence[str],
    draws: Mapping[str, Sequence[Ranking]],
    exact: Mapping[str, Ranking],
    mixtures: Mapping[str, Mapping[str, float]],
) -> dict[str, Any]:
    """Per task, per domain (all tasks and informative ones) and win/tie/loss, as plain data."""
    rows: list[dict[str, Any]] = []
    for t in tasks:
        vectors, oracle, shares = _vectors(
            t, scores, learnwares, draws[t.id], exact[t.id], mixtures.get(t.id, {})
        )
        stats = {c: interval(v) for c, v in vectors.items()}
        rows.append(
            {
                "task": t.id,
                "domain": t.domain,
                "metric": scores.metric[t.id],
                "one_pass": scores.one_pass[t.id],
                "n": len(vectors["base"]),
                "values": {c: round(m, 4) for c, (m, _) in stats.items()},
                "ci": {c: round(h, 4) for c, (_, h) in stats.items()},
                "oracle_id": oracle,
                "exact_pick": exact[t.id][0],
                "picks": shares,
                "right": list(t.right),
                "mixture": {lw: round(w, 4) for lw, w in mixtures.get(t.id, {}).items()},
                "informative": _outcome(vectors["oracle"] - vectors["base"]) == "win",
                "wtl": {c: _outcome(vectors["selected"] - v) for c, v in vectors.items() if c != "selected"},
            }
        )
    by_id = {r["task"]: r for r in rows}
    return {
        "columns": [c for c in COLUMNS if all(c in r["values"] for r in rows)],
        "per_task": rows,
        "domains": _averages(tasks, by_id, lambda r: True),
        "informative_domains": _averages(tasks, by_id, lambda r: bool(r["informative"])),
        "wtl": {
            c: {k: sum(r["wtl"].get(c) == k for r in rows) for k in ("win", "tie", "loss")}
            for c in COLUMNS
            if c != "selected" and any(c in r["wtl"] for r in rows)
        },
    }


def _averages(tasks: Sequence[UserTask], by_id: Mapping[str, dict[str, Any]], keep: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for group, members in groups(tasks).items():
        kept = [by_id[t.id] for t in members if keep(by_id[t.id])]
        if not kept:
            continue
        columns = [c for c in COLUMNS if all(c in r["values"] for r in kept)]
        out[group] = {"tasks": len(kept)} | {
            c: round(float(np.mean([r["values"][c] for r in kept])), 4) for c in columns
        }
    return out


def shortfall(row: Mapping[str, Any], per_example: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """For one task's summary `row` and its per-example scores: the oracle's lead over *selected*
    (ε = 1) and over *selected, no DP*, and the ε = 1 gap split into the part lost to picks
    outside the task's data sets ("outside") and to other versions of them ("versions")."""
    mean = {lw: float(np.mean(v)) for lw, v in per_example.items()}
    oracle = mean[row["oracle_id"]]
    lost = {"outside": 0.0, "versions": 0.0}
    for lw, share in row["picks"].items():
        lost["versions" if lw in row["right"] else "outside"] += share * (oracle - mean[lw])
    return {
        "gap": oracle - row["values"]["selected"],
        "gap_no_dp": oracle - row["values"]["selected_no_dp"],
        "outside_share": sum(s for lw, s in row["picks"].items() if lw not in row["right"]),
        **lost,
    }
