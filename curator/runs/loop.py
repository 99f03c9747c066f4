"""The one run loop: catalog → model(s) → catalog, for every model that reads pixels.

    load and validate every model (a model that cannot run stops here, before any image)
      → select images the model revision has not done (or all with redo)
      → decode each image ONCE in a worker pool (JPEG draft-decoded to the
        smallest input any model needs) into a `DecodedImage`, preprocessed for
        every model that needs it (arrays in the model's own dtype, uint8 for pixels)
      → batch → predict → one write transaction per batch (`curator.runs.writer`)
      → record the run (finished, failed, interrupted or cancelled).

Resumable: a batch's results and its `processed` rows commit together, so after a
kill -9 or a cancel a re-run does exactly the images whose batch never committed, and
the unique (model, revision, image) key keeps it free of duplicates.
"""

from __future__ import annotations

import io
import math
import os
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from PIL import Image as PILImage
from PIL import ImageOps
from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import aliased

from curator.progress import CancelToken, Reporter, RunOutcome, phase
from curator.query.compile import compile_query
from curator.runs.writer import DEFAULT_MAX_TAGS, Counts, Item, write_batch
from curator.workers import process_pool
from db.engine import Catalog, retry_transient
from db.schema import Embedding, File, Image, Processed, Run, utcnow
from taggers.base import DecodedImage, Model, Result
from taggers.errors import ModelLoadError, TaggerError, missing_dependency

PAGE = 1000
# EXIF orientations that turn the image a quarter turn (width and height swap).
_QUARTER_TURNS = frozenset({5, 6, 7, 8})


@dataclass(slots=True)
class RunOptions:
    where: str | None = None
    redo: bool = False
    batch_size: int = 8
    workers: int | None = None  # decode processes; None: one less than the cores
    limit: int | None = None
    max_tags: int = DEFAULT_MAX_TAGS  # tags kept per image and model, highest scores first
    reporter: Reporter | None = None  # progress events (see curator.progress)
    cancel: CancelToken | None = None
    # "local": this process and a decode pool; "ray": a Ray cluster (curator.runs.ray_engine),
    # where `workers` counts model workers.
    engine: str = "local"
    address: str | None = None  # the Ray cluster to join; None: start one on this machine
    worker_gpus: float | None = None  # GPUs per Ray model worker; None: 1 where there are any
    scope: Any = None  # a further SQLAlchemy condition on Image (e.g. under some paths)


@dataclass(slots=True)
class RunSummary:
    model: str
    revision: str
    run_id: int
    done: int = 0
    failed: int = 0
    skipped: int = 0  # already processed by this revision before the run
    tags: int = 0
    nonfinite: int = 0  # NaN or infinite values the model gave, not stored
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
            "nonfinite": self.nonfinite,
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


# --- loading ---------------------------------------------------------------------------


def load_models(models: Sequence[Model]) -> None:
    """Load and validate every model; one that cannot run raises `TaggerError` (one line)."""
    for model in models:
        load = getattr(model, "load", None)
        if load is None:
            continue
        try:
            load()
        except TaggerError:
            raise
        except ImportError as exc:
            raise missing_dependency(exc, purpose=f"model {model.name}") from None
        except Exception as exc:  # noqa: BLE001 - whatever a loader raises, it is one line
            message = " ".join(str(exc).split()) or type(exc).__name__
            raise ModelLoadError(f"cannot load model {model.name}: {message}") from None


# --- decoding (runs in worker processes) ----------------------------------------------


def draft_size(width: int, height: int, side: int) -> tuple[int, int]:
    """The smallest size that still covers a `side`-pixel square model input."""
    scale = side / max(width, height)
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def needs_pixels(model: Model) -> bool:
    """False for models that read only what the header says (size, JPEG tables)."""
    return bool(getattr(model, "needs_pixels", True))


def reads_embeddings(model: Model) -> str | None:
    """The embedding model whose stored vectors `model` reads instead of an image, if any.

    Such a model (an aesthetic head over CLIP embeddings) is never sent to a decoder:
    the loop selects the images that have those vectors and passes them to `predict`.
    """
    return getattr(model, "embedding_model", None)


