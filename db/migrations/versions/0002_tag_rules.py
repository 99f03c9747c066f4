"""tag rules

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 10:28:18.943332
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tag_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("tag", sa.String(length=255), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tag_rules")),
        sa.UniqueConstraint("kind", "tag", "target", name=op.f("uq_tag_rules_kind_tag_target")),
    )
    with op.batch_alter_table("tag_rules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tag_rules_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_tag_rules_tag"), ["tag"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tag_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tag_rules_tag"))
        batch_op.drop_index(batch_op.f("ix_tag_rules_kind"))

    op.drop_table("tag_rules")
