"""Add generated images to the catalog with their provenance."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from sqlalchemy import select

from curator.generation.generate import GeneratedImage, GenerationParams
from curator.generation.loading import LoadedModel
from curator.generation.registry import model_file_id
from curator.ingest.scan import ScanOptions, scan
from db import Catalog
from db.schema import File, GeneratedBy


def image_id_for_path(catalog: Catalog, path: str | Path) -> int | None:
    with catalog.session() as session:
        return session.scalar(select(File.image_id).where(File.path == str(Path(path).resolve())))


def catalogue_generated(
    catalog: Catalog,
    images: list[GeneratedImage],
    model: LoadedModel,
    params: GenerationParams,
    source_image_id: int | None = None,
    workers: int = 1,
) -> list[int]:
    """Scan the new PNGs (their infotext becomes generation parameters) and link each to
    its model file and source image (the init image, or the image regenerated).
    `workers=0` reads them in this process (no decoding process to start)."""
    if not images:
        return []
    scan(catalog, [str(i.path) for i in images], ScanOptions(workers=workers))
    if source_image_id is None and params.init_image:
        source_image_id = image_id_for_path(catalog, params.init_image)
    checkpoint = model_file_id(catalog, str(Path(model.source).expanduser().resolve()))
    ids = []
    with catalog.session() as session:
        for image in images:
            image_id = session.scalar(
                select(File.image_id).where(File.path == str(image.path.resolve()))
            )
            if image_id is None:
                continue
            ids.append(image_id)
            existing = session.get(GeneratedBy, image_id)
            if existing is not None and image_id == source_image_id:
                continue  # reproduced pixel for pixel: the same catalogued image
            row = existing or GeneratedBy(image_id=image_id)
            row.model_file_id = checkpoint
            row.source_image_id = source_image_id if source_image_id != image_id else None
            row.params = {
                **asdict(params),
                **_resolved(params),
                "seed": image.seed,
                "model": model.source,
            }
            session.merge(row)
        session.commit()
    return ids


def _resolved(params: GenerationParams) -> dict[str, str]:
    """The source image and mask as absolute paths, so provenance survives a cwd change."""
    return {
        key: str(Path(value).expanduser().resolve())
        for key in ("init_image", "mask_image")
        if (value := getattr(params, key))
    }
