"""The catalog schema: SQLAlchemy 2 typed models.

Portable on purpose: nothing here is SQLite-only, so the same models create on
PostgreSQL. 64-bit perceptual hashes are stored signed (BigInteger), because
neither SQLite nor PostgreSQL has an unsigned 64-bit integer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names, so Alembic migrations can refer to them on any backend.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Image(Base):
    """One distinct content (sha256). Several files may show the same image."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    bytes: Mapped[int] = mapped_column(BigInteger)
    # Width and height as displayed, i.e. after EXIF orientation is applied.
    width: Mapped[int] = mapped_column(Integer, index=True)
    height: Mapped[int] = mapped_column(Integer, index=True)
    format: Mapped[str] = mapped_column(String(16), index=True)
    mode: Mapped[str] = mapped_column(String(16))
    frames: Mapped[int] = mapped_column(Integer, default=1)
    orientation: Mapped[int] = mapped_column(Integer, default=1)
    phash: Mapped[int | None] = mapped_column(BigInteger, index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    duplicate_of: Mapped[int | None] = mapped_column(
        ForeignKey("images.id", ondelete="SET NULL"), index=True
    )
    added_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # What the decoder warned about while reading it ("Corrupt EXIF data", ...), or None.
    warnings: Mapped[list[Any] | None] = mapped_column(JSON(none_as_null=True))

    files: Mapped[list[File]] = relationship(back_populates="image")


class File(Base):
    """A path on disk. `present` goes False when a rescan no longer finds it."""

    __tablename__ = "files"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    folder: Mapped[str] = mapped_column(Text, index=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    # No index of its own: a low-selectivity boolean index lures SQLite away from
    # ix_files_image_id in the correlated EXISTS every query uses.
    present: Mapped[bool] = mapped_column(Boolean, default=True)
    sidecar_mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    first_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    image: Mapped[Image] = relationship(back_populates="files")


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    category: Mapped[str] = mapped_column(String(32), default="general", index=True)


class ImageTag(Base):
    """A tag on an image from one source: `user`, `sidecar` or `model:NAME`."""

    __tablename__ = "image_tags"
    __table_args__ = (
        UniqueConstraint("image_id", "tag_id", "source"),
        # The query language: images with a tag (and its score) from the index alone.
        Index("ix_image_tags_tag_image_score", "tag_id", "image_id", "score"),
        # The few `user-removed` rows, probed for every candidate row of a tag query.
        Index(
            "ix_image_tags_removed",
            "tag_id",
            "image_id",
            sqlite_where=text("source = 'user-removed'"),
            postgresql_where=text("source = 'user-removed'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(128))
    score: Mapped[float | None] = mapped_column(Float)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))


class Caption(Base):
    __tablename__ = "captions"
    __table_args__ = (UniqueConstraint("image_id", "kind", "source"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32), default="caption")
    source: Mapped[str] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))


class Embedding(Base):
    __tablename__ = "embeddings"
    __table_args__ = (UniqueConstraint("image_id", "model"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    model: Mapped[str] = mapped_column(String(255))
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian float32
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))


class Score(Base):
    """A named number about an image: `nsfw`, `aesthetic`, `sharpness`, ..."""

    __tablename__ = "scores"
    __table_args__ = (
        UniqueConstraint("image_id", "name"),
        # The query language: a narrow threshold by value; a wide one in image order.
        Index("ix_scores_name_value_image", "name", "value", "image_id"),
        Index("ix_scores_name_image_value", "name", "image_id", "value"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(128), default="")
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))


class Detection(Base):
    """A box found by a detector (faces, text, NSFW parts), in original pixels."""

    __tablename__ = "detections"

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    detector: Mapped[str] = mapped_column(String(128), index=True)
    label: Mapped[str] = mapped_column(String(128))
    score: Mapped[float] = mapped_column(Float)
    x: Mapped[int] = mapped_column(Integer)
    y: Mapped[int] = mapped_column(Integer)
    w: Mapped[int] = mapped_column(Integer)
    h: Mapped[int] = mapped_column(Integer)
    text: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))


