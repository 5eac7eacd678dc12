"""The evaluation's figures on a hand-made market whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from lmdock.lab.definitions import UserTask
from lmdock.lab.metrics import baselines, per_task, selection_summary
from lmdock.lab.scoring import Scores, eligible
from lmdock.lab.selection import pick, retriever_ranking, top

TASKS = [
    UserTask("t1", "A", "", ("x",) * 4, ("a", "b", "a", "b"), ("lw1",), ("d",)),
    UserTask("t2", "B", "", ("y",) * 4, ("c", "d", "c", "d"), ("lw2",), ("d",)),
]
SCORES = Scores(
    learnware={"t1": {"lw1": 0.9, "lw2": 0.0, "lw3": 0.5}, "t2": {"lw1": 0.0, "lw2": 0.8, "lw3": 0.8}},
    base={"t1": 0.4, "t2": 0.3},
    eligible={"t1": ["lw1", "lw3"], "t2": ["lw2", "lw3"]},
    run_seconds=[],
)
RANKINGS = {
    "t1": [["lw3", "lw1", "lw2"], ["lw1", "lw3", "lw2"]],
    "t2": [["lw1", "lw2", "lw3"], ["lw3", "lw2", "lw1"]],
}
RETRIEVER = {"t1": ["lw2", "lw1", "lw3"], "t2": ["lw3", "lw1", "lw2"]}


def test_pick_and_top_follow_the_ranking_and_the_label_filter() -> None:
    assert pick(["lw1", "lw2", "lw3"], ["lw2", "lw3"]) == "lw2"
    assert pick(["lw1", "lw2"], None) == "lw1"
    assert top(["lw1", "lw2", "lw3", "lw4"], ["lw1", "lw3", "lw4"], 2) == ["lw1", "lw3"]
    with pytest.raises(ValueError, match="no learnware"):
        pick(["lw1"], ["lw9"])
    assert eligible(TASKS[0], ("a", "z")) and not eligible(TASKS[0], ("z",))


def test_selection_summary_known_values() -> None:
    s = selection_summary(TASKS, SCORES, RANKINGS)
    assert list(s) == ["all", "A", "B"]
    lab = s["all"]["labels"]
    assert lab["selected"] == {"mean": 0.75, "std": 0.1}  # draws: (0.5+0.8)/2, (0.9+0.8)/2
    assert lab["ratio_to_oracle"]["mean"] == pytest.approx(0.75 / 0.85, abs=1e-4)
    assert lab["top1"] == {"mean": 0.5, "std": 0.0}
    assert lab["top3"] == {"mean": 1.0, "std": 0.0}
    assert lab["ties"] == {"mean": 0.75, "std": 0.25}  # an equal score ties even if not 'right'
    spec = s["all"]["spec_only"]
    assert spec["selected"] == {"mean": 0.55, "std": 0.3}  # lw1 cannot answer t2: scores 0
    assert s["B"]["labels"]["selected"] == {"mean": 0.8, "std": 0.0}


def test_baselines_known_values() -> None:
    b = baselines(TASKS, SCORES, RETRIEVER)["all"]
    assert b["base"] == 0.35 and b["oracle"] == 0.85
    assert (b["best_single"], b["best_single_id"]) == (0.65, "lw3")
    assert b["random"] == 0.5 and b["random_eligible"] == 0.75
    assert b["retriever"] == 0.85 and b["retriever_spec_only"] == 0.4
    assert b["retriever_top1"] == 0.5


def test_per_task_rows() -> None:
    rows = per_task(TASKS, SCORES, RANKINGS, RETRIEVER)
    assert rows[0]["picks"] == {"lw3": 0.5, "lw1": 0.5} or rows[0]["picks"] == {"lw1": 0.5, "lw3": 0.5}
    assert rows[0]["oracle_ids"] == ["lw1"] and rows[1]["oracle_ids"] == ["lw2", "lw3"]
    assert rows[1]["ties"] == 1.0 and rows[0]["ties"] == 0.5
    assert rows[0]["retriever_pick"] == "lw1"


def test_unequal_draw_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="same number of draws"):
        selection_summary(TASKS, SCORES, {"t1": RANKINGS["t1"], "t2": RANKINGS["t2"][:1]})


def test_retriever_ranks_by_cosine() -> None:
    means = {"a": np.array([1.0, 0.0]), "b": np.array([0.6, 0.8]), "c": np.array([-1.0, 0.1])}
    assert retriever_ranking(np.array([1.0, 1.0]), means) == ["b", "a", "c"]
