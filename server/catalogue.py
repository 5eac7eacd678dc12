"""The learnware catalogue: one SQL table through SQLAlchemy 2 (SQLite by default).

Rows keep the manifest's metadata, the spec as little-endian float32 bytes and the sha256 of
the package blob. The catalogue never stores package bytes (see `blobs`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from lmdock.common.errors import AlreadyExists, InvalidArgument, NotFound
from lmdock.common.package import TaskInfo
from lmdock.common.records import LearnwareInfo
from lmdock.common.spec import Privacy, Spec
from sqlalchemy import Boolean, Float, Integer, LargeBinary, String, Text, create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError as SqlIntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

__all__ = ["Catalogue", "Page"]


class _Base(DeclarativeBase):
    pass


class _Row(_Base):
    __tablename__ = "learnwares"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    domain: Mapped[str] = mapped_column(String(256), index=True)
    tags: Mapped[str] = mapped_column(Text, default="[]")
    base_model: Mapped[str] = mapped_column(String(256))
    licence: Mapped[str] = mapped_column(String(256))
    description: Mapped[str] = mapped_column(Text, default="")
    publisher: Mapped[str] = mapped_column(String(256), index=True)
    version: Mapped[str] = mapped_column(String(64))
    task_kind: Mapped[str] = mapped_column(String(32))
    labels: Mapped[str] = mapped_column(Text, default="[]")
    profile_id: Mapped[str] = mapped_column(String(32), index=True)
    spec_version: Mapped[int] = mapped_column(Integer)
    spec_values: Mapped[bytes] = mapped_column(LargeBinary)
    spec_privacy: Mapped[str] = mapped_column(Text)
    package_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    package_size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[str] = mapped_column(String(40))
    eval_scores: Mapped[str] = mapped_column(Text, default="{}")
    dp_trained: Mapped[bool] = mapped_column(Boolean, default=False)
    dp_epsilon: Mapped[float] = mapped_column(Float, default=0.0)


def _to_row(lw: LearnwareInfo) -> _Row:
    return _Row(
        id=lw.id,
        name=lw.name,
        domain=lw.domain,
        tags=json.dumps(list(lw.tags)),
        base_model=lw.base_model,
        licence=lw.licence,
        description=lw.description,
        publisher=lw.publisher,
        version=lw.version,
        task_kind=lw.task.kind,
        labels=json.dumps(list(lw.task.labels)),
        profile_id=lw.spec.profile_id,
        spec_version=lw.spec.version,
        spec_values=lw.spec.values.astype("<f4").tobytes(),
        spec_privacy=json.dumps(lw.spec.privacy.to_dict()),
        package_sha256=lw.package_sha256,
        package_size=lw.package_size,
        created_at=lw.created_at,
        eval_scores=json.dumps(dict(lw.eval_scores)),
        dp_trained=lw.dp_trained,
        dp_epsilon=lw.dp_epsilon,
    )


def _from_row(row: _Row) -> LearnwareInfo:
    spec = Spec(
        profile_id=row.profile_id,
        values=np.frombuffer(row.spec_values, dtype="<f4").astype(np.float32),
        privacy=Privacy.from_dict(json.loads(row.spec_privacy)),
        version=row.spec_version,
    )
    return LearnwareInfo(
        id=row.id,
        name=row.name,
        domain=row.domain,
        tags=tuple(json.loads(row.tags)),
        base_model=row.base_model,
        licence=row.licence,
        description=row.description,
        publisher=row.publisher,
        version=row.version,
        task=TaskInfo(kind=row.task_kind, labels=tuple(json.loads(row.labels))),
        spec=spec,
        package_sha256=row.package_sha256,
        package_size=row.package_size,
        created_at=row.created_at,
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


class Catalogue:
    """Learnware rows in any SQLAlchemy database (`sqlite:///path`, `postgresql+psycopg://…`)."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url)
        _Base.metadata.create_all(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def add(self, lw: LearnwareInfo) -> None:
        with self._session() as session:
            if session.get(_Row, lw.id) is not None:
                raise AlreadyExists(f"a learnware with id {lw.id!r} is already published")
            session.add(_to_row(lw))
            try:
                session.commit()
            except SqlIntegrityError:
                raise AlreadyExists(
                    f"learnware {lw.id!r} or an identical package is already published"
                ) from None

    def has_package(self, sha256: str) -> bool:
        with self._session() as session:
            return session.scalar(select(_Row.id).where(_Row.package_sha256 == sha256)) is not None

    def get(self, learnware_id: str) -> LearnwareInfo:
        with self._session() as session:
            row = session.get(_Row, learnware_id)
            if row is None:
                raise NotFound(f"no learnware with id {learnware_id!r}")
            return _from_row(row)

    def list(
        self,
        *,
        page_size: int,
        page_token: str = "",
        domain: str = "",
        tag: str = "",
        publisher: str = "",
    ) -> Page:
        """Learnwares in id order, filtered; `next_token` is empty on the last page."""
        query = select(_Row).order_by(_Row.id)
        if page_token:
            query = query.where(_Row.id > _decode_token(page_token))
        if domain:
            query = query.where(_Row.domain == domain)
        if publisher:
            query = query.where(_Row.publisher == publisher)
        if tag:
            # tags are a JSON list of strings; match the quoted element exactly
            query = query.where(_Row.tags.contains(json.dumps(tag)))
        with self._session() as session:
            rows = list(session.scalars(query.limit(page_size + 1)))
        items = tuple(_from_row(r) for r in rows[:page_size])
        more = len(rows) > page_size
        return Page(items=items, next_token=_encode_token(items[-1].id) if more and items else "")

    def iter_all(self, *, profile_id: str) -> Iterator[LearnwareInfo]:
        with self._session() as session:
            for row in session.scalars(select(_Row).where(_Row.profile_id == profile_id).order_by(_Row.id)):
                yield _from_row(row)
