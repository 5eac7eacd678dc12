"""The privacy ledger: write-ahead, hash chain, anchor, crash recovery, budget cap, re-sends."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from lmdock.client.ledger import DataSet, Ledger, dataset_id
from lmdock.common.accounting import Budget, Release, compose
from lmdock.common.calibration import analytic_sigma
from lmdock.common.errors import BudgetExceeded, IntegrityError, InvalidArgument
from lmdock.common.features import build_feature_map
from lmdock.common.mechanism import least_cost
from lmdock.common.profile_factory import make_profile
from lmdock.common.spec import plan_release, release

from tests.helpers import random_unit_rows

Z = analytic_sigma(epsilon=1.0, delta=1e-6, sensitivity=1.0)
ROOMY = Budget(epsilon=50.0, delta=1e-6)


def one(epsilon: float = 1.0) -> Release:
    return Release(
        epsilon=epsilon,
        delta=1e-6,
        noise_multiplier=analytic_sigma(epsilon=epsilon, delta=1e-6, sensitivity=1.0),
    )


@pytest.fixture()
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.jsonl", budget=ROOMY)


def lines(ledger: Ledger) -> list[str]:
    return ledger.path.read_text().splitlines()


def test_dataset_id_is_the_content_hash_of_the_records() -> None:
    a = dataset_id(["first record", "second record"])
    assert a == dataset_id(["second record", "first record"])  # order does not matter
    assert a != dataset_id(["first record", "second record", "second record"])
    assert a != dataset_id(["first record", "second record."])
    with pytest.raises(InvalidArgument):
        dataset_id([])


def test_entries_are_chained_and_composed_per_data_set(ledger: Ledger) -> None:
    ledger.record("a" * 64, one(), kind="spec")
    ledger.record("b" * 64, one(0.5), kind="training")
    ledger.record("a" * 64, one(), kind="spec", destination="market:1")
    entries = ledger.state().entries  # each data set's register entry precedes its first release
    assert [e.kind for e in entries] == ["register", "spec", "register", "training", "spec"]
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert all(b.data["prev"] == a.digest for a, b in itertools.pairwise(entries))
    assert ledger.state().spent("a" * 64) == compose([one(), one()], delta=ROOMY.delta)
    assert ledger.state().spent("b" * 64).releases == 1
    assert ledger.state().spent("c" * 64).epsilon == 0.0
    anchor = json.loads(ledger.anchor.read_text())
    assert anchor == {"count": 5, "head": entries[4].digest, "pending": None}


def test_a_cap_of_one_allows_the_first_epsilon_one_release_and_refuses_the_second(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.jsonl", budget=Budget(epsilon=1.0, delta=1e-6))
    ledger.record("d" * 64, one(), kind="spec")
    before = ledger.path.read_bytes(), ledger.anchor.read_bytes()
    with pytest.raises(BudgetExceeded, match="Nothing was sent"):
        ledger.record("d" * 64, one(), kind="spec")
    assert (ledger.path.read_bytes(), ledger.anchor.read_bytes()) == before  # nothing written
    ledger.record("e" * 64, one(), kind="spec")  # another data set has its own budget


def test_check_spec_budget_refuses_before_anything_is_computed(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.jsonl", budget=Budget(epsilon=1.4, delta=1e-6))  # two cost 1.455
    data = DataSet.of([f"record {i}" for i in range(60)], name="f")
    ledger.state().check_spec_budget(data, epsilon=1.0, delta=1e-6, unit="record")
    ledger.record(data, one(), kind="spec")
    with pytest.raises(BudgetExceeded):
        ledger.state().check_spec_budget(data, epsilon=1.0, delta=1e-6, unit="record")


def test_a_cached_spec_is_found_for_free_re_sends(ledger: Ledger, rng: np.random.Generator) -> None:
    profile = make_profile(embedder_hash="0" * 64)
    features = build_feature_map(profile)(random_unit_rows(rng, 40, 384))
    released = release(features, profile, epsilon=1.0, delta=1e-6)
    spec = released.spec
    data = DataSet.of([f"text {i}" for i in range(40)], name="g")
    debit = ledger.book(data, released, destination="127.0.0.1:1")
    entry = debit.entry
    assert entry is not None and debit.fresh and debit.spent == ledger.state().spent("g")
    # booked as released, and as planned from public parameters before any data
    planned = plan_release(profile, epsilon=1.0, delta=1e-6, units=40).cost
    assert entry.release == released.cost == planned
    assert least_cost(epsilon=1.0, delta=1e-6).noise_multiplier >= planned.noise_multiplier
    assert entry.release.noise_multiplier == pytest.approx(Z, rel=1e-3)
    assert entry.release.tv_slack > 0
    state = ledger.state()
    cached = state.cached_spec(data.key, profile_ids=profile.ids, epsilon=1.0, delta=1e-6, unit="record")
    assert (
        cached is not None and np.array_equal(cached.values, spec.values) and cached.privacy == spec.privacy
    )
    assert (
        state.cached_spec(data.key, profile_ids=profile.ids, epsilon=2.0, delta=1e-6, unit="record") is None
    )
    assert (
        state.cached_spec("h" * 64, profile_ids=profile.ids, epsilon=1.0, delta=1e-6, unit="record") is None
    )
    assert state.has_release(data.key, epsilon=1.0, delta=1e-6, unit="record")
    # a cached release passes the budget check even when the budget is spent
    tight = Ledger(ledger.path, budget=Budget(epsilon=0.5, delta=1e-6))
    tight.state().check_spec_budget(data, epsilon=1.0, delta=1e-6, unit="record")


@pytest.mark.parametrize(
    "tamper",
    ["edit", "delete_middle", "reorder", "cut_tail", "append_garbage", "drop_anchor", "rewrite_consistently"],
)
def test_no_edit_gives_budget_back(ledger: Ledger, tamper: str) -> None:
    for _ in range(3):
        ledger.record("a" * 64, one(), kind="spec")
    rows = lines(ledger)  # a register entry, then three releases
    if tamper == "edit":
        rows[1] = rows[1].replace('"epsilon":1.0', '"epsilon":0.1')
    elif tamper == "delete_middle":
        del rows[1]
    elif tamper == "reorder":
        rows[1], rows[2] = rows[2], rows[1]
    elif tamper == "cut_tail":
        rows = rows[:2]
    elif tamper == "append_garbage":
        rows.append("{}")
    elif tamper == "rewrite_consistently":  # a valid shorter chain, but the anchor remembers
        rows = rows[:1]
    if tamper == "drop_anchor":
        ledger.anchor.unlink()
    else:
        ledger.path.write_text("".join(r + "\n" for r in rows))
    with pytest.raises(IntegrityError, match="damaged"):
        ledger.state()
    with pytest.raises(IntegrityError, match="nothing was sent"):
        ledger.record("a" * 64, one(), kind="spec")


def test_a_torn_entry_is_detected_and_counts_as_spent(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger.record("a" * 64, one(), kind="spec")

    def torn_append(self: Ledger, line: str, *, cut_to: int | None = None) -> None:
        with self.path.open("ab") as out:
            out.write(line.encode()[: len(line) // 2])  # the writer dies half-way
        raise SystemExit("killed")

    with monkeypatch.context() as m:
        m.setattr(Ledger, "_append", torn_append)
        with pytest.raises(SystemExit):
            ledger.record("a" * 64, one(0.5), kind="spec")
    state = Ledger(ledger.path, budget=ROOMY).state()  # a fresh process reads it
    assert state.interrupted and len(state.releases) == 2
    assert ledger.state().spent("a" * 64) == compose([one(), one(0.5)], delta=ROOMY.delta)
    ledger.record("a" * 64, one(), kind="spec")  # repairs the tail, then appends
    after = ledger.state()
    assert not after.interrupted and [e.seq for e in after.entries] == [1, 2, 3, 4]
    assert len(lines(ledger)) == 4


def test_a_crash_before_the_anchor_commit_is_rolled_forward(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger.record("a" * 64, one(), kind="spec")
    real = Ledger._write_anchor
    calls = []

    def dies_on_commit(self: Ledger, *, count: int, head: str, pending: str | None) -> None:
        calls.append(pending)
        if pending is None:
            raise SystemExit("killed")
        real(self, count=count, head=head, pending=pending)

    with monkeypatch.context() as m:
        m.setattr(Ledger, "_write_anchor", dies_on_commit)
        with pytest.raises(SystemExit):
            ledger.record("a" * 64, one(), kind="spec")
    assert len(lines(ledger)) == 3 and json.loads(ledger.anchor.read_text())["count"] == 2
    assert len(ledger.state().entries) == 3 and not ledger.state().interrupted
    ledger.record("a" * 64, one(), kind="spec")
    assert json.loads(ledger.anchor.read_text())["count"] == 4


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from lmdock.client.ledger import Ledger
    from lmdock.common.accounting import Budget, Release, compose
    ledger = Ledger(Path(sys.argv[1]), budget=Budget(epsilon=100.0, delta=1e-6))
    release = Release(epsilon=0.01, delta=1e-9, noise_multiplier=500.0)
    compose([release], delta=1e-6)  # imports the accountant before the clock starts
    print("ready", flush=True)
    while True:
        entry = ledger.record("k" * 64, release, kind="spec").entry
        print(entry.seq, flush=True)
    """
)


