"""`curator quality`: quality signals measured by the run loop and stored as scores.

Scores (table `scores`, source `quality`), each from a model the run loop drives like
any tagger (one decode per image for all of them, resumable, cancellable):
- `sharpness` (`SharpnessModel`): variance of the Laplacian of the image flattened
  onto white (`curator.curation.quality.sharpness`); higher is sharper.
- `jpeg_quality` (`JpegQualityModel`): the libjpeg quality a JPEG was saved with, from
  the quantisation tables the decoder hands over (JPEG files only).
- `megapixels` (`MegapixelsModel`): width x height / 10^6 of the upright original; the
  resolution class (`tiny` ... `uhd`) follows from it and is reported, not stored.
- `aesthetic` (`AestheticModel`): a LAION aesthetic head over the CLIP image
  embeddings a CLIP run stored, when a head file is given (source `aesthetic:NAME`).
  It reads no pixels: the loop hands it the stored vectors of the images that have them.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sqlalchemy import func, select

from curator.curation.dedup import choose_embedding_model
from curator.curation.edits import chunks
from curator.curation.quality import (
    SHARPNESS_MAX_SIDE,
    AestheticHead,
    jpeg_quality_from_tables,
    resolution_class,
)
from curator.curation.quality import sharpness as measure_sharpness
from curator.progress import CancelToken, Reporter
from curator.query.compile import compile_query
from curator.runs.loop import RunOptions, RunSummary, run_models
from db.engine import Catalog
from db.schema import File, Image, Score
from taggers.base import DecodedImage, Result, as_decoded
from taggers.pixels import WHITE

SHARPNESS = "sharpness"
JPEG_QUALITY = "jpeg_quality"
MEGAPIXELS = "megapixels"
AESTHETIC = "aesthetic"
SOURCE = "quality"


def _revision(*parts: object) -> str:
    """A short hash of what defines a measurement, so changing it redoes the images."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


class _Measure:
    """A model whose whole prediction is made in the decode worker (a few floats)."""

    kind = "measure"
    source = SOURCE  # scores keep the source `quality` whatever measured them
    needs_pixels = True
    input_size: int | None = None
    OPTIONS: ClassVar[tuple[str, ...]] = ()
    name: str
    revision: str

    def measure(self, decoded: DecodedImage) -> float | None:
        raise NotImplementedError

    def preprocess(self, decoded: DecodedImage) -> float | None:
        return self.measure(as_decoded(decoded))

    def predict(self, batch: list[float | None]) -> list[Result]:
        return [Result(scores={} if v is None else {self.name: float(v)}) for v in batch]

    def params(self) -> dict[str, Any]:
        return {}


class SharpnessModel(_Measure):
    """Variance of the Laplacian on the image flattened onto white, at most 1024 px."""

    name = SHARPNESS
    revision = _revision("laplacian-var", SHARPNESS_MAX_SIDE, WHITE)
    # Sharpness shrinks to SHARPNESS_MAX_SIDE anyway: a JPEG decoded at no less than
    # twice that is much faster for large photos and measures the same.
    input_size = 2 * SHARPNESS_MAX_SIDE

    def measure(self, decoded: DecodedImage) -> float:
        return measure_sharpness(decoded.rgb(WHITE))

    def params(self) -> dict[str, Any]:
        return {"max_side": SHARPNESS_MAX_SIDE, "background": list(WHITE)}


class JpegQualityModel(_Measure):
    """The libjpeg quality setting, from the quantisation tables (no pixels needed)."""

    name = JPEG_QUALITY
    revision = _revision("ijg-tables", 1)
    needs_pixels = False

    def measure(self, decoded: DecodedImage) -> float | None:
        return jpeg_quality_from_tables(decoded.quantization)


class MegapixelsModel(_Measure):
    """Width x height of the upright original in millions (no pixels needed)."""

    name = MEGAPIXELS
    revision = _revision("megapixels", 1)
    needs_pixels = False

    def measure(self, decoded: DecodedImage) -> float:
        width, height = decoded.original_size
        return width * height / 1e6


class AestheticModel:
    """A LAION aesthetic head over stored embeddings of `embedding_model`."""

    kind = "measure"
    input_size = None

    def __init__(self, head: AestheticHead, embedding_model: str, label: str):
        self.head, self.embedding_model = head, embedding_model
        self.name = self.source = f"aesthetic:{label}"
        weights = b"".join(w.tobytes() + b.tobytes() for w, b in head.layers)
        self.revision = _revision(hashlib.sha256(weights).hexdigest(), embedding_model)

    def preprocess(self, decoded: DecodedImage) -> None:  # never called: reads embeddings
        raise TypeError("the aesthetic head reads stored embeddings, not images")

    def predict(self, batch: list[np.ndarray]) -> list[Result]:
        scores = self.head.predict(np.stack(batch)) if batch else []
        return [Result(scores={AESTHETIC: float(v)}) for v in scores]

    def params(self) -> dict[str, Any]:
        return {"embedding_model": self.embedding_model, "head": self.head.kind}


