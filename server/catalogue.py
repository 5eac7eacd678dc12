"""The learnware catalogue: metadata rows in the market database (see `tables`).

Rows keep the manifest's metadata, the spec as little-endian float32 bytes and the sha256 of
the package blob. The catalogue never stores package bytes (see `blobs`).

Every add and remove also writes a row to the change log (`catalogue_changes`), in the same
transaction, after taking the catalogue's lock row: writes are serialised across all market
processes on the database, so change numbers commit in order (a replica that has applied
change n has seen every change below it) and a blob file is stored or deleted only while no
other process can list or unlist the same bytes. On PostgreSQL the transaction also sends a
NOTIFY on `CHANGES_CHANNEL`, delivered at commit: the replicas' wake-up, never their source.
"""

from __future__ import annotations

import base64
import functools
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from lmdock.common.card import Card
from lmdock.common.errors import AlreadyExists, InvalidArgument, NotFound
from lmdock.common.market_types import LearnwareInfo
from lmdock.common.package import TaskInfo
from lmdock.common.spec import Privacy, Spec
from lmdock.server.db import Database, utc_now
from lmdock.server.index import IndexEntry, Listing
from lmdock.server.tables import ChangeRow, LearnwareRow, LockRow, TagRow, TaskVectorRow
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError as SqlIntegrityError
from sqlalchemy.orm import Session

__all__ = ["CHANGES_CHANNEL", "Catalogue", "Change", "Page"]

#: The PostgreSQL NOTIFY channel of catalogue changes (the payload is the change number).
CHANGES_CHANNEL = "lmdock_catalogue"


@dataclass(frozen=True)
class Change:
    seq: int
    learnware_id: str
    op: str  # "add" or "remove"


def _to_row(lw: LearnwareInfo) -> LearnwareRow:
    return LearnwareRow(
        id=lw.card.id,
        name=lw.card.name,
        domain=lw.card.domain,
        tags=[TagRow(position=i, tag=t) for i, t in enumerate(lw.card.tags)],
        base_model=lw.base_model,
        licence=lw.card.licence,
        description=lw.card.description,
        publisher=lw.card.publisher,
        version=lw.card.version,
        task_kind=lw.task.kind,
        labels=json.dumps(list(lw.task.labels)),
        profile_id=lw.spec.profile_id,
        spec_version=lw.spec.version,
        spec_values=lw.spec.values.astype("<f4").tobytes(),
        spec_privacy=json.dumps(lw.spec.privacy.to_dict()),
        package_sha256=lw.package_sha256,
        package_size=lw.package_size,
        signing_key_id=lw.signing_key_id,
        created_at=lw.created_at,
        updated_at=lw.updated_at or lw.created_at,
        eval_scores=json.dumps(dict(lw.eval_scores)),
        dp_trained=lw.dp_trained,
        dp_epsilon=lw.dp_epsilon,
    )


def _task_vector_row(lw: LearnwareInfo) -> TaskVectorRow | None:
    spec = lw.task_vector
    if spec is None:
        return None
    return TaskVectorRow(
        learnware_id=lw.card.id,
        profile_id=spec.profile_id,
        spec_version=spec.version,
        spec_values=spec.values.astype("<f4").tobytes(),
        spec_privacy=json.dumps(spec.privacy.to_dict()),
    )


def _spec(row: LearnwareRow | TaskVectorRow) -> Spec:
    return Spec(
        profile_id=row.profile_id,
        values=np.frombuffer(row.spec_values, dtype="<f4").astype(np.float32),
        privacy=Privacy.from_dict(json.loads(row.spec_privacy)),
        version=row.spec_version,
    )


def _rows(lw: LearnwareInfo) -> list[LearnwareRow | TaskVectorRow]:
    """The learnware's row and, when it has one, its task vector's (flushed after it)."""
    row, vector = _to_row(lw), _task_vector_row(lw)
    return [row] if vector is None else [row, vector]


def _lock(session: Session) -> None:
    """Take the catalogue's lock row until the transaction ends (a row lock on PostgreSQL, the
    database's write lock on SQLite)."""
    session.execute(update(LockRow).where(LockRow.name == "catalogue").values(name=LockRow.name))