def test_survives_kill_9_mid_write(tmp_path: Path) -> None:
    """A writer killed at random moments never leaves a ledger that fails to verify, and every
    record it acknowledged is there."""
    path = tmp_path / "ledger.jsonl"
    rng = np.random.default_rng(3)
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)],
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.4, 1.2)))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        acknowledged = [int(x) for x in out.split() if x.isdigit()]
        state = Ledger(path, budget=ROOMY).state()
        assert acknowledged and state.entries[-1].seq >= acknowledged[-1]
        assert [e.seq for e in state.entries] == list(range(1, len(state.entries) + 1))


def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from lmdock.client.ledger import Ledger
        from lmdock.common.accounting import Budget, Release
        ledger = Ledger(Path(sys.argv[1]), budget=Budget(epsilon=100.0, delta=1e-6))
        release = Release(epsilon=0.01, delta=1e-9, noise_multiplier=500.0)
        for _ in range(8):
            ledger.record(sys.argv[2] * 64, release, kind="spec")
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), c]) for c in "xy"]
    assert [p.wait() for p in procs] == [0, 0]
    releases = Ledger(path, budget=ROOMY).state().releases
    assert len(releases) == 16 and {e.content[0] for e in releases} == {"x", "y"}


def blocked_on(path: Path, pid: int) -> bool:
    """Whether the kernel lists process `pid` as waiting for a lock on `path` (/proc/locks)."""
    inode = f":{path.stat().st_ino} "
    return any(
        "->" in line and f" {pid} " in line and inode in line
        for line in Path("/proc/locks").read_text().splitlines()
    )


