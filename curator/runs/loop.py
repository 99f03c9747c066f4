"""The one run loop: catalog → model(s) → catalog, for every model kind.

    select images the model revision has not done (or all with redo)
      → decode each image ONCE in a worker pool (JPEG draft-decoded to the
        smallest input any model needs) and preprocess it for every model
      → batch → predict → one write transaction per batch (the single writer)
      → record the run.

Resumable: a batch's results and its `processed` rows commit together, so after a
kill -9 a re-run does exactly the images whose batch never committed, and the
unique (model, revision, image) key keeps it free of duplicates.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps
from sqlalchemy import delete, exists, func, literal, or_, select
from sqlalchemy.orm import Session, aliased

from curator.progress import CancelToken, Reporter, phase
from curator.query.compile import compile_query
from curator.tags.store import replace_source_tags, set_caption
from curator.tags.view import RATINGS, model_source
from curator.workers import process_pool
from db.engine import Catalog
from db.schema import (
    Detection,
    Embedding,
    File,
    Image,
    Problem,
    Processed,
    Run,
    Score,
    utcnow,
)
from taggers.base import Model, Result

PAGE = 1000


@dataclass(slots=True)
class RunOptions:
    where: str | None = None
    redo: bool = False
    batch_size: int = 8
    workers: int | None = None  # decode processes; None: one less than the cores
    limit: int | None = None
    reporter: Reporter | None = None  # progress events (see curator.progress)
    cancel: CancelToken | None = None


@dataclass(slots=True)
class RunSummary:
    model: str
    revision: str
    run_id: int
    done: int = 0
    failed: int = 0
    skipped: int = 0  # already processed by this revision
    tags: int = 0
    seconds: float = 0.0
    status: str = "running"

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "revision": self.revision,
            "run_id": self.run_id,
            "done": self.done,
            "failed": self.failed,
            "skipped": self.skipped,
            "tags": self.tags,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "status": self.status,
        }


@dataclass(slots=True)
class _Job:
    image_id: int
    path: str
    needs: tuple[int, ...]  # indexes of the models that still need this image


@dataclass(slots=True)
class _Decoded:
    image_id: int
    path: str
    inputs: dict[int, Any] = field(default_factory=dict)
    error: str | None = None


# --- decoding (runs in worker processes) ----------------------------------------------


def draft_size(width: int, height: int, side: int) -> tuple[int, int]:
    """The smallest size that still covers a `side`-pixel square model input."""
    scale = side / max(width, height)
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def decode_for_models(path: str, models: Sequence[Model], needs: Sequence[int]) -> dict[int, Any]:
    """Open an image once and preprocess it for each model that needs it."""
    sizes = [models[i].input_size for i in needs]
    with PILImage.open(path) as img:
        if img.format == "JPEG" and sizes and all(sizes):
            # DCT-domain downscaling: decoding a 4000-px JPEG for a 448-px model
            # costs a fraction of a full decode.
            img.draft("RGB", draft_size(*img.size, max(sizes)))
        img.load()
        img = ImageOps.exif_transpose(img)
        return {i: models[i].preprocess(img) for i in needs}


def _decode_batch(jobs: list[_Job], models: Sequence[Model]) -> list[_Decoded]:
    out = []
    for job in jobs:
        try:
            out.append(
                _Decoded(job.image_id, job.path, decode_for_models(job.path, models, job.needs))
            )
        except Exception as exc:  # noqa: BLE001 - a bad image is recorded, the run goes on
            message = " ".join(str(exc).split()) or type(exc).__name__
            out.append(_Decoded(job.image_id, job.path, error=message))
    return out


# --- selection -------------------------------------------------------------------------


def _not_done(model: Model) -> Any:
    return ~exists().where(
        Processed.image_id == Image.id,
        Processed.model == model.name,
        Processed.revision == model.revision,
    )


def select_jobs(
    catalog: Catalog, models: Sequence[Model], options: RunOptions
) -> tuple[int, int, Iterator[_Job]]:
    """(to do, already done, jobs): images with a present file that a model still needs."""
    where = compile_query(options.where)
    f = aliased(File)
    first_path = (
        select(f.path)
        .where(f.image_id == Image.id, f.present.is_(True))
        .order_by(f.id)
        .limit(1)
        .scalar_subquery()
    )
    need_cols = [
        (literal(True) if options.redo else _not_done(m)).label(f"need{i}")
        for i, m in enumerate(models)
    ]
    present = exists().where(File.image_id == Image.id, File.present.is_(True))
    conds = [where, present]
    if not options.redo:
        conds.append(or_(*(_not_done(m) for m in models)))
    with catalog.session() as s:
        total = s.scalar(select(func.count(Image.id)).where(where, present))
        todo = s.scalar(select(func.count(Image.id)).where(*conds))
    if options.limit is not None:
        todo = min(todo, options.limit)

    def jobs() -> Iterator[_Job]:
        # Keyset pages by id: memory stays flat, and a page sees batches written since.
        last, emitted = 0, 0
        while True:
            with catalog.session() as s:
                rows = s.execute(
                    select(Image.id, first_path, *need_cols)
                    .where(*conds, Image.id > last)
                    .order_by(Image.id)
                    .limit(PAGE)
                ).all()
            if not rows:
                return
            for row in rows:
                last = row[0]
                needs = tuple(i for i, flag in enumerate(row[2:]) if flag)
                if needs and row[1]:
                    yield _Job(row[0], row[1], needs)
                    emitted += 1
                    if options.limit is not None and emitted >= options.limit:
                        return

    return todo, total - todo, jobs()


# --- writing ---------------------------------------------------------------------------


def _write_result(s: Session, model: Model, image_id: int, result: Result, run_id: int) -> int:
    source = model_source(model.name)
    n = 0
    if model.kind == "tagger" or result.tags:
        n = replace_source_tags(
            s, image_id, source, [(t.name, t.category, t.score) for t in result.tags], run_id
        )
        ratings = {_rating_name(t.name): t.score for t in result.tags if t.category == "rating"}
        if ratings and set(ratings) <= set(RATINGS):
            top = max(ratings, key=ratings.get)
            result.scores.setdefault("rating", float(RATINGS.index(top)))
    for name, value in result.scores.items():
        row = s.scalar(select(Score).where(Score.image_id == image_id, Score.name == name))
        if row is None:
            s.add(
                Score(
                    image_id=image_id, name=name, value=float(value), source=source, run_id=run_id
                )
            )
        else:
            row.value, row.source, row.run_id = float(value), source, run_id
    if model.kind == "detector":
        s.execute(
            delete(Detection).where(
                Detection.image_id == image_id, Detection.detector == model.name
            )
        )
        for d in result.detections:
            x, y, w, h = (int(v) for v in d.box)
            s.add(
                Detection(
                    image_id=image_id,
                    detector=model.name,
                    label=d.label,
                    score=float(d.score),
                    x=x,
                    y=y,
                    w=w,
                    h=h,
                    text=d.text,
                    run_id=run_id,
                )
            )
    if result.caption is not None:
        set_caption(s, image_id, result.caption, kind="caption", source=source, run_id=run_id)
    if result.embedding is not None:
        vec = np.asarray(result.embedding, dtype="<f4").ravel()
        row = s.scalar(
            select(Embedding).where(Embedding.image_id == image_id, Embedding.model == model.name)
        )
        if row is None:
            s.add(
                Embedding(
                    image_id=image_id,
                    model=model.name,
                    dim=vec.size,
                    vector=vec.tobytes(),
                    run_id=run_id,
                )
            )
        else:
            row.dim, row.vector, row.run_id = vec.size, vec.tobytes(), run_id
    existing = s.scalar(
        select(Processed).where(
            Processed.image_id == image_id,
            Processed.model == model.name,
            Processed.revision == model.revision,
        )
    )
    if existing is None:
        s.add(
            Processed(model=model.name, revision=model.revision, image_id=image_id, run_id=run_id)
        )
    else:
        existing.run_id, existing.at = run_id, utcnow()
    return n


def _rating_name(name: str) -> str:
    """WD14's rating names as they are; DeepDanbooru's `rating:safe` as `general`."""
    name = name.removeprefix("rating:")
    return "general" if name == "safe" else name


# --- the loop --------------------------------------------------------------------------


class _Runner:
    def __init__(self, catalog: Catalog, models: Sequence[Model], options: RunOptions):
        self.catalog, self.models, self.options = catalog, list(models), options
        self.summaries: list[RunSummary] = []

    def start(self, kind: str) -> None:
        with self.catalog.write() as s:
            for model in self.models:
                run = Run(
                    kind=kind,
                    model=model.name,
                    revision=model.revision,
                    params={
                        **model.params(),
                        "where": self.options.where,
                        "redo": self.options.redo,
                        "batch_size": self.options.batch_size,
                    },
                )
                s.add(run)
                s.flush()
                self.summaries.append(RunSummary(model.name, model.revision, run.id))

    def finish(self, status: str, seconds: float) -> None:
        with self.catalog.write() as s:
            for summary in self.summaries:
                summary.status, summary.seconds = status, seconds
                row = s.get(Run, summary.run_id)
                row.status, row.finished_at, row.duration_s = status, utcnow(), seconds
                row.counts = {
                    k: summary.as_dict()[k] for k in ("done", "failed", "skipped", "tags")
                }

    def write_batch(self, decoded: list[_Decoded], jobs: dict[int, _Job]) -> None:
        ok = [d for d in decoded if d.error is None]
        results: dict[tuple[int, int], Result] = {}
        for i, model in enumerate(self.models):
            items = [d for d in ok if i in d.inputs]
            if not items:
                continue
            preds = model.predict([d.inputs[i] for d in items])
            for d, r in zip(items, preds, strict=True):
                results[(i, d.image_id)] = r
        with self.catalog.write() as s:
            for d in decoded:
                if d.error is not None:
                    self._problem(s, d)
                    for i in jobs[d.image_id].needs:
                        self.summaries[i].failed += 1
                    continue
                for i in jobs[d.image_id].needs:
                    r = results[(i, d.image_id)]
                    self.summaries[i].tags += _write_result(
                        s, self.models[i], d.image_id, r, self.summaries[i].run_id
                    )
                    self.summaries[i].done += 1

    @staticmethod
    def _problem(s: Session, d: _Decoded) -> None:
        row = s.scalar(select(Problem).where(Problem.path == d.path))
        if row is None:
            s.add(Problem(path=d.path, kind="decode_failed", message=d.error))
        else:
            row.kind, row.message, row.seen_at = "decode_failed", d.error, utcnow()


def run_models(
    catalog: Catalog,
    models: Sequence[Model],
    options: RunOptions | None = None,
    *,
    kind: str = "tag",
) -> list[RunSummary]:
    """Run models over the catalog's images; one summary per model."""
    options = options or RunOptions()
    runner = _Runner(catalog, models, options)
    todo, done_before, jobs = select_jobs(catalog, models, options)
    runner.start(kind)
    for summary in runner.summaries:
        summary.skipped = done_before
    start = time.monotonic()
    workers = options.workers if options.workers is not None else max(1, (os.cpu_count() or 1) - 1)
    status = "failed"
    try:
        with phase(options.reporter, kind, todo) as bar:
            if workers <= 1:
                for batch in _batched(jobs, options.batch_size):
                    runner.write_batch(_decode_batch(batch, models), {j.image_id: j for j in batch})
                    bar.advance(len(batch))
            else:
                _pipelined(runner, jobs, workers, bar)
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        runner.finish(status, time.monotonic() - start)
    return runner.summaries


def _pipelined(runner: _Runner, jobs: Iterator[_Job], workers: int, bar) -> None:  # noqa: ANN001
    """Workers decode batch n+1.. while this process predicts and writes batch n."""
    pool = process_pool(workers)
    inflight: deque[tuple[Future, list[_Job]]] = deque()
    try:
        for batch in _batched(jobs, runner.options.batch_size):
            inflight.append((pool.submit(_decode_batch, batch, runner.models), batch))
            if len(inflight) > workers * 2:
                _drain_one(runner, inflight, bar)
        while inflight:
            _drain_one(runner, inflight, bar)
    finally:
        pool.shutdown(cancel_futures=True)


def _drain_one(runner: _Runner, inflight: deque, bar) -> None:  # noqa: ANN001
    future, batch = inflight.popleft()
    runner.write_batch(future.result(), {j.image_id: j for j in batch})
    bar.advance(len(batch))


def _batched(jobs: Iterator[_Job], n: int) -> Iterator[list[_Job]]:
    batch: list[_Job] = []
    for job in jobs:
        batch.append(job)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch
