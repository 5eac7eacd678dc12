"""The privacy ledger: every release of every data set, append-only, hash-chained, capped.

Files (the anchor may live elsewhere, e.g. on another volume):

    ledger.jsonl        one canonical-JSON entry per line; entry k carries `prev`, the sha256 of
                        line k-1 (64 zeros for the first), so no entry can change unnoticed
    ledger.jsonl.head   the anchor: how many entries there are, the sha256 of the last one, and
                        the entry being written (`pending`); a cut-off tail no longer matches it
    ledger.jsonl.lock   an flock, so the CLI and a daemon never interleave

Write-ahead protocol of `record` (the caller sends only after it returns):
1. lock; read and verify the ledger (finishing an interrupted write, below);
2. compose the data set's releases with the new one (`lmdock.common.accounting`); over the
   cap -> BudgetExceeded, and nothing is written or sent;
3. anchor <- {count: k-1, head: h(k-1), pending: line k}    (temp file, fsync, rename)
4. append line k to the ledger and fsync it;
5. anchor <- {count: k, head: h(k), pending: null}.
A crash in 3-4 leaves the anchor holding the pending line and the ledger ending in nothing or
a torn fragment: on the next open the fragment is cut and the pending line appended, so an
interrupted release counts as spent. A crash between 4 and 5 is rolled forward. Any other
mismatch (an edited, removed or reordered entry, a cut tail, a missing anchor) raises
IntegrityError and no further release is made until the ledger is restored.

A data set is the content hash of its records (`dataset_id`); each entry keeps the released
spec, so a retry re-sends it at no cost (re-sending published output is post-processing).

Reading verifies the whole file, so a command reads it once: `state()` is one verified
`LedgerState` that answers what a data set has spent, whether a spec is cached and whether a
release fits. `record` (and `book`, for a released spec) reads again under the exclusive lock,
since another process may have booked in between, and returns a `Debit` with the new total.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lmdock.client.files import atomic_write_text, fsync_dir, open_private, private_dir
from lmdock.common.accounting import Budget, Release, Spent, compose
from lmdock.common.canonical import canonical_json, sha256_hex
from lmdock.common.errors import BudgetExceeded, IntegrityError, InvalidArgument
from lmdock.common.mechanism import least_cost
from lmdock.common.spec import Spec, SpecRelease

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_BUDGET", "Debit", "Entry", "Ledger", "LedgerState", "dataset_id", "default_ledger_path"]

GENESIS = "0" * 64
KINDS = ("spec", "training")  # a released spec; a DP training run (DP-SGD, `client.dp_sgd`)
#: A cap for users who set none: a handful of searches at epsilon = 1, delta = 1e-6.
DEFAULT_BUDGET = Budget(epsilon=3.0, delta=1e-5)


def default_ledger_path() -> Path:
    from lmdock.client.cache import default_cache_dir

    return default_cache_dir() / "ledger.jsonl"


def dataset_id(texts: Sequence[str]) -> str:
    """sha256 over the sorted sha256 of each text: the same records in any order, same id."""
    if not texts:
        raise InvalidArgument("a data set needs at least one record")
    digests = sorted(hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts)
    return sha256_hex("\n".join(digests).encode())


@dataclass(frozen=True)
class Entry:
    """One verified ledger line."""

    seq: int
    digest: str  # sha256 of the line
    data: dict[str, Any]

    @property
    def dataset(self) -> str:
        return str(self.data["dataset"])

    @property
    def release(self) -> Release:
        return Release.from_dict(self.data["release"])

    def spec(self) -> Spec | None:
        raw = self.data.get("spec")
        return None if raw is None else Spec.from_dict(raw)


@dataclass(frozen=True)
class LedgerState:
    """One verified read of the ledger, and what it says about each data set under the budget."""

    entries: tuple[Entry, ...]
    head: str
    interrupted: bool  # the last entry was being written when its writer stopped; counted
    budget: Budget

    def _releases(self, dataset: str) -> list[Release]:
        return [e.release for e in self.entries if e.dataset == dataset]

    def spent(self, dataset: str) -> Spent:
        """What `dataset` has spent, as epsilon at the budget's delta."""
        return compose(self._releases(dataset), delta=self.budget.delta)

    def check(self, dataset: str, release: Release, *, kind: str = "spec") -> Spent:
        """What `dataset` would have spent after `release`; BudgetExceeded if over the cap."""
        before = self._releases(dataset)
        after = compose([*before, release], delta=self.budget.delta)
        if not after.within(self.budget):
            spent = compose(before, delta=self.budget.delta)
            raise BudgetExceeded(
                f"privacy budget of data set {dataset[:12]} exceeded: {spent.releases} release(s) "
                f"have spent epsilon={spent.epsilon:.4g} (at delta={self.budget.delta:g}); this "
                f"release (epsilon={release.epsilon:g}, delta={release.delta:g}) would bring it to "
                f"epsilon={after.epsilon:.4g}, over the cap epsilon={self.budget.epsilon:g}. "
                + ("Nothing was trained or written." if kind == "training" else "Nothing was sent.")
            )
        return after

    def cached_spec(
        self, dataset: str, *, profile_id: str, epsilon: float, delta: float, unit: str
    ) -> Spec | None:
        """The newest spec of `dataset` released under these parameters, if any: free to re-send."""
        for entry in reversed(self.entries):
            spec = entry.spec() if entry.dataset == dataset else None
            if (
                spec is not None
                and spec.profile_id == profile_id
                and spec.privacy.epsilon == epsilon
                and spec.privacy.delta == delta
                and spec.privacy.unit == unit
            ):
                return spec
        return None

    def has_release(self, dataset: str, *, epsilon: float, delta: float, unit: str) -> bool:
        """Whether some spec of `dataset` was released with these parameters (any profile)."""
        return any(
            (spec := e.spec()) is not None
            and (spec.privacy.epsilon, spec.privacy.delta, spec.privacy.unit) == (epsilon, delta, unit)
            for e in self.entries
            if e.dataset == dataset
        )

    def check_spec_budget(self, dataset: str, *, epsilon: float, delta: float, unit: str) -> None:
        """Refuse early (before the market's profile is known) a spec release that cannot fit.

        A cached release of these parameters is free. Otherwise the check books the least any
        release at (epsilon, delta) can cost (`lmdock.common.mechanism.least_cost`): whatever
        this refuses, booking the release itself would refuse too.
        """
        if not self.has_release(dataset, epsilon=epsilon, delta=delta, unit=unit):
            self.check(dataset, least_cost(epsilon=epsilon, delta=delta))


