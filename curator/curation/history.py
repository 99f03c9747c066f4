"""Edit history: list edits, undo and redo them.

`undo()` replays an edit's notes backwards and restores the previous rows; `redo()`
plays them forwards again. Both take the caller's own newest edit unless told
otherwise, so two people editing one catalog do not revert each other's work. An
edit can be undone (or redone) on its own only when no later edit still in effect
changed the same image tags, image fields or rules; otherwise the error names the
edits that block it. On a server the edit's row and its images' rows are locked first,
so racing undos, redos and tag edits of the same images take turns.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from curator.curation.changeset import IMAGE_COLUMNS, Author, chunks
from curator.errors import UsageError
from curator.tags.store import tag_ids
from db.engine import Catalog
from db.schema import Caption, Edit, Image, ImageTag, Run, Tag, TagRule, utcnow
from db.upsert import lock_rows


def history(
    catalog: Catalog,
    limit: int | None = 20,
    *,
    author: Author | None = None,
) -> list[dict[str, Any]]:
    """The latest edits, newest first; only `author`'s (user and host) when given."""
    stmt = select(Edit).order_by(Edit.id.desc())
    if author is not None:
        stmt = stmt.where(Edit.user == author.user, Edit.host == author.host)
    if limit:
        stmt = stmt.limit(limit)
    with catalog.session() as s:
        return [describe(e) for e in s.scalars(stmt)]


def describe(e: Edit) -> dict[str, Any]:
    p = e.payload or {}
    return {
        "id": e.id,
        "at": e.at.isoformat(timespec="seconds"),
        "op": e.op,
        "summary": e.summary,
        "undone": e.undone,
        "user": e.user,
        "host": e.host,
        "pid": e.pid,
        "tags_added": len(p.get("tags_inserted", [])),
        "tags_removed": len(p.get("tags_deleted", [])),
        "rules_changed": len(p.get("rules_inserted", [])) + len(p.get("rules_deleted", [])),
        "images_changed": len(p.get("images", [])),
    }


def _who(e: Edit) -> str:
    return f"{e.user}@{e.host}" if e.user else "an unknown user"


def _mine(stmt, author: Author | None):  # noqa: ANN001, ANN202
    if author is None:
        return stmt
    return stmt.where(Edit.user == author.user, Edit.host == author.host)


def undo(
    catalog: Catalog,
    count: int = 1,
    *,
    edit_id: int | None = None,
    any_user: bool = False,
    author: Author | None = None,
) -> list[dict[str, Any]]:
    """Undo edits, newest first; returns what was undone.

    By default the caller's (`author`, else this user on this host) last `count` edits
    not yet undone; `any_user=True` takes anyone's; `edit_id` undoes that one edit.
    Refuses (`UsageError`, nothing changed) an edit that a later edit still in effect
    depends on.
    """
    if count < 1:
        raise UsageError("undo needs a count of at least 1")
    who = None if any_user or edit_id is not None else (author or Author.current())
    with catalog.write() as s:
        if edit_id is not None:
            chosen = [_get(s, edit_id)]
            if chosen[0].undone:
                raise UsageError(f"edit {edit_id} is already undone (`curator redo` redoes it)")
        else:
            stmt = select(Edit).where(Edit.undone.is_(False)).order_by(Edit.id.desc())
            chosen = list(s.scalars(_mine(stmt, who).limit(count).with_for_update()))
        _lock_images(s, chosen)
        now = utcnow()
        for e in chosen:
            blockers = _later_in_effect(s, e)
            if blockers:
                raise UsageError(_blocked("undo", e, blockers))
            _revert(s, e.payload or {})
            e.undone = True
            e.undone_at = now
            s.flush()
        return [describe(e) for e in chosen]


