"""Where a training run's images come from: a training set on disk (`--data`), or the
catalog images a query selects (`--where`), exported on the fly.

The on-the-fly export is an ordinary `curator.export.export` (recorded in the catalog,
with its manifest) into `OUT/data`, so the run's images, buckets and captions are
exactly what `curator export` would write with the same settings, and the folder can
be inspected or trained on again with `--data`. A later run with the same `--out`
replaces it (it is Curator's own export); any other folder there is left alone and the
run refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curator.errors import UsageError
from curator.training.data import Dataset, TrainingDataError, load_dataset

EXPORT_FOLDER = "data"


def _count_selected(catalog: Any, query: str) -> int:
    from sqlalchemy import func, select

    from curator.query.compile import compile_query
    from curator.tags.view import TagRules
    from db.schema import Image

    with catalog.session() as session:
        condition = compile_query(query, rules=TagRules.load(session))
        return session.scalar(select(func.count()).select_from(Image).where(condition)) or 0


def export_selection(catalog: Any, options: Any) -> Path:
    """Export the images `options.where` selects into `OUT/data`; return that folder.
    An empty query selects every image, as in `curator export`."""
    from curator.export import export

    if catalog is None:
        raise UsageError("--where needs a catalog to select images from")
    query = options.where.strip()
    if _count_selected(catalog, query) == 0:
        raise TrainingDataError(f"--where {query!r} selects no images in the catalog")
    target = Path(options.out).expanduser().absolute() / EXPORT_FOLDER
    settings = {
        **options.export,
        **{k: v for k, v in options.buckets.items() if v is not None},
        "query": query,
        "batch_size": options.batch_size,
        "seed": options.seed,
        "force": True,  # replaces only an earlier Curator export there, never other files
        "reporter": options.reporter,
        # no `cancel`: ExportOptions.settings() deep-copies its fields, and a token's lock
        # cannot be copied; a cancelled run stops at its first training step instead
    }
    if options.layout:
        settings["layout"] = options.layout
    if settings.get("resolution") is not None:
        settings["resolution"] = tuple(settings["resolution"])
        settings.setdefault("max_area", None)
    export(catalog, target, **settings)
    return target


def training_data(options: Any, catalog: Any = None, reg: bool = True) -> Dataset:
    """The dataset a run trains on: `options.data` read in its layout, or `options.where`
    exported first. Raises `TrainingDataError` (one line) when it cannot train."""
    has_data, has_where = bool(options.data), options.where is not None
    if has_data == has_where:
        raise UsageError("give --data DIR or --where QUERY (one of them)")
    if has_where:
        root = export_selection(catalog, options)
        options.data = str(root)  # recorded with the run, and a --data for next time
        # the export cut each image to its bucket with these settings already
        return load_dataset(root, reg=reg, allow_upscale=options.allow_upscale)
    return load_dataset(
        options.data,
        layout=options.layout,
        reg=reg,
        buckets=options.buckets,
        allow_upscale=options.allow_upscale,
    )
