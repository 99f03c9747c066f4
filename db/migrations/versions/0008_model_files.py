"""model files with A1111 hashes; provenance of generated images

Revision ID: 0008
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("autov2", sa.String(length=10), nullable=True),
        sa.Column("old_hash", sa.String(length=8), nullable=True),
        sa.Column("added_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_files")),
        sa.UniqueConstraint("path", name=op.f("uq_model_files_path")),
    )
    op.create_index(op.f("ix_model_files_kind"), "model_files", ["kind"])
    op.create_index(op.f("ix_model_files_name"), "model_files", ["name"])
    op.create_index(op.f("ix_model_files_autov2"), "model_files", ["autov2"])
    op.create_index(op.f("ix_model_files_old_hash"), "model_files", ["old_hash"])
    op.create_table(
        "generated",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("model_file_id", sa.Integer(), nullable=True),
        sa.Column("source_image_id", sa.Integer(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_generated_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_file_id"],
            ["model_files.id"],
            name=op.f("fk_generated_model_file_id_model_files"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["source_image_id"],
            ["images.id"],
            name=op.f("fk_generated_source_image_id_images"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("image_id", name=op.f("pk_generated")),
    )
    op.create_index(op.f("ix_generated_model_file_id"), "generated", ["model_file_id"])
    op.create_index(op.f("ix_generated_source_image_id"), "generated", ["source_image_id"])


def downgrade() -> None:
    op.drop_table("generated")
    op.drop_index(op.f("ix_model_files_old_hash"), table_name="model_files")
    op.drop_index(op.f("ix_model_files_autov2"), table_name="model_files")
    op.drop_index(op.f("ix_model_files_name"), table_name="model_files")
    op.drop_index(op.f("ix_model_files_kind"), table_name="model_files")
    op.drop_table("model_files")
