"""Browsing a query's images by position, as a review screen scrolls them.

A `Listing` answers "rows 500,000 to 500,050 of this query" without reading the
rows before them: pages are found by id (`page_ids`' keyset plan) from the nearest
page already seen, or counted back from the end, so first paint, stepping, paging
and jumping to either end cost one small read each. Only the pages near the places
visited are kept.

A screen that must never wait on the catalog reads rows with `peek` (memory only)
and has the pages it lacks read with `load_pages` on another thread; `row` reads
what it lacks at once. Both are safe to call from several threads. The pages at
either end, once read, stay in memory, so jumping to the first or last image never
waits on a read.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, Integer, Select, bindparam, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter

from curator.query.compile import compile_query, page_statement
from curator.tags.view import USER_REMOVED, TagRules
from db.engine import Catalog
from db.schema import File, Image, ImageTag, Score, Tag

PAGE = 100
KEEP_PAGES = 64  # pages held in memory: a few screens either way of each place visited
END_PAGES = 4  # pages at each end kept whatever else is read: first and last are one key away
DEFAULT_SCORE = "aesthetic"


@dataclass(frozen=True, slots=True)
class ImageRow:
    """One line of a review list."""

    id: int
    name: str  # file name of the first present file (else of any file)
    path: str | None
    bytes: int
    width: int
    height: int
    status: str
    tags: int  # effective tags
    score: float | None
    duplicate_of: int | None


class Listing:
    """The images a query selects, in id order, read by position a page at a time.

    Raises `QueryError` for a query that does not parse. The count and pages are read
    when first asked for; `refresh()` forgets them so changes by anyone show. Images
    added or deleted meanwhile show after a refresh: until then a deleted image's row
    is skipped (its page is one shorter) and an added one is not listed.
    """

    def __init__(
        self,
        catalog: Catalog,
        query: str = "",
        *,
        score: str = DEFAULT_SCORE,
        base: str | None = None,
    ):
        self.catalog = catalog
        self.query = query.strip()
        self.score = score
        self.base = base
        compile_query(self.query, base=base)  # a query that does not parse fails here
        self._lock = threading.Lock()  # guards the fields below; held only briefly
        self._read_lock = threading.Lock()  # one read of the catalog at a time, none twice
        self._rules: TagRules | None = None
        self._where: ColumnElement[bool] | None = None
        self._count: int | None = None
        self._forward: Select | None = None  # the statement reading a page forward
        # page index → id of the last image before that page (keyset start).
        self._after: dict[int, int] = {0: 0}
        self._pages: OrderedDict[int, list[ImageRow]] = OrderedDict()

    def refresh(self) -> None:
        with self._lock:
            self._rules = self._where = self._count = self._forward = None
            self._after = {0: 0}
            self._pages.clear()

    # -- what the query means ------------------------------------------------------

    def _meaning(self, s: Session) -> tuple[TagRules, ColumnElement[bool]]:
        """The catalog's tag rules and the query with them written into the SQL (the
        fastest form of `compile_query`), read once per listing."""
        rules, where = self._rules, self._where
        if rules is None or where is None:
            rules = TagRules.load(s)
            where = compile_query(self.query, base=self.base, rules=rules)
            with self._lock:
                self._rules, self._where = rules, where
        return rules, where

    def count(self) -> int:
        count = self._count
        if count is None:
            with self._read_lock:  # another thread may be counting: wait for its answer
                count = self._count
                if count is None:
                    with self.catalog.session() as s:
                        _, where = self._meaning(s)
                        stmt = select(func.count()).select_from(Image).where(where)
                        count = s.execute(stmt).scalar_one()
                    with self._lock:
                        self._count = count
        return count

    # -- rows by position ----------------------------------------------------------

    def peek(self, position: int) -> ImageRow | None:
        """The row at `position` if its page is in memory (never reads the catalog)."""
        with self._lock:
            page = self._pages.get(position // PAGE) if position >= 0 else None
        offset = position % PAGE
        return page[offset] if page is not None and offset < len(page) else None

    def row(self, position: int) -> ImageRow | None:
        if position < 0 or position >= self.count():
            return None
        page = self._page(position // PAGE)
        offset = position % PAGE
        return page[offset] if offset < len(page) else None

    def rows(self, start: int, stop: int) -> list[ImageRow]:
        out: list[ImageRow] = []
        for position in range(max(start, 0), min(stop, self.count())):
            row = self.row(position)
            if row is not None:
                out.append(row)
        return out

    def pages_of(self, start: int, stop: int) -> list[int]:
        """Indexes of the pages holding positions `start` to `stop` - 1 (clipped to the list)."""
        start, stop = max(start, 0), min(stop, self.count())
        if start >= stop:
            return []
        return list(range(start // PAGE, (stop - 1) // PAGE + 1))

    def missing(self, pages: Iterable[int]) -> list[int]:
        """Those of `pages` not in memory."""
        with self._lock:
            return [p for p in pages if p not in self._pages]

    def load_pages(self, pages: Iterable[int]) -> list[int]:
        """Read these pages if they are not in memory; the pages read."""
        read = []
        for index in pages:
            if index < 0 or index * PAGE >= self.count():
                continue
            with self._lock:
                held = index in self._pages
            if not held:
                self._page(index)
                read.append(index)
        return read

    def position_of(self, image_id: int) -> int | None:
        """Where an image stands in the list, or None when the query does not select it."""
        with self.catalog.session() as s:
            _, where = self._meaning(s)
            hit = s.scalar(select(Image.id).where(where, Image.id == image_id))
            if hit is None:
                return None
            stmt = select(func.count()).select_from(Image).where(where, Image.id < image_id)
            return s.execute(stmt).scalar_one()

    # -- pages ---------------------------------------------------------------------

    def _held(self, index: int) -> list[ImageRow] | None:
        with self._lock:
            page = self._pages.get(index)
            if page is not None:
                self._pages.move_to_end(index)
            return page

    def _page(self, index: int) -> list[ImageRow]:
        page = self._held(index)
        if page is not None:
            return page
        self.count()
        with self._read_lock:
            page = self._held(index)  # read by another thread meanwhile
            if page is not None:
                return page
            with self.catalog.session() as s:
                rules, _ = self._meaning(s)
                ids = self._page_ids(s, index)
                page = rows_for(s, ids, score=self.score, rules=rules)
            self._keep(index, ids, page)
        return page

    def _keep(self, index: int, ids: list[int], page: list[ImageRow]) -> None:
        with self._lock:
            if ids:
                self._after[index + 1] = ids[-1]
                if index > 0 and index not in self._after:
                    self._after[index] = ids[0] - 1
            self._pages[index] = page
            if len(self._pages) > KEEP_PAGES:
                self._evict()

    def _evict(self) -> None:
        """Forget the least recently used pages beyond KEEP_PAGES, except the ends'
        (called with `_lock` held)."""
        count = self._count or 0
        last = (count - 1) // PAGE if count else 0
        extra = len(self._pages) - KEEP_PAGES
        for index in list(self._pages):
            if extra <= 0:
                break
            if index < END_PAGES or index > last - END_PAGES:
                continue
            del self._pages[index]
            extra -= 1

    def _page_ids(self, s: Session, index: int) -> list[int]:
        with self._lock:
            known = max(i for i in self._after if i <= index)
            after = self._after[known]
        forward = (index - known) * PAGE
        backward = max(self.count() - (index + 1) * PAGE, 0)
        if forward <= backward:
            stmt = self._forward
            if stmt is None:
                # Planned once per listing (parsing, tag ids and the plan's sampling cost
                # more than reading a page), the keyset start left as a parameter.
                stmt = _keyset_parameter(
                    page_statement(s, self.query, limit=PAGE, after_id=_MARK, base=self.base)
                )
                with self._lock:
                    self._forward = stmt
            return list(s.execute(stmt.offset(forward), {"after": after}).scalars())
        _, where = self._meaning(s)
        size = min(PAGE, self.count() - index * PAGE)
        stmt: Select = (
            select(Image.id).where(where).order_by(Image.id.desc()).offset(backward).limit(size)
        )
        return sorted(s.execute(stmt).scalars())


# A keyset start no image id equals (ids are positive), so the statement built with it
# reads from the first image and its parameter can be found to be made a named one.
_MARK = -(2**31) + 7


def _keyset_parameter(stmt: Select) -> Select:
    """`stmt` with its keyset start a parameter named "after"."""

    def swap(element: object) -> object | None:
        if isinstance(element, BindParameter) and element.value == _MARK:
            return bindparam("after", type_=Integer)
        return None

    return visitors.replacement_traverse(stmt, {}, swap)


def rows_for(
    s: Session,
    ids: Sequence[int],
    *,
    score: str = DEFAULT_SCORE,
    rules: TagRules | None = None,
) -> list[ImageRow]:
    """List rows of these images, in the order given (images gone meanwhile are left out).

    Two reads through the driver's own cursor (plain tuples, fetched in one call): the
    images with their first present file and chosen score, and the raw tag rows that
    `effective_tag_counts` counts. A page is read on a thread beside the screen's, and
    building a SQLAlchemy row per tag row held the interpreter lock long enough to
    slow the screen's paint.
    """
    if not ids:
        return []
    conn = s.connection()
    images = {r[0]: r for r in _image_rows(conn, ids, score)}
    tags = effective_tag_counts(conn, ids, rules if rules is not None else TagRules.load(s))
    out = []
    for image_id in ids:
        image = images.get(image_id)
        if image is None:  # deleted since the ids were read
            continue
        _, size, width, height, status, duplicate_of, path, value = image
        out.append(
            ImageRow(
                id=image_id,
                name=os.path.basename(path) if path else f"#{image_id}",
                path=path,
                bytes=size,
                width=width,
                height=height,
                status=status,
                tags=tags.get(image_id, 0),
                score=value,
                duplicate_of=duplicate_of,
            )
        )
    return out


def _marker(conn: Connection) -> str | None:
    """The driver's positional parameter marker (SQLite's qmark, psycopg's format)."""
    return {"qmark": "?", "format": "%s"}.get(conn.dialect.paramstyle)


