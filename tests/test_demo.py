"""The demo's whole path (reference build, publish, DP search, pull, local run) in quick mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lmdock.client import cli


@pytest.mark.slow
def test_demo_quick_path(tmp_path: Path, capsys) -> None:
    assert cli.main(["demo", "--json", "--quick", "--workdir", str(tmp_path / "demo")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["matched_correct"] is True
    assert report["matched_id"] == "medical-question-type"
    assert set(report["scores"]) == {"base", "matched", "random"}
    assert all(0.0 <= v <= 1.0 for v in report["scores"].values())
    assert report["epsilon"] == 1.0 and report["delta"] == 1e-6
    assert 0 < report["bytes_sent"] < 8 * 1024  # one spec and a few small requests
    # a second run reuses the cached packages and prints the same table for people
    assert cli.main(["demo", "--quick", "--workdir", str(tmp_path / "demo")]) == 0
    text = capsys.readouterr().out
    assert "matched learnware" in text and "medical-question-type (right" in text


@pytest.mark.slow
def test_generative_demo_quick_path(smollm2: Path, tmp_path: Path, capsys) -> None:
    """Generative learnwares on the packaged SmolLM2: built, published, found by a DP spec,
    pulled and asked the hospital's questions (tiny adapters: the path, not the answers)."""
    argv = ["demo", "--generative", "--quick", "--workdir", str(tmp_path / "demo")]
    assert cli.main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # which one the DP spec finds is the demo's to show (at n = 60, sigma ~0.15), not the path's
    assert report["expected_id"] == "demo-gen-medquad" and report["matched_id"].startswith("demo-gen-")
    assert len(report["examples"]) == 3 and all(isinstance(e["matched"], str) for e in report["examples"])
    assert set(report["exact_match"]) == {"base", "matched"}
    assert report["epsilon"] == 1.0 and 0 < report["bytes_sent"] < 8 * 1024
    assert cli.main(argv) == 0  # the cached packages again, printed for people
    # a fresh DP release: its match may differ from the first run's (a CI run saw that)
    assert "matched learnware  demo-gen-" in capsys.readouterr().out
