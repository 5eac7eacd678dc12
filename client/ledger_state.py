"""What a verified ledger says: its data sets (caps, records), their releases, and what fits.

Entry kinds (one canonical-JSON line each, hash-chained by `client.ledger`):

    register    a data set is named: its cap (epsilon, delta), record count, content key and
                record fingerprints (`client.privacy_unit`); written before its first release
    extend      records a registered data set did not hold yet (a grown or edited file)
    raise-cap   an administrator raised a data set's cap: old and new cap, who, and why
    spec        a released spec; training: a DP training run; evaluation: the noised counts of
                correct answers a site releases in a federated evaluation. `dataset` is the data
                set booked, `charged` the other registered data sets whose records the release
                read (it counts against each of their caps), `content` the exact-content key.

Ledgers written before data sets were named hold releases whose `dataset` is the content key
(`dataset_id`): a data set registered with that exact content adopts them, and until then
they are shown as unregistered content, capped by the budget the ledger is opened with.

A release is charged to every registered data set that shares a record fingerprint with it.
Then, for any record r, every release that read r is counted against the cap of the first data
set that held r (docs/privacy.md derives this), so no copy, edit or rename of a data set's
records gives them a fresh budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lmdock.client.privacy_unit import (
    DataSet,
    check_name,
    decode_fingerprints,
    encode_fingerprints,
    is_content_key,
)
from lmdock.common.accounting import Budget, Release, Spent, check_delta, compose
from lmdock.common.errors import BudgetExceeded, IntegrityError, InvalidArgument
from lmdock.common.mechanism import least_cost
from lmdock.common.spec import Spec

__all__ = ["RELEASE_KINDS", "Charge", "Debit", "Entry", "LedgerState", "Unit", "check_entry"]

#: a released spec; a DP training run (DP-SGD); noised counts of a federated evaluation
RELEASE_KINDS = ("spec", "training", "evaluation")
ADMIN_KINDS = ("register", "extend", "raise-cap")


@dataclass(frozen=True)
class Entry:
    """One verified ledger line."""

    seq: int
    digest: str  # sha256 of the line
    data: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.data["kind"])

    @property
    def dataset(self) -> str:
        return str(self.data["dataset"])

    @property
    def is_release(self) -> bool:
        return self.kind in RELEASE_KINDS

    @property
    def release(self) -> Release:
        return Release.from_dict(self.data["release"])

    @property
    def content(self) -> str:
        """The exact-content key of the records released (a legacy entry's data set is it)."""
        return str(self.data.get("content", self.data["dataset"]))

    @property
    def booked_to(self) -> tuple[str, ...]:
        return (self.dataset, *self.data.get("charged", ()))

    def spec(self) -> Spec | None:
        raw = self.data.get("spec")
        return None if raw is None else Spec.from_dict(raw)


def _cap(data: Any) -> Budget:
    return Budget(epsilon=float(data["epsilon"]), delta=float(data["delta"]))


def check_entry(data: dict[str, Any], seq: int) -> None:
    """IntegrityError unless `data` is a well-formed entry of a known kind."""
    kind = data.get("kind")
    if kind not in RELEASE_KINDS + ADMIN_KINDS or not isinstance(data.get("dataset"), str):
        raise IntegrityError(f"entry {seq} lacks a valid kind or data set")
    try:
        if kind in RELEASE_KINDS:
            Release.from_dict(data.get("release"))
            if not all(isinstance(c, str) for c in data.get("charged", [])):
                raise InvalidArgument("charged must list data set names")
        if kind in ("register", "raise-cap"):
            _cap(data.get("cap"))
        if kind in ("register", "extend"):
            decode_fingerprints(str(data["fingerprints"]))
    except (InvalidArgument, KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"entry {seq} ({kind}) is malformed: {exc}") from None


@dataclass(frozen=True)
class Unit:
    """A registered data set as the ledger holds it now."""

    name: str
    cap: Budget
    records: int
    keys: frozenset[str]  # content keys it was declared with
    fingerprints: frozenset[int]
    registered: int  # seq of its register entry

    def overlaps(self, dataset: DataSet) -> int:
        """How many of `dataset`'s distinct records it holds (all of them for an equal key)."""
        if dataset.key in self.keys:
            return len(dataset.fingerprints)
        return len(self.fingerprints & dataset.fingerprints)


@dataclass(frozen=True)
class Charge:
    """Where a release of a data set is booked, and what must be written before it."""

    dataset: str  # the data set booked
    charged: tuple[str, ...]  # other data sets whose records it reads
    writes: tuple[dict[str, Any], ...]  # register / extend entries (no seq, prev or time yet)
    caps: dict[str, Budget]  # the cap of each data set booked


@dataclass(frozen=True)
class Debit:
    """What the ledger holds for one release: the data set's total with it (`spent`, per record;
    `per_person`, None unless every release was person-level), the other data sets charged, and
    the new entry (None when it was booked before: a cached spec re-sent at no cost)."""

    dataset: str
    spent: Spent
    cap: Budget
    per_person: Spent | None = None
    charged: tuple[str, ...] = ()
    entry: Entry | None = None

    @property
    def fresh(self) -> bool:
        return self.entry is not None


@dataclass(frozen=True)
class LedgerState:
    """One verified read of the ledger. `budget` is the cap a new data set is registered with."""

    entries: tuple[Entry, ...]
    head: str
    interrupted: bool  # the last entry was being written when its writer stopped; counted
    budget: Budget
    declared: DataSet | None = None  # the data set the command reads, as named (`Ledger`)
    _units: dict[str, Unit] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_units", _units(self.entries))

    @property
    def releases(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.is_release)

    @property
    def units(self) -> dict[str, Unit]:
        return dict(self._units)

    def unregistered(self) -> list[str]:
        """Content keys of releases no registered data set adopted (ledgers from before names)."""
        adopted = {k for u in self._units.values() for k in u.keys} | set(self._units)
        return list(dict.fromkeys(d for e in self.releases for d in e.booked_to if d not in adopted))

    def unit(self, dataset: str) -> Unit | None:
        """The registered data set named `dataset`, or declared with that content key."""
        if dataset in self._units:
            return self._units[dataset]
        return next((u for u in self._units.values() if dataset in u.keys), None)

    def cap(self, dataset: str) -> Budget:
        unit = self.unit(dataset)
        return self.budget if unit is None else unit.cap

    def _booked(self, dataset: str) -> list[Entry]:
        unit = self.unit(dataset)
        dataset = dataset if unit is None else unit.name
        names = {dataset} | (set() if unit is None else set(unit.keys))
        return [e for e in self.releases if names.intersection(e.booked_to)]

    def spent(self, dataset: str) -> Spent:
        """What `dataset` (a name, or a content key) has spent, per record, as
        epsilon at its cap's delta: every release, person-level ones included, since a release
        that protects a person protects each of the person's records as well."""
        return compose([e.release for e in self._booked(dataset)], delta=self.cap(dataset).delta)

    def per_person(self, dataset: str) -> Spent | None:
        """What `dataset` has spent per person; None when a record-level release was booked
        (it bounds no person's total) or no release at all. Never mixed into `spent`'s total."""
        booked = self._booked(dataset)
        if not booked or any(e.data.get("unit") != "person" for e in booked):
            return None
        return compose([e.release for e in booked], delta=self.cap(dataset).delta)

    # -- where a release is booked -------------------------------------------------------------

    def resolve(self, dataset: DataSet | str) -> Charge:
        """The data set a release of `dataset` is booked to (registering or extending it if
        need be) and the other registered data sets it shares records with."""
        if isinstance(dataset, str):  # a name, or a content key (a caller that read the texts itself)
            return self._resolve_key(dataset)
        if dataset.name is None and self.declared is not None and dataset.key == self.declared.key:
            dataset = self.declared
        overlapping = [u for u in self._units.values() if u.overlaps(dataset)]
        exact = [u for u in overlapping if dataset.key in u.keys]
        if dataset.name is not None:
            name = dataset.name
        elif exact or overlapping:  # undeclared: the first data set that holds these records
            name = (exact or overlapping)[0].name
        else:
            name = f"data-{dataset.key[:12]}"
        unit = self._units.get(name)
        writes: tuple[dict[str, Any], ...] = ()
        if unit is None:
            check_delta(self.budget.delta, n=dataset.records, what=f"the cap of data set {name}")
            writes = (
                {"kind": "register", "dataset": name, "cap": _cap_dict(self.budget), **_records(dataset)},
            )
        elif dataset.key not in unit.keys or not dataset.fingerprints <= unit.fingerprints:
            new = frozenset(dataset.fingerprints - unit.fingerprints)
            writes = ({"kind": "extend", "dataset": name, **_records(dataset, new)},)
        charged = tuple(u.name for u in overlapping if u.name != name)
        caps = {name: self.budget if unit is None else unit.cap} | {c: self._units[c].cap for c in charged}
        return Charge(dataset=name, charged=charged, writes=writes, caps=caps)

    def _resolve_key(self, key: str) -> Charge:
        """A registered name, the content key of the declared data set, or one some data set was
        declared with."""
        if self.declared is not None and key == self.declared.key:
            return self.resolve(self.declared)
        holders = (
            [self._units[key]] if key in self._units else [u for u in self._units.values() if key in u.keys]
        )
        if not holders:  # never declared: registered now, records unknown
            name = f"data-{key[:12]}" if is_content_key(key) else check_name(key)
            register: dict[str, Any] = {"kind": "register", "dataset": name, "cap": _cap_dict(self.budget)}
            register |= {"records": 0, "key": key, "fingerprints": ""}
            return Charge(dataset=name, charged=(), writes=(register,), caps={name: self.budget})
        unit = holders[0]
        charged = tuple(
            u.name for u in self._units.values() if u.name != unit.name and u.fingerprints & unit.fingerprints
        )
        return Charge(
            dataset=unit.name,
            charged=charged,
            writes=(),
            caps={unit.name: unit.cap} | {c: self._units[c].cap for c in charged},
        )

    def with_entries(self, bodies: Sequence[dict[str, Any]]) -> LedgerState:
        """This state as it would read with `bodies` appended (digests left blank)."""
        if not bodies:
            return self
        extra = tuple(Entry(seq=len(self.entries) + i, digest="", data=b) for i, b in enumerate(bodies, 1))
        return LedgerState(
            entries=(*self.entries, *extra),
            head=self.head,
            interrupted=self.interrupted,
            budget=self.budget,
            declared=self.declared,
        )

    def check(self, dataset: DataSet | str, release: Release, *, kind: str = "spec") -> tuple[Charge, Spent]:
        """Where `release` would be booked and the booked data set's total after it;
        BudgetExceeded if it would bring any data set it reads over its cap."""
        charge = self.resolve(dataset)
        trial = self.with_entries(charge.writes)  # a new data set adopts releases of its content key
        spent_after = Spent(epsilon=0.0, delta=0.0, releases=0, method="none")
        for name in (charge.dataset, *charge.charged):
            cap = charge.caps[name]
            before = [e.release for e in trial._booked(name)]
            after = compose([*before, release], delta=cap.delta)
            if not after.within(cap):
                spent = compose(before, delta=cap.delta)
                via = "" if name == charge.dataset else f" (this release reads records of {name})"
                raise BudgetExceeded(
                    f"privacy budget of data set {name[:64]} exceeded{via}: {spent.releases} release(s) "
                    f"have spent epsilon={spent.epsilon:.4g} (at delta={cap.delta:g}); this release "
                    f"(epsilon={release.epsilon:g}, delta={release.delta:g}) would bring it to "
                    f"epsilon={after.epsilon:.4g}, over its cap epsilon={cap.epsilon:g} (the cap stored "
                    f"in the ledger; `lmdock ledger raise-cap {name[:64]}` raises it). "
                    + ("Nothing was trained or written." if kind == "training" else "Nothing was sent.")
                )
            if name == charge.dataset:
                spent_after = after
        return charge, spent_after

    def cached_release(
        self, content: str, *, profile_ids: Sequence[str], epsilon: float, delta: float, unit: str
    ) -> Entry | None:
        """The newest release of these exact records as a spec under these parameters, if any:
        free to re-send (re-sending published output is post-processing). `profile_ids`: the
        profile's ids (`SpecProfile.ids`), so a spec booked under its v1 id is found too."""
        for entry in reversed(self.releases):
            spec = entry.spec() if entry.content == content else None
            if (
                spec is not None
                and spec.profile_id in profile_ids
                and spec.privacy.epsilon == epsilon
                and spec.privacy.delta == delta
                and spec.privacy.unit == unit
            ):
                return entry
        return None

    def cached_spec(
        self, content: str, *, profile_ids: Sequence[str], epsilon: float, delta: float, unit: str
    ) -> Spec | None:
        entry = self.cached_release(content, profile_ids=profile_ids, epsilon=epsilon, delta=delta, unit=unit)
        return None if entry is None else entry.spec()

    def has_release(self, content: str, *, epsilon: float, delta: float, unit: str) -> bool:
        """Whether some spec of these exact records was released with these parameters."""
        return any(
            (spec := e.spec()) is not None
            and (spec.privacy.epsilon, spec.privacy.delta, spec.privacy.unit) == (epsilon, delta, unit)
            for e in self.releases
            if e.content == content
        )

    def check_spec_budget(self, dataset: DataSet, *, epsilon: float, delta: float, unit: str) -> None:
        """Refuse early (before the market's profile is known) a spec release that cannot fit.

        A cached release of these parameters is free. Otherwise the check books the least any
        release at (epsilon, delta) can cost (`lmdock.common.mechanism.least_cost`): whatever
        this refuses, booking the release itself would refuse too.
        """
        if not self.has_release(dataset.key, epsilon=epsilon, delta=delta, unit=unit):
            self.check(dataset, least_cost(epsilon=epsilon, delta=delta))

    def debit(self, charge: Charge, spent: Spent, entry: Entry | None = None) -> Debit:
        return Debit(
            dataset=charge.dataset,
            spent=spent,
            cap=charge.caps[charge.dataset],
            per_person=self.per_person(charge.dataset),
            charged=charge.charged,
            entry=entry,
        )

    def resent(self, entry: Entry) -> Debit:
        """What the data set that booked `entry` holds, for a free re-send of its spec."""
        name = entry.dataset
        return Debit(
            dataset=name,
            spent=self.spent(name),
            cap=self.cap(name),
            per_person=self.per_person(name),
            charged=tuple(entry.data.get("charged", ())),
        )


def _cap_dict(budget: Budget) -> dict[str, float]:
    return {"epsilon": budget.epsilon, "delta": budget.delta}


def _records(dataset: DataSet, fingerprints: frozenset[int] | None = None) -> dict[str, Any]:
    chosen = dataset.fingerprints if fingerprints is None else fingerprints
    return {"records": dataset.records, "key": dataset.key, "fingerprints": encode_fingerprints(chosen)}


def _units(entries: tuple[Entry, ...]) -> dict[str, Unit]:
    units: dict[str, Unit] = {}
    for e in entries:
        name, data = e.dataset, e.data
        if e.kind == "register" and name not in units:
            units[name] = Unit(
                name=name,
                cap=_cap(data["cap"]),
                records=int(data["records"]),
                keys=frozenset({str(data["key"])}),
                fingerprints=decode_fingerprints(str(data["fingerprints"])),
                registered=e.seq,
            )
        elif e.kind == "extend" and name in units:
            u = units[name]
            units[name] = dataclasses.replace(
                u,
                records=max(u.records, int(data["records"])),
                keys=u.keys | {str(data["key"])},
                fingerprints=u.fingerprints | decode_fingerprints(str(data["fingerprints"])),
            )
        elif e.kind == "raise-cap" and name in units:
            units[name] = dataclasses.replace(units[name], cap=_cap(data["cap"]))
    return units
