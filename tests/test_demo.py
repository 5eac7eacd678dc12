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
