"""Past exports in the catalog: list them, and adjust one image's stored crop.

Every export records each image's bucket and crop (``export_items``). `set_crop` moves
one of those windows by hand; `curator.export.reexport` then renders the export again
with it, and the other images keep their crops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from curator.errors import UsageError
from curator.export.crops import Box, Crop, CropError
from db.engine import Catalog
from db.schema import Export, ExportItem, File, Image


@dataclass(frozen=True, slots=True)
class ExportRecord:
    """One past export: its id (for `reexport`), when, where, which layout, how many."""

    id: int
    at: str
    target: str
    layout: str
    query: str
    count: int
    exists: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "target": self.target,
            "layout": self.layout,
            "query": self.query,
            "count": self.count,
            "exists": self.exists,
        }


def list_exports(catalog: Catalog, limit: int | None = None) -> list[ExportRecord]:
    """Past exports, newest first; ``exists`` says whether the target folder is still there."""
    stmt = select(Export).order_by(Export.id.desc())
    if limit is not None:
        stmt = stmt.limit(limit)
    with catalog.session() as s:
        rows = s.scalars(stmt).all()
        return [
            ExportRecord(
                id=row.id,
                at=row.at.isoformat(timespec="seconds") if row.at else "",
                target=row.target,
                layout=row.format,
                query=row.query,
                count=row.count,
                exists=os.path.isdir(row.target),
            )
            for row in rows
        ]


def _find_item(s: Any, export_id: int, image: str) -> ExportItem:
    """An export's item by image id, sha256 prefix (4+), path in the export or file name."""
    items = s.scalars(select(ExportItem).where(ExportItem.export_id == export_id)).all()
    if not items:
        raise UsageError(f"export {export_id} has no images in the catalog")
    text = image.strip()
    by_image = {item.image_id: item for item in items}
    matches: list[ExportItem] = []
    if text.isdigit() and int(text) in by_image:
        matches = [by_image[int(text)]]
    if not matches:
        matches = [i for i in items if i.path == text or os.path.basename(i.path) == text]
    if not matches and len(text) >= 4 and all(c in "0123456789abcdefABCDEF" for c in text):
        hashes = dict(
            s.execute(select(Image.id, Image.sha256).where(Image.id.in_(list(by_image)))).all()
        )
        matches = [by_image[i] for i, h in hashes.items() if h.startswith(text.lower())]
    if not matches:
        paths = s.execute(
            select(File.image_id).where(
                File.image_id.in_(list(by_image)), File.path.endswith(os.sep + text)
            )
        ).scalars()
        matches = [by_image[i] for i in set(paths)]
    if not matches:
        raise UsageError(f"no image {text!r} in export {export_id}")
    if len(matches) > 1:
        raise UsageError(f"{text!r} matches {len(matches)} images in export {export_id}")
    return matches[0]


def set_crop(catalog: Catalog, export_id: int, image: str, box: Box) -> dict[str, Any]:
    """Set the stored crop of ``image`` in export ``export_id`` to the window ``box``.

    ``image`` is an image id, a content-hash prefix, the image's path in the export or
    its file name; ``box`` is (x, y, width, height) in source pixels of the image as
    displayed. Returns the stored crop (`Crop.to_dict`). Takes effect at the next
    `reexport` of that export.
    """
    with catalog.write() as s:
        if s.get(Export, export_id) is None:
            raise UsageError(f"no export {export_id} in the catalog")
        item = _find_item(s, export_id, image)
        img = s.get(Image, item.image_id)
        if img is None or not img.width or not img.height:
            raise UsageError(f"image {image!r} has no known size")
        try:
            crop = Crop.around((img.width, img.height), (item.bucket_w, item.bucket_h), box)
        except CropError as error:
            raise UsageError(str(error)) from None
        item.crop = crop.to_dict()
        return dict(item.crop)
