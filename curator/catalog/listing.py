"""Listing the images a query selects: what `curator ls` prints and the review app pages."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from curator.query.compile import compile_query, page_ids
from curator.tags.view import TagRules
from db.engine import Catalog
from db.schema import File, Image


def list_images(
    catalog: Catalog,
    query: str = "",
    *,
    missing: bool = False,
    limit: int | None = None,
    after: int = 0,
) -> list[dict[str, Any]]:
    """Files of the images `query` selects: path, id, sha256, width, height, format.

    Without `limit`, every match in path order. With `limit`, the first `limit`
    images with an id above `after`, in id order (fast on any catalog size: give the
    last id seen as `after` for the next page). `missing` lists files no longer on disk.
    """
    stmt = (
        select(File.path, Image.id, Image.sha256, Image.width, Image.height, Image.format)
        .join(Image, File.image_id == Image.id)
        .where(File.present.is_(not missing))
    )
    with catalog.session() as s:
        if limit is None:
            stmt = stmt.where(compile_query(query, rules=TagRules.load(s))).order_by(File.path)
        else:
            ids = page_ids(s, query, limit=limit, after_id=after)
            stmt = stmt.where(Image.id.in_(ids)).order_by(Image.id, File.path)
        return [r._asdict() for r in s.execute(stmt)]
