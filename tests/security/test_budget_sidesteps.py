"""Ways around a data set's privacy budget, each refused: the same records respelled (a trailing
space, case, full-width forms), duplicated, removed, appended or reordered, under a new name or
in a second file; a second ledger file; a larger cap given on reopening; delta = 0.5."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
from lmdock.client.cli import main
from lmdock.client.daemon.config import DaemonConfig
from lmdock.client.ledger import DataSet, Ledger
from lmdock.client.privacy_unit import default_name
from lmdock.client.task import read_task_file
from lmdock.common.accounting import Budget
from lmdock.common.errors import BudgetExceeded, IntegrityError, InvalidArgument
from lmdock.common.mechanism import calibrate
from lmdock.common.spec import plan_release

TEXTS = [f"Note {i}: the patient reports symptom {i % 7}, pain level {i % 10}." for i in range(60)]
#: One epsilon = 1 spec of 60 records as the ledger books it (2 of them cost 1.455 at 1e-6).
SPEC = calibrate(epsilon=1.0, delta=1e-6, clip_radius=1.0, bucket=56, dim=384).cost
CAP = Budget(epsilon=1.2, delta=1e-6)


def full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


VARIANTS = {
    "trailing space": [TEXTS[0] + " ", *TEXTS[1:]],
    "case and spacing": [t.upper().replace(" ", "  ") for t in TEXTS],
    "full-width forms": [full_width(TEXTS[0]), *TEXTS[1:]],
    "duplicated record": [*TEXTS, TEXTS[3]],
    "removed record": TEXTS[1:],
    "appended record": [*TEXTS, "Note 60: a new patient."],
    "reordered": TEXTS[::-1],
    "one record in common": [TEXTS[5], *(f"unrelated text {i}" for i in range(59))],
}


def test_full_width_forms_are_what_nfkc_folds() -> None:
    assert unicodedata.normalize("NFKC", full_width(TEXTS[0])) == TEXTS[0]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", ["notes-copy", None])
def test_the_same_records_respelled_share_one_budget(tmp_path: Path, variant: str, name: str | None) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl", budget=CAP)
    ledger.record(DataSet.of(TEXTS, name="notes"), SPEC, kind="spec")
    with pytest.raises(BudgetExceeded, match="data set notes exceeded"):
        ledger.record(DataSet.of(VARIANTS[variant], name=name), SPEC, kind="spec")
    assert len(ledger.state().releases) == 1


def test_a_second_file_with_near_duplicate_records_is_charged_to_the_first(tmp_path: Path) -> None:
    first, second = tmp_path / "ward-a.jsonl", tmp_path / "ward-a-final.jsonl"
    first.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    edited = [t + "  " if i % 2 else t.lower() for i, t in enumerate(TEXTS[:-1])] + ["Note 99: added late."]
    second.write_text("".join(json.dumps({"text": t}) + "\n" for t in edited))
    ledger = Ledger(tmp_path / "ledger.jsonl", budget=Budget(epsilon=100.0, delta=1e-6))
    a = DataSet.of(read_task_file(first).texts, name=default_name(first))
    b = DataSet.of(read_task_file(second).texts, name=default_name(second))
    assert (a.name, b.name) == ("ward-a", "ward-a-final") and a.key != b.key
    ledger.record(a, SPEC, kind="spec")
    debit = ledger.record(b, SPEC, kind="spec")
    assert debit.dataset == "ward-a-final" and debit.charged == ("ward-a",)
    state = ledger.state()
    assert state.spent("ward-a").releases == 2 and state.spent("ward-a-final").releases == 1
    # the first file's cap, stored when it was registered, bounds both files' releases
    tight = Ledger(tmp_path / "tight.jsonl", budget=CAP)
    tight.record(a, SPEC, kind="spec")
    with pytest.raises(
        BudgetExceeded, match=r"data set ward-a exceeded \(this release reads records of ward-a\)"
    ):
        tight.record(b, SPEC, kind="spec")


def test_a_larger_cap_on_reopening_allows_nothing_more(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    Ledger(path, budget=CAP).record(DataSet.of(TEXTS, name="notes"), SPEC, kind="spec")
    reopened = Ledger(path, budget=Budget(epsilon=100.0, delta=1e-6))
    with pytest.raises(BudgetExceeded, match=r"cap epsilon=1\.2 .*`lmdock ledger raise-cap notes`"):
        reopened.record(DataSet.of(TEXTS, name="notes"), SPEC, kind="spec")
    assert reopened.state().cap("notes") == CAP
    # raising it is an explicit, recorded decision, and only raises
    with pytest.raises(InvalidArgument, match="reason"):
        reopened.raise_cap("notes", epsilon=2.0, reason=" ", by="officer")
    with pytest.raises(InvalidArgument, match="only raises"):
        reopened.raise_cap("notes", epsilon=1.0, reason="typo", by="officer")
    with pytest.raises(InvalidArgument, match="no data set 'other'"):
        reopened.raise_cap("other", epsilon=2.0, reason="x", by="officer")
    entry = reopened.raise_cap("notes", epsilon=2.0, reason="ethics board approval 2026-17", by="officer")
    assert entry.data["previous"] == {"epsilon": 1.2, "delta": 1e-6} and entry.data["by"] == "officer"
    assert (
        Ledger(path, budget=CAP).record(DataSet.of(TEXTS, name="notes"), SPEC, kind="spec").spent.epsilon < 2
    )


def test_a_cap_cannot_be_raised_by_editing_the_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path, budget=CAP)
    ledger.record(DataSet.of(TEXTS, name="notes"), SPEC, kind="spec")
    path.write_text(path.read_text().replace('"epsilon":1.2', '"epsilon":100.0', 1))
    with pytest.raises(IntegrityError, match="damaged"):
        ledger.record(DataSet.of(TEXTS, name="notes"), SPEC, kind="spec")


def write_task(path: Path) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return path


def test_a_second_ledger_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMDOCK_HOME", str(tmp_path / "home"))
    other = tmp_path / "fresh-ledger.jsonl"
    search = ["search", "--market", "127.0.0.1:9", "--data", str(write_task(tmp_path / "t.jsonl"))]
    assert main([*search, "--epsilon", "1", "--ledger", str(other)]) == 2
    err = capsys.readouterr().err
    assert "one privacy ledger per LMDOCK_HOME" in err and str(tmp_path / "home" / "ledger.jsonl") in err
    assert not other.exists()
    with pytest.raises(InvalidArgument, match=r"privacy\.ledger is no longer a setting"):
        DaemonConfig.from_dict({"privacy": {"ledger": str(other)}})


def test_delta_one_half_is_refused_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, profile
) -> None:
    limit = r"delta <= min\(1e-6, 1/\(10 n\)\)"
    with pytest.raises(
        InvalidArgument, match=rf"delta=0.5 is above the limit for a spec over 300 .*{limit} = 1e-06"
    ):
        plan_release(profile, epsilon=1.0, delta=0.5, units=300)
    with pytest.raises(InvalidArgument, match=limit):
        Budget(epsilon=3.0, delta=0.5)
    with pytest.raises(InvalidArgument, match="budget_delta"):
        DaemonConfig.from_dict({"privacy": {"budget_delta": 0.5}})
    monkeypatch.setenv("LMDOCK_HOME", str(tmp_path / "home"))
    search = ["search", "--market", "127.0.0.1:9", "--data", str(write_task(tmp_path / "t.jsonl"))]
    for flags in (["--delta", "0.5"], ["--budget-delta", "0.5"]):
        assert main([*search, "--epsilon", "1", *flags]) == 2  # before the market is dialled
        assert "above the limit" in capsys.readouterr().err
    assert not (tmp_path / "home" / "ledger.jsonl").exists()
