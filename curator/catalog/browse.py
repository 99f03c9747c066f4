"""What a review screen reads and writes besides its list (`curator.catalog.paging`,
re-exported here): one image's full detail, tag suggestions for autocompletion, a preview
thumbnail, and tag/review edits of chosen images (by id) recorded as undoable edits
exactly like the query-wide ones in `curator.curation`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select

from curator.catalog.imageinfo import image_report, top_tags
from curator.catalog.paging import DEFAULT_SCORE, PAGE, ImageRow, Listing, rows_for
from curator.curation.edits import (
    EditResult,
    add_tags,
    canonical_names,
    remove_tags,
)
from curator.curation.review import set_status
from curator.progress import CancelToken, Reporter
from curator.runs.loop import RunOptions, RunSummary, run_models
from curator.tags.view import USER_REMOVED, TagRules
from db.engine import Catalog
from db.schema import Image, ImageTag, Tag

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
    "DEFAULT_SCORE",
    "PAGE",
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
