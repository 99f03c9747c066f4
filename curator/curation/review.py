"""Review state: accept or reject images, or put them back to pending.

The state lives in `images.status`, so it belongs to the content, not a path: a
rescan never touches it and it survives moves. Each change is an undoable edit.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from curator.curation.changeset import ChangeSet, EditResult, chosen_ids, chunks
from curator.errors import UsageError
from db.engine import Catalog
from db.schema import Image

PENDING = "pending"
ACCEPTED = "accepted"
REJECTED = "rejected"
STATUSES = (PENDING, ACCEPTED, REJECTED)


def set_status(
    catalog: Catalog, query: str | None, status: str, *, image_ids: Iterable[int] | None = None
) -> EditResult:
    """Give every image the query (or ``image_ids``) selects review status `status`."""
    if status not in STATUSES:
        raise UsageError(f"unknown review status {status!r}; one of {', '.join(STATUSES)}")
    with catalog.write() as s:
        ids, chosen = chosen_ids(s, query, image_ids)
        current: dict[int, str] = {}
        for chunk in chunks(ids):
            current.update(
                s.execute(select(Image.id, Image.status).where(Image.id.in_(chunk))).all()
            )
        cs = ChangeSet(s)
        changed = cs.set_images("status", {i: (old, status) for i, old in current.items()})
        verb = {ACCEPTED: "accept", REJECTED: "reject", PENDING: "unreview"}[status]
        return cs.record(
            f"review.{verb}",
            f"{verb} {changed} of {len(ids)} images",
            **chosen,
            status=status,
        )


def accept(catalog: Catalog, query: str) -> EditResult:
    return set_status(catalog, query, ACCEPTED)


def reject(catalog: Catalog, query: str) -> EditResult:
    return set_status(catalog, query, REJECTED)


def reset(catalog: Catalog, query: str) -> EditResult:
    """Back to pending, as if never reviewed."""
    return set_status(catalog, query, PENDING)