def quality_models() -> list[_Measure]:
    return [SharpnessModel(), JpegQualityModel(), MegapixelsModel()]


@dataclass(slots=True)
class QualitySummary:
    selected: int = 0
    measured: int = 0
    skipped: int = 0  # already had their scores
    failed: int = 0
    missing: int = 0  # no present file to open
    aesthetic: int = 0
    aesthetic_model: str | None = None
    resolution_classes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    run_id: int | None = None  # the sharpness run; each measurement has its own
    runs: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compute_quality(
    catalog: Catalog,
    query: str | None = None,
    *,
    aesthetic_head: str | os.PathLike[str] | AestheticHead | None = None,
    embedding_model: str | None = None,
    redo: bool = False,
    workers: int | None = None,
    reporter: Reporter | None = None,
    cancel: CancelToken | None = None,
) -> QualitySummary:
    """Measure and store quality scores for the images the query selects."""
    start = time.monotonic()
    summary = QualitySummary()
    head = (
        AestheticHead.from_file(aesthetic_head)
        if isinstance(aesthetic_head, str | os.PathLike)
        else aesthetic_head
    )
    _count(catalog, query, summary)
    options = RunOptions(
        where=query or None,
        redo=redo,
        batch_size=32,
        workers=workers,
        reporter=reporter,
        cancel=cancel,
    )
    models: list[Any] = quality_models()
    if head is not None:
        with catalog.session() as s:
            source = choose_embedding_model(s, embedding_model, dim=head.input_dim)
        if source is None:
            summary.notes.append(
                f"no {head.input_dim}-wide image embeddings in the catalog; "
                "run a CLIP embedding model first for aesthetic scores"
            )
        else:
            summary.aesthetic_model = source
            models.append(AestheticModel(head, source, _head_name(aesthetic_head) or "head"))
    runs = run_models(catalog, models, options, kind="quality")
    sharp: RunSummary = runs[0]
    summary.measured, summary.failed, summary.skipped = sharp.done, sharp.failed, sharp.skipped
    summary.run_id = sharp.run_id
    summary.runs = [r.run_id for r in runs]
    if len(runs) > len(quality_models()):
        summary.aesthetic = runs[-1].done
    summary.seconds = time.monotonic() - start
    return summary


def _count(catalog: Catalog, query: str | None, summary: QualitySummary) -> None:
    """Selected images, those without a present file, and the resolution classes."""
    present = select(File.image_id).where(File.present.is_(True))
    with catalog.session() as s:
        rows = s.execute(
            select(Image.width, Image.height, Image.id.in_(present))
            .where(compile_query(query))
            .order_by(Image.id)
        ).all()
    summary.selected = len(rows)
    summary.missing = sum(1 for _, _, has_file in rows if not has_file)
    classes = Counter(resolution_class(w, h) for w, h, _ in rows)
    summary.resolution_classes = dict(sorted(classes.items(), key=lambda kv: _class_order(kv[0])))


def _class_order(name: str) -> int:
    order = ["tiny", "small", "sd", "hd", "uhd"]
    return order.index(name) if name in order else len(order)


def _head_name(head: object) -> str | None:
    if head is None:
        return None
    if isinstance(head, str | os.PathLike):
        return Path(head).stem
    return getattr(head, "name", None) or type(head).__name__


def quality_table(catalog: Catalog, query: str | None = None) -> list[dict[str, Any]]:
    """Per image: its first present path, size, resolution class and stored quality scores."""
    names = [SHARPNESS, JPEG_QUALITY, MEGAPIXELS, AESTHETIC]
    first_file = (
        select(File.image_id, func.min(File.path).label("path"))
        .where(File.present.is_(True))
        .group_by(File.image_id)
        .subquery()
    )
    with catalog.session() as s:
        rows = s.execute(
            select(Image.id, first_file.c.path, Image.width, Image.height)
            .outerjoin(first_file, first_file.c.image_id == Image.id)
            .where(compile_query(query))
            .order_by(Image.id)
        ).all()
        scores: dict[int, dict[str, float]] = {}
        for chunk in chunks([r[0] for r in rows]):
            for image_id, name, value in s.execute(
                select(Score.image_id, Score.name, Score.value).where(
                    Score.image_id.in_(chunk), Score.name.in_(names)
                )
            ):
                scores.setdefault(image_id, {})[name] = value
    return [
        {
            "image_id": image_id,
            "path": path,
            "width": width,
            "height": height,
            "resolution_class": resolution_class(width, height),
            **{name: scores.get(image_id, {}).get(name) for name in names},
        }
        for image_id, path, width, height in rows
    ]