def redo(
    catalog: Catalog,
    *,
    edit_id: int | None = None,
    any_user: bool = False,
    author: Author | None = None,
) -> list[dict[str, Any]]:
    """Apply again the caller's most recently undone edit (or `edit_id`); returns it.

    Refuses an edit that a later edit still in effect changed the same things as, or
    whose earlier overlapping edits are undone (redo those first).
    """
    who = None if any_user or edit_id is not None else (author or Author.current())
    with catalog.write() as s:
        if edit_id is not None:
            e = _get(s, edit_id)
            if not e.undone:
                raise UsageError(f"edit {edit_id} is in effect; nothing to redo")
        else:
            stmt = select(Edit).where(Edit.undone.is_(True))
            stmt = _mine(stmt, who).order_by(Edit.undone_at.desc().nulls_last(), Edit.id)
            e = s.scalars(stmt.limit(1).with_for_update()).first()
            if e is None:
                return []
        _lock_images(s, [e])
        blockers = _later_in_effect(s, e) + _earlier_undone(s, e)
        if blockers:
            raise UsageError(_blocked("redo", e, blockers))
        _apply(s, e.payload or {})
        e.undone = False
        e.undone_at = None
        s.flush()
        return [describe(e)]


def _get(s: Session, edit_id: int) -> Edit:
    """The edit, its row locked: a racing undo or redo of it waits, then sees its state."""
    stmt = select(Edit).where(Edit.id == edit_id).with_for_update()
    e = s.scalars(stmt.execution_options(populate_existing=True)).first()
    if e is None:
        raise UsageError(f"no edit {edit_id} (see `curator history`)")
    return e


def _lock_images(s: Session, edits: Sequence[Edit]) -> None:
    """Lock the images these edits changed (on a server; SQLite's write transaction holds
    the whole file), before reading what later edits did to them: a racing tag edit of
    one of them finishes first, and then blocks the undo if it overlaps."""
    ids: set[int] = set()
    for e in edits:
        ids |= _image_ids_in(e.payload or {})
    lock_rows(s, Image.__table__, ids)


# --- what depends on what --------------------------------------------------------------


def _keys(p: dict[str, Any]) -> set[tuple]:
    """What an edit touched: (image, tag) pairs, (image, field) pairs and rules."""
    keys: set[tuple] = set()
    for r in p.get("tags_inserted", []):
        keys.add(("tag", r[0], r[1]))
    for r in p.get("tags_deleted", []):
        keys.add(("tag", r[0], r[1]))
    for r in p.get("images", []):
        keys.add(("image", r[0], r[1]))
    for r in p.get("rules_inserted", []) + p.get("rules_deleted", []):
        keys.add(("rule", r[0], r[1], r[2]))
    for r in p.get("captions", []):
        keys.add(("caption", r[0], r[1], r[2]))
    return keys


def _overlapping(e: Edit, others: Iterable[Edit]) -> list[Edit]:
    mine = _keys(e.payload or {})
    return [o for o in others if mine & _keys(o.payload or {})]


def _later_in_effect(s: Session, e: Edit) -> list[Edit]:
    later = s.scalars(select(Edit).where(Edit.id > e.id, Edit.undone.is_(False)).order_by(Edit.id))
    return _overlapping(e, later)


def _earlier_undone(s: Session, e: Edit) -> list[Edit]:
    # Only those undone after `e`: they were in effect when `e` was undone.
    stmt = select(Edit).where(Edit.id < e.id, Edit.undone.is_(True))
    if e.undone_at is not None:
        stmt = stmt.where(Edit.undone_at > e.undone_at)
    return _overlapping(e, s.scalars(stmt.order_by(Edit.id.desc())))