def _from_row(row: LearnwareRow, task_vector: TaskVectorRow | None = None) -> LearnwareInfo:
    return LearnwareInfo(
        card=Card(
            id=row.id,
            name=row.name,
            domain=row.domain,
            tags=tuple(t.tag for t in row.tags),
            licence=row.licence,
            description=row.description,
            publisher=row.publisher,
            version=row.version,
        ),
        base_model=row.base_model,
        task=TaskInfo(kind=row.task_kind, labels=tuple(json.loads(row.labels))),
        spec=_spec(row),
        task_vector=None if task_vector is None else _spec(task_vector),
        package_sha256=row.package_sha256,
        package_size=row.package_size,
        signing_key_id=row.signing_key_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        eval_scores=json.loads(row.eval_scores),
        dp_trained=row.dp_trained,
        dp_epsilon=row.dp_epsilon,
    )


@dataclass(frozen=True)
class Page:
    items: tuple[LearnwareInfo, ...]
    next_token: str


_TOKEN_PREFIX = "after:"


def _encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode((_TOKEN_PREFIX + last_id).encode()).decode()


def _decode_token(token: str) -> str:
    """The id a page token points after; InvalidArgument for anything this market did not issue."""
    try:
        text = base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        text = ""
    if not text.startswith(_TOKEN_PREFIX) or len(text) > 128:
        raise InvalidArgument("page_token is not one this market issued")
    return text[len(_TOKEN_PREFIX) :]


@functools.lru_cache(maxsize=4096)
def _sigma_of(privacy: str) -> float:
    """A spec's noise from its stored privacy JSON; learnwares share a few forms of it (every
    exact spec the same one), so a start parses each once, not once per row."""
    return float(json.loads(privacy)["sigma"])


