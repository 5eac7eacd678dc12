"""Search debits the ledger before it sends: re-sends are free, an over-budget search sends
nothing, a person column makes the person the unit; `lmdock search` and `lmdock ledger`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lmdock.client.cli import main
from lmdock.client.connection import MarketClient, WireRecorder
from lmdock.client.ledger import Ledger, dataset_id
from lmdock.client.operations import search_task
from lmdock.common.accounting import Budget
from lmdock.common.errors import BudgetExceeded
from lmdock.common.signing import generate_key
from lmdock.common.spec import size_bucket
from lmdock.lab.embedded import embedded_market
from lmdock.lab.refdata import load_split

from tests.helpers import cluster_spec, make_adapter, make_package

TEXTS = tuple(load_split("medquad", "task")[0][:60])


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, profile):
    root = tmp_path_factory.mktemp("search")
    adapter = make_adapter(tiny_bert, root / "adapter")
    key = generate_key()
    with embedded_market(root / "market", profile=profile) as (address, _):
        with MarketClient(address) as publisher:
            for i in range(2):
                path = root / f"lw{i}.tar"
                spec = cluster_spec(profile, seed=i)
                make_package(
                    path, adapter, key=key, spec=spec, learnware_id=f"lw-{i}", base_model=str(tiny_bert)
                )
                publisher.upload(path)
        yield address


def test_a_retry_re_sends_the_cached_release_at_no_cost(market: str, tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl", budget=Budget(epsilon=1.0, delta=1e-6))
    with MarketClient(market) as client:
        first = search_task(client, TEXTS, epsilon=1.0, delta=1e-6, ledger=ledger).spec
        again = search_task(client, TEXTS, epsilon=1.0, delta=1e-6, ledger=ledger, top_k=1).spec
    assert np.array_equal(first.values, again.values) and first.privacy == again.privacy
    assert len(ledger.state().releases) == 1 and ledger.state().spent(dataset_id(TEXTS)).epsilon == 1.0
    assert ledger.state().releases[0].data["destination"] == market


def test_an_over_budget_search_sends_nothing(market: str, tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl", budget=Budget(epsilon=1.0, delta=1e-6))
    recorder = WireRecorder(keep=True)
    with MarketClient(market, recorder=recorder) as client:
        search_task(client, TEXTS, epsilon=1.0, delta=1e-6, ledger=ledger)
        sent = len(recorder.messages)
        with pytest.raises(BudgetExceeded, match="Nothing was sent"):
            search_task(client, TEXTS, epsilon=0.5, delta=1e-6, ledger=ledger)
    assert len(recorder.messages) == sent  # not even the profile request
    assert len(ledger.state().releases) == 1


def test_person_level_specs_are_calibrated_to_the_number_of_persons(market: str, tmp_path: Path) -> None:
    persons = [f"patient-{i % 21}" for i in range(len(TEXTS))]  # 21 persons, 2-3 texts each
    ledger = Ledger(tmp_path / "ledger.jsonl")
    with MarketClient(market) as client:
        spec = search_task(client, TEXTS, epsilon=1.0, delta=1e-6, ledger=ledger, persons=persons).spec
        record_level = search_task(client, TEXTS, epsilon=1.0, delta=1e-6, ledger=ledger).spec
    assert spec.privacy.unit == "person" and spec.privacy.size_bucket == size_bucket(21) == 20
    assert record_level.privacy.unit == "record" and record_level.privacy.size_bucket == size_bucket(
        len(TEXTS)
    )
    assert spec.privacy.sigma > 2 * record_level.privacy.sigma
    # both releases are of the same records: one data set, one budget, per record; per person
    # there is no bound once a record-level release is booked (never mixed into one total)
    state = ledger.state()
    assert state.spent(dataset_id(TEXTS)).releases == 2
    assert state.per_person(dataset_id(TEXTS)) is None


def write_task(path: Path, *, persons: bool = False) -> Path:
    rows = [
        {"text": t, "label": "x", **({"person": f"p{i % 30}"} if persons else {})}
        for i, t in enumerate(TEXTS)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_search_prints_the_release_and_the_spent_budget(
    market: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMDOCK_HOME", str(tmp_path / "home"))
    task = write_task(tmp_path / "task.jsonl", persons=True)
    ledger = str(tmp_path / "home" / "ledger.jsonl")
    common = ["--market", market, "--data", str(task), "--budget-epsilon", "1"]
    code, out, _ = run_cli(capsys, "search", *common, "--epsilon", "1", "--json")
    report = json.loads(out)
    assert code == 0 and report["privacy"]["unit"] == "person" and report["privacy"]["fresh_release"]
    spent = report["ledger"]["spent"]
    assert report["ledger"]["path"] == ledger and spent["dataset"] == "task"  # named after the file
    assert spent["epsilon"] == spent["per_record"]["epsilon"] == spent["per_person"]["epsilon"] == 1.0
    assert (spent["cap_epsilon"], spent["cap_delta"]) == (1.0, 1e-6)
    code, out, _ = run_cli(capsys, "search", *common, "--epsilon", "1")
    assert code == 0 and "re-sent the cached release (no new cost)" in out and "per person" in out
    assert "has spent epsilon=1 (delta=1e-06) in all" in out  # every epsilon total with its delta
    code, _, err = run_cli(capsys, "search", *common, "--epsilon", "0.8")  # 1 and 0.8: 1.153
    assert code == 5 and "lmdock: error: privacy budget" in err and "Nothing was sent" in err

    code, out, _ = run_cli(capsys, "ledger", "show", "--json")
    shown = json.loads(out)
    assert code == 0 and len(shown["entries"]) == 1 and shown["entries"][0]["unit"] == "person"
    assert [a["kind"] for a in shown["admin"]] == ["register"] and shown["admin"][0]["dataset"] == "task"
    assert "values" not in out  # show lists releases, not the released vectors
    code, out, _ = run_cli(capsys, "ledger", "show", "--ledger", ledger)
    assert code == 0 and "spent per data set" in out
    code, out, _ = run_cli(capsys, "ledger", "verify", "--ledger", ledger, "--json")
    verified = json.loads(out)
    assert code == 0 and verified["ok"] and (verified["entries"], verified["releases"]) == (2, 1)
    head = verified["head"]
    code, out, _ = run_cli(capsys, "ledger", "verify", "--ledger", ledger, "--expect-head", head)
    assert code == 0 and "ledger OK" in out

    Path(ledger).write_text("")  # cut everything off: the anchor remembers
    code, out, _ = run_cli(capsys, "ledger", "verify", "--ledger", ledger, "--json")
    assert code == 7 and json.loads(out)["ok"] is False and "cut off" in json.loads(out)["error"]
    code, _, err = run_cli(capsys, "ledger", "verify", "--ledger", ledger)
    assert code == 7 and "damaged" in err
    code, _, err = run_cli(capsys, "search", *common, "--epsilon", "1")
    assert code == 7 and "damaged" in err and "no release is made" in err


def test_a_search_too_noisy_for_the_profile_is_refused_before_booking(
    market: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """epsilon 0.1 over 60 texts needs sigma ~1.2, above the profile's max_sigma 0.76: a
    readable error, and nothing booked (the distance shows its sd when it does go through)."""
    task = write_task(tmp_path / "task.jsonl")
    monkeypatch.setenv("LMDOCK_HOME", str(tmp_path / "home"))
    ledger = tmp_path / "home" / "ledger.jsonl"
    common = ["--market", market, "--data", str(task)]
    code, _, err = run_cli(capsys, "search", *common, "--epsilon", "0.1")
    assert code == 2 and "above the market profile's max_sigma 0.7598" in err and "Traceback" not in err
    assert Ledger(ledger).state().entries == ()
    code, out, _ = run_cli(capsys, "search", *common, "--epsilon", "1")
    assert code == 0 and "distance ± sd" in out and "lower is closer" in out and "confidence" in out


def test_one_search_reads_and_verifies_the_ledger_at_most_twice(
    market: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once before the market is contacted (budget, cached spec), once under the write lock to
    book a fresh release (another process may have booked meanwhile); a re-send only once."""
    reads: list[int] = []
    verify = Ledger._state

    def counted(self: Ledger) -> Any:
        reads.append(1)
        return verify(self)

    monkeypatch.setattr(Ledger, "_state", counted)
    task = write_task(tmp_path / "task.jsonl")
    monkeypatch.setenv("LMDOCK_HOME", str(tmp_path / "home"))
    common = ["--market", market, "--data", str(task)]
    assert run_cli(capsys, "search", *common, "--epsilon", "1", "--json")[0] == 0
    fresh, reads[:] = len(reads), []
    assert run_cli(capsys, "search", *common, "--epsilon", "1", "--json")[0] == 0
    assert (fresh, len(reads)) == (2, 1)
