"""Tag edits, rule changes and review changes, each recorded with exactly what undoes it.

Every change goes through a `ChangeSet` inside one write transaction: it makes the
change and notes the rows it deleted (in full: image, tag, source, score, run),
the rows it inserted (by key) and the values it overwrote. `record()` stores that
as one `edits` row in the same transaction, so the catalog and its history never
disagree. `undo()` replays the notes backwards and restores the previous rows.

How tag edits treat sources (see `curator.tags.view`):
- adding writes a `user` row (and lifts a `user-removed` mark); a model re-run only
  replaces its own `model:NAME` rows, so a person's tags stay.
- removing deletes the `user` row, and when a model, a sidecar or an implication
  still gives the tag, writes a `user-removed` row that hides it for good.
- `rename_tag` rewrites rows everywhere under the new name, sources kept: a one-off
  rewrite. To make a spelling permanent (models keep writing the old one), alias it.
- `replace_tags` on a selection is a removal plus an addition, as a person's edit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from curator.errors import UsageError
from curator.query.compile import compile_query
from curator.tags.store import tag_ids
from curator.tags.view import (
    IMPLIED,
    USER,
    USER_REMOVED,
    TagRules,
    effective_tags,
    normalize_tag,
)
from db.engine import Catalog
from db.schema import Edit, Image, ImageTag, Run, Tag, TagRule, utcnow

CHUNK = 900  # ids per IN (...): under SQLite's variable limit
IMAGE_COLUMNS = ("status", "duplicate_of")  # image fields edits may change


class TagRowData(NamedTuple):
    id: int
    image_id: int
    name: str
    category: str
    source: str
    score: float | None
    run_id: int | None


@dataclass(slots=True)
class EditResult:
    """What one edit did; `edit_id` is None when there was nothing to change."""

    op: str
    summary: str
    edit_id: int | None = None
    images: int = 0
    added: int = 0
    removed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def chunks(seq: Sequence, n: int = CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def selected_ids(session: Session, query: str | None) -> list[int]:
    """Ids of the images a query string selects ('' selects every image)."""
    return list(session.scalars(select(Image.id).where(compile_query(query)).order_by(Image.id)))


def tag_rows(
    session: Session, image_ids: Sequence[int] | None = None, names: Iterable[str] | None = None
) -> list[TagRowData]:
    """image_tags rows (with tag name and category) of some images and/or tag names."""
    stmt = select(
        ImageTag.id,
        ImageTag.image_id,
        Tag.name,
        Tag.category,
        ImageTag.source,
        ImageTag.score,
        ImageTag.run_id,
    ).join(Tag, Tag.id == ImageTag.tag_id)
    name_list = sorted(set(names)) if names is not None else None
    out: list[TagRowData] = []
    for name_chunk in chunks(name_list) if name_list is not None else [None]:
        named = stmt if name_chunk is None else stmt.where(Tag.name.in_(name_chunk))
        if image_ids is None:
            out.extend(TagRowData(*r) for r in session.execute(named))
            continue
        for id_chunk in chunks(image_ids):
            out.extend(
                TagRowData(*r)
                for r in session.execute(named.where(ImageTag.image_id.in_(id_chunk)))
            )
    return out


class ChangeSet:
    """Changes made in one write transaction, noted so that they can be undone."""

    def __init__(self, session: Session):
        self.session = session
        self._tags_deleted: list[list[Any]] = []
        self._tags_inserted: dict[tuple[int, str, str], list[Any]] = {}
        self._rules_deleted: list[list[Any]] = []
        self._rules_inserted: dict[tuple[str, str, str], list[Any]] = {}
        self._images: dict[tuple[int, str], list[Any]] = {}
        self.images_touched: set[int] = set()

    # --- image tags ---

    def delete_tags(self, rows: Iterable[TagRowData]) -> int:
        rows = list(rows)
        for r in rows:
            self.images_touched.add(r.image_id)
            # A row this change set inserted: forget it instead of noting a deletion.
            if self._tags_inserted.pop((r.image_id, r.name, r.source), None) is None:
                self._tags_deleted.append(
                    [r.image_id, r.name, r.category, r.source, r.score, r.run_id]
                )
        for id_chunk in chunks([r.id for r in rows]):
            self.session.execute(delete(ImageTag).where(ImageTag.id.in_(id_chunk)))
        return len(rows)

    def insert_tags(
        self,
        rows: Iterable[tuple[int, str, str]],
        *,
        category: str | dict[str, str] = "general",
        score: float | None = None,
        values: dict[tuple[int, str, str], tuple[float | None, int | None]] | None = None,
    ) -> int:
        """Insert (image_id, name, source) rows; `values` gives (score, run_id) per row."""
        rows = list(dict.fromkeys(rows))
        if not rows:
            return 0
        ids: dict[str, int] = {}
        by_category: dict[str, list[str]] = defaultdict(list)
        for _, name, _ in rows:
            cat = category if isinstance(category, str) else category.get(name, "general")
            by_category[cat].append(name)
        for cat, names in by_category.items():
            ids.update(tag_ids(self.session, names, cat))
        params = []
        for key in rows:
            image_id, name, source = key
            row_score, run_id = (values or {}).get(key, (score, None))
            params.append(
                {
                    "image_id": image_id,
                    "tag_id": ids[name],
                    "source": source,
                    "score": row_score,
                    "run_id": run_id,
                }
            )
            self._tags_inserted[key] = [image_id, name, source]
            self.images_touched.add(image_id)
        self.session.execute(insert(ImageTag), params)
        return len(rows)

    # --- rules ---

    def add_rule(self, kind: str, tag: str, target: str = "") -> bool:
        exists = self.session.scalar(
            select(TagRule.id).where(
                TagRule.kind == kind, TagRule.tag == tag, TagRule.target == target
            )
        )
        if exists is not None:
            return False
        self.session.add(TagRule(kind=kind, tag=tag, target=target))
        self.session.flush()
        self._rules_inserted[(kind, tag, target)] = [kind, tag, target]
        return True

    def delete_rule(self, kind: str, tag: str, target: str = "") -> bool:
        row = self.session.scalar(
            select(TagRule).where(
                TagRule.kind == kind, TagRule.tag == tag, TagRule.target == target
            )
        )
        if row is None:
            return False
        if self._rules_inserted.pop((kind, tag, target), None) is None:
            self._rules_deleted.append([kind, tag, target, row.at.isoformat()])
        self.session.delete(row)
        self.session.flush()
        return True

    # --- image fields ---

    def set_images(self, column: str, changes: dict[int, tuple[Any, Any]]) -> int:
        """Set `column` per image: image id → (current value, new value)."""
        if column not in IMAGE_COLUMNS:
            raise ValueError(f"edits do not change images.{column}")
        by_value: dict[Any, list[int]] = defaultdict(list)
        for image_id, (old, new) in changes.items():
            if old == new:
                continue
            noted = self._images.setdefault((image_id, column), [image_id, column, old, new])
            noted[3] = new
            by_value[new].append(image_id)
            self.images_touched.add(image_id)
        col = getattr(Image, column)
        for value, ids in by_value.items():
            for id_chunk in chunks(ids):
                self.session.execute(
                    update(Image).where(Image.id.in_(id_chunk)).values({col: value})
                )
        return sum(len(v) for v in by_value.values())

    # --- recording ---

    @property
    def empty(self) -> bool:
        return not (
            self._tags_deleted
            or self._tags_inserted
            or self._rules_deleted
            or self._rules_inserted
            or any(old != new for _, _, old, new in self._images.values())
        )

    @property
    def counts(self) -> tuple[int, int]:
        """(rows added, rows removed) over tags and rules."""
        return (
            len(self._tags_inserted) + len(self._rules_inserted),
            len(self._tags_deleted) + len(self._rules_deleted),
        )

    def payload(self) -> dict[str, Any]:
        return {
            "tags_deleted": self._tags_deleted,
            "tags_inserted": list(self._tags_inserted.values()),
            "rules_deleted": self._rules_deleted,
            "rules_inserted": list(self._rules_inserted.values()),
            "images": [v for v in self._images.values() if v[2] != v[3]],
        }

    def record(self, op: str, summary: str, **info: Any) -> EditResult:
        """Store the edit (nothing when nothing changed) and say what it did."""
        added, removed = self.counts
        result = EditResult(op, summary, None, len(self.images_touched), added, removed)
        if self.empty:
            return result
        edit = Edit(op=op, summary=summary, payload={**self.payload(), "info": info})
        self.session.add(edit)
        self.session.flush()
        result.edit_id = edit.id
        return result


# --- tag operations on selections ----------------------------------------------------


def canonical_names(rules: TagRules, tags: Iterable[str]) -> list[str]:
    names = [rules.canonical(normalize_tag(t)) for t in tags]
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise UsageError("no tag given")
    return names


def add_to(
    s: Session, cs: ChangeSet, rules: TagRules, wanted: dict[int, set[str]], category: str
) -> None:
    """Give images tags as the user: a `user` row each, lifting `user-removed` marks."""
    spellings = {sp: n for names in wanted.values() for n in names for sp in rules.spellings(n)}
    rows = tag_rows(s, list(wanted), spellings)
    has_user: set[tuple[int, str]] = set()
    lift: list[TagRowData] = []
    for r in rows:
        canon = spellings[r.name]
        if canon not in wanted[r.image_id]:
            continue
        if r.source == USER and r.name == canon:
            has_user.add((r.image_id, canon))
        elif r.source == USER_REMOVED:
            lift.append(r)
    cs.delete_tags(lift)
    cs.insert_tags(
        [
            (image_id, name, USER)
            for image_id, names in wanted.items()
            for name in sorted(names)
            if (image_id, name) not in has_user
        ],
        category=category,
    )


def remove_from(s: Session, cs: ChangeSet, rules: TagRules, unwanted: dict[int, set[str]]) -> None:
    """Take tags off images: drop `user` rows, hide what models or implications give."""
    spellings = {sp: n for names in unwanted.values() for n in names for sp in rules.spellings(n)}
    rows = tag_rows(s, list(unwanted), spellings)
    drop: list[TagRowData] = []
    given: set[tuple[int, str]] = set()  # still given by a model, a sidecar or a rule
    hidden: set[tuple[int, str]] = set()
    for r in rows:
        canon = spellings[r.name]
        if canon not in unwanted[r.image_id]:
            continue
        key = (r.image_id, canon)
        if r.source == USER:
            drop.append(r)
        elif r.source == USER_REMOVED:
            hidden.add(key)
        else:
            given.add(key)
    implied_names = {t for targets in rules.implications.values() for t in targets}
    if any(names & implied_names for names in unwanted.values()):
        view = effective_tags(s, list(unwanted), rules=rules, implied=True)
        for image_id, tags in view.items():
            for t in tags:
                if t.name in unwanted[image_id] and t.sources == (IMPLIED,):
                    given.add((image_id, t.name))
    cs.delete_tags(drop)
    cs.insert_tags([(i, n, USER_REMOVED) for i, n in sorted(given - hidden)])


def add_tags(
    catalog: Catalog, query: str, tags: Iterable[str], *, category: str = "general"
) -> EditResult:
    """Add tags (as the user) to every image the query selects. Aliases are resolved."""
    with catalog.write() as s:
        rules = TagRules.load(s)
        names = canonical_names(rules, tags)
        banned = [n for n in names if n in rules.blacklist]
        if banned:
            raise UsageError(
                f"blacklisted: {', '.join(banned)} (`curator tags blacklist remove` first)"
            )
        ids = selected_ids(s, query)
        cs = ChangeSet(s)
        add_to(s, cs, rules, {i: set(names) for i in ids}, category)
        return cs.record(
            "tags.add",
            f"add {', '.join(names)} to {len(cs.images_touched)} of {len(ids)} images",
            query=query,
            tags=names,
        )


def remove_tags(catalog: Catalog, query: str, tags: Iterable[str]) -> EditResult:
    """Remove tags from every image the query selects; model tags stay hidden after re-runs."""
    with catalog.write() as s:
        rules = TagRules.load(s)
        names = canonical_names(rules, tags)
        ids = selected_ids(s, query)
        cs = ChangeSet(s)
        remove_from(s, cs, rules, {i: set(names) for i in ids})
        return cs.record(
            "tags.remove",
            f"remove {', '.join(names)} from {len(cs.images_touched)} of {len(ids)} images",
            query=query,
            tags=names,
        )


def replace_tags(catalog: Catalog, query: str, old: str, new: str) -> EditResult:
    """On the selected images that have `old`, remove it and add `new` (as the user)."""
    with catalog.write() as s:
        rules = TagRules.load(s)
        (old_name,) = canonical_names(rules, [old])
        (new_name,) = canonical_names(rules, [new])
        if old_name == new_name:
            raise UsageError(f"{old!r} and {new!r} are the same tag")
        if new_name in rules.blacklist:
            raise UsageError(f"blacklisted: {new_name}")
        ids = selected_ids(s, query)
        having = [
            image_id
            for image_id, tags in effective_tags(s, ids, rules=rules, implied=True).items()
            if any(t.name == old_name for t in tags)
        ]
        cs = ChangeSet(s)
        remove_from(s, cs, rules, {i: {old_name} for i in having})
        add_to(s, cs, rules, {i: {new_name} for i in having}, _category(s, old_name))
        return cs.record(
            "tags.replace",
            f"replace {old_name} with {new_name} on {len(having)} images",
            query=query,
            old=old_name,
            new=new_name,
        )


def _category(s: Session, name: str, default: str = "general") -> str:
    return s.scalar(select(Tag.category).where(Tag.name == name)) or default


def rename_rows(s: Session, cs: ChangeSet, old: str, new: str) -> int:
    """Move every row of tag `old` to tag `new`, sources, scores and runs kept."""
    rows = tag_rows(s, None, [old])
    if not rows:
        return 0
    images = sorted({r.image_id for r in rows})
    taken = {(r.image_id, r.source) for r in tag_rows(s, images, [new])}
    cs.delete_tags(rows)
    moved = [r for r in rows if (r.image_id, r.source) not in taken]
    cs.insert_tags(
        [(r.image_id, new, r.source) for r in moved],
        category=_category(s, new, rows[0].category),
        values={(r.image_id, new, r.source): (r.score, r.run_id) for r in moved},
    )
    return len(images)


def rename_tag(catalog: Catalog, old: str, new: str) -> EditResult:
    """Rename a tag on every image, whatever the source (a one-off rewrite of rows)."""
    with catalog.write() as s:
        rules = TagRules.load(s)
        old_name = normalize_tag(old)
        (new_name,) = canonical_names(rules, [new])
        if not old_name or old_name == new_name:
            raise UsageError(f"nothing to rename: {old!r} → {new_name!r}")
        cs = ChangeSet(s)
        count = rename_rows(s, cs, old_name, new_name)
        return cs.record(
            "tags.rename",
            f"rename {old_name} to {new_name} on {count} images",
            old=old_name,
            new=new_name,
        )


# --- history and undo ----------------------------------------------------------------


def history(catalog: Catalog, limit: int | None = 20) -> list[dict[str, Any]]:
    """The latest edits, newest first."""
    stmt = select(Edit).order_by(Edit.id.desc())
    if limit:
        stmt = stmt.limit(limit)
    with catalog.session() as s:
        return [_describe(e) for e in s.scalars(stmt)]


def _describe(e: Edit) -> dict[str, Any]:
    p = e.payload or {}
    return {
        "id": e.id,
        "at": e.at.isoformat(timespec="seconds"),
        "op": e.op,
        "summary": e.summary,
        "undone": e.undone,
        "tags_added": len(p.get("tags_inserted", [])),
        "tags_removed": len(p.get("tags_deleted", [])),
        "rules_changed": len(p.get("rules_inserted", [])) + len(p.get("rules_deleted", [])),
        "images_changed": len(p.get("images", [])),
    }


def undo(catalog: Catalog, count: int = 1) -> list[dict[str, Any]]:
    """Undo the last `count` edits not yet undone, newest first; returns what was undone."""
    if count < 1:
        raise UsageError("undo needs a count of at least 1")
    with catalog.write() as s:
        edits = s.scalars(
            select(Edit).where(Edit.undone.is_(False)).order_by(Edit.id.desc()).limit(count)
        ).all()
        for e in edits:
            _revert(s, e.payload or {})
            e.undone = True
        return [_describe(e) for e in edits]


def _revert(s: Session, p: dict[str, Any]) -> None:
    """Put back what an edit changed: its steps in reverse."""
    existing_images = _existing(s, Image.id, _image_ids_in(p))
    previous: dict[tuple[str, Any], list[int]] = defaultdict(list)
    for image_id, column, old, _new in p.get("images", []):
        if image_id not in existing_images or column not in IMAGE_COLUMNS:
            continue
        if column == "duplicate_of" and old is not None and old not in existing_images:
            old = None  # the keeper was deleted since; the FK would refuse it
        previous[(column, old)].append(image_id)
    for (column, old), image_ids in previous.items():
        for id_chunk in chunks(image_ids):
            s.execute(update(Image).where(Image.id.in_(id_chunk)).values({column: old}))

    inserted: dict[tuple[str, str], list[int]] = defaultdict(list)
    for image_id, name, source in p.get("tags_inserted", []):
        inserted[(name, source)].append(image_id)
    names = sorted({name for name, _ in inserted} | {r[1] for r in p.get("tags_deleted", [])})
    ids: dict[str, int] = {}
    for chunk in chunks(names):
        ids.update(s.execute(select(Tag.name, Tag.id).where(Tag.name.in_(chunk))).all())
    for (name, source), image_ids in inserted.items():
        if name in ids:
            _delete_keys(s, ids[name], source, image_ids)

    deleted = [r for r in p.get("tags_deleted", []) if r[0] in existing_images]
    if deleted:
        runs = _existing(s, Run.id, {r[5] for r in deleted if r[5] is not None})
        by_category: dict[str, list[str]] = defaultdict(list)
        for r in deleted:
            by_category[r[2]].append(r[1])
        for category, cat_names in by_category.items():
            ids.update(tag_ids(s, cat_names, category))
        # Rows written since under the same key (e.g. a model re-run) give way.
        keys: dict[tuple[str, str], list[int]] = defaultdict(list)
        for image_id, name, _cat, source, _score, _run in deleted:
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
                for image_id, name, _cat, source, score, run in deleted
            ],
        )

    for kind, tag, target in p.get("rules_inserted", []):
        s.execute(
            delete(TagRule).where(
                TagRule.kind == kind, TagRule.tag == tag, TagRule.target == target
            )
        )
    for kind, tag, target, at in p.get("rules_deleted", []):
        exists = s.scalar(
            select(TagRule.id).where(
                TagRule.kind == kind, TagRule.tag == tag, TagRule.target == target
            )
        )
        if exists is None:
            s.add(TagRule(kind=kind, tag=tag, target=target, at=_parse_time(at)))
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
