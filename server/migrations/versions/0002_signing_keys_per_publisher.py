"""signing keys per publisher: primary key (publisher, key_id), one public key for many publishers

Revision ID: 0002
Revises: 0001

The table is rebuilt rather than altered: its old primary key and unique constraint are
unnamed, and their names differ between SQLite and PostgreSQL. A market holds a few keys per
publisher, so the rows are read, the table recreated and the rows written back unchanged.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = ("key_id", "publisher", "public_key", "registered_by", "created_at", "revoked_at")


def _columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("publisher", sa.String(length=256), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("registered_by", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.String(length=40), nullable=False),
        sa.Column("revoked_at", sa.String(length=40), nullable=False),
    ]


def _rows() -> list[dict[str, Any]]:
    select = sa.text(f"SELECT {', '.join(COLUMNS)} FROM signing_keys")
    return [dict(row._mapping) for row in op.get_bind().execute(select)]


def upgrade() -> None:
    rows = _rows()
    op.drop_table("signing_keys")  # its indexes go with it
    table = op.create_table("signing_keys", *_columns(), sa.PrimaryKeyConstraint("publisher", "key_id"))
    op.create_index("ix_signing_keys_key_id", "signing_keys", ["key_id"])
    op.bulk_insert(table, rows)


def downgrade() -> None:
    rows = _rows()
    shared = sorted(kid for kid, n in Counter(r["key_id"] for r in rows).items() if n > 1)
    if shared:  # the old schema holds a key once: refuse rather than drop a publisher's key
        raise RuntimeError(f"cannot downgrade: signing keys {shared} are registered by several publishers")
    op.drop_table("signing_keys")
    table = op.create_table(
        "signing_keys", *_columns(), sa.PrimaryKeyConstraint("key_id"), sa.UniqueConstraint("public_key")
    )
    op.create_index("ix_signing_keys_publisher", "signing_keys", ["publisher"])
    op.bulk_insert(table, rows)