def _blocked(action: str, e: Edit, blockers: Sequence[Edit]) -> str:
    shown = ", ".join(f"{b.id} ({b.op} by {_who(b)})" for b in blockers[:5])
    more = f" and {len(blockers) - 5} more" if len(blockers) > 5 else ""
    if action == "undo":
        fix = f"undo them first (`curator undo --edit {blockers[-1].id}`)"
        why = "later edits still in effect changed the same things"
    elif blockers[0].id > e.id:
        fix = f"undo them first (`curator undo --edit {blockers[-1].id}`)"
        why = "later edits still in effect changed the same things"
    else:
        fix = f"redo them first (`curator redo --edit {blockers[0].id}`)"
        why = "earlier edits it builds on are undone"
    return f"cannot {action} edit {e.id} ({e.op} by {_who(e)}): {why}: {shown}{more}; {fix}"


# --- playing an edit backwards and forwards --------------------------------------------


def _revert(s: Session, p: dict[str, Any]) -> None:
    """Put back what an edit changed: its steps in reverse."""
    existing_images = _existing(s, Image.id, _image_ids_in(p))
    _set_images(s, p, existing_images, forward=False)

    inserted: dict[tuple[str, str], list[int]] = defaultdict(list)
    for image_id, name, source, *_ in p.get("tags_inserted", []):
        inserted[(name, source)].append(image_id)
    names = sorted({name for name, _ in inserted} | {r[1] for r in p.get("tags_deleted", [])})
    ids = _tag_ids_of(s, names)
    for (name, source), image_ids in inserted.items():
        if name in ids:
            _delete_keys(s, ids[name], source, image_ids)

    deleted = [r for r in p.get("tags_deleted", []) if r[0] in existing_images]
    _write_rows(s, [(i, n, c, src, sc, run) for i, n, c, src, sc, run in deleted], ids)

    for kind, tag, target in p.get("rules_inserted", []):
        _delete_rule(s, kind, tag, target)
    for kind, tag, target, at in p.get("rules_deleted", []):
        _add_rule(s, kind, tag, target, _parse_time(at))
    _set_captions(s, p, existing_images, forward=False)
    s.flush()


def _apply(s: Session, p: dict[str, Any]) -> None:
    """Make an edit's changes again (redo): what it deleted goes, what it wrote comes back."""
    existing_images = _existing(s, Image.id, _image_ids_in(p))
    _set_images(s, p, existing_images, forward=True)

    deleted: dict[tuple[str, str], list[int]] = defaultdict(list)
    for image_id, name, _cat, source, _score, _run in p.get("tags_deleted", []):
        deleted[(name, source)].append(image_id)
    names = sorted({name for name, _ in deleted} | {r[1] for r in p.get("tags_inserted", [])})
    ids = _tag_ids_of(s, names)
    for (name, source), image_ids in deleted.items():
        if name in ids:
            _delete_keys(s, ids[name], source, image_ids)

    rows = []
    for r in p.get("tags_inserted", []):
        if r[0] not in existing_images:
            continue
        # Edits recorded before rows were kept in full carry only (image, name, source).
        image_id, name, source = r[:3]
        category, score, run = r[3:6] if len(r) >= 6 else ("general", None, None)
        rows.append((image_id, name, category, source, score, run))
    _write_rows(s, rows, ids)

    for kind, tag, target, _at in p.get("rules_deleted", []):
        _delete_rule(s, kind, tag, target)
    for kind, tag, target in p.get("rules_inserted", []):
        _add_rule(s, kind, tag, target, utcnow())
    _set_captions(s, p, existing_images, forward=True)
    s.flush()


def _set_images(s: Session, p: dict[str, Any], existing: set[int], *, forward: bool) -> None:
    values: dict[tuple[str, Any], list[int]] = defaultdict(list)
    for image_id, column, old, new in p.get("images", []):
        if image_id not in existing or column not in IMAGE_COLUMNS:
            continue
        value = new if forward else old
        if column == "duplicate_of" and value is not None and value not in existing:
            value = None  # the keeper was deleted since; the FK would refuse it
        values[(column, value)].append(image_id)
    for (column, value), image_ids in values.items():
        for id_chunk in chunks(image_ids):
            s.execute(update(Image).where(Image.id.in_(id_chunk)).values({column: value}))


