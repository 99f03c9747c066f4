"""`curator quality`: measure quality signals over the catalog and store them as scores.

Scores (table `scores`, source `quality`):
- `sharpness`: variance of the Laplacian (`curator.curation.quality.sharpness`); higher is sharper.
- `jpeg_quality`: the libjpeg quality a JPEG was saved with (JPEG files only).
- `megapixels`: width x height / 10^6; the resolution class (`tiny` ... `uhd`) follows
  from it and is reported, not stored.
- `aesthetic`: a LAION aesthetic head over stored CLIP image embeddings, when a head
  file is given (source `aesthetic:NAME`).

Each image is measured from its first present file, in a process pool when there
are many; a file that cannot be read becomes a problem row and the run goes on.
Results commit in batches, and images that already have their scores are skipped
unless `redo`, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from curator.curation.dedup import choose_embedding_model, load_embeddings
from curator.curation.edits import chunks
from curator.curation.quality import (
    SHARPNESS_MAX_SIDE,
    AestheticHead,
    jpeg_quality,
    resolution_class,
)
from curator.curation.quality import sharpness as measure_sharpness
from curator.progress import Reporter, phase
from curator.query.compile import compile_query
from curator.workers import process_pool
from db.engine import Catalog
from db.schema import File, Image, Problem, Run, Score, utcnow

SHARPNESS = "sharpness"
JPEG_QUALITY = "jpeg_quality"
MEGAPIXELS = "megapixels"
AESTHETIC = "aesthetic"
SOURCE = "quality"
WRITE_BATCH = 200
POOL_MIN_IMAGES = 32  # fewer than this: starting worker processes costs more than it saves
PIXEL_LIMIT = 178_956_970  # Pillow's decompression-bomb bound
PROBLEM_KIND = "decode_failed"


@dataclass(slots=True)
class Measurement:
    image_id: int
    path: str
    sharpness: float | None = None
    jpeg_quality: float | None = None
    error: str | None = None


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
    run_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_file(image_id: int, path: str, pixel_limit: int = PIXEL_LIMIT) -> Measurement:
    """Sharpness and JPEG quality of one file; never raises for a bad file (worker side)."""
    out = Measurement(image_id, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(path) as img:
                width, height = img.size
                if width * height > pixel_limit:
                    raise ValueError(f"{width}x{height} is over the {pixel_limit}-pixel limit")
                if img.format == "JPEG":
                    out.jpeg_quality = jpeg_quality(img)
                    # Sharpness shrinks to SHARPNESS_MAX_SIDE anyway: decode at no less
                    # than twice that, much faster for large photos.
                    scale = 2 * SHARPNESS_MAX_SIDE / max(width, height)
                    if scale < 1:
                        img.draft(img.mode, (int(width * scale) + 1, int(height * scale) + 1))
                img.load()
                out.sharpness = measure_sharpness(img)
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many kinds on bad data
        out.error = " ".join(str(exc).split()) or type(exc).__name__
    return out


def compute_quality(
    catalog: Catalog,
    query: str | None = None,
    *,
    aesthetic_head: str | os.PathLike[str] | AestheticHead | None = None,
    embedding_model: str | None = None,
    redo: bool = False,
    workers: int | None = None,
    reporter: Reporter | None = None,
) -> QualitySummary:
    """Measure and store quality scores for the images the query selects."""
    start = time.monotonic()
    summary = QualitySummary()
    head = (
        AestheticHead.from_file(aesthetic_head)
        if isinstance(aesthetic_head, str | os.PathLike)
        else aesthetic_head
    )
    with catalog.write() as s:
        run = Run(
            kind="quality",
            model="quality",
            params={
                "query": query or "",
                "redo": redo,
                "aesthetic_head": _head_name(aesthetic_head),
            },
        )
        s.add(run)
    summary.run_id = run.id
    status = "failed"
    try:
        todo = _plan(catalog, query, redo, summary)
        _measure_all(catalog, todo, summary, run.id, workers, reporter)
        if head is not None:
            _score_aesthetic(
                catalog, query, head, embedding_model, redo, summary, run.id, aesthetic_head
            )
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        summary.seconds = time.monotonic() - start
        with catalog.write() as s:
            row = s.get(Run, run.id)
            row.status, row.finished_at, row.duration_s = status, utcnow(), summary.seconds
            row.counts = {
                k: v for k, v in summary.as_dict().items() if k not in ("run_id", "notes")
            }
    return summary


def _head_name(head: object) -> str | None:
    if head is None:
        return None
    if isinstance(head, str | os.PathLike):
        return Path(head).stem
    return getattr(head, "name", None) or type(head).__name__


@dataclass(slots=True)
class _Job:
    image_id: int
    path: str | None
    width: int
    height: int


def _plan(catalog: Catalog, query: str | None, redo: bool, summary: QualitySummary) -> list[_Job]:
    """The selected images still missing a score (all with redo), with a file to open."""
    first_file = (
        select(File.image_id, func.min(File.path).label("path"))
        .where(File.present.is_(True))
        .group_by(File.image_id)
        .subquery()
    )
    with catalog.session() as s:
        rows = s.execute(
            select(Image.id, Image.format, Image.width, Image.height, first_file.c.path)
            .outerjoin(first_file, first_file.c.image_id == Image.id)
            .where(compile_query(query))
            .order_by(Image.id)
        ).all()
        have: dict[int, set[str]] = {}
        if not redo:
            for chunk in chunks([r[0] for r in rows]):
                for image_id, name in s.execute(
                    select(Score.image_id, Score.name).where(
                        Score.image_id.in_(chunk), Score.name.in_([SHARPNESS, JPEG_QUALITY])
                    )
                ):
                    have.setdefault(image_id, set()).add(name)
    summary.selected = len(rows)
    classes = Counter(resolution_class(w, h) for _, _, w, h, _ in rows)
    summary.resolution_classes = dict(sorted(classes.items(), key=lambda kv: _class_order(kv[0])))
    todo: list[_Job] = []
    for image_id, fmt, width, height, path in rows:
        needed = {SHARPNESS, JPEG_QUALITY} if fmt == "JPEG" else {SHARPNESS}
        if needed <= have.get(image_id, set()):
            summary.skipped += 1
            continue
        todo.append(_Job(image_id, path, width, height))
    return todo


def _class_order(name: str) -> int:
    order = ["tiny", "small", "sd", "hd", "uhd"]
    return order.index(name) if name in order else len(order)


def _measure_all(
    catalog: Catalog,
    todo: list[_Job],
    summary: QualitySummary,
    run_id: int,
    workers: int | None,
    reporter: Reporter | None,
) -> None:
    jobs = {j.image_id: j for j in todo}
    pending: list[Measurement] = []
    with phase(reporter, "quality", len(todo)) as bar:
        for m in _measurements(todo, workers):
            pending.append(m)
            bar.advance()
            if len(pending) >= WRITE_BATCH:
                _write(catalog, pending, jobs, summary, run_id)
                pending = []
        _write(catalog, pending, jobs, summary, run_id)


def _measurements(todo: list[_Job], workers: int | None) -> Iterator[Measurement]:
    """Measurements in any order; a pool of processes when there is enough work."""
    workers = workers or os.cpu_count() or 1
    with_file = [j for j in todo if j.path is not None]
    for j in todo:
        if j.path is None:
            yield Measurement(j.image_id, "", error="no present file")
    if workers <= 1 or len(with_file) < POOL_MIN_IMAGES:
        for j in with_file:
            yield measure_file(j.image_id, j.path)
        return
    inflight: deque[Future[Measurement]] = deque()
    cap = workers * 8
    with process_pool(workers) as pool:
        try:
            for j in with_file:
                inflight.append(pool.submit(measure_file, j.image_id, j.path))
                while len(inflight) > cap:
                    yield inflight.popleft().result()
            while inflight:
                yield inflight.popleft().result()
        finally:
            pool.shutdown(cancel_futures=True)


def _write(
    catalog: Catalog,
    batch: Sequence[Measurement],
    jobs: dict[int, _Job],
    summary: QualitySummary,
    run_id: int,
) -> None:
    if not batch:
        return
    with catalog.write() as s:
        values: list[dict[str, Any]] = []
        for m in batch:
            job = jobs[m.image_id]
            values.append(_score(m.image_id, MEGAPIXELS, job.width * job.height / 1e6, run_id))
            if m.error is not None:
                if m.path:
                    summary.failed += 1
                    _problem(s, m.path, f"cannot measure quality: {m.error}")
                else:
                    summary.missing += 1
                continue
            summary.measured += 1
            if m.sharpness is not None:
                values.append(_score(m.image_id, SHARPNESS, m.sharpness, run_id))
            if m.jpeg_quality is not None:
                values.append(_score(m.image_id, JPEG_QUALITY, m.jpeg_quality, run_id))
        _replace_scores(s, values)


def _score(image_id: int, name: str, value: float, run_id: int, source: str = SOURCE) -> dict:
    return {
        "image_id": image_id,
        "name": name,
        "value": float(value),
        "source": source,
        "run_id": run_id,
    }


def _replace_scores(s: Session, values: list[dict[str, Any]]) -> None:
    """Write scores, replacing any earlier value of the same name for the same image."""
    by_name: dict[str, list[int]] = {}
    for v in values:
        by_name.setdefault(v["name"], []).append(v["image_id"])
    for name, ids in by_name.items():
        for chunk in chunks(ids):
            s.execute(delete(Score).where(Score.name == name, Score.image_id.in_(chunk)))
    if values:
        s.execute(insert(Score), values)


def _problem(s: Session, path: str, message: str) -> None:
    row = s.scalar(select(Problem).where(Problem.path == path))
    if row is None:
        s.add(Problem(path=path, kind=PROBLEM_KIND, message=message))
    else:
        row.kind, row.message, row.seen_at = PROBLEM_KIND, message, utcnow()


def _score_aesthetic(
    catalog: Catalog,
    query: str | None,
    head: AestheticHead,
    embedding_model: str | None,
    redo: bool,
    summary: QualitySummary,
    run_id: int,
    source: object,
) -> None:
    """Score stored embeddings of the head's width with the aesthetic head."""
    with catalog.session() as s:
        model = choose_embedding_model(s, embedding_model, dim=head.input_dim)
        if model is None:
            summary.notes.append(
                f"no {head.input_dim}-wide image embeddings in the catalog; "
                "run a CLIP embedding model first for aesthetic scores"
            )
            return
        ids = list(s.scalars(select(Image.id).where(compile_query(query)).order_by(Image.id)))
        if not redo:
            scored: set[int] = set()
            for chunk in chunks(ids):
                scored.update(
                    s.scalars(
                        select(Score.image_id).where(
                            Score.name == AESTHETIC, Score.image_id.in_(chunk)
                        )
                    )
                )
            ids = [i for i in ids if i not in scored]
    summary.aesthetic_model = model
    label = f"aesthetic:{_head_name(source) or 'head'}"
    for chunk in chunks(ids, 4096):
        with catalog.session() as s:
            vectors = load_embeddings(s, model, chunk)
        vectors = {i: v for i, v in vectors.items() if len(v) == head.input_dim}
        if not vectors:
            continue
        order = list(vectors)
        scores = head.predict(np.stack([vectors[i] for i in order]))
        with catalog.write() as s:
            _replace_scores(
                s,
                [
                    _score(i, AESTHETIC, float(v), run_id, label)
                    for i, v in zip(order, scores.tolist(), strict=True)
                ],
            )
        summary.aesthetic += len(order)


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