def _raw(conn: Connection, sql: str, params: Sequence[object]) -> list[tuple]:
    """Rows of `sql` as the driver's tuples, all fetched in one call."""
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(sql, tuple(params))
        return cursor.fetchall()
    finally:
        cursor.close()


def _image_rows(conn: Connection, ids: Sequence[int], score: str) -> list[tuple]:
    """(id, bytes, width, height, status, duplicate_of, first file's path, score) of each
    image still there."""
    marker = _marker(conn)
    if marker is not None:
        i, f, sc = Image.__table__.name, File.__table__.name, Score.__table__.name
        sql = (
            f"SELECT {i}.id, {i}.bytes, {i}.width, {i}.height, {i}.status, {i}.duplicate_of,"
            f" (SELECT {f}.path FROM {f} WHERE {f}.image_id = {i}.id"
            f" ORDER BY {f}.present DESC, {f}.id LIMIT 1),"
            f" (SELECT {sc}.value FROM {sc} WHERE {sc}.image_id = {i}.id"
            f" AND {sc}.name = {marker} LIMIT 1)"
            f" FROM {i} WHERE {i}.id IN ({', '.join([marker] * len(ids))})"
        )
        return _raw(conn, sql, [score, *ids])
    first_file = (
        select(File.path)
        .where(File.image_id == Image.id)
        .order_by(File.present.desc(), File.id)
        .limit(1)
        .scalar_subquery()
    )
    chosen = (
        select(Score.value)
        .where(Score.image_id == Image.id, Score.name == score)
        .limit(1)
        .scalar_subquery()
    )
    columns = (Image.id, Image.bytes, Image.width, Image.height, Image.status)
    stmt = select(*columns, Image.duplicate_of, first_file, chosen)
    return [tuple(r) for r in conn.execute(stmt.where(Image.id.in_(ids)))]