def test_a_second_process_waits_for_the_lock(ledger: Ledger) -> None:
    """The lock makes a second writer wait (it does not fail): it books once the first is done."""
    ledger.record("a" * 64, one(), kind="spec")
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from lmdock.client.ledger import Ledger
        from lmdock.common.accounting import Budget, Release
        ledger = Ledger(Path(sys.argv[1]), budget=Budget(epsilon=50.0, delta=1e-6))
        ledger.record("a" * 64, Release(epsilon=1.0, delta=1e-6, noise_multiplier=4.3), kind="spec")
        """
    )
    with ledger._locked(exclusive=True):
        proc = subprocess.Popen([sys.executable, "-c", script, str(ledger.path)])
        deadline = time.monotonic() + 120  # a bound, not a timing: the loop ends on the event
        while not blocked_on(ledger.path.with_name("ledger.jsonl.lock"), proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        assert len(ledger._state()[0].releases) == 1  # it is waiting, having written nothing
    assert proc.wait() == 0
    assert len(ledger.state().releases) == 2


def test_an_anchor_elsewhere(tmp_path: Path) -> None:
    anchor = tmp_path / "other-volume" / "head.json"
    ledger = Ledger(tmp_path / "ledger.jsonl", anchor=anchor, budget=ROOMY)
    ledger.record("a" * 64, one(), kind="spec")
    assert anchor.is_file() and not (tmp_path / "ledger.jsonl.head").exists()
    with pytest.raises(IntegrityError):
        Ledger(tmp_path / "ledger.jsonl", budget=ROOMY).state()  # looking in the wrong place


def test_unknown_kind_is_refused(ledger: Ledger) -> None:
    with pytest.raises(InvalidArgument):
        ledger.record("a" * 64, one(), kind="gift")


def test_a_ledger_written_before_data_sets_were_named_keeps_verifying_and_is_adopted(tmp_path: Path) -> None:
    """Old entries name the data set by its content key and have no register entry: they verify
    as before, count under that key, and a data set registered with the same records adopts them."""
    from lmdock.common.canonical import canonical_json, sha256_hex

    texts = [f"old record {i}" for i in range(60)]
    key, prev, lines_ = dataset_id(texts), "0" * 64, []
    for seq in (1, 2):
        data = {
            "seq": seq,
            "prev": prev,
            "time": "2026-11-01T00:00:00+00:00",
            "dataset": key,
            "kind": "spec",
            "unit": "record",
            "release": one().to_dict(),
            "destination": "market:1",
            "spec": None,
        }
        lines_.append(canonical_json(data).decode())
        prev = sha256_hex(lines_[-1].encode())
    path = tmp_path / "ledger.jsonl"
    path.write_text("".join(line + "\n" for line in lines_))
    path.with_name("ledger.jsonl.head").write_text(json.dumps({"count": 2, "head": prev, "pending": None}))
    ledger = Ledger(path, budget=Budget(epsilon=3.0, delta=1e-6))
    state = ledger.state()
    assert len(state.releases) == 2 and state.unregistered() == [key] and state.spent(key).releases == 2
    debit = ledger.record(DataSet.of(texts, name="old-notes"), one(), kind="spec")
    assert debit.dataset == "old-notes" and debit.spent.releases == 3  # the two old ones adopted
    assert ledger.state().unregistered() == []


def test_person_and_record_level_totals_are_kept_apart(ledger: Ledger) -> None:
    data = DataSet.of([f"r{i}" for i in range(60)], name="ward")
    ledger.record(data, one(), kind="spec", unit="person")
    state = ledger.state()
    assert state.per_person("ward") == state.spent("ward") == compose([one()], delta=ROOMY.delta)
    debit = ledger.record(data, one(0.5), kind="spec", unit="record")
    # per record: every release (a person-level one protects each record too); per person:
    # none, since a record-level release bounds no person's total
    assert debit.spent == compose([one(), one(0.5)], delta=ROOMY.delta) and debit.per_person is None


def test_cli_raise_cap_is_recorded_and_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmdock.client.cli import main
    from lmdock.client.ledger import default_ledger_path

    monkeypatch.setenv("LMDOCK_HOME", str(tmp_path / "home"))
    Ledger(default_ledger_path()).record(
        DataSet.of([f"r{i}" for i in range(60)], name="notes"), one(), kind="spec"
    )
    capsys.readouterr()
    assert (
        main(["ledger", "raise-cap", "notes", "--epsilon", "5", "--reason", "board approval", "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["cap"] == {"epsilon": 5.0, "delta": 1e-6}
    assert main(["ledger", "raise-cap", "nobody", "--epsilon", "5", "--reason", "x"]) == 2
    assert "no data set 'nobody' is registered" in capsys.readouterr().err
    assert main(["ledger", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [a["kind"] for a in shown["admin"]] == ["register", "raise-cap"]
    (notes,) = shown["datasets"]
    assert (notes["dataset"], notes["cap_epsilon"], notes["per_record"]["epsilon"]) == ("notes", 5.0, 1.0)
    assert notes["per_person"] is None and notes["registered"] and notes["records"] == 60
    assert main(["ledger", "show"]) == 0
    out = capsys.readouterr().out
    assert "cap of notes raised from 3 to 5" in out and "board approval" in out and "per person" in out


def test_a_release_booked_by_content_key_lands_on_the_declared_data_set(tmp_path: Path) -> None:
    """`build` tells the ledger the file's data set; `build_learnware` books by content key."""
    texts = [f"training record {i}" for i in range(60)]
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path, budget=ROOMY, declared=DataSet.of(texts, name="ward"))
    charge, _ = ledger.state().check(dataset_id(texts), one(), kind="training")
    assert charge.dataset == "ward" and ledger.state().entries == ()  # declaring writes nothing
    assert ledger.record(dataset_id(texts), one(), kind="training").dataset == "ward"
    ledger.record("ward", one(), kind="training")
    state = ledger.state()
    assert [e.kind for e in state.entries] == ["register", "training", "training"]
    assert [e.dataset for e in state.releases] == ["ward", "ward"] and list(state.units) == ["ward"]
    assert state.spent("ward").releases == 2 and state.units["ward"].records == 60
    plain = Ledger(path, budget=ROOMY)  # later, undeclared: the same key still finds it
    assert plain.record(dataset_id(texts), one(), kind="training").dataset == "ward"
    assert plain.record("other-ward", one(), kind="training").dataset == "other-ward"  # a new name
    assert list(plain.state().units) == ["ward", "other-ward"]
