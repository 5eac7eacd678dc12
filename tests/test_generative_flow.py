"""A generative learnware on the real pretrained base (SmolLM2-135M-Instruct), end to end through
the CLI and a real market: build (LoRA, chat template, loss on the answers) -> package -> sign
-> publish -> search -> pull -> run, answering in text."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from lmdock.common.base_model_files import SMOLLM2
from lmdock.lab.embedded import embedded_market

from tests.test_publishing_flow import cli_json

CONDITIONS = {
    "high blood sugar and constant thirst": "diabetes",
    "wheezing and a tight chest": "asthma",
    "a swollen, painful big toe": "gout",
    "yellow skin and dark urine": "jaundice",
}


def write_clinic(path: Path, n: int, *, seed: int) -> Path:
    rng = random.Random(seed)
    with path.open("w") as fh:
        for i in range(n):
            symptoms, condition = rng.choice(sorted(CONDITIONS.items()))
            text = f"Patient {i} reports {symptoms}. Name the most likely condition in one word."
            fh.write(json.dumps({"text": text, "answer": condition}) + "\n")
    return path


@pytest.mark.slow
def test_a_generative_learnware_on_smollm2_is_built_published_found_pulled_and_answers(
    smollm2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, profile, capsys
) -> None:
    monkeypatch.setenv("LMDOCK_HOME", str(tmp_path / "home"))
    data = write_clinic(tmp_path / "clinic.jsonl", 32, seed=0)
    built = cli_json(
        capsys,
        *("build", "--base", SMOLLM2, "--data", str(data), "--out", str(tmp_path / "b")),
        *("--epochs", "2", "--batch-size", "8", "--max-tokens", "32", "--learning-rate", "3e-3"),
    )
    assert built["task"] == "generation" and built["base_model"] == SMOLLM2
    assert built["eval_scores"]["exact_match"] >= built["eval_scores"]["base_exact_match"]
    cli_json(capsys, "keys", "gen")
    package = tmp_path / "clinic.tar"
    cache = tmp_path / "cache"
    with embedded_market(tmp_path / "market", profile=profile) as (address, _market):
        cli_json(
            capsys,
            *("package", str(tmp_path / "b"), "--market", address, "--id", "clinic-triage"),
            *("--domain", "medical", "--licence", "MIT", "--publisher", "acme", "--out", str(package)),
            *("--spec-epsilon", "1", "--budget-epsilon", "8"),
        )
        cli_json(capsys, "sign", str(package))
        cli_json(capsys, "publish", str(package), "--market", address)
        user = write_clinic(tmp_path / "user.jsonl", 60, seed=1)
        found = cli_json(capsys, "search", "--market", address, "--data", str(user), "--epsilon", "1")
        assert found["matches"][0]["learnware_id"] == "clinic-triage"
        cli_json(capsys, "pull", "--market", address, "clinic-triage", "--cache", str(cache))
    asked = tmp_path / "asked.jsonl"
    question = "Patient 99 reports wheezing and a tight chest. Name the most likely condition in one word."
    asked.write_text(json.dumps({"text": question, "answer": "asthma"}) + "\n")
    ran = cli_json(
        capsys, "run", "clinic-triage", "--data", str(asked), "--cache", str(cache), "--device", "cpu"
    )
    assert ran["metric"] == "exact_match"
    assert "asthma" in ran["predictions"][0].lower()
