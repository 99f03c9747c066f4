"""`ChangeSet`: changes made in one write transaction, noted so that they can be undone.

A change set makes each change and notes the rows it deleted (in full: image, tag,
category, source, score, run), the rows it inserted (in full as well, so a redo can
write them again) and the image values it overwrote. `record()` stores that as one
`edits` row in the same transaction, with who made it, so the catalog and its
history never disagree.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from curator.query.compile import compile_query
from curator.tags.store import tag_ids
from db.schema import Caption, Edit, Image, ImageTag, Tag, TagRule
from db.upsert import insert_new

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


@dataclass(frozen=True, slots=True)
class Author:
    """Who made an edit: `undo` and `redo` take the caller's own edits first."""

    user: str
    host: str
    pid: int

    @classmethod
    def current(cls) -> Author:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry and no $USER (some containers)
            user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
        return cls(user=user, host=socket.gethostname(), pid=os.getpid())

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}"


def chunks(seq: Sequence, n: int = CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def chosen_ids(
    session: Session, query: str | None, image_ids: Iterable[int] | None = None
) -> tuple[list[int], dict[str, Any]]:
    """The images an edit applies to, and how they were chosen (for its history entry).

    ``image_ids`` (as the review app picks them) wins over ``query``; ids no longer in
    the catalog are dropped.
    """
    if image_ids is None:
        return selected_ids(session, query), {"query": query}
    wanted = sorted(set(image_ids))
    found: set[int] = set()
    for chunk in chunks(wanted):
        found.update(session.scalars(select(Image.id).where(Image.id.in_(chunk))))
    ids = [i for i in wanted if i in found]
    return ids, {"image_ids": ids}


def selected_ids(session: Session, query: str | None) -> list[int]:
    """Ids of the images a query string selects ('' selects every image)."""
    return list(
        session.scalars(select(Image.id).where(compile_query(query, db=session)).order_by(Image.id))
    )


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
        self._captions: dict[tuple[int, str, str], list[Any]] = {}
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
            cat = category if isinstance(category, str) else category.get(name, "general")
            self._tags_inserted[key] = [image_id, name, source, cat, row_score, run_id]
            self.images_touched.add(image_id)
        self.session.execute(insert(ImageTag), params)
        return len(rows)

    # --- rules ---

    def add_rule(self, kind: str, tag: str, target: str = "") -> bool:
        # Insert-if-absent: the same rule added from two machines at once is one rule.
        row = {"kind": kind, "tag": tag, "target": target}
        if insert_new(self.session, TagRule.__table__, row, list(row)) is None:
            return False
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

    # --- captions ---

    def set_caption(self, image_id: int, kind: str, source: str, text: str | None) -> bool:
        """Write (or with ``text`` None, delete) one caption; True when it changed."""
        row = self.session.scalar(
            select(Caption).where(
                Caption.image_id == image_id, Caption.kind == kind, Caption.source == source
            )
        )
        old = row.text if row is not None else None
        if old == text:
            return False
        if row is None:
            self.session.add(Caption(image_id=image_id, kind=kind, source=source, text=text))
        elif text is None:
            self.session.delete(row)
        else:
            row.text = text
        self.session.flush()
        noted = self._captions.setdefault(
            (image_id, kind, source), [image_id, kind, source, old, text]
        )
        noted[4] = text
        self.images_touched.add(image_id)
        return True

    # --- recording ---

    @property
    def empty(self) -> bool:
        return not (
            self._tags_deleted
            or self._tags_inserted
            or self._rules_deleted
            or self._rules_inserted
            or any(old != new for _, _, old, new in self._images.values())
            or any(old != new for *_, old, new in self._captions.values())
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
            "captions": [v for v in self._captions.values() if v[3] != v[4]],
        }

    def record(
        self, op: str, summary: str, *, author: Author | None = None, **info: Any
    ) -> EditResult:
        """Store the edit (nothing when nothing changed) and say what it did."""
        added, removed = self.counts
        result = EditResult(op, summary, None, len(self.images_touched), added, removed)
        if self.empty:
            return result
        who = author or Author.current()
        edit = Edit(
            op=op,
            summary=summary,
            payload={**self.payload(), "info": info},
            user=who.user,
            host=who.host,
            pid=who.pid,
        )
        self.session.add(edit)
        self.session.flush()
        result.edit_id = edit.id
        return result
