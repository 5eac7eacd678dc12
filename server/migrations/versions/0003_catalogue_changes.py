"""catalogue change log (replicas follow it) and the catalogue's lock row

Revision ID: 0003
Revises: 0002

`catalogue_changes` holds one row per catalogue add or remove, written in the same
transaction; each market process applies the rows after its watermark to its search index.
`market_locks` holds one row per lock; writers update it first, so that writes to the
catalogue (and the blob files they name) are serialised across processes, and change
numbers commit in the order they were given.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalogue_changes",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("learnware_id", sa.String(length=64), nullable=False),
        sa.Column("op", sa.String(length=8), nullable=False),
        sa.Column("at", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    locks = op.create_table(
        "market_locks",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.bulk_insert(locks, [{"name": "catalogue"}])


def downgrade() -> None:
    op.drop_table("market_locks")
    op.drop_table("catalogue_changes")