def decode(
    path: str, draft_side: int | None = None, *, pixels: bool = True, data: bytes | None = None
) -> DecodedImage:
    """Open and decode one image, upright, with what format-specific models need.

    With `draft_side`, a JPEG is decoded in the DCT domain at the smallest scale that
    still covers a square of that side: a fraction of the cost of a full decode.
    Without `pixels`, only the header is read: the record's image must not be used.
    `data` is the file's content when it was read already.
    """
    with PILImage.open(path if data is None else io.BytesIO(data)) as img:
        original = img.size
        fmt = img.format
        quantization = getattr(img, "quantization", None) if fmt == "JPEG" else None
        orientation = img.getexif().get(0x0112)
        if not pixels:
            upright = img
        else:
            if fmt == "JPEG" and draft_side:
                img.draft("RGB", draft_size(*img.size, draft_side))
            img.load()
            upright = ImageOps.exif_transpose(img)
    if orientation in _QUARTER_TURNS:
        original = (original[1], original[0])
    tables = {int(k): list(v) for k, v in quantization.items()} if quantization else None
    return DecodedImage(upright, original, fmt, path, tables)


def decode_for_models(path: str, models: Sequence[Model], needs: Sequence[int]) -> dict[int, Any]:
    """Decode an image once and preprocess it for each model that needs it."""
    needs = [i for i in needs if not reads_embeddings(models[i])]
    if not needs:
        return {}
    sizes = [models[i].input_size for i in needs if needs_pixels(models[i])]
    with warnings.catch_warnings():
        # Decoder warnings were recorded with the image by the scan (`curator problems
        # --warnings`); from a worker they would only break the progress bar.
        warnings.simplefilter("ignore")
        decoded = decode(path, max(sizes) if sizes and all(sizes) else None, pixels=bool(sizes))
        return {i: models[i].preprocess(decoded) for i in needs}


def _decode_batch(jobs: list[_Job], models: Sequence[Model]) -> list[_Decoded]:
    out = []
    for job in jobs:
        try:
            out.append(
                _Decoded(job.image_id, job.path, decode_for_models(job.path, models, job.needs))
            )
        except ImportError as exc:
            # A package the model needs is missing: not this image's fault, and the same
            # for every image, so the run stops with one line instead.
            raise missing_dependency(exc, purpose="preparing images for the model") from None
        except Exception as exc:  # noqa: BLE001 - a bad image is recorded, the run goes on
            message = " ".join(str(exc).split()) or type(exc).__name__
            out.append(_Decoded(job.image_id, job.path, error=message))
    return out


# Worker processes keep the run's models from their initializer, so a batch ships only
# its jobs; the main process never sets this.
_WORKER_MODELS: list[Model] = []


def _init_decoder(models: Sequence[Model]) -> None:
    _WORKER_MODELS[:] = models


def _decode_in_worker(jobs: list[_Job]) -> list[_Decoded]:
    return _decode_batch(jobs, _WORKER_MODELS)


# --- selection -------------------------------------------------------------------------


def _not_done(model: Model) -> Any:
    return ~exists().where(
        Processed.image_id == Image.id,
        Processed.model == model.name,
        Processed.revision == model.revision,
    )


def _has_input(model: Model, present: Any) -> Any:
    """An image the model can read: a present file, or its stored embedding."""
    source = reads_embeddings(model)
    if source is None:
        return present
    return exists().where(Embedding.image_id == Image.id, Embedding.model == source)


