"""The generative market's columns and win/tie/loss on hand-made scores (no models)."""

from __future__ import annotations

import pytest
from lmdock.lab.definitions import UserTask
from lmdock.lab.gen_metrics import gen_summary, interval
from lmdock.lab.gen_scoring import GenScores


def task(id_: str, domain: str) -> UserTask:
    return UserTask(id_, domain, "", ("x",) * 4, ("a",) * 4, ("lw1",), ("d",))


def test_columns_wins_ties_and_losses_follow_the_paired_interval() -> None:
    per_example = {
        # lw1 is right on t1 and picked; it beats base beyond any doubt, ties lw2, loses to nothing
        "t1": {
            "base": [0, 0, 0, 0] * 5,
            "lw1": [1, 1, 1, 1] * 5,
            "lw2": [1, 1, 1, 0] * 5,
            "generalist": [1, 0, 1, 0] * 5,
        },
        # on t2 the pick (lw2) is worse than lw1 everywhere
        "t2": {"base": [0.5] * 20, "lw1": [0.9] * 20, "lw2": [0.1] * 20, "generalist": [0.5] * 20},
    }
    scores = GenScores(
        per_example, {"t1": "accuracy", "t2": "gold_probability"}, {"t1": True, "t2": False}, {}
    )
    draws = {"t1": [["lw1", "lw2"]] * 3, "t2": [["lw2", "lw1"], ["lw2", "lw1"], ["lw1", "lw2"]]}
    exact = {"t1": ["lw1", "lw2"], "t2": ["lw1", "lw2"]}
    mixtures = {"t1": {"lw1": 0.5, "lw2": 0.5}, "t2": {"lw1": 1.0}}
    s = gen_summary(
        [task("t1", "finance"), task("t2", "math")], scores, ["lw1", "lw2"], draws, exact, mixtures
    )
    t1, t2 = s["per_task"]
    assert t1["values"] == {
        "base": 0.0, "random": 0.875, "selected": 1.0, "selected_no_dp": 1.0, "oracle": 1.0,
        "generalist": 0.5, "mixture": 0.875,
    }  # fmt: skip
    assert t1["wtl"] == {
        "base": "win", "random": "win", "selected_no_dp": "tie", "oracle": "tie", "generalist": "win",
        "mixture": "win",
    }  # fmt: skip
    assert t1["informative"] and t1["oracle_id"] == "lw1" and t1["picks"] == {"lw1": 1.0}
    assert t2["values"]["selected"] == pytest.approx((0.1 + 0.1 + 0.9) / 3, abs=1e-4)
    assert t2["wtl"]["oracle"] == "loss" and t2["wtl"]["base"] == "loss"
    assert t2["picks"] == {"lw2": pytest.approx(2 / 3), "lw1": pytest.approx(1 / 3)}
    assert s["wtl"]["oracle"] == {"win": 0, "tie": 1, "loss": 1}
    assert s["domains"]["all"]["tasks"] == 2 and set(s["domains"]) == {"all", "finance", "math"}
    assert s["domains"]["all"]["oracle"] == pytest.approx((1.0 + 0.9) / 2)


def test_interval_is_the_normal_95_percent_half_width() -> None:
    mean, half = interval([0.0, 1.0] * 50)
    assert mean == 0.5 and half == pytest.approx(1.96 * 0.50252 / 10, rel=1e-3)