class Generation(Base):
    """Generation parameters read from A1111 infotext or NovelAI metadata."""

    __tablename__ = "generations"

    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    source: Mapped[str] = mapped_column(String(32))  # "a1111" | "novelai"
    prompt: Mapped[str] = mapped_column(Text, default="")
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    steps: Mapped[int | None] = mapped_column(Integer, index=True)
    sampler: Mapped[str | None] = mapped_column(String(128), index=True)
    cfg_scale: Mapped[float | None] = mapped_column(Float)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    model_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    model: Mapped[str | None] = mapped_column(String(255))
    denoising_strength: Mapped[float | None] = mapped_column(Float)
    clip_skip: Mapped[int | None] = mapped_column(Integer)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    raw: Mapped[str] = mapped_column(Text)


class Run(Base):
    """One pass of a model (or scan, or export) over a selection of images."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)  # scan | tag | detect | ...
    model: Mapped[str | None] = mapped_column(String(255))
    revision: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    duration_s: Mapped[float | None] = mapped_column(Float)


class Processed(Base):
    """Which model revision has seen which image: the run loop's resume point."""

    __tablename__ = "processed"
    __table_args__ = (UniqueConstraint("model", "revision", "image_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(String(255))
    revision: Mapped[str] = mapped_column(String(64))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Edit(Base):
    """A recorded change to tags, captions or review state, with what undoes it."""

    __tablename__ = "edits"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    op: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text, default="")
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    undone: Mapped[bool] = mapped_column(Boolean, default=False)
    undone_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Who made it: `undo` and `redo` take the caller's own edits unless told otherwise.
    user: Mapped[str | None] = mapped_column(String(128))
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)


class Export(Base):
    __tablename__ = "exports"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    query: Mapped[str] = mapped_column(Text, default="")
    format: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    count: Mapped[int] = mapped_column(Integer, default=0)


class ExportItem(Base):
    """Where one image went in an export, and the crop used: reviewable, adjustable."""

    __tablename__ = "export_items"
    __table_args__ = (UniqueConstraint("export_id", "image_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    export_id: Mapped[int] = mapped_column(ForeignKey("exports.id", ondelete="CASCADE"), index=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text)
    bucket_w: Mapped[int] = mapped_column(Integer)
    bucket_h: Mapped[int] = mapped_column(Integer)
    crop: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    caption: Mapped[str] = mapped_column(Text, default="")


class TagRule(Base):
    """Curation rules applied to tags as they are written and exported.

    kind: `alias` (tag → target, the canonical spelling), `implication` (tag implies
    target), `blacklist` (tag is never kept), `trigger` (tag is a trigger word).
    """

    __tablename__ = "tag_rules"
    __table_args__ = (UniqueConstraint("kind", "tag", "target"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    tag: Mapped[str] = mapped_column(String(255), index=True)
    target: Mapped[str] = mapped_column(String(255), default="")
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ModelFile(Base):
    """A registered model file (checkpoint, VAE, LoRA, embedding, hypernetwork) and its
    hashes as A1111 shows them, computed once per size and modification time."""

    __tablename__ = "model_files"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    autov2: Mapped[str | None] = mapped_column(String(10), index=True)
    old_hash: Mapped[str | None] = mapped_column(String(8), index=True)
    added_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class GeneratedBy(Base):
    """Provenance of an image Curator generated: model file, source image, parameters."""

    __tablename__ = "generated"

    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    model_file_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_files.id", ondelete="SET NULL"), index=True
    )
    source_image_id: Mapped[int | None] = mapped_column(
        ForeignKey("images.id", ondelete="SET NULL"), index=True
    )
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Problem(Base):
    """A file that could not be catalogued, and why. Cleared when a rescan reads it."""

    __tablename__ = "problems"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    message: Mapped[str] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


def to_signed64(value: int) -> int:
    """An unsigned 64-bit hash as the signed integer SQL databases can store."""
    return value - (1 << 64) if value >= 1 << 63 else value


def to_unsigned64(value: int) -> int:
    return value + (1 << 64) if value < 0 else value
