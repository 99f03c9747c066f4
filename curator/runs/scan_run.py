"""Scan and run models in one pass: each new file is read and decoded once for both.

    walk → probe in a worker (sha256, size, mode, pHash, infotext) and, from the pixels
    that probe decoded, preprocess for every model (arrays in the model's dtype)
      → write the scan's rows → predict → the run's write, one batch at a time
      → then the usual run loop over what the scan did not hand over (unchanged files
        not yet done by a model, images whose content was catalogued before).

The catalog ends as after `scan` followed by `run_models` over the same paths: the same
image, file, problem, tag and `processed` rows, one scan run and one run per model.
A JPEG large enough that 1/8 of it covers the models' input (wallpapers) is decoded
once, at that scale, for both; a smaller one is read, hashed and parsed once but decoded
twice (at 1/8 for the hash, the models' scale for them): a hash from the models' scale
would differ from what a plain scan records.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import aliased

from curator.errors import UsageError
from curator.ingest.probe import Opened, ProbeResult
from curator.ingest.scan import Scanner, ScanOptions, ScanSummary, scan
from curator.progress import Reporter
from curator.runs.loop import (
    RunOptions,
    RunSummary,
    _Decoded,
    _Runner,
    decode,
    draft_size,
    needs_pixels,
    reads_embeddings,
    run_models,
    select_jobs,
)
from db.engine import Catalog
from db.schema import File, Image
from taggers.base import DecodedImage, Model
from taggers.errors import missing_dependency


@dataclass(slots=True)
class Unprepared:
    """Preprocessing failed in the worker: the run records it as `decode_loop` does."""

    message: str
    missing: ImportError | None = None  # a package the model needs: the run stops


@dataclass(frozen=True, slots=True)
class PrepareFor:
    """The probe hook: the decoded file preprocessed for each model that reads pixels.

    The same steps as `curator.runs.loop.decode_for_models`, from the probe's pixels
    instead of a second read. Any format but JPEG reuses them; a JPEG reuses them when
    the hash's 1/8 scale covers the models' input, else it is decoded again from the
    bytes in memory at the models' draft scale.
    """

    models: tuple[Model, ...]

    def __call__(self, opened: Opened) -> dict[int, Any] | Unprepared:
        models = self.models
        needs = [i for i, m in enumerate(models) if not reads_embeddings(m)]
        if not needs:
            return {}
        sizes = [models[i].input_size for i in needs if needs_pixels(models[i])]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                side = max(sizes) if sizes and all(sizes) else None
                if opened.drafted and not _same_draft(opened, side):
                    decoded = decode(opened.path, side, pixels=bool(sizes), data=opened.data)
                else:
                    decoded = DecodedImage(
                        opened.upright,
                        opened.original_size,
                        opened.format,
                        opened.path,
                        _tables(opened.image) if opened.drafted else None,
                    )
                return {i: models[i].preprocess(decoded) for i in needs}
        except ImportError as exc:
            return Unprepared(str(exc), exc)
        except Exception as exc:  # noqa: BLE001 - recorded for the image, as the run loop does
            return Unprepared(" ".join(str(exc).split()) or type(exc).__name__)


def _same_draft(opened: Opened, side: int | None) -> bool:
    """Whether the models' JPEG draft decodes at the scale the probe's did (large
    images, where 1/8 still covers the models' input): then its pixels are theirs."""
    if side is None:
        return False
    with PILImage.open(io.BytesIO(opened.data)) as img:
        img.draft("RGB", draft_size(*img.size, side))
        return img.size == opened.image.size and img.mode == opened.image.mode


def _tables(img: PILImage.Image) -> dict[int, list[int]] | None:
    quantization = getattr(img, "quantization", None)
    return {int(k): list(v) for k, v in quantization.items()} if quantization else None


def scope_of(roots: Sequence[str]) -> Any:
    """Images with a present file under one of `roots` (folders) or at it (files)."""
    f = aliased(File)
    conds = []
    for root in roots:
        root = os.path.abspath(root)
        if os.path.isdir(root):
            folder = root.rstrip(os.sep) or os.sep
            prefix = folder.rstrip(os.sep) + os.sep
            conds.append((f.folder == folder) | f.folder.startswith(prefix, autoescape=True))
        else:
            conds.append(f.path == root)
    return exists().where(f.image_id == Image.id, f.present.is_(True), or_(*conds))


class _Feed(Scanner):
    """A scan whose workers also preprocess for the models, feeding the runner."""

    def __init__(
        self, catalog: Catalog, options: ScanOptions, runner: _Runner, run_options: RunOptions
    ):
        super().__init__(catalog, options)
        self.runner = runner
        self.run_options = run_options
        self.prepare = PrepareFor(tuple(runner.models))
        self.pending: dict[str, Any] = {}  # path → prepared inputs, its rows not yet run
        self.handled: set[int] = set()

    def _collect(self, result, bar: Reporter, advance: bool = True) -> None:  # noqa: ANN001
        if isinstance(result, ProbeResult) and result.prepared is not None:
            self.pending[result.path] = result.prepared
            result.prepared = None
        super()._collect(result, bar, advance)
        if len(self.pending) >= self.run_options.batch_size:
            self._flush()

    def _flush(self) -> None:
        super()._flush()  # the scan's rows first: the run writes against their ids
        if self.stopping:
            # Interrupted: what the scan read is saved; the models' work is left to the
            # next run, which selects the images without a `processed` row.
            self.pending.clear()
            return
        self.run_pending(full_only=True)

    def run_pending(self, full_only: bool = False) -> None:
        """Predict and write the prepared images whose scan rows are committed."""
        size = self.run_options.batch_size
        while self.pending and (len(self.pending) >= size or not full_only):
            paths = list(self.pending)[:size]
            prepared = {p: self.pending.pop(p) for p in paths}
            self._run(prepared)

    def _run(self, prepared: dict[str, Any]) -> None:
        limit = self.run_options.limit
        if limit is not None and len(self.handled) >= limit:
            return
        with self.catalog.session() as s:
            image_of = dict(
                s.execute(
                    select(File.path, File.image_id).where(
                        File.path.in_(list(prepared)), File.present.is_(True)
                    )
                ).all()
            )
        inputs_of = {image_of[p]: v for p, v in prepared.items() if p in image_of}
        if not inputs_of:
            return
        # The run loop's own selection, on these images: `where`, redo and what each
        # model revision has done decide which models run, as in a separate run.
        options = replace(self.run_options, scope=Image.id.in_(list(inputs_of)), limit=None)
        _, _, found = select_jobs(self.catalog, self.runner.models, options)
        jobs = [j for j in found if j.image_id not in self.handled]
        if limit is not None:
            jobs = jobs[: limit - len(self.handled)]
        if not jobs:
            return
        decoded = []
        for job in jobs:
            value = inputs_of[job.image_id]
            if isinstance(value, Unprepared):
                if value.missing is not None:
                    raise missing_dependency(
                        value.missing, purpose="preparing images for the model"
                    ) from None
                decoded.append(_Decoded(job.image_id, job.path, error=value.message))
            else:
                inputs = {i: value[i] for i in job.needs if i in value}
                decoded.append(_Decoded(job.image_id, job.path, inputs))
        self.runner.write_batch(decoded, {j.image_id: j for j in jobs})
        self.handled.update(j.image_id for j in jobs)


def scan_and_run(
    catalog: Catalog,
    roots: Sequence[str | os.PathLike[str]],
    models: Sequence[Model],
    options: RunOptions | None = None,
    *,
    scan_options: ScanOptions | None = None,
    kind: str = "tag",
) -> tuple[ScanSummary, list[RunSummary]]:
    """Catalog `roots` and run `models` on their images, decoding each new file once.

    Only images under `roots` (and matching ``options.where``) are run. The scan's
    workers, reporter and cancel token default to the run's. Models are loaded and
    validated before any file is read.
    """
    options = options or RunOptions()
    paths = [os.path.abspath(os.fspath(r)) for r in roots]
    for path in paths:
        if not os.path.isdir(path) and not os.path.isfile(path):
            raise UsageError(f"no such folder or file: {path}")
    # The run's default for decoding processes, one less than the cores: this process
    # predicts, and more decoders than that only take cores from the model.
    workers = options.workers if options.workers is not None else max(1, (os.cpu_count() or 1) - 1)
    scan_options = scan_options or ScanOptions(
        workers=workers, reporter=options.reporter, cancel=options.cancel
    )
    scanned: list[ScanSummary] = []

    def feed(runner: _Runner) -> set[int]:
        scanner = _Feed(catalog, scan_options, runner, options)
        scanner.phase = f"scan + {kind}"
        scanned.append(scanner.run(paths))
        scanner.run_pending()
        return scanner.handled

    under = scope_of(paths)
    scoped = replace(options, scope=under if options.scope is None else and_(options.scope, under))
    if options.engine != "local":
        # The models run on a cluster, not beside this process's decoders, so there is
        # no one pass to share: scan here, then run on the cluster.
        found = scan(catalog, paths, scan_options)
        return found, run_models(catalog, models, scoped, kind=kind)
    summaries = run_models(catalog, models, scoped, kind=kind, feed=feed)
    return scanned[0], summaries


__all__ = ["PrepareFor", "Unprepared", "scan_and_run", "scope_of"]