def _set_captions(s: Session, p: dict[str, Any], existing: set[int], *, forward: bool) -> None:
    """Captions back to the text before the edit (or after it, for redo); None deletes."""
    for image_id, kind, source, old, new in p.get("captions", []):
        if image_id not in existing:
            continue
        text = new if forward else old
        row = s.scalar(
            select(Caption).where(
                Caption.image_id == image_id, Caption.kind == kind, Caption.source == source
            )
        )
        if text is None:
            if row is not None:
                s.delete(row)
        elif row is None:
            s.add(Caption(image_id=image_id, kind=kind, source=source, text=text))
        else:
            row.text = text


def _write_rows(s: Session, rows: list[tuple], ids: dict[str, int]) -> None:
    """Write (image, name, category, source, score, run) rows, replacing the same keys."""
    if not rows:
        return
    runs = _existing(s, Run.id, {r[5] for r in rows if r[5] is not None})
    by_category: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        by_category[r[2]].append(r[1])
    for category, cat_names in by_category.items():
        ids.update(tag_ids(s, cat_names, category))
    # Rows written since under the same key (e.g. a model re-run) give way.
    keys: dict[tuple[str, str], list[int]] = defaultdict(list)
    for image_id, name, _cat, source, _score, _run in rows:
        keys[(name, source)].append(image_id)
    for (name, source), image_ids in keys.items():
        _delete_keys(s, ids[name], source, image_ids)
    s.execute(
        insert(ImageTag),
        [
            {
                "image_id": image_id,
                "tag_id": ids[name],
                "source": source,
                "score": score,
                "run_id": run if run in runs else None,
            }
            for image_id, name, _cat, source, score, run in rows
        ],
    )


def _tag_ids_of(s: Session, names: Sequence[str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for chunk in chunks(list(names)):
        ids.update(s.execute(select(Tag.name, Tag.id).where(Tag.name.in_(chunk))).all())
    return ids


def _delete_rule(s: Session, kind: str, tag: str, target: str) -> None:
    s.execute(
        delete(TagRule).where(TagRule.kind == kind, TagRule.tag == tag, TagRule.target == target)
    )


def _add_rule(s: Session, kind: str, tag: str, target: str, at: datetime) -> None:
    exists = s.scalar(
        select(TagRule.id).where(TagRule.kind == kind, TagRule.tag == tag, TagRule.target == target)
    )
    if exists is None:
        s.add(TagRule(kind=kind, tag=tag, target=target, at=at))
        s.flush()


def _delete_keys(s: Session, tag_id: int, source: str, image_ids: Sequence[int]) -> None:
    for id_chunk in chunks(image_ids):
        s.execute(
            delete(ImageTag).where(
                ImageTag.tag_id == tag_id,
                ImageTag.source == source,
                ImageTag.image_id.in_(id_chunk),
            )
        )


def _image_ids_in(p: dict[str, Any]) -> set[int]:
    ids = {r[0] for r in p.get("images", [])} | {r[0] for r in p.get("tags_deleted", [])}
    ids |= {r[0] for r in p.get("tags_inserted", [])}
    ids |= {r[0] for r in p.get("captions", [])}
    ids |= {r[3] for r in p.get("images", []) if r[1] == "duplicate_of" and r[3] is not None}
    ids |= {r[2] for r in p.get("images", []) if r[1] == "duplicate_of" and r[2] is not None}
    return ids


def _existing(s: Session, column, values: Iterable[int]) -> set[int]:  # noqa: ANN001
    values = sorted(values)
    found: set[int] = set()
    for chunk in chunks(values):
        found.update(s.scalars(select(column).where(column.in_(chunk))))
    return found


def _parse_time(text: str | None) -> datetime:
    try:
        return datetime.fromisoformat(text) if text else utcnow()
    except ValueError:
        return utcnow()
