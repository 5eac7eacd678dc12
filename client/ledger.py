"""The privacy ledger: every release of every data set, append-only, hash-chained, capped.

Files (the anchor may live elsewhere, e.g. on another volume):

    ledger.jsonl        one canonical-JSON entry per line; entry k carries `prev`, the sha256 of
                        line k-1 (64 zeros for the first), so no entry can change unnoticed.
                        The lines stay in the first canonical form (`canonical_json`, not RFC
                        8785): the chain hashes each line's bytes as written, so any language
                        checks it with sha256 alone, and no ledger is ever re-encoded
    ledger.jsonl.head   the anchor: how many entries there are, the sha256 of the last one, and
                        the entry being written (`pending`); a cut-off tail no longer matches it
    ledger.jsonl.lock   an flock, so the CLI and a daemon never interleave: a second process
                        waits (the lock is held for one read or one booking, milliseconds)

There is one ledger per home ($LMDOCK_HOME, default ~/.cache/lmdock; a daemon's cache.dir):
the CLI books every release in `default_ledger_path()` and offers no other file for releases.

Write-ahead protocol of `record` (the caller sends only after it returns):
1. lock; read and verify the ledger (finishing an interrupted write, below);
2. resolve the data set the release reads (`client.ledger_state`: its name, registered with
   its cap and record fingerprints if new, and every other data set it shares records with)
   and compose each one's releases with the new one (`lmdock.common.accounting`); over any
   cap -> BudgetExceeded, and nothing is written or sent;
3. (a register / extend entry first, if the data set is new or has new records, the same way)
 anchor <- {count: k-1, head: h(k-1), pending: line k}    (temp file, fsync, rename)
4. append line k to the ledger and fsync it;
5. anchor <- {count: k, head: h(k), pending: null}.
A crash in 3-4 leaves the anchor holding the pending line and the ledger ending in nothing or
a torn fragment: on the next open the fragment is cut and the pending line appended, so an
interrupted release counts as spent. A crash between 4 and 5 is rolled forward. Any other
mismatch (an edited, removed or reordered entry, a cut tail, a missing anchor) raises
IntegrityError and no further release is made until the ledger is restored.

A data set is a name the user declares (`client.privacy_unit`); its cap is written into the
ledger when it is registered and changes only by `raise_cap`, a recorded entry. Each release
entry keeps the released spec, so a retry of the same records re-sends it at no cost
(re-sending published output is post-processing).

Reading verifies the whole file, so a command reads it once: `state()` is one verified
`LedgerState` that answers what a data set has spent, whether a spec is cached and whether a
release fits. `record` (and `book`, for a released spec) reads again under the exclusive lock,
since another process may have booked in between, and returns a `Debit` with the new total.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lmdock.client.files import atomic_write_text, fsync_dir, open_private, private_dir
from lmdock.client.ledger_state import RELEASE_KINDS, Debit, Entry, LedgerState, check_entry
from lmdock.client.privacy_unit import DataSet, check_name, dataset_id
from lmdock.common.accounting import Budget, Release
from lmdock.common.canonical import canonical_json, sha256_hex
from lmdock.common.errors import IntegrityError, InvalidArgument
from lmdock.common.spec import Spec, SpecRelease

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BUDGET",
    "DataSet",
    "Debit",
    "Entry",
    "Ledger",
    "LedgerState",
    "dataset_id",
    "default_ledger_path",
]

GENESIS = "0" * 64
#: The cap a data set is registered with when the user sets none: a handful of searches at
#: epsilon = 1, delta = 1e-6 (delta at the policy's ceiling, `common.accounting.max_delta`).
DEFAULT_BUDGET = Budget(epsilon=3.0, delta=1e-6)


def default_ledger_path() -> Path:
    from lmdock.client.cache import default_cache_dir

    return default_cache_dir() / "ledger.jsonl"


def _parse(line: str, seq: int, prev: str) -> Entry:
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        raise IntegrityError(f"entry {seq} is not valid JSON") from None
    if not isinstance(data, dict) or canonical_json(data).decode("utf-8") != line:
        raise IntegrityError(f"entry {seq} is not in canonical form (edited?)")
    if data.get("seq") != seq:
        raise IntegrityError(f"entry {seq} has sequence number {data.get('seq')!r}")
    if data.get("prev") != prev:
        raise IntegrityError(f"entry {seq} does not follow entry {seq - 1} (the hash chain is broken)")
    check_entry(data, seq)
    return Entry(seq=seq, digest=sha256_hex(line.encode("utf-8")), data=data)


class Ledger:
    def __init__(
        self,
        path: Path,
        *,
        anchor: Path | None = None,
        budget: Budget = DEFAULT_BUDGET,
        declared: DataSet | None = None,
    ) -> None:
        """`budget`: the cap a data set gets when it is registered. `declared`: the data set a
        command reads, as the user named it; a booking by its content key alone (a caller that
        read the texts itself, e.g. `build_learnware`) is a booking of it."""
        self.path = path
        self.anchor = anchor or path.with_name(path.name + ".head")
        self.budget = budget
        self.declared = declared
        self._lock = path.with_name(path.name + ".lock")

    # -- reading -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        private_dir(self.path.parent)
        with os.fdopen(open_private(self._lock, os.O_RDWR | os.O_APPEND), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read_anchor(self) -> tuple[int, str, str | None] | None:
        if not self.anchor.exists():
            return None
        try:
            data = json.loads(self.anchor.read_text(encoding="utf-8"))
            count, head, pending = int(data["count"]), str(data["head"]), data["pending"]
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(f"its anchor {self.anchor} is unreadable") from None
        if count < 0 or not (pending is None or isinstance(pending, str)):
            raise IntegrityError(f"its anchor {self.anchor} is malformed")
        return count, head, pending

    def _state(self) -> tuple[LedgerState, int | None]:
        """The verified state, and where to cut the file to finish an interrupted write
        (None when there is nothing to finish)."""
        raw = self.path.read_bytes() if self.path.exists() else b""
        anchor = self._read_anchor()
        if anchor is None:
            if raw:
                raise IntegrityError(f"its anchor {self.anchor} is missing")
            return LedgerState(
                entries=(), head=GENESIS, interrupted=False, budget=self.budget, declared=self.declared
            ), None
        count, head, pending = anchor
        parts = raw.split(b"\n")  # parts[-1] follows the last newline: b"" unless torn
        if len(parts) - 1 < count:
            raise IntegrityError(
                f"it holds {len(parts) - 1} entries, its anchor {count}: the tail was cut off"
            )
        entries: list[Entry] = []
        prev = GENESIS
        for seq, line in enumerate(parts[:count], start=1):
            try:
                entry = _parse(line.decode("utf-8"), seq, prev)
            except UnicodeDecodeError:
                raise IntegrityError(f"entry {seq} is not UTF-8 text") from None
            entries.append(entry)
            prev = entry.digest
        if prev != head:
            raise IntegrityError("its last committed entry is not the one its anchor names (rewritten?)")
        tail = b"\n".join(parts[count:])
        if pending is None:
            if tail:
                raise IntegrityError("it has bytes after the last entry its anchor names")
            return LedgerState(
                entries=tuple(entries),
                head=head,
                interrupted=False,
                budget=self.budget,
                declared=self.declared,
            ), None
        # A write was under way: the pending line is authoritative and counts as spent.
        last = _parse(pending, count + 1, head)
        complete = tail == pending.encode("utf-8") + b"\n"
        state = LedgerState(
            entries=(*entries, last),
            head=last.digest,
            interrupted=not complete,
            budget=self.budget,
            declared=self.declared,
        )
        return state, len(raw) - len(tail)

    def state(self) -> LedgerState:
        """Verify the ledger and return its entries (an interrupted last entry included)."""
        try:
            with self._locked(exclusive=False):
                return self._state()[0]
        except IntegrityError as exc:
            raise IntegrityError(
                f"privacy ledger {self.path} is damaged: {exc}; no release is made until it is restored"
            ) from None

    # -- writing -------------------------------------------------------------------------------

    def _write_anchor(self, *, count: int, head: str, pending: str | None) -> None:
        body = json.dumps({"count": count, "head": head, "pending": pending})
        atomic_write_text(self.anchor, body)

    def _append(self, line: str, *, cut_to: int | None = None) -> None:
        with os.fdopen(open_private(self.path, os.O_RDWR), "r+b") as out:
            if cut_to is not None:
                out.truncate(cut_to)
            out.seek(0, os.SEEK_END)
            out.write(line.encode("utf-8") + b"\n")
            out.flush()
            os.fsync(out.fileno())
        fsync_dir(self.path.parent)

    def _finish_interrupted(self, state: LedgerState, cut_to: int) -> None:
        """Write the pending entry out in full (if torn or missing) and commit it in the anchor."""
        last = state.entries[-1]
        if state.interrupted:
            log.warning("ledger: entry %d was interrupted while being recorded; it counts", last.seq)
            self._append(canonical_json(last.data).decode("utf-8"), cut_to=cut_to)
        self._write_anchor(count=last.seq, head=last.digest, pending=None)

    def _commit(self, head: str, seq: int, body: dict[str, Any]) -> Entry:
        """Write entry `seq` after `head` durably (steps 3-5 of the module doc)."""
        data = {"seq": seq, "prev": head, "time": datetime.now(UTC).isoformat(timespec="seconds"), **body}
        line = canonical_json(data).decode("utf-8")
        self._write_anchor(count=seq - 1, head=head, pending=line)
        self._append(line)
        digest = sha256_hex(line.encode("utf-8"))
        self._write_anchor(count=seq, head=digest, pending=None)
        return Entry(seq=seq, digest=digest, data=data)

    def _commit_all(self, state: LedgerState, bodies: Sequence[dict[str, Any]]) -> list[Entry]:
        head, seq, written = state.head, len(state.entries), []
        for body in bodies:
            seq += 1
            written.append(self._commit(head, seq, body))
            head = written[-1].digest
        return written

    @contextlib.contextmanager
    def _writing(self) -> Iterator[LedgerState]:
        """The verified state under the exclusive lock, an interrupted write finished first."""
        try:
            with self._locked(exclusive=True):
                state, cut_to = self._state()
                if cut_to is not None:
                    self._finish_interrupted(state, cut_to)
                yield state
        except IntegrityError as exc:
            raise IntegrityError(
                f"privacy ledger {self.path} is damaged: {exc}; no release is made until it is restored, "
                "nothing was sent"
            ) from None

    def record(
        self,
        dataset: DataSet | str,
        release: Release,
        *,
        kind: str,
        unit: str = "record",
        spec: Spec | None = None,
        destination: str = "",
    ) -> Debit:
        """Debit `release` from the data set it reads, durably, before anything is sent (module
        doc). `dataset` is a `DataSet` (its records and declared name), or only the content key
        (`dataset_id`) of records a registered data set was declared with."""
        if kind not in RELEASE_KINDS:
            raise InvalidArgument(f"kind must be one of {RELEASE_KINDS}, got {kind!r}")
        with self._writing() as state:
            charge, spent = state.check(dataset, release, kind=kind)
            body: dict[str, Any] = {
                "dataset": charge.dataset,
                "charged": list(charge.charged),
                "content": dataset if isinstance(dataset, str) else dataset.key,
                "kind": kind,
                "unit": unit,
                "release": release.to_dict(),
                "destination": destination,
                "spec": None if spec is None else spec.to_dict(),
            }
            written = self._commit_all(state, [*charge.writes, body])
            entry = written[-1]
            log.info(
                "ledger: release %d debited from data set %s%s (epsilon=%g, delta=%g)",
                entry.seq,
                charge.dataset,
                f" and {', '.join(charge.charged)}" if charge.charged else "",
                release.epsilon,
                release.delta,
            )
            after = LedgerState(
                entries=(*state.entries, *written),
                head=entry.digest,
                interrupted=False,
                budget=self.budget,
                declared=self.declared,
            )
            return after.debit(charge, spent, entry)

    def book(self, dataset: DataSet | str, released: SpecRelease, *, destination: str = "") -> Debit:
        """Debit a released spec at the cost its release computed (see `record`)."""
        return self.record(
            dataset,
            released.cost,
            kind="spec",
            unit=released.spec.privacy.unit,
            spec=released.spec,
            destination=destination,
        )

    def raise_cap(self, name: str, *, epsilon: float, reason: str, by: str) -> Entry:
        """The recorded administrator action that raises a registered data set's cap on epsilon
        (its delta stays: it is already the policy's limit or below)."""
        check_name(name)
        if not reason.strip():
            raise InvalidArgument("raising a privacy cap needs a reason (it is kept in the ledger)")
        with self._writing() as state:
            unit = state.units.get(name)
            if unit is None:
                raise InvalidArgument(f"no data set {name!r} is registered in {self.path}")
            new = Budget(epsilon=epsilon, delta=unit.cap.delta)
            if new.epsilon <= unit.cap.epsilon:
                raise InvalidArgument(
                    f"data set {name}'s cap is epsilon={unit.cap.epsilon:g}; raise-cap only raises it"
                )
            body = {
                "kind": "raise-cap",
                "dataset": name,
                "cap": {"epsilon": new.epsilon, "delta": new.delta},
                "previous": {"epsilon": unit.cap.epsilon, "delta": unit.cap.delta},
                "reason": reason.strip(),
                "by": by,
            }
            (entry,) = self._commit_all(state, [body])
            log.warning("ledger: cap of data set %s raised to epsilon=%g by %s", name, epsilon, by)
            return entry
