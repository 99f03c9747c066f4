"""Descriptions from the catalog: gather what is known, compose, store, write files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from curator.catalog.imageinfo import resolve_image
from curator.describe.compose import Facts, describe
from curator.describe.metadata import write_description
from curator.errors import UsageError
from curator.query.compile import compile_query
from curator.tags.store import set_caption
from curator.tags.view import effective_tags
from db.engine import Catalog
from db.schema import Caption, Detection, File, Image, Processed, Score

SOURCE = "describe"
KIND = "description"
# Caption kinds a description starts from, best first.
CAPTION_KINDS = ("caption", "interrogation")


@dataclass(slots=True)
class Described:
    image_id: int
    path: str | None
    text: str
    written: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "path": self.path,
            "description": self.text,
            "written": self.written,
        }


def _caption(s: Session, image_id: int) -> str | None:
    rows = s.execute(
        select(Caption.kind, Caption.text)
        .where(Caption.image_id == image_id, Caption.kind.in_(CAPTION_KINDS))
        .order_by(Caption.id.desc())
    ).all()
    for kind in CAPTION_KINDS:
        for row_kind, text in rows:
            if row_kind == kind and text.strip():
                # An interrogation prompt starts with its caption; the terms after it
                # are for image models, not for people.
                return text.split(", ")[0] if kind == "interrogation" else text
    return None


def facts_for(s: Session, image_id: int) -> Facts:
    tags = effective_tags(s, [image_id])[image_id]
    texts = s.scalars(
        select(Detection.text)
        .where(Detection.image_id == image_id, Detection.detector == "text")
        .order_by(Detection.y, Detection.x)
    ).all()
    faces_done = s.scalar(
        select(Processed.id).where(Processed.image_id == image_id, Processed.model == "faces")
    )
    faces = None
    if faces_done is not None:
        faces = len(
            s.scalars(
                select(Detection.id).where(
                    Detection.image_id == image_id, Detection.detector == "faces"
                )
            ).all()
        )
    elif (
        score := s.scalar(
            select(Score.value).where(Score.image_id == image_id, Score.name == "faces")
        )
    ) is not None:
        faces = int(score)
    return Facts(
        caption=_caption(s, image_id),
        tags=[(t.name, t.category, t.score) for t in tags],
        texts=[t for t in texts if t],
        faces=faces,
    )


def _first_path(s: Session, image_id: int) -> str | None:
    return s.scalar(
        select(File.path)
        .where(File.image_id == image_id, File.present.is_(True))
        .order_by(File.id)
        .limit(1)
    )


def describe_images(
    catalog: Catalog,
    images: list[str] | None = None,
    *,
    where: str | None = None,
    length: str = "short",
    store: bool = True,
    write_metadata: bool = False,
    in_place: bool = False,
    output_dir: Path | None = None,
) -> list[Described]:
    """Describe images given by path/sha256/id, or all that match `where`.

    Each description is stored as a caption of kind `description`; with
    `write_metadata` it is also written into a copy of the file (or the file
    itself with `in_place`).
    """
    if images and where is not None:
        raise UsageError("give images or --where, not both")
    if in_place and not write_metadata:
        raise UsageError("--in-place only applies with --write-metadata")
    with catalog.session() as s:
        if images:
            ids = list(dict.fromkeys(resolve_image(s, ref) for ref in images))
        else:
            ids = list(s.scalars(select(Image.id).where(compile_query(where)).order_by(Image.id)))
        results = [Described(i, _first_path(s, i), describe(facts_for(s, i), length)) for i in ids]
    if store and results:
        with catalog.write() as s:
            for r in results:
                set_caption(s, r.image_id, r.text, kind=KIND, source=SOURCE)
    if write_metadata:
        for r in results:
            if r.path is None:
                raise UsageError(f"image {r.image_id} has no file present to write into")
            target = write_description(
                Path(r.path), r.text, in_place=in_place, output_dir=output_dir
            )
            r.written = str(target)
    return results
