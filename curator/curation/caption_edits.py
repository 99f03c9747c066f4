"""A person's captions: written, changed or removed as undoable edits.

Captions a person writes have source ``user``; those from models and sidecars stay as
they are, so a re-run of a captioner never overwrites what a person wrote.
"""

from __future__ import annotations

from curator.curation.changeset import ChangeSet, EditResult
from curator.errors import UsageError
from db.engine import Catalog
from db.schema import Image

USER_CAPTION = "user"


def set_caption(catalog: Catalog, image_id: int, text: str, *, kind: str = "caption") -> EditResult:
    """Set a person's caption of ``kind`` on one image (empty text removes it): one edit."""
    text = text.strip()
    with catalog.write() as s:
        if s.get(Image, image_id) is None:
            raise UsageError(f"image {image_id} is no longer in the catalog")
        cs = ChangeSet(s)
        cs.set_caption(image_id, kind, USER_CAPTION, text or None)
        verb = "set" if text else "remove"
        return cs.record(
            "caption.set", f"{verb} the {kind} of image {image_id}", image_ids=[image_id], kind=kind
        )
