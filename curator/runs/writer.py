"""The run loop's single writer: one batch of model results in a constant number of statements.

Per batch, whatever its size: a lookup and one bulk insert of new tag names, one delete
of each model's earlier rows, and one bulk insert (or upsert) per table. Per-row lookups
made a model with thousands of tags per image write only a few thousand rows a second;
bulk statements let SQLite write over a hundred thousand.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Table, delete, insert, select
from sqlalchemy.orm import Session

from curator.tags.view import RATINGS, model_source
from db.schema import (
    Caption,
    Detection,
    Embedding,
    Image,
    ImageTag,
    Problem,
    Processed,
    Score,
    Tag,
    utcnow,
)
from db.upsert import insert_ignore, lock_rows, upsert
from taggers.base import Model, Result

# Bound parameters per IN (...) list: well under SQLite's 32766 and PostgreSQL's 65535.
IN_CHUNK = 5000
DEFAULT_MAX_TAGS = 1000
RATING_SCORE = "rating"  # index of the top rating in RATINGS (what `rating:` queries read)


@dataclass(slots=True)
class Item:
    """One model's result for one image."""

    model: int  # index into the run's models
    image_id: int
    result: Result


@dataclass(slots=True)
class Counts:
    tags: list[int] = field(default_factory=list)  # tag rows written per model
    nonfinite: list[int] = field(default_factory=list)  # NaN/inf values skipped per model


def _chunks(values: Sequence[Any], n: int = IN_CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), n):
        yield values[i : i + n]


def _bulk_insert(s: Session, table: Table, columns: Sequence[str], rows: list[tuple]) -> None:
    """Insert many rows given as tuples. Where the driver takes positional parameters
    (SQLite's qmark, psycopg's format) they go straight to its executemany: building a
    dict per row and letting SQLAlchemy process each one took longer than SQLite's own
    work on tables of thousands of tag rows per image."""
    if not rows:
        return
    marker = {"qmark": "?", "format": "%s"}.get(s.get_bind().dialect.paramstyle)
    if marker is None:
        s.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])
        return
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"VALUES ({', '.join([marker] * len(columns))})"
    )
    s.connection().exec_driver_sql(sql, rows)


def tag_ids(s: Session, categories: dict[str, str]) -> dict[str, int]:
    """Ids for tag names (name → category), creating missing tags in bulk."""
    names = list(categories)
    found: dict[str, int] = {}
    for chunk in _chunks(names):
        found.update(s.execute(select(Tag.name, Tag.id).where(Tag.name.in_(chunk))).all())
    missing = [n for n in names if n not in found]
    if missing:
        insert_ignore(
            s, Tag.__table__, [{"name": n, "category": categories[n]} for n in missing], ["name"]
        )
        for chunk in _chunks(missing):
            found.update(s.execute(select(Tag.name, Tag.id).where(Tag.name.in_(chunk))).all())
    return found


def source_of(model: Model) -> str:
    """The `source` a model's rows carry: its own `source`, else ``model:NAME``."""
    return getattr(model, "source", None) or model_source(model.name)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _rating_name(name: str) -> str:
    """WD14's rating names as they are; DeepDanbooru's `safe` as `general`."""
    name = name.removeprefix("rating:")
    return "general" if name == "safe" else name


def _rating_index(result: Result) -> float | None:
    """The index in RATINGS of the top rating, from the rating scores (or rating tags)."""
    ratings = {
        _rating_name(k): v
        for k, v in result.scores.items()
        if k.startswith("rating:") and _finite(v)
    }
    if not ratings:
        ratings = {
            _rating_name(t.name): t.score
            for t in result.tags
            if t.category == "rating" and _finite(t.score)
        }
    if not ratings or not set(ratings) <= set(RATINGS):
        return None
    return float(RATINGS.index(max(ratings, key=ratings.get)))


