"""indexes for the query language

A tag term reads image ids (and scores) straight from image_tags(tag_id, image_id,
score), which replaces image_tags(tag_id, score); `user-removed` rows get a small
partial index of their own; score terms read scores(name, value, image_id) for a
narrow range, or scores(name, image_id, value) to merge a wide one in image order.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

REMOVED = sa.text("source = 'user-removed'")


def upgrade() -> None:
    op.drop_index("ix_image_tags_tag_score", table_name="image_tags")
    op.create_index("ix_image_tags_tag_image_score", "image_tags", ["tag_id", "image_id", "score"])
    op.create_index(
        "ix_image_tags_removed",
        "image_tags",
        ["tag_id", "image_id"],
        sqlite_where=REMOVED,
        postgresql_where=REMOVED,
    )
    op.drop_index("ix_scores_name_value", table_name="scores")
    op.create_index("ix_scores_name_value_image", "scores", ["name", "value", "image_id"])
    op.create_index("ix_scores_name_image_value", "scores", ["name", "image_id", "value"])


def downgrade() -> None:
    op.drop_index("ix_scores_name_image_value", table_name="scores")
    op.drop_index("ix_scores_name_value_image", table_name="scores")
    op.create_index("ix_scores_name_value", "scores", ["name", "value"])
    op.drop_index("ix_image_tags_removed", table_name="image_tags")
    op.drop_index("ix_image_tags_tag_image_score", table_name="image_tags")
    op.create_index("ix_image_tags_tag_score", "image_tags", ["tag_id", "score"])
