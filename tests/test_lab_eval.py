"""`lmdock-lab`: the quick evaluation end to end, the report's README block, and CLI errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from lmdock.client.runtime import load_learnware
from lmdock.common.errors import InvalidArgument
from lmdock.common.package import TaskInfo
from lmdock.lab.cli import main
from lmdock.lab.gen_metrics import COLUMNS
from lmdock.lab.gen_results_doc import GEN_BEGIN, GEN_END
from lmdock.lab.report import README_BEGIN, README_END, update_readme

from tests.helpers import LABELS, make_adapter

RESULT_FILES = ("market", "scores", "reuse", "identification", "privacy", "cost")


@pytest.mark.slow
def test_quick_eval_runs_the_whole_harness_and_keeps_the_direction(tmp_path: Path, capsys) -> None:
    threads = torch.get_num_threads()
    try:
        code = main(
            [
                "eval",
                "--quick",
                "--json",
                "--workdir",
                str(tmp_path / "work"),
                "--out",
                str(tmp_path / "results"),
                "--docs",
                str(tmp_path / "results.md"),
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["selected"] > summary["random"]
    assert summary["selected"] >= summary["base"]
    results = tmp_path / "results"
    for name in RESULT_FILES:
        assert json.loads((results / f"{name}.json").read_text())
    for name in ("privacy_epsilon", "privacy_size", "reuse"):
        png = (results / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) < 200_000
    reuse = json.loads((results / "reuse.json").read_text())
    for domain, row in reuse["baselines"].items():
        assert reuse["selection"][domain]["labels"]["selected"]["mean"] > row["random"], domain
    privacy = json.loads((results / "privacy.json").read_text())
    assert [p["epsilon"] for p in privacy["epsilon"]] == [0.5, 1.0, None]
    cost = json.loads((results / "cost.json").read_text())
    assert 0 < cost["spec"]["bytes"] < 8 * 1024 and cost["pull"]["package_bytes_median"] > 0
    doc = (tmp_path / "results.md").read_text()
    assert "| **all** |" in doc and "## Privacy" in doc and "## Data and licences" in doc
    # the report renders again from the JSON alone, to the same markdown
    (tmp_path / "results.md").unlink()
    assert main(["report", "--out", str(results), "--docs", str(tmp_path / "results.md"), "--no-readme"]) == 0
    assert (tmp_path / "results.md").read_text() == doc


def test_update_readme_replaces_only_the_marked_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_BEGIN}\nold table\n{README_END}\noutro\n")
    assert update_readme(readme, "new table\n")
    assert readme.read_text() == f"intro\n{README_BEGIN}\nnew table\n{README_END}\noutro\n"
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    assert not update_readme(plain, "x\n") and plain.read_text() == "no markers\n"


def test_missing_data_is_a_clear_cli_error(tmp_path: Path, capsys) -> None:
    assert main(["eval", "--data", str(tmp_path / "nowhere"), "--workdir", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lmdock-lab: error: data set") and "not found" in err
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--repeats", "0"])
    assert exc.value.code == 2


def test_classifier_answers_only_with_the_labels_asked_for(tiny_bert: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tiny_bert, tmp_path / "adapter")
    model = load_learnware(adapter, base_model=str(tiny_bert), task=TaskInfo("classification", LABELS))
    texts = ["good", "bad", "fine", "poor"]
    assert model.predict(texts, labels=["positive", "unknown"]) == ["positive"] * 4
    assert model.predict(texts, labels=["negative"]) == ["negative"] * 4
    assert set(model.predict(texts)) <= set(LABELS)
    with pytest.raises(InvalidArgument, match="none of the labels"):
        model.predict(texts, labels=["unknown"])


@pytest.mark.slow
def test_generative_quick_eval_produces_every_column_and_a_win_tie_loss_table(
    smollm2: Path, tmp_path: Path, capsys
) -> None:
    threads = torch.get_num_threads()
    docs = tmp_path / "results.md"
    docs.write_text("# Results\n\nthe classifier's report\n")
    argv = ["eval", "--generative", "--quick", "--json", "--workdir", str(tmp_path / "work")]
    argv += ["--out", str(tmp_path / "generative"), "--docs", str(docs)]
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    brief = json.loads(capsys.readouterr().out)
    assert brief["columns"] == list(COLUMNS)
    assert {lap["step"] for lap in brief["timings"]} >= {"build", "scores", "scores:lower", "scores:upper"}
    summary = json.loads((tmp_path / "generative" / "summary.json").read_text())
    assert len(summary["per_task"]) == 3
    for row in summary["per_task"]:
        assert set(row["values"]) == set(row["ci"]) == set(COLUMNS)
        assert set(row["wtl"]) == set(COLUMNS) - {"selected"}
        assert row["n"] == 6 and row["metric"] == "accuracy"
        assert row["values"]["oracle"] >= row["values"]["random"]
    for outcome in summary["wtl"].values():
        assert sum(outcome.values()) == 3
    assert set(summary["domains"]) == {"all", "finance", "medical", "math"}
    assert (tmp_path / "generative" / "generative.png").read_bytes().startswith(b"\x89PNG")
    text = docs.read_text()
    assert text.startswith("# Results\n\nthe classifier's report\n") and text.count(GEN_BEGIN) == 1
    assert "Win / tie / loss" in text and "**Partial run**" in text
    # a second run reads packages and scores back from the cache and replaces the section in place
    assert main(argv) == 0
    assert docs.read_text().count(GEN_BEGIN) == 1


def test_a_generative_partial_run_names_what_it_does_not_know(tmp_path: Path, capsys) -> None:
    argv = ["eval", "--generative", "--quick", "--workdir", str(tmp_path), "--learnwares", "nope"]
    assert main(argv) == 2
    assert "no learnware nope in the generative-quick market" in capsys.readouterr().err


def test_rerendering_the_classifier_report_keeps_the_generative_section(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(Path(__file__).parents[1] / "results", results, ignore=shutil.ignore_patterns("*.png"))
    docs = tmp_path / "results.md"
    section = f"{GEN_BEGIN}\n## Generative market\n\nits tables\n{GEN_END}\n"
    docs.write_text(f"old classifier report\n\n{section}")
    assert main(["report", "--out", str(results), "--docs", str(docs), "--no-readme"]) == 0
    text = docs.read_text()
    assert "old classifier report" not in text and text.startswith("# Results")
    assert text.endswith(section) and text.count(GEN_BEGIN) == 1


def test_training_times_name_the_load_they_were_measured_at() -> None:
    from lmdock.lab import results_doc

    cost = {"training": {"cpu_seconds_total": 1620.0, "load_1m_median": 7.84}}
    said = results_doc._cpu({"cost": cost})
    built_at = ", at a median load average of 7.8 on the machine that built them"
    assert said == " of wall time and 27 min of CPU time" + built_at
    cost["training"]["load_1m_median"] = None  # a cache built before loads were recorded
    assert results_doc._cpu({"cost": cost}) == " of wall time and 27 min of CPU time"