def write_batch(
    s: Session,
    models: Sequence[Model],
    run_ids: Sequence[int],
    items: Sequence[Item],
    problems: Sequence[tuple[str, str]],
    *,
    max_tags: int = DEFAULT_MAX_TAGS,
) -> Counts:
    """Write one batch: results of every model, `processed` rows, and problems (path, message)."""
    counts = Counts([0] * len(models), [0] * len(models))
    now = utcnow()
    # Another machine's writer replacing the same images' rows waits for this one.
    lock_rows(s, Image.__table__, (item.image_id for item in items))
    tag_rows: list[tuple[int, int, str, str, float | None]] = []  # model, image, name, cat, score
    replace_tags: dict[int, list[int]] = {}  # model → images whose tags are replaced
    score_rows: list[dict[str, Any]] = []
    detection_rows: list[dict[str, Any]] = []
    replace_detections: dict[int, list[int]] = {}
    caption_rows: list[dict[str, Any]] = []
    embedding_rows: list[dict[str, Any]] = []
    processed_rows: list[dict[str, Any]] = []
    for item in items:
        i, model, result = item.model, models[item.model], item.result
        source, run_id, image_id = source_of(model), run_ids[item.model], item.image_id
        if model.kind == "tagger" or result.tags:
            replace_tags.setdefault(i, []).append(image_id)
            tags = [
                t for t in result.tags if t.name and (t.score is None or math.isfinite(t.score))
            ]
            counts.nonfinite[i] += sum(1 for t in result.tags if t.name) - len(tags)
            if len(tags) > max_tags:
                # The highest scores first, so a cap keeps what the model is surest of.
                tags.sort(key=lambda t: -(t.score if t.score is not None else math.inf))
                del tags[max_tags:]
            tag_rows.extend((i, image_id, t.name, t.category, t.score) for t in tags)
            rating = _rating_index(result)
            if rating is not None:
                result.scores.setdefault(RATING_SCORE, rating)
        for name, value in result.scores.items():
            if not _finite(value):
                counts.nonfinite[i] += 1
                continue
            score_rows.append(
                {
                    "image_id": image_id,
                    "name": name,
                    "value": float(value),
                    "source": source,
                    "run_id": run_id,
                }
            )
        if model.kind == "detector":
            replace_detections.setdefault(i, []).append(image_id)
            for d in result.detections:
                if not all(_finite(v) for v in (d.score, *d.box)):
                    counts.nonfinite[i] += 1
                    continue
                x, y, w, h = (int(v) for v in d.box)
                detection_rows.append(
                    {
                        "image_id": image_id,
                        "detector": model.name,
                        "label": d.label,
                        "score": float(d.score),
                        "x": x,
                        "y": y,
                        "w": w,
                        "h": h,
                        "text": d.text,
                        "run_id": run_id,
                    }
                )
        if result.caption is not None:
            caption_rows.append(
                {
                    "image_id": image_id,
                    # An interrogator's prompt is kind "interrogation", a captioner's "caption".
                    "kind": getattr(model, "caption_kind", "caption"),
                    "source": source,
                    "text": result.caption,
                    "run_id": run_id,
                }
            )
        if result.embedding is not None:
            # float16 halves the catalog's largest rows; cosine ranking does not notice.
            vec = np.asarray(result.embedding, dtype="<f2").ravel()
            embedding_rows.append(
                {
                    "image_id": image_id,
                    "model": model.name,
                    "dim": int(vec.size),
                    "vector": vec.tobytes(),
                    "run_id": run_id,
                }
            )
        processed_rows.append(
            {
                "model": model.name,
                "revision": model.revision,
                "image_id": image_id,
                "run_id": run_id,
                "at": now,
            }
        )

    if replace_tags:
        for i, ids in replace_tags.items():
            source = source_of(models[i])
            for chunk in _chunks(ids):
                s.execute(
                    delete(ImageTag).where(ImageTag.source == source, ImageTag.image_id.in_(chunk))
                )
        categories: dict[str, str] = {}
        for _, _, name, category, _ in tag_rows:
            categories.setdefault(name, category)
        ids_by_name = tag_ids(s, categories)
        sources = [source_of(m) for m in models]
        rows: dict[tuple[int, int, str], tuple] = {}
        for i, image_id, name, _, score in tag_rows:
            key = (image_id, ids_by_name[name], sources[i])
            if key not in rows:
                rows[key] = (*key, None if score is None else float(score), run_ids[i])
                counts.tags[i] += 1
        # In index order: SQLite appends to its b-trees instead of inserting all over them.
        _bulk_insert(
            s,
            ImageTag.__table__,
            ("image_id", "tag_id", "source", "score", "run_id"),
            sorted(rows.values(), key=lambda r: (r[1], r[0])),
        )
    upsert(s, Score.__table__, score_rows, ["image_id", "name"], ["value", "source", "run_id"])
    for i, ids in replace_detections.items():
        for chunk in _chunks(ids):
            s.execute(
                delete(Detection).where(
                    Detection.detector == models[i].name, Detection.image_id.in_(chunk)
                )
            )
    if detection_rows:
        s.execute(insert(Detection.__table__), detection_rows)
    upsert(s, Caption.__table__, caption_rows, ["image_id", "kind", "source"], ["text", "run_id"])
    upsert(
        s, Embedding.__table__, embedding_rows, ["image_id", "model"], ["dim", "vector", "run_id"]
    )
    upsert(
        s, Processed.__table__, processed_rows, ["model", "revision", "image_id"], ["run_id", "at"]
    )
    upsert(
        s,
        Problem.__table__,
        [{"path": p, "kind": "decode_failed", "message": m, "seen_at": now} for p, m in problems],
        ["path"],
        ["kind", "message", "seen_at"],
    )
    return counts
