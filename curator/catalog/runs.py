"""The run history: scans, model runs, quality passes, exports, newest first."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from db.engine import Catalog
from db.schema import Run


def recent_runs(catalog: Catalog, limit: int = 20) -> list[dict[str, Any]]:
    """The latest `limit` runs, newest first, each with a printable `label`."""
    with catalog.session() as s:
        rows = s.scalars(select(Run).order_by(Run.id.desc()).limit(limit)).all()
    return [
        {
            "id": r.id,
            "kind": r.kind,
            "model": r.model,
            "revision": r.revision,
            "label": run_label(r.kind, r.model, r.revision),
            "status": r.status,
            "started_at": r.started_at,
            "duration_s": r.duration_s,
            "counts": r.counts or {},
            "params": r.params or {},
        }
        for r in rows
    ]


def run_label(kind: str, model: str | None, revision: str | None) -> str:
    """`tag wd-vit@abc123`, `quality sharpness`, `scan`: never a `None` in sight."""
    if not model:
        return kind
    return f"{kind} {model}@{revision}" if revision else f"{kind} {model}"
