"""Files that could not be catalogued, and what decoders warned about the ones that were.

`list_problems` is what `curator problems` prints and what the review app shows.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import select

from db.engine import Catalog
from db.schema import File, Image, Problem

WARNING = "warning"  # the kind a decoder warning is listed under


@dataclass(frozen=True, slots=True)
class ProblemEntry:
    """One problem row, or one decoder warning kept with a catalogued image."""

    path: str
    kind: str
    message: str
    seen_at: datetime | None = None
    image_id: int | None = None  # for warnings: the image they were kept with

    def as_dict(self) -> dict:
        return asdict(self)


def _under(column, folder: str):  # noqa: ANN001, ANN202
    folder = os.path.abspath(folder).rstrip(os.sep)
    return (column == folder) | column.startswith(folder + os.sep, autoescape=True)


def list_problems(
    catalog: Catalog,
    kind: str | None = None,
    warnings: bool = False,
    folder: str | None = None,
) -> list[ProblemEntry]:
    """Problems (files that could not be read, and why), sorted by path.

    ``warnings`` adds what decoders warned about while reading catalogued images
    ("Corrupt EXIF data", ...), one entry per warning and present file, kind
    ``warning``; ``kind="warning"`` lists only those. ``folder`` keeps what lies under it.
    """
    entries: list[ProblemEntry] = []
    with catalog.session() as s:
        if kind != WARNING:
            stmt = select(Problem)
            if kind:
                stmt = stmt.where(Problem.kind == kind)
            if folder:
                stmt = stmt.where(_under(Problem.path, folder))
            entries.extend(
                ProblemEntry(p.path, p.kind, p.message, p.seen_at) for p in s.scalars(stmt)
            )
        if warnings or kind == WARNING:
            stmt = (
                select(File.path, Image.id, Image.warnings, File.last_seen)
                .join(Image, Image.id == File.image_id)
                .where(Image.warnings.is_not(None), File.present.is_(True))
            )
            if folder:
                stmt = stmt.where(_under(File.path, folder))
            for path, image_id, messages, seen in s.execute(stmt):
                entries.extend(
                    ProblemEntry(path, WARNING, str(m), seen, image_id) for m in messages or ()
                )
    entries.sort(key=lambda e: (e.path, e.kind == WARNING, e.message))
    return entries