class Catalogue:
    """Learnware rows in the market database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, lw: LearnwareInfo, *, store: Callable[[], None] | None = None) -> None:
        """List `lw`; `store` (the blob's commit) runs inside the transaction, under the lock."""
        with self.db.session() as session:
            _lock(session)
            if session.get(LearnwareRow, lw.card.id) is not None:
                raise AlreadyExists(f"a learnware with id {lw.card.id!r} is already published")
            session.add_all(_rows(lw))
            try:
                session.flush()
            except SqlIntegrityError:
                raise AlreadyExists(
                    f"learnware {lw.card.id!r} or an identical package is already published"
                ) from None
            self._log(session, lw.card.id, "add")
            if store is not None:
                store()
            session.commit()

    def add_many(self, learnwares: Iterable[LearnwareInfo]) -> None:
        """List learnwares whose blobs are already stored, in one transaction (imports, benchmarks)."""
        with self.db.session() as session:
            _lock(session)
            for lw in learnwares:
                session.add_all(_rows(lw))
                session.add(ChangeRow(learnware_id=lw.card.id, op="add", at=utc_now()))
            try:
                session.flush()
            except SqlIntegrityError:
                raise AlreadyExists("a learnware or an identical package is already published") from None
            self._notify(session, "batch")
            session.commit()

    def remove(self, learnware_id: str) -> LearnwareInfo:
        """Delete the row (and its tags); returns what it held."""
        with self.db.session() as session:
            _lock(session)
            row = session.get(LearnwareRow, learnware_id)
            if row is None:
                raise NotFound(f"no learnware with id {learnware_id!r}")
            info = _from_row(row)
            session.delete(row)
            self._log(session, learnware_id, "remove")
            session.commit()
        return info

    def drop_unreferenced(self, sha256: str, delete: Callable[[str], None]) -> bool:
        """`delete(sha256)` unless a listed learnware names it, under the lock; True if deleted."""
        with self.db.session() as session:
            _lock(session)
            if session.scalar(select(LearnwareRow.id).where(LearnwareRow.package_sha256 == sha256)):
                return False
            delete(sha256)
            session.commit()
        return True

    def _log(self, session: Session, learnware_id: str, op: str) -> None:
        change = ChangeRow(learnware_id=learnware_id, op=op, at=utc_now())
        session.add(change)
        session.flush()  # gives the change its number
        self._notify(session, str(change.seq))

    def _notify(self, session: Session, payload: str) -> None:
        if self.db.engine.dialect.name == "postgresql":  # delivered when the transaction commits
            notify = text("SELECT pg_notify(:channel, :payload)")
            session.execute(notify, {"channel": CHANGES_CHANNEL, "payload": payload})

    def last_change(self) -> int:
        """The number of the latest change (0 for none)."""
        with self.db.session() as session:
            return int(session.scalar(select(func.coalesce(func.max(ChangeRow.seq), 0))) or 0)

    def first_change(self) -> int:
        """The number of the oldest change kept (0 for none): older ones were pruned."""
        with self.db.session() as session:
            return int(session.scalar(select(func.coalesce(func.min(ChangeRow.seq), 0))) or 0)

    def prune_changes(self, *, before: str) -> int:
        """Delete the changes committed before `before` (an ISO time, as `utc_now` writes it),
        keeping the newest whatever its age: on SQLite the next number counts on from it.
        Returns how many were deleted."""
        with self.db.session() as session:
            newest = session.scalar(select(func.max(ChangeRow.seq)))
            if newest is None:
                return 0
            old = delete(ChangeRow).where(ChangeRow.at < before, ChangeRow.seq < newest)
            deleted = session.execute(old).rowcount  # type: ignore[attr-defined]  # a CursorResult
            session.commit()
            return int(deleted or 0)

    def changes_after(self, seq: int, *, limit: int) -> list[Change]:
        query = select(ChangeRow).where(ChangeRow.seq > seq).order_by(ChangeRow.seq).limit(limit)
        with self.db.session() as session:
            return [Change(r.seq, r.learnware_id, r.op) for r in session.scalars(query)]

    def exists(self, learnware_id: str) -> bool:
        with self.db.session() as session:
            return session.get(LearnwareRow, learnware_id) is not None

    def has_package(self, sha256: str) -> bool:
        with self.db.session() as session:
            query = select(LearnwareRow.id).where(LearnwareRow.package_sha256 == sha256)
            return session.scalar(query) is not None

    def unlisted(self, digests: Iterable[str], *, chunk: int = 500) -> set[str]:
        """Those of `digests` that no listed package has: a query per `chunk` of them, so a
        start with few blobs reads nothing of a large catalogue (and never all its digests)."""
        wanted, found = sorted(digests), set[str]()
        with self.db.session() as session:
            for at in range(0, len(wanted), chunk):
                part = wanted[at : at + chunk]
                found.update(
                    session.scalars(
                        select(LearnwareRow.package_sha256).where(LearnwareRow.package_sha256.in_(part))
                    )
                )
        return set(wanted) - found

    def package_digests(self) -> set[str]:
        """The sha256 of every listed package, whatever its profile."""
        with self.db.session() as session:
            return set(session.scalars(select(LearnwareRow.package_sha256)))

    def get(self, learnware_id: str, *, with_task_vector: bool = False) -> LearnwareInfo:
        """The learnware's record; its task vector too only when asked (the search index's need)."""
        with self.db.session() as session:
            row = session.get(LearnwareRow, learnware_id)
            if row is None:
                raise NotFound(f"no learnware with id {learnware_id!r}")
            vector = session.get(TaskVectorRow, learnware_id) if with_task_vector else None
            return _from_row(row, vector)

    def list(
        self,
        *,
        page_size: int,
        page_token: str = "",
        domain: str = "",
        tag: str = "",
        publisher: str = "",
        base_model: str = "",
        task_kind: str = "",
    ) -> Page:
        """Learnwares in id order, filtered (all filters must hold); `next_token` is "" at the end."""
        query = select(LearnwareRow).order_by(LearnwareRow.id)
        if page_token:
            query = query.where(LearnwareRow.id > _decode_token(page_token))
        for column, value in (
            (LearnwareRow.domain, domain),
            (LearnwareRow.publisher, publisher),
            (LearnwareRow.base_model, base_model),
            (LearnwareRow.task_kind, task_kind),
        ):
            if value:
                query = query.where(column == value)
        if tag:
            tagged = select(TagRow.learnware_id).where(TagRow.tag == tag)
            query = query.where(LearnwareRow.id.in_(tagged))
        with self.db.session() as session:
            rows = list(session.scalars(query.limit(page_size + 1)))
            items = tuple(_from_row(r) for r in rows[:page_size])
        more = len(rows) > page_size
        return Page(items=items, next_token=_encode_token(items[-1].card.id) if more and items else "")

    def count(self, *, profile_ids: Sequence[str], task_vectors: bool = False) -> int:
        """How many learnwares are listed under any of `profile_ids` (one profile's ids): by
        their kernel-mean spec, or with `task_vectors` by their task vector."""
        table = TaskVectorRow if task_vectors else LearnwareRow
        query = select(func.count()).select_from(table).where(table.profile_id.in_(profile_ids))
        with self.db.session() as session:
            return int(session.scalar(query) or 0)

    def iter_index_entries(
        self, *, profile_ids: Sequence[str], max_sigma: float, task_vectors: bool = False
    ) -> Iterator[IndexEntry]:
        """What the search index keeps of each learnware with spec noise <= max_sigma, in id order
        (with `task_vectors`: of each learnware's task vector under those profile ids).

        A plain SELECT of a few columns, streamed: no ORM objects, tags or full records, so a
        million rows cost their vectors and little else.
        """
        values_column = TaskVectorRow.spec_values if task_vectors else LearnwareRow.spec_values
        columns = (LearnwareRow.name, LearnwareRow.domain, values_column)
        rows = self._index_rows(profile_ids, columns, task_vectors=task_vectors)
        for (learnware_id, sha256, sigma), (name, domain, values) in rows:
            if sigma <= max_sigma:
                # a read-only view of the row's bytes, not a copy: every index copies it into its matrix
                vector = np.frombuffer(values, dtype="<f4")
                # few distinct domains: one string each, not one per learnware
                listing = Listing(learnware_id, name, sys.intern(domain))
                yield IndexEntry(listing, vector, sigma, sha256)

    def iter_index_keys(
        self, *, profile_ids: Sequence[str], max_sigma: float, task_vectors: bool = False
    ) -> Iterator[tuple[str, str]]:
        """(id, package sha256) of each learnware `iter_index_entries` yields, reading no vector."""
        for (learnware_id, sha256, sigma), _ in self._index_rows(profile_ids, (), task_vectors=task_vectors):
            if sigma <= max_sigma:
                yield learnware_id, sha256

    def _index_rows(
        self, profile_ids: Sequence[str], columns: tuple[Any, ...], *, task_vectors: bool
    ) -> Iterator[tuple[tuple[str, str, float], tuple[Any, ...]]]:
        """((id, package sha256, spec sigma), the other columns asked for) per row, in id order;
        the spec is the kernel mean's, or with `task_vectors` the task vector's.

        The kernel means' profiles are filtered here, not in SQL: given `profile_id IN (...)`,
        SQLite reads the rows through the profile_id index and sorts them all, vectors included,
        in a temporary B-tree (14.6 s at 1M rows, against 5.4 s for the primary key's order; a
        market serves one or two profiles, so nearly every row is wanted). Task vectors are a
        table of their own, joined and filtered in SQL."""
        if task_vectors:
            spec = (TaskVectorRow.spec_privacy, TaskVectorRow.profile_id)
            query = select(LearnwareRow.id, LearnwareRow.package_sha256, *spec, *columns).join(
                TaskVectorRow, TaskVectorRow.learnware_id == LearnwareRow.id
            )
        else:
            spec = (LearnwareRow.spec_privacy, LearnwareRow.profile_id)
            query = select(LearnwareRow.id, LearnwareRow.package_sha256, *spec, *columns)
        wanted = set(profile_ids)
        with self.db.session() as session:  # Core rows, not ORM-loaded ones: a third of the time at 1M
            for learnware_id, sha256, privacy, profile_id, *rest in (
                session.connection().execute(query.order_by(LearnwareRow.id)).yield_per(4096)
            ):
                if profile_id in wanted:
                    yield (learnware_id, sha256, _sigma_of(privacy)), tuple(rest)