def effective_tag_counts(
    db: Session | Connection, ids: Sequence[int], rules: TagRules
) -> dict[int, int]:
    """image id → how many effective tags it has: `len(effective_tags(...)[id])` (without
    implied tags), counted from raw rows without building each tag's row."""
    conn = db.connection() if isinstance(db, Session) else db
    marker = _marker(conn)
    it, t = ImageTag.__table__.name, Tag.__table__.name
    present: dict[int, set[str]] = {}
    removed: set[tuple[int, str]] = set()
    canonical = rules.canonical
    for start in range(0, len(ids), 900):
        chunk = ids[start : start + 900]
        if marker is None:
            rows: Iterable[tuple] = conn.execute(
                select(ImageTag.image_id, Tag.name, ImageTag.source)
                .join(Tag, Tag.id == ImageTag.tag_id)
                .where(ImageTag.image_id.in_(chunk))
            )
        else:
            rows = _raw(
                conn,
                f"SELECT {it}.image_id, {t}.name, {it}.source FROM {it}"
                f" JOIN {t} ON {t}.id = {it}.tag_id"
                f" WHERE {it}.image_id IN ({', '.join([marker] * len(chunk))})",
                chunk,
            )
        for image_id, raw_name, source in rows:
            name = canonical(raw_name)
            if source == USER_REMOVED:
                removed.add((image_id, name))
            else:
                present.setdefault(image_id, set()).add(name)
    blacklist = rules.blacklist
    return {
        image_id: sum(1 for n in names if n not in blacklist and (image_id, n) not in removed)
        for image_id, names in present.items()
    }


__all__ = [
    "DEFAULT_SCORE",
    "END_PAGES",
    "PAGE",
    "ImageRow",
    "Listing",
    "effective_tag_counts",
    "rows_for",
]
