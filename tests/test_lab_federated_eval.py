"""`lmdock-lab eval --federated --quick`: every column of both halves on the shipped samples, the
direction of each comparison, the Flower search's noise against the in-process sum's, and the
head scoring against the runtime's predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lmdock.client.publish.probe import probe_features
from lmdock.client.publish.training import TrainingConfig, train_adapter
from lmdock.client.runtime import load_learnware
from lmdock.client.training.objectives import load_task_model
from lmdock.common.package import TaskInfo
from lmdock.lab.cli import main
from lmdock.lab.federated_doc import FED_BEGIN, FED_END
from lmdock.lab.federated_ident import METHODS
from lmdock.lab.federated_train import dirichlet_split, head_scores

from tests.test_dp_training import toy_task


@pytest.mark.slow
def test_head_scores_are_the_runtimes_predictions(tiny_bert: Path, tmp_path: Path) -> None:
    texts, labels = toy_task(40, seed=1)
    task = TaskInfo(kind="classification", labels=("negative", "positive"), pooling="mean")
    config = TrainingConfig(epochs=2, batch_size=8, learning_rate=0.2, max_tokens=16)
    train_adapter(
        base_model=str(tiny_bert), task=task, texts=texts, targets=labels, out_dir=tmp_path, config=config
    )
    tm = load_task_model(
        tiny_bert, task, base_model=str(tiny_bert), max_tokens=16, rank=8, alpha=16, dropout=0.05
    )
    scores = head_scores(tmp_path, probe_features(tm, texts), labels, task.labels)
    predicted = load_learnware(tmp_path, base_model=str(tiny_bert), task=task, device="cpu").predict(texts)
    runtime = {y: predicted.count(y) for y in task.labels}
    assert scores["predicted"] == runtime
    assert scores["accuracy"] == round(sum(p == y for p, y in zip(predicted, labels, strict=True)) / 40, 4)


def test_dirichlet_split_is_seeded_skewed_and_covers_every_record() -> None:
    labels = ["a"] * 120 + ["b"] * 60 + ["c"] * 60
    parts = dirichlet_split(labels, 3, alpha=0.3, seed=0, min_site=30)
    assert parts == dirichlet_split(labels, 3, alpha=0.3, seed=0, min_site=30)
    assert sorted(i for p in parts for i in p) == list(range(240)) and min(map(len, parts)) >= 30
    shares = [[sum(labels[i] == y for i in p) / len(p) for y in "abc"] for p in parts]
    assert max(abs(s[0] - 0.5) for s in shares) > 0.1  # not the IID mix


@pytest.mark.slow
def test_quick_federated_eval_writes_every_column(tiny_bert: Path, tmp_path: Path, capsys) -> None:
    docs = tmp_path / "results.md"
    out = tmp_path / "fed"
    argv = ["eval", "--federated", "--quick", "--json", "--workdir", str(tmp_path / "work")]
    assert main([*argv, "--base-model", str(tiny_bert), "--out", str(out), "--docs", str(docs)]) == 0
    brief = json.loads(capsys.readouterr().out)
    assert set(brief) == {"accuracy", "right_learnware", "seconds", "written"}
    results = json.loads((out / "federated.json").read_text())
    (federation,) = results["training"]["federations"]
    assert sum(federation["site_records"]) == results["training"]["train_records"]
    runs = {r["epsilon"]: r for r in federation["runs"]}
    assert set(runs) == {None, 8.0}  # without and with DP
    for eps, run in runs.items():
        assert len(run["alone"]) == 3
        for column in (*run["alone"], run["pooled"], run["federated"]):
            assert 0 <= column["accuracy"] <= 1 and 0 <= column["macro_f1"] <= 1
        booked = run["federated"]["site_epsilons"]
        assert booked == [None] * 3 if eps is None else all(0 < e <= eps for e in booked)
    plain = runs[None]
    assert plain["federated"]["accuracy"] >= min(a["accuracy"] for a in plain["alone"])
    (cell,) = results["search"]["cells"]
    assert set(METHODS) <= set(cell) and all(cell[m]["draws"] >= 100 for m in METHODS)
    # the easy case: the joint spec of all sites finds the learnware at least as often as one site
    assert cell["joint"]["right_learnware"]["rate"] >= cell["alone"]["right_learnware"]["rate"]
    flower = results["search"]["flower"]
    assert flower["contributors"] == 3 and flower["sigma_flower"] == flower["sigma_in_process"]
    assert 0.7 < flower["rms_over_sigma_flower"] < 1.3 and 0.7 < flower["rms_over_sigma_in_process"] < 1.3
    text = docs.read_text()
    assert FED_BEGIN in text and FED_END in text and "federated.png" in text
    assert (out / "federated.png").stat().st_size > 1000
