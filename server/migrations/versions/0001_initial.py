"""initial schema: learnwares, tags, API keys, signing keys

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(length=24), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("principal", sa.String(length=256), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(length=40), nullable=False),
        sa.Column("revoked_at", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_principal"), ["principal"], unique=False)

    op.create_table(
        "learnwares",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("domain", sa.String(length=256), nullable=False),
        sa.Column("base_model", sa.String(length=256), nullable=False),
        sa.Column("licence", sa.String(length=256), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("publisher", sa.String(length=256), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("task_kind", sa.String(length=32), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("profile_id", sa.String(length=32), nullable=False),
        sa.Column("spec_version", sa.Integer(), nullable=False),
        sa.Column("spec_values", sa.LargeBinary(), nullable=False),
        sa.Column("spec_privacy", sa.Text(), nullable=False),
        sa.Column("package_sha256", sa.String(length=64), nullable=False),
        sa.Column("package_size", sa.BigInteger(), nullable=False),
        sa.Column("signing_key_id", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.String(length=40), nullable=False),
        sa.Column("updated_at", sa.String(length=40), nullable=False),
        sa.Column("eval_scores", sa.Text(), nullable=False),
        sa.Column("dp_trained", sa.Boolean(), nullable=False),
        sa.Column("dp_epsilon", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("package_sha256"),
    )
    with op.batch_alter_table("learnwares", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_learnwares_base_model"), ["base_model"], unique=False)
        batch_op.create_index(batch_op.f("ix_learnwares_domain"), ["domain"], unique=False)
        batch_op.create_index(batch_op.f("ix_learnwares_profile_id"), ["profile_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_learnwares_publisher"), ["publisher"], unique=False)
        batch_op.create_index(batch_op.f("ix_learnwares_signing_key_id"), ["signing_key_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_learnwares_task_kind"), ["task_kind"], unique=False)

    op.create_table(
        "signing_keys",
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("publisher", sa.String(length=256), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("registered_by", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.String(length=40), nullable=False),
        sa.Column("revoked_at", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
        sa.UniqueConstraint("public_key"),
    )
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_signing_keys_publisher"), ["publisher"], unique=False)

    op.create_table(
        "learnware_tags",
        sa.Column("learnware_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["learnware_id"], ["learnwares.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("learnware_id", "position"),
    )
    with op.batch_alter_table("learnware_tags", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_learnware_tags_tag"), ["tag"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("learnware_tags", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_learnware_tags_tag"))

    op.drop_table("learnware_tags")
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_signing_keys_publisher"))

    op.drop_table("signing_keys")
    with op.batch_alter_table("learnwares", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_learnwares_task_kind"))
        batch_op.drop_index(batch_op.f("ix_learnwares_signing_key_id"))
        batch_op.drop_index(batch_op.f("ix_learnwares_publisher"))
        batch_op.drop_index(batch_op.f("ix_learnwares_profile_id"))
        batch_op.drop_index(batch_op.f("ix_learnwares_domain"))
        batch_op.drop_index(batch_op.f("ix_learnwares_base_model"))

    op.drop_table("learnwares")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_principal"))

    op.drop_table("api_keys")