@dataclass(frozen=True)
class Debit:
    """What the ledger holds for one release: the data set's total with it, and the new entry
    (None when it was booked before: a cached spec re-sent at no cost)."""

    dataset: str
    spent: Spent
    entry: Entry | None = None

    @property
    def fresh(self) -> bool:
        return self.entry is not None


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
    if data.get("kind") not in KINDS or not isinstance(data.get("dataset"), str):
        raise IntegrityError(f"entry {seq} lacks a valid kind or data set")
    try:
        Release.from_dict(data.get("release"))
    except InvalidArgument as exc:
        raise IntegrityError(f"entry {seq}: {exc}") from None
    return Entry(seq=seq, digest=sha256_hex(line.encode("utf-8")), data=data)


class Ledger:
    def __init__(self, path: Path, *, anchor: Path | None = None, budget: Budget = DEFAULT_BUDGET) -> None:
        self.path = path
        self.anchor = anchor or path.with_name(path.name + ".head")
        self.budget = budget
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
            return LedgerState(entries=(), head=GENESIS, interrupted=False, budget=self.budget), None
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
            return LedgerState(entries=tuple(entries), head=head, interrupted=False, budget=self.budget), None
        # A write was under way: the pending line is authoritative and counts as spent.
        last = _parse(pending, count + 1, head)
        complete = tail == pending.encode("utf-8") + b"\n"
        state = LedgerState(
            entries=(*entries, last), head=last.digest, interrupted=not complete, budget=self.budget
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
            log.warning(
                "ledger: release %d was interrupted while being recorded; it counts as spent", last.seq
            )
            self._append(canonical_json(last.data).decode("utf-8"), cut_to=cut_to)
        self._write_anchor(count=last.seq, head=last.digest, pending=None)

    def record(
        self,
        dataset: str,
        release: Release,
        *,
        kind: str,
        unit: str = "record",
        spec: Spec | None = None,
        destination: str = "",
    ) -> Debit:
        """Debit `release` from `dataset`, durably, before anything is sent (see module doc)."""
        if kind not in KINDS:
            raise InvalidArgument(f"kind must be one of {KINDS}, got {kind!r}")
        try:
            with self._locked(exclusive=True):
                state, cut_to = self._state()
                if cut_to is not None:
                    self._finish_interrupted(state, cut_to)
                spent = state.check(dataset, release, kind=kind)
                seq = len(state.entries) + 1
                data: dict[str, Any] = {
                    "seq": seq,
                    "prev": state.head,
                    "time": datetime.now(UTC).isoformat(timespec="seconds"),
                    "dataset": dataset,
                    "kind": kind,
                    "unit": unit,
                    "release": release.to_dict(),
                    "destination": destination,
                    "spec": None if spec is None else spec.to_dict(),
                }
                line = canonical_json(data).decode("utf-8")
                self._write_anchor(count=seq - 1, head=state.head, pending=line)
                self._append(line)
                digest = sha256_hex(line.encode("utf-8"))
                self._write_anchor(count=seq, head=digest, pending=None)
                log.info(
                    "ledger: release %d debited from data set %s (epsilon=%g, delta=%g)",
                    seq,
                    dataset[:12],
                    release.epsilon,
                    release.delta,
                )
                return Debit(dataset, spent, Entry(seq=seq, digest=digest, data=data))
        except IntegrityError as exc:
            raise IntegrityError(
                f"privacy ledger {self.path} is damaged: {exc}; no release is made until it is restored, "
                "nothing was sent"
            ) from None

    def book(self, dataset: str, released: SpecRelease, *, destination: str = "") -> Debit:
        """Debit a released spec at the cost its release computed (see `record`)."""
        return self.record(
            dataset,
            released.cost,
            kind="spec",
            unit=released.spec.privacy.unit,
            spec=released.spec,
            destination=destination,
        )
