"""DP classification builds: a linear probe on mean-pooled states, debited from the privacy
ledger write-ahead (refused over budget with nothing trained or written), and composed with the
DP spec `lmdock package` releases for the same data set."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from lmdock.client.ledger import Ledger, dataset_id
from lmdock.client.publish.training import PROBE_TRAINING, TrainingConfig, dp_plan_for, train_adapter
from lmdock.client.runtime import load_learnware
from lmdock.client.task.jsonl import read_jsonl_task
from lmdock.client.training.dp_sgd import DPConfig, plan_dp_sgd
from lmdock.common.accounting import Budget, composed_epsilon
from lmdock.common.errors import BudgetExceeded, InvalidArgument
from lmdock.common.package import TaskInfo
from lmdock.lab.embedded import embedded_market
from safetensors.torch import load_file

from tests.test_dp_training import toy_task
from tests.test_publishing_flow import cli_json, run_cli, write_task

PROBE = TaskInfo(kind="classification", labels=("negative", "positive"), pooling="mean")


@pytest.mark.slow
def test_dp_classification_trains_only_a_linear_head_that_works(tiny_bert: Path, tmp_path: Path) -> None:
    texts, labels = toy_task(400, seed=1)
    config = TrainingConfig(epochs=10, learning_rate=0.1, batch_size=128, max_tokens=16)
    report = train_adapter(
        base_model=str(tiny_bert),
        task=PROBE,
        texts=texts,
        targets=labels,
        out_dir=tmp_path / "adapter",
        config=config,
        dp=DPConfig(epsilon=8.0, delta=1e-6),
    )
    assert report.dp is not None and 7.9 <= report.dp.epsilon <= 8.0
    assert report.dp.epsilon_add_remove < report.dp.epsilon  # replace-one costs more than add/remove
    assert (report.dp.sample_rate, report.dp.steps) == (0.25, 40)
    assert report.dp.to_dict()["neighbouring"] == "replace-one"

    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert "pooler" not in adapter_config["modules_to_save"]  # the [CLS] pooler is not used
    weights = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    head = [t for name, t in weights.items() if "classifier" in name]
    assert head and all(bool(torch.isfinite(t).all()) and float(t.abs().max()) > 1e-3 for t in head)
    assert all(float(t.abs().max()) == 0.0 for name, t in weights.items() if "lora_B" in name)  # identity

    held_texts, held_labels = toy_task(200, seed=2)
    model = load_learnware(tmp_path / "adapter", base_model=str(tiny_bert), task=PROBE, device="cpu")
    predictions = model.predict(held_texts)
    assert sum(p == y for p, y in zip(predictions, held_labels, strict=True)) / len(held_labels) >= 0.9


def test_the_plan_is_fixed_before_training_and_checked_against_the_run() -> None:
    plan = plan_dp_sgd(DPConfig(epsilon=8.0, delta=1e-6), records=2000, batch_size=128, epochs=10)
    assert (plan.steps_per_epoch, plan.steps, plan.sample_rate) == (16, 160, 1 / 16)
    assert plan.noise_multiplier == pytest.approx(1.085, abs=0.005)
    assert plan.epsilon <= 8.0 and plan.epsilon == composed_epsilon([plan.release()], delta=1e-6)
    assert plan.release().sensitivity == "add-remove"
    with pytest.raises(InvalidArgument, match=r"1/\(10 n\)"):
        plan_dp_sgd(DPConfig(epsilon=8.0, delta=1e-3), records=2000, batch_size=128, epochs=10)
    with pytest.raises(InvalidArgument, match="other training"):
        dp_plan_for(plan, records=2000, config=replace(PROBE_TRAINING, epochs=3))


def dp_build(capsys, tiny_bert: Path, data: Path, out: Path, epsilon: str, *extra: str):
    return run_cli(
        capsys,
        *("build", "--base", str(tiny_bert), "--data", str(data), "--out", str(out), "--max-tokens", "16"),
        *("--dp-epsilon", epsilon, "--dp-delta", "1e-6", "--budget-epsilon", "3"),
        *("--labels", "positive,negative"),
        *extra,
    )


def test_a_dp_classifier_publishes_only_a_declared_label_set(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMDOCK_HOME", str(tmp_path / "home"))
    data = write_task(tmp_path / "train.jsonl", 120)
    args = ("build", "--base", "unused", "--data", str(data), "--out", str(tmp_path / "b"))
    dp = ("--dp-epsilon", "2", "--dp-delta", "1e-6")
    code, _, err = run_cli(capsys, *args, *dp)
    assert code == 2 and "declare the labels with --labels" in err
    code, _, err = run_cli(capsys, *args, *dp, "--labels", "positive,neutral")
    assert code == 2 and "labels outside --labels: 'negative'" in err
    code, _, err = run_cli(capsys, *args, *dp, "--labels", "positive,positive,negative")
    assert code == 2 and "distinct" in err
    assert not (tmp_path / "b").exists() and not (tmp_path / "home" / "ledger.jsonl").exists()


def test_a_device_this_machine_lacks_is_refused_before_anything_is_debited(
    tiny_bert: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMDOCK_HOME", str(tmp_path / "home"))
    data = write_task(tmp_path / "train.jsonl", 120)
    for flags, code, message in (
        (("--device", "cuda:99"), 1, "does not exist|sees no CUDA GPU"),
        (("--device", "nonsense"), 2, "device must be auto, cpu, mps or cuda"),
        (("--device", "cpu", "--dtype", "float16"), 2, "float16 is not supported on the cpu"),
        (("--dtype", "int8"), 2, "dtype must be auto"),
    ):
        got, _, err = dp_build(capsys, tiny_bert, data, tmp_path / "b", "2", *flags)
        assert got == code, err
        assert re.search(message, err), err
    assert not (tmp_path / "b").exists() and not (tmp_path / "home" / "ledger.jsonl").exists()


@pytest.mark.slow
def test_dp_builds_are_debited_write_ahead_and_refused_over_budget(
    tiny_bert: Path, tmp_path: Path, profile, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMDOCK_HOME", str(tmp_path / "home"))
    data = write_task(tmp_path / "train.jsonl", 120)
    ledger_path = tmp_path / "home" / "ledger.jsonl"
    code, out, err = dp_build(capsys, tiny_bert, data, tmp_path / "b", "2", "--json")
    assert code == 0, err
    built = json.loads(out)
    assert built["pooling"] == "mean" and built["privacy"]["dp"] is True
    assert set(built["eval_scores"]) == {"accuracy", "base_zero_shot_accuracy", "majority_accuracy"}
    # the scores are noised counts over the 12 held-out records, never a raw fraction j / 12
    released = built["training"]["eval_scores"]
    assert released["dp"] is True and released["held_out_records"] == built["records"]["eval_records"] == 12
    assert released["epsilon"] == 0.5 and released["delta"] == 1e-6
    for value in built["eval_scores"].values():
        assert min(abs(value * 12 - j) for j in range(13)) > 1e-9, value
    # parallel composition: the build's epsilon is max(DP-SGD, scores)
    assert built["privacy"]["epsilon"] == max(built["training"]["dp_sgd"]["epsilon"], 0.5)
    dataset = "train"  # named after the file, all of it: the split is a function of the file
    assert Ledger(ledger_path).state().unit(dataset_id(read_jsonl_task(data).texts)).name == dataset
    assert built["ledger"]["spent"]["dataset"] == dataset and built["ledger"]["spent"]["releases"] == 2
    card = (tmp_path / "b" / "README.md").read_text()
    assert "linear head on its mean-pooled states" in card and "replace-one" in card
    assert "Differentially private (epsilon=0.5)" in card

    code, out, _ = run_cli(capsys, "ledger", "show", "--json")
    scores_entry, entry = json.loads(out)["entries"]  # the ledger books both releases
    assert scores_entry["destination"].endswith("(scores)") and scores_entry["epsilon"] == 0.5
    training = built["training"]["dp_sgd"]
    assert code == 0 and entry["kind"] == "training" and entry["dataset"] == dataset
    assert entry["epsilon"] == training["epsilon"] and entry["steps"] == training["steps"]
    assert entry["noise_multiplier"] == training["noise_multiplier"] and entry["destination"].startswith(
        "build "
    )
    code, out, _ = run_cli(capsys, "ledger", "show")
    assert code == 0 and "training" in out

    # a second run of 2 on the same file would bring it over the cap of 3: refused before training
    code, _, err = dp_build(capsys, tiny_bert, data, tmp_path / "b2", "2.5")
    assert code == 5 and "privacy budget" in err and "Nothing was trained or written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "home", "train.jsonl"]
    assert len(Ledger(ledger_path).state().releases) == 2

    # the DP spec of the package is the same data set's release, composed with the training run
    cli_json(capsys, "keys", "gen", "--key", str(tmp_path / "k.key"))
    with embedded_market(tmp_path / "market", profile=profile) as (address, _market):
        flags = ["--id", "toy-dp", "--domain", "reviews", "--licence", "MIT", "--publisher", "acme"]
        common = [*flags, "--spec-epsilon", "0.5", "--budget-epsilon", "3"]
        cli_json(
            capsys,
            "package",
            str(tmp_path / "b"),
            "--market",
            address,
            *common,
            "--out",
            str(tmp_path / "p.tar"),
        )
        entries = Ledger(ledger_path).state().releases
        assert [e.data["kind"] for e in entries] == ["training", "training", "spec"]
        assert {e.dataset for e in entries} == {dataset}
        spent = Ledger(ledger_path, budget=Budget(epsilon=3.0, delta=1e-6)).state().spent(dataset)
        assert built["ledger"]["spent"]["epsilon"] < spent.epsilon < built["ledger"]["spent"]["epsilon"] + 0.5
        # packaging again re-uses the spec already released: no new cost
        cli_json(
            capsys,
            "package",
            str(tmp_path / "b"),
            "--market",
            address,
            *common,
            "--out",
            str(tmp_path / "q.tar"),
        )
        assert len(Ledger(ledger_path).state().releases) == 3
        # a spec that would not fit is refused before anything is embedded or written
        over = [*flags, "--spec-epsilon", "3", "--budget-epsilon", "3"]
        code, _, err = run_cli(
            capsys,
            "package",
            str(tmp_path / "b"),
            "--market",
            address,
            *over,
            "--out",
            str(tmp_path / "r.tar"),
        )
        assert code == 5 and "privacy budget" in err and not (tmp_path / "r.tar").exists()


def test_the_ledger_refuses_a_training_release_over_the_cap(tmp_path: Path) -> None:
    plan = plan_dp_sgd(DPConfig(epsilon=4.0, delta=1e-6), records=500, batch_size=64, epochs=5)
    ledger = Ledger(tmp_path / "l.jsonl", budget=Budget(epsilon=3.0, delta=1e-6))
    with pytest.raises(BudgetExceeded, match="Nothing was trained or written"):
        ledger.record("d" * 64, plan.release(), kind="training")
    assert ledger.state().entries == ()


def test_pooling_is_part_of_the_task_and_old_manifests_keep_their_bytes() -> None:
    assert TaskInfo(kind="classification", labels=("a", "b")).to_dict() == {
        "kind": "classification",
        "labels": ["a", "b"],
    }  # no "pooling" key: manifests signed before it existed still verify
    assert TaskInfo.from_dict(PROBE.to_dict()) == PROBE and PROBE.to_dict()["pooling"] == "mean"
    with pytest.raises(InvalidArgument, match="pooling"):
        TaskInfo(kind="generation", pooling="mean")
    with pytest.raises(InvalidArgument, match="pooling"):
        TaskInfo(kind="classification", labels=("a", "b"), pooling="max")


def test_mean_pooling_needs_a_linear_classifier_over_the_hidden_states() -> None:
    from lmdock.client.heads import check_mean_pooling
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    small = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    check_mean_pooling(BertForSequenceClassification(BertConfig(vocab_size=100, **small)))
    with pytest.raises(InvalidArgument, match="single linear layer"):  # RoBERTa's head is dense + out_proj
        check_mean_pooling(RobertaForSequenceClassification(RobertaConfig(vocab_size=100, **small)))
