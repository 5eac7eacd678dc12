"""The generative market's columns, win/tie/loss and shortfall on hand-made scores, and its
README block from the committed results (no models)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lmdock.lab.definitions import UserTask
from lmdock.lab.gen_metrics import gen_summary, interval, shortfall
from lmdock.lab.gen_results_doc import GEN_README_BEGIN, GEN_README_END
from lmdock.lab.gen_scoring import GenScores
from lmdock.lab.report import load_generative_results, render_generative


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


def test_shortfall_splits_the_gap_by_where_the_picks_went() -> None:
    row = {
        "oracle_id": "a1",
        "picks": {"a1": 0.5, "a2": 0.3, "b": 0.2},
        "right": ["a1", "a2"],
        "values": {"selected": 0.65, "selected_no_dp": 1.0},
    }
    f = shortfall(row, {"a1": [1.0, 1.0], "a2": [0.0, 1.0], "b": [0.0, 0.0]})
    assert f["gap"] == pytest.approx(0.35) and f["gap_no_dp"] == pytest.approx(0.0)
    assert f["outside_share"] == pytest.approx(0.2)
    assert f["outside"] == pytest.approx(0.2) and f["versions"] == pytest.approx(0.15)
    assert f["outside"] + f["versions"] == pytest.approx(f["gap"])


def test_the_readme_block_is_rendered_from_the_committed_results(tmp_path: Path) -> None:
    results = load_generative_results(Path(__file__).parent.parent / "results" / "generative")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{GEN_README_BEGIN}\nstale\n{GEN_README_END}\nrest\n", encoding="utf-8")
    written = render_generative(results, tmp_path / "out", docs=tmp_path / "results.md", readme=readme)
    assert readme in written
    text = readme.read_text(encoding="utf-8")
    assert "stale" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert "| **all** |" in text and "Targets on the" in text and "Regenerate with" in text
    docs = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "### Where selection loses against the oracle" in docs
    partial = results | {"settings": results["settings"] | {"tasks": ["gen-fin-sentiment"]}}
    readme.write_text(f"{GEN_README_BEGIN}\nstale\n{GEN_README_END}\n", encoding="utf-8")
    assert readme not in render_generative(partial, tmp_path / "out", docs=None, readme=readme)
    assert "stale" in readme.read_text(encoding="utf-8")  # a partial run leaves the headline alone
