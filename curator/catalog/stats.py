"""Catalog statistics: counts, formats, sizes, aspect ratios, problems, runs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, column, func, select, table

from db.engine import Catalog

# The few columns counted here, named as in `db.schema` (a test holds them to it), so
# `curator stats` starts without importing the schema: its mapped classes and the
# dialects its indexes name cost a fifth of this command's start.
IMAGES = table(
    "images", column("id"), column("bytes"), column("width"), column("height"), column("format")
).c
FILES = table("files", column("id"), column("present")).c
PROBLEMS = table("problems", column("kind")).c
RUNS = table("runs", column("kind")).c

# Short-side classes a trainer thinks in (SD 1.x trains at 512, SDXL at 1024).
SIZE_CLASSES = [
    (0, "<512"),
    (512, "512-767"),
    (768, "768-1023"),
    (1024, "1024-2047"),
    (2048, ">=2048"),
]
# The query language's shapes (`aspect:portrait`), with the same bounds, so a count
# here is what that query selects. The bounds are curator.query.terms's (a test
# holds them equal); not imported from there, so `curator stats` starts without
# loading the query compiler.
SQUARE_LOW, SQUARE_HIGH = 95, 105
ASPECT_CLASSES = [
    (0, "portrait"),
    (SQUARE_LOW, "square"),  # width/height in hundredths, as the query compares them
    (SQUARE_HIGH, "landscape"),
]


def _classify(value: Any, classes: list[tuple[float, str]], per: Any = 1):  # noqa: ANN202
    """`value >= per * bound` picks the class: for ratios, `per` is the denominator."""
    whens = [(value >= per * lo, label) for lo, label in reversed(classes[1:])]
    return case(*whens, else_=classes[0][1])


def catalog_stats(catalog: Catalog) -> dict[str, Any]:
    with catalog.session() as s:
        short = func.min(IMAGES.width, IMAGES.height)
        if not catalog.is_sqlite:
            short = func.least(IMAGES.width, IMAGES.height)
        aspect = IMAGES.width * 100  # integer compare, as the query: no rounding at bounds
        size_bucket = _classify(short, SIZE_CLASSES).label("bucket")
        aspect_bucket = _classify(aspect, ASPECT_CLASSES, IMAGES.height).label("bucket")
        sizes = dict(s.execute(select(size_bucket, func.count()).group_by(size_bucket)).all())
        aspects = dict(s.execute(select(aspect_bucket, func.count()).group_by(aspect_bucket)).all())
        return {
            "images": s.scalar(select(func.count(IMAGES.id))),
            # int(): PostgreSQL sums a bigint column as numeric (a Decimal).
            "bytes": int(s.scalar(select(func.coalesce(func.sum(IMAGES.bytes), 0)))),
            "files_present": s.scalar(select(func.count(FILES.id)).where(FILES.present.is_(True))),
            "files_missing": s.scalar(select(func.count(FILES.id)).where(FILES.present.is_(False))),
            "formats": dict(
                s.execute(
                    select(IMAGES.format, func.count())
                    .group_by(IMAGES.format)
                    .order_by(func.count().desc())
                ).all()
            ),
            "short_side": {label: sizes.get(label, 0) for _, label in SIZE_CLASSES},
            "aspect": {label: aspects.get(label, 0) for _, label in ASPECT_CLASSES},
            "problems": dict(
                s.execute(select(PROBLEMS.kind, func.count()).group_by(PROBLEMS.kind)).all()
            ),
            "runs": dict(s.execute(select(RUNS.kind, func.count()).group_by(RUNS.kind)).all()),
        }
