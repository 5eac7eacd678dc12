"""Real adapters on tiny models built from configs: train, package, publish, pull, run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lmdock.client import cli
from lmdock.client.publish.training import TrainingConfig, train_classifier
from lmdock.client.runtime import load_learnware
from lmdock.common.package import TaskInfo
from lmdock.common.signing import generate_key
from lmdock.lab.embedded import embedded_market
from safetensors.torch import load_file

from tests.helpers import LABELS, cluster_spec, make_adapter, make_package

TEXTS = ["good great fine", "bad awful poor"] * 16
GOLD = ["positive", "negative"] * 16


def test_trained_classifier_changes_weights_and_learns(tiny_bert: Path, tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    train_classifier(
        base_model=str(tiny_bert),
        texts=TEXTS,
        labels=GOLD,
        label_names=LABELS,
        out_dir=adapter,
        config=TrainingConfig(epochs=8, learning_rate=5e-3, batch_size=8, max_tokens=16),
    )
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    weights = load_file(adapter / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and any(float(v.abs().sum()) > 0 for v in lora_b)  # LoRA B starts at zero
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_bert)
    model = load_learnware(adapter, base_model=str(tiny_bert), task=TaskInfo("classification", LABELS))
    predictions = model.predict(TEXTS[:4])
    assert predictions == GOLD[:4]


def _publish(address: str, package: Path) -> None:
    assert cli.main(["list", "--market", address, "--json"]) == 0
    from lmdock.client.connection import MarketClient

    with MarketClient(address) as client:
        client.upload(package)


@pytest.mark.parametrize("kind", ["classification", "generation"])
def test_cli_pull_and_run(
    kind: str, tiny_bert: Path, tiny_llama: Path, tmp_path: Path, profile, capsys
) -> None:
    base = tiny_bert if kind == "classification" else tiny_llama
    adapter = make_adapter(base, tmp_path / "adapter", kind=kind)
    package = tmp_path / "pkg.tar"
    make_package(
        package, adapter, key=generate_key(), spec=cluster_spec(profile, 1), base_model=str(base), kind=kind
    )
    task = tmp_path / "task.jsonl"
    field = "label" if kind == "classification" else "answer"
    task.write_text(
        "".join(json.dumps({"text": t, field: g}) + "\n" for t, g in zip(TEXTS[:4], GOLD[:4], strict=True))
    )
    cache = tmp_path / "cache"
    with embedded_market(tmp_path / "market", profile=profile) as (address, _):
        _publish(address, package)
        capsys.readouterr()
        assert cli.main(["pull", "--market", address, "test-learnware", "--cache", str(cache), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["learnware_id"] == "test-learnware"
    # the market is gone: running needs only the cache
    assert (
        cli.main(
            ["run", "test-learnware", "--data", str(task), "--cache", str(cache), "--json", "--device", "cpu"]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert len(out["predictions"]) == 4 and all(isinstance(p, str) for p in out["predictions"])
    assert out["metric"] == ("accuracy" if kind == "classification" else "exact_match")
    assert 0.0 <= out["score"] <= 1.0
    if kind == "classification":
        assert set(out["predictions"]) <= set(LABELS)
    # for a person: text, prediction and gold side by side
    argv = ["run", "test-learnware", "--data", str(task), "--cache", str(cache), "--device", "cpu"]
    argv += ["--show", "2"]
    assert cli.main(argv) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0].split() == ["text", "prediction", "gold"]
    assert shown[2].startswith(TEXTS[0][:20]) and shown[2].rstrip().endswith(GOLD[0])
    assert shown[4].startswith("... (4 predictions")


def test_run_refuses_a_tampered_cache(tiny_bert: Path, tmp_path: Path, profile, capsys) -> None:
    adapter = make_adapter(tiny_bert, tmp_path / "adapter")
    package = tmp_path / "pkg.tar"
    make_package(
        package, adapter, key=generate_key(), spec=cluster_spec(profile, 1), base_model=str(tiny_bert)
    )
    task = tmp_path / "task.jsonl"
    task.write_text(json.dumps({"text": "hello"}) + "\n")
    cache = tmp_path / "cache"
    with embedded_market(tmp_path / "market", profile=profile) as (address, _):
        _publish(address, package)
        assert cli.main(["pull", "--market", address, "test-learnware", "--cache", str(cache)]) == 0
    weights = cache / "learnwares" / "test-learnware" / "adapter_model.safetensors"
    tensors = load_file(weights)
    from safetensors.torch import save_file

    save_file({k: v + 1 if v.dtype == torch.float32 else v for k, v in tensors.items()}, weights)
    capsys.readouterr()
    assert cli.main(["run", "test-learnware", "--data", str(task), "--cache", str(cache)]) == 7
    assert "sha256" in capsys.readouterr().err
