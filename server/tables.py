"""The market's SQL schema (SQLAlchemy 2 ORM). Alembic migrations in `migrations/` create it.

Every change here needs a new migration: a test compares this schema with the migrated one.
Timestamps are RFC 3339 strings (UTC) so SQLite and PostgreSQL store them alike.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "ApiKeyRow",
    "Base",
    "ChangeRow",
    "LearnwareRow",
    "LockRow",
    "SigningKeyRow",
    "TagRow",
    "TaskVectorRow",
]


class Base(DeclarativeBase):
    pass


class LearnwareRow(Base):
    __tablename__ = "learnwares"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    domain: Mapped[str] = mapped_column(String(256), index=True)
    base_model: Mapped[str] = mapped_column(String(256), index=True)
    licence: Mapped[str] = mapped_column(String(256))
    description: Mapped[str] = mapped_column(Text)
    publisher: Mapped[str] = mapped_column(String(256), index=True)
    version: Mapped[str] = mapped_column(String(64))
    task_kind: Mapped[str] = mapped_column(String(32), index=True)
    labels: Mapped[str] = mapped_column(Text)  # JSON list, in head order
    profile_id: Mapped[str] = mapped_column(String(32), index=True)
    spec_version: Mapped[int] = mapped_column(Integer)
    spec_values: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian float32
    spec_privacy: Mapped[str] = mapped_column(Text)  # JSON object
    package_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    package_size: Mapped[int] = mapped_column(BigInteger)
    signing_key_id: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[str] = mapped_column(String(40))
    updated_at: Mapped[str] = mapped_column(String(40))
    eval_scores: Mapped[str] = mapped_column(Text)  # JSON object
    dp_trained: Mapped[bool] = mapped_column(Boolean)
    dp_epsilon: Mapped[float] = mapped_column(Float)
    tags: Mapped[list[TagRow]] = relationship(
        order_by="TagRow.position", cascade="all, delete-orphan", lazy="selectin"
    )


class TagRow(Base):
    """One tag of a learnware (its own table so tag filters use an index)."""

    __tablename__ = "learnware_tags"

    learnware_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("learnwares.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), index=True)


class TaskVectorRow(Base):
    """A learnware's task vector (issue 22), apart from its row: listing never reads its megabytes."""

    __tablename__ = "learnware_task_vectors"

    learnware_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("learnwares.id", ondelete="CASCADE"), primary_key=True
    )
    profile_id: Mapped[str] = mapped_column(String(32), index=True)  # a task-vector profile's
    spec_version: Mapped[int] = mapped_column(Integer)
    spec_values: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian float32
    spec_privacy: Mapped[str] = mapped_column(Text)  # JSON object


class ApiKeyRow(Base):
    """An API key: only the sha256 of its secret part is stored, never the key itself."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(24), primary_key=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    principal: Mapped[str] = mapped_column(String(256), index=True)
    role: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[str] = mapped_column(String(40))
    revoked_at: Mapped[str] = mapped_column(String(40))


class SigningKeyRow(Base):
    """A publisher's Ed25519 package-signing key (public part only).

    Keyed by (publisher, key id): publishers holding the same key register it independently,
    so one's revocation never touches another's.
    """

    __tablename__ = "signing_keys"

    publisher: Mapped[str] = mapped_column(String(256), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16), primary_key=True, index=True)
    public_key: Mapped[str] = mapped_column(String(64))
    registered_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[str] = mapped_column(String(40))
    revoked_at: Mapped[str] = mapped_column(String(40))


class ChangeRow(Base):
    """One catalogue add or remove, in commit order: replicas apply those after their watermark."""

    __tablename__ = "catalogue_changes"

    # INTEGER on SQLite, where only that type is the autoincrementing rowid
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    learnware_id: Mapped[str] = mapped_column(String(64))
    op: Mapped[str] = mapped_column(String(8))  # "add" or "remove"
    at: Mapped[str] = mapped_column(String(40))


class LockRow(Base):
    """A row that writers update first, to serialise their transactions across processes."""

    __tablename__ = "market_locks"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
