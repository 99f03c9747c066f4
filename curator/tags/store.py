"""Rows for tags and captions: the shared write helpers of scan, runs and edits."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.schema import Caption, Image, ImageTag, Tag
from db.upsert import insert_ignore, lock_rows, upsert


def tag_ids(session: Session, names: Iterable[str], category: str = "general") -> dict[str, int]:
    """Ids for tag names, creating missing tags with `category`."""
    wanted = list(dict.fromkeys(n for n in names if n))
    found: dict[str, int] = {}
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        found.update(session.execute(select(Tag.name, Tag.id).where(Tag.name.in_(chunk))).all())
    missing = [n for n in wanted if n not in found]
    if missing:
        # Another writer may create the same names meanwhile: the database decides.
        insert_ignore(
            session, Tag.__table__, [{"name": n, "category": category} for n in missing], ["name"]
        )
        for i in range(0, len(missing), 500):
            chunk = missing[i : i + 500]
            found.update(session.execute(select(Tag.name, Tag.id).where(Tag.name.in_(chunk))).all())
    return found


def replace_source_tags(
    session: Session,
    image_id: int,
    source: str,
    tags: Iterable[tuple[str, str, float | None]],
    run_id: int | None = None,
) -> int:
    """Make `source`'s tags on an image exactly `tags` (name, category, score)."""
    tags = list(tags)
    lock_rows(session, Image.__table__, [image_id])  # one writer at a time per image
    session.execute(
        delete(ImageTag).where(ImageTag.image_id == image_id, ImageTag.source == source)
    )
    by_category: dict[str, list[str]] = {}
    for name, category, _ in tags:
        by_category.setdefault(category, []).append(name)
    ids: dict[str, int] = {}
    for category, names in by_category.items():
        ids.update(tag_ids(session, names, category))
    seen: set[int] = set()
    for name, _, score in tags:
        tid = ids[name]
        if tid in seen:
            continue
        seen.add(tid)
        session.add(
            ImageTag(image_id=image_id, tag_id=tid, source=source, score=score, run_id=run_id)
        )
    return len(seen)


def set_caption(
    session: Session,
    image_id: int,
    text: str,
    *,
    kind: str = "caption",
    source: str,
    run_id: int | None = None,
) -> None:
    upsert(
        session,
        Caption.__table__,
        [{"image_id": image_id, "kind": kind, "source": source, "text": text, "run_id": run_id}],
        ["image_id", "kind", "source"],
        ["text", "run_id"],
    )