def select_jobs(
    catalog: Catalog, models: Sequence[Model], options: RunOptions
) -> tuple[int, int, Iterator[_Job]]:
    """(to do, already done, jobs): images with a present file that a model still needs.

    "Already done" counts images every model has done before, whatever `limit` leaves.
    """
    where = compile_query(options.where)
    if options.scope is not None:
        where = and_(where, options.scope)
    f = aliased(File)
    first_path = (
        select(f.path)
        .where(f.image_id == Image.id, f.present.is_(True))
        .order_by(f.id)
        .limit(1)
        .scalar_subquery()
    )
    present = exists().where(File.image_id == Image.id, File.present.is_(True))
    need_cols = [
        (
            _has_input(m, present) if options.redo else and_(_not_done(m), _has_input(m, present))
        ).label(f"need{i}")
        for i, m in enumerate(models)
    ]
    readable = or_(*(_has_input(m, present) for m in models))
    conds = [where, readable]
    if not options.redo:
        conds.append(or_(*(and_(_not_done(m), _has_input(m, present)) for m in models)))
    with catalog.session() as s:
        total = s.scalar(select(func.count(Image.id)).where(where, readable))
        todo = s.scalar(select(func.count(Image.id)).where(*conds))
    done_before = total - todo
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
                pixels = any(reads_embeddings(models[i]) is None for i in needs)
                if needs and (row[1] or not pixels):
                    yield _Job(row[0], row[1] or "", needs)
                    emitted += 1
                    if options.limit is not None and emitted >= options.limit:
                        return

    return todo, done_before, jobs()


# --- the loop --------------------------------------------------------------------------


def predict_models(models: Sequence[Model], decoded: list[_Decoded]) -> list[Item]:
    """Each model's results for the decoded images it has inputs for (one batch per model)."""
    items: list[Item] = []
    for i, model in enumerate(models):
        batch = [d for d in decoded if d.error is None and i in d.inputs]
        if not batch:
            continue
        try:
            results: list[Result] = model.predict([d.inputs[i] for d in batch])
        except TaggerError:
            raise
        except ImportError as exc:
            raise missing_dependency(exc, purpose=f"model {model.name}") from None
        except Exception as exc:  # noqa: BLE001 - a model failing is one line, not a trace
            message = " ".join(str(exc).split()) or type(exc).__name__
            raise TaggerError(f"model {model.name} failed on a batch: {message}") from None
        if len(results) != len(batch):
            raise TaggerError(
                f"model {model.name} gave {len(results)} results for {len(batch)} images"
            )
        items.extend(Item(i, d.image_id, r) for d, r in zip(batch, results, strict=True))
    return items


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
                        "max_tags": self.options.max_tags,
                        **self._engine_params(),
                    },
                )
                s.add(run)
                s.flush()
                self.summaries.append(RunSummary(model.name, model.revision, run.id))

    def _engine_params(self) -> dict[str, Any]:
        if self.options.engine == "local":
            return {}
        return {"engine": self.options.engine, "address": self.options.address}

    def finish(self, status: str, seconds: float) -> None:
        with self.catalog.write() as s:
            for summary in self.summaries:
                summary.status, summary.seconds = status, seconds
                row = s.get(Run, summary.run_id)
                row.status, row.finished_at, row.duration_s = status, utcnow(), seconds
                counts = summary.as_dict()
                row.counts = {k: counts[k] for k in ("done", "failed", "skipped", "tags")}
                if summary.nonfinite:
                    row.counts["nonfinite"] = summary.nonfinite

    def _load_vectors(self, decoded: list[_Decoded], jobs: dict[int, _Job]) -> None:
        """Stored embeddings as the inputs of the models that read them."""
        from curator.curation.dedup import load_embeddings

        for i, model in enumerate(self.models):
            source = reads_embeddings(model)
            wanted = [d for d in decoded if d.error is None and i in jobs[d.image_id].needs]
            if source is None or not wanted:
                continue
            with self.catalog.session() as s:
                vectors = load_embeddings(s, source, [d.image_id for d in wanted])
            for d in wanted:
                if d.image_id in vectors:
                    d.inputs[i] = vectors[d.image_id]

    def predict(self, decoded: list[_Decoded]) -> list[Item]:
        return predict_models(self.models, decoded)

    def write_batch(self, decoded: list[_Decoded], jobs: dict[int, _Job]) -> None:
        self._load_vectors(decoded, jobs)
        self.store(decoded, self.predict(decoded), jobs)

    def store(self, decoded: list[_Decoded], items: list[Item], jobs: dict[int, _Job]) -> None:
        """Write one batch's results and problems in one transaction and count them."""
        problems = [(d.path, d.error) for d in decoded if d.error is not None]

        def write() -> Counts:
            with self.catalog.write() as s:
                return write_batch(
                    s,
                    self.models,
                    [summary.run_id for summary in self.summaries],
                    items,
                    problems,
                    max_tags=self.options.max_tags,
                )

        # runs sharing a server catalog may deadlock on the same images' rows
        counts = retry_transient(write)
        for d in decoded:
            if d.error is not None:
                for i in jobs[d.image_id].needs:
                    self.summaries[i].failed += 1
        for item in items:
            self.summaries[item.model].done += 1
        for i, summary in enumerate(self.summaries):
            summary.tags += counts.tags[i]
            summary.nonfinite += counts.nonfinite[i]


