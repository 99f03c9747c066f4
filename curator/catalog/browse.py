"""Browsing a query's images by position, as a review screen scrolls them.

A `Listing` answers "rows 500,000 to 500,050 of this query" without reading the
rows before them: pages are found by id (`page_ids`' keyset plan) from the nearest
page already seen, or counted back from the end, so first paint, stepping, paging
and jumping to either end cost one small read each. Only the pages on screen are
kept.

Also here: one image's full detail, tag suggestions for autocompletion, a preview
thumbnail, and tag/review edits of chosen images (by id) recorded as undoable edits
exactly like the query-wide ones in `curator.curation`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from curator.catalog.imageinfo import image_report, top_tags
from curator.curation.edits import (
    EditResult,
    add_tags,
    canonical_names,
    remove_tags,
)
from curator.curation.review import set_status
from curator.progress import CancelToken, Reporter
from curator.query.compile import compile_query, page_statement
from curator.runs.loop import RunOptions, RunSummary, run_models
from curator.tags.view import USER_REMOVED, TagRules, effective_tags
from db.engine import Catalog
from db.schema import File, Image, ImageTag, Score, Tag

PAGE = 100
KEEP_PAGES = 64  # pages held in memory: a few screens either way of each place visited
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
    when first asked for; `refresh()` forgets them so changes by anyone show.
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
        self.where: ColumnElement[bool] = compile_query(self.query, base=base)
        self._count: int | None = None
        # page index → id of the last image before that page (keyset start).
        self._after: dict[int, int] = {0: 0}
        self._pages: OrderedDict[int, list[ImageRow]] = OrderedDict()

    def refresh(self) -> None:
        self._count = None
        self._after = {0: 0}
        self._pages.clear()

    def count(self) -> int:
        if self._count is None:
            with self.catalog.session() as s:
                stmt = select(func.count()).select_from(Image).where(self.where)
                self._count = s.execute(stmt).scalar_one()
        return self._count

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

    def position_of(self, image_id: int) -> int | None:
        """Where an image stands in the list, or None when the query does not select it."""
        with self.catalog.session() as s:
            hit = s.scalar(select(Image.id).where(self.where, Image.id == image_id))
            if hit is None:
                return None
            stmt = select(func.count()).select_from(Image).where(self.where, Image.id < image_id)
            return s.execute(stmt).scalar_one()

    # -- pages ---------------------------------------------------------------------

    def _page(self, index: int) -> list[ImageRow]:
        page = self._pages.get(index)
        if page is not None:
            self._pages.move_to_end(index)
            return page
        with self.catalog.session() as s:
            ids = self._page_ids(s, index)
            page = rows_for(s, ids, score=self.score)
        if ids:
            self._after[index + 1] = ids[-1]
            if index > 0 and index not in self._after:
                self._after[index] = ids[0] - 1
        self._pages[index] = page
        while len(self._pages) > KEEP_PAGES:
            self._pages.popitem(last=False)
        return page

    def _page_ids(self, s: Session, index: int) -> list[int]:
        known = max(i for i in self._after if i <= index)
        forward = (index - known) * PAGE
        backward = max(self.count() - (index + 1) * PAGE, 0)
        if forward <= backward:
            stmt = page_statement(
                s, self.query, limit=PAGE, after_id=self._after[known], base=self.base
            )
            return list(s.execute(stmt.offset(forward)).scalars())
        size = min(PAGE, self.count() - index * PAGE)
        stmt: Select = (
            select(Image.id)
            .where(self.where)
            .order_by(Image.id.desc())
            .offset(backward)
            .limit(size)
        )
        return sorted(s.execute(stmt).scalars())


def rows_for(s: Session, ids: Sequence[int], *, score: str = DEFAULT_SCORE) -> list[ImageRow]:
    """List rows of these images, in the order given."""
    if not ids:
        return []
    images = {
        r.id: r
        for r in s.execute(
            select(
                Image.id,
                Image.bytes,
                Image.width,
                Image.height,
                Image.status,
                Image.duplicate_of,
            ).where(Image.id.in_(ids))
        )
    }
    paths: dict[int, tuple[bool, str]] = {}
    for image_id, path, present in s.execute(
        select(File.image_id, File.path, File.present)
        .where(File.image_id.in_(ids))
        .order_by(File.id)
    ):
        best = paths.get(image_id)
        if best is None or (present and not best[0]):
            paths[image_id] = (bool(present), path)
    scores = dict(
        s.execute(
            select(Score.image_id, Score.value).where(Score.name == score, Score.image_id.in_(ids))
        ).all()
    )
    tags = effective_tags(s, ids)
    out = []
    for image_id in ids:
        image = images.get(image_id)
        if image is None:  # deleted since the ids were read
            continue
        path = paths.get(image_id, (False, None))[1]
        out.append(
            ImageRow(
                id=image_id,
                name=os.path.basename(path) if path else f"#{image_id}",
                path=path,
                bytes=image.bytes,
                width=image.width,
                height=image.height,
                status=image.status,
                tags=len(tags.get(image_id, ())),
                score=scores.get(image_id),
                duplicate_of=image.duplicate_of,
            )
        )
    return out


# -- one image ----------------------------------------------------------------------


def source_kind(source: str) -> str:
    """Who gave a tag: `person`, `sidecar`, `model NAME`, `rule`."""
    if source == "user":
        return "person"
    if source.startswith("model:"):
        return f"model {source[6:]}"
    if source == "implied":
        return "rule"
    return source


def image_detail(catalog: Catalog, image_id: int) -> dict[str, Any] | None:
    """Everything a review screen shows of one image, or None when it is gone.

    `image_report`'s fields, plus `bytes`, tags grouped by category (`tag_groups`), the
    generation's raw infotext and extras, and the duplicate group (`duplicates`:
    keeper first, or None).
    """
    with catalog.session() as s:
        image = s.get(Image, image_id)
        if image is None:
            return None
        report = image_report(s, image_id)
        report["bytes"] = image.bytes
        groups: dict[str, list[dict[str, Any]]] = {}
        for tag in report["tags"]:
            tag["given_by"] = [source_kind(src) for src in tag["sources"]]
            groups.setdefault(tag["category"], []).append(tag)
        report["tag_groups"] = groups
        keeper = image.duplicate_of
        if keeper is None:
            has_copies = s.scalar(select(Image.id).where(Image.duplicate_of == image_id).limit(1))
            keeper = image_id if has_copies is not None else None
        report["duplicates"] = None
        if keeper is not None:
            members = [
                keeper,
                *s.scalars(select(Image.id).where(Image.duplicate_of == keeper).order_by(Image.id)),
            ]
            rows = {r.id: r for r in rows_for(s, members)}
            report["duplicates"] = [
                {
                    "id": i,
                    "keeper": i == keeper,
                    "name": rows[i].name if i in rows else f"#{i}",
                    "status": rows[i].status if i in rows else "",
                    "size": f"{rows[i].width}x{rows[i].height}" if i in rows else "",
                }
                for i in members
            ]
        return report


def tag_suggestions(catalog: Catalog, prefix: str, *, limit: int = 8) -> list[tuple[str, str, int]]:
    """(name, category, images) of catalog tags starting with `prefix`, most used first.

    Reads at most a few dozen tags by name (the unique index on tags.name) and
    counts each one's images through the tag's own index range.
    """
    prefix = prefix.strip().replace(" ", "_")
    if not prefix:
        return []
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    with catalog.session() as s:
        candidates = s.execute(
            select(Tag.id, Tag.name, Tag.category)
            .where(Tag.name >= prefix, Tag.name < upper)
            .order_by(Tag.name)
            .limit(limit * 5)
        ).all()
        out = []
        for tag_id, name, category in candidates:
            images = s.execute(
                select(func.count(func.distinct(ImageTag.image_id))).where(
                    ImageTag.tag_id == tag_id, ImageTag.source != USER_REMOVED
                )
            ).scalar_one()
            out.append((name, category, images))
    out.sort(key=lambda t: (-t[2], t[0]))
    return out[:limit]


def tag_counts(catalog: Catalog, query: str = "", *, limit: int = 100) -> list[dict[str, Any]]:
    """`top_tags` over the images a query selects: name, category, images."""
    with catalog.session() as s:
        return top_tags(s, where=query or None, limit=limit)


def run_named_models(
    catalog: Catalog,
    specs: Sequence[str],
    query: str,
    kind: str,
    reporter: Reporter | None = None,
    cancel: CancelToken | None = None,
) -> list[RunSummary]:
    """`curator tag -m SPEC --where QUERY` / `curator detect NAME` as one call."""
    from taggers.factory import load_model

    models = [load_model(spec) for spec in dict.fromkeys(specs)]
    options = RunOptions(where=query or None, reporter=reporter, cancel=cancel)
    return run_models(catalog, models, options, kind=kind)


def canonical_tag(catalog: Catalog, name: str) -> str:
    """The name an edit would store for a typed tag (spacing and aliases resolved)."""
    with catalog.session() as s:
        return canonical_names(TagRules.load(s), [name])[0]


def preview(path: str, max_side: int = 768) -> Any:
    """An RGB PIL thumbnail of an image file for display (the file is only read)."""
    from PIL import Image as PILImage
    from PIL import ImageOps

    from taggers.pixels import to_rgb

    with PILImage.open(path) as im:
        im.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale
        im = ImageOps.exif_transpose(im)
        im.thumbnail((max_side, max_side))
        return to_rgb(im, (0, 0, 0))


# -- edits of chosen images ---------------------------------------------------------


def tag_images(
    catalog: Catalog, image_ids: Iterable[int], tags: Iterable[str], *, category: str = "general"
) -> EditResult:
    """`add_tags` for images chosen by id: one undoable edit."""
    return add_tags(catalog, None, tags, category=category, image_ids=image_ids)


def untag_images(catalog: Catalog, image_ids: Iterable[int], tags: Iterable[str]) -> EditResult:
    """`remove_tags` for images chosen by id: one undoable edit."""
    return remove_tags(catalog, None, tags, image_ids=image_ids)


def review_images(catalog: Catalog, image_ids: Iterable[int], status: str) -> EditResult:
    """`set_status` for images chosen by id: one undoable edit."""
    return set_status(catalog, None, status, image_ids=image_ids)


__all__ = [
    "canonical_tag",
    "ImageRow",
    "Listing",
    "image_detail",
    "preview",
    "review_images",
    "rows_for",
    "run_named_models",
    "source_kind",
    "tag_counts",
    "tag_images",
    "tag_suggestions",
    "untag_images",
]
