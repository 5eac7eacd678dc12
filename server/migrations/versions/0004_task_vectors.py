"""learnwares' task vectors (issue 22)

Revision ID: 0004
Revises: 0003

`learnware_task_vectors` holds the task vector a package carries (at most one per learnware),
apart from its learnware's row so that listing the catalogue never reads its megabytes; it goes
with its learnware (ON DELETE CASCADE).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "learnware_task_vectors",
        sa.Column("learnware_id", sa.String(length=64), nullable=False),
        sa.Column("profile_id", sa.String(length=32), nullable=False),
        sa.Column("spec_version", sa.Integer(), nullable=False),
        sa.Column("spec_values", sa.LargeBinary(), nullable=False),
        sa.Column("spec_privacy", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["learnware_id"], ["learnwares.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("learnware_id"),
    )
    with op.batch_alter_table("learnware_task_vectors", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_learnware_task_vectors_profile_id"), ["profile_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("learnware_task_vectors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_learnware_task_vectors_profile_id"))
    op.drop_table("learnware_task_vectors")