# Runs first within a run's records: hands the runner images it decoded itself (a scan
# that also runs the models, `curator.runs.scan_run`) and returns their ids.
Feed = Callable[["_Runner"], set[int]]


def run_models(
    catalog: Catalog,
    models: Sequence[Model],
    options: RunOptions | None = None,
    *,
    kind: str = "tag",
    feed: Feed | None = None,
) -> list[RunSummary]:
    """Run models over the catalog's images; one summary per model.

    Every model is loaded and validated first: one that cannot run raises
    `taggers.errors.TaggerError` before any image is read or any run recorded.
    With `feed`, the images it handled are not selected again.
    """
    options = options or RunOptions()
    if options.engine == "ray":
        from curator.runs.ray_engine import run_on_ray

        return run_on_ray(catalog, models, options, kind=kind)
    if options.engine != "local":
        raise ValueError(f"unknown engine {options.engine!r}; use local or ray")
    if options.max_tags < 1:
        raise ValueError("max_tags must be at least 1")
    load_models(models)
    runner = _Runner(catalog, models, options)
    todo, done_before, jobs = select_jobs(catalog, models, options)
    runner.start(kind)
    for summary in runner.summaries:
        summary.skipped = done_before
    start = time.monotonic()
    workers = options.workers if options.workers is not None else max(1, (os.cpu_count() or 1) - 1)
    outcome = RunOutcome()
    try:
        if feed is not None:
            with outcome.track():
                jobs = _skip_fed(feed(runner), jobs, options.limit)
        with outcome.track(), phase(options.reporter, kind, todo) as bar:
            if workers <= 1:
                for batch in _batched(jobs, options.batch_size):
                    _check(options.cancel)
                    runner.write_batch(_decode_batch(batch, models), {j.image_id: j for j in batch})
                    bar.advance(len(batch))
            else:
                _pipelined(runner, jobs, workers, bar)
    finally:
        runner.finish(outcome.status, time.monotonic() - start)
    return runner.summaries


def _skip_fed(handled: set[int], jobs: Iterator[_Job], limit: int | None) -> Iterator[_Job]:
    """The selection less the images a feed handled, within what `limit` leaves."""
    jobs = (j for j in jobs if j.image_id not in handled)
    return jobs if limit is None else islice(jobs, max(0, limit - len(handled)))


def _check(cancel: CancelToken | None) -> None:
    if cancel is not None:
        cancel.check()


def _pipelined(runner: _Runner, jobs: Iterator[_Job], workers: int, bar) -> None:  # noqa: ANN001
    """Workers decode batch n+1.. while this process predicts and writes batch n."""
    pool = process_pool(workers, _init_decoder, (runner.models,))
    inflight: deque[tuple[Future, list[_Job]]] = deque()
    try:
        for batch in _batched(jobs, runner.options.batch_size):
            _check(runner.options.cancel)
            inflight.append((pool.submit(_decode_in_worker, batch), batch))
            if len(inflight) > workers * 2:
                _drain_one(runner, inflight, bar)
        while inflight:
            _check(runner.options.cancel)
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
