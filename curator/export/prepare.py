"""`curator prepare`: one command from a folder of photos to a DreamBooth training set.

    scan + detect (faces for focal crops; NSFW when filtering on it) + tag (when a
    tagger is available), one pass that decodes each new file once
         → dedup → filter → bucket, crop, caption → layout

Every step is the same library call the individual commands make, recorded in the
catalog as usual, so a user can inspect or redo any step afterwards. The report says
what was kept and, for everything dropped, why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, or_, select

from curator.curation.dedup import dedup
from curator.errors import CuratorError, UsageError
from curator.export import ExportOptions, export
from curator.ingest.scan import ScanOptions, scan
from curator.progress import CancelToken, Reporter
from curator.query.compile import compile_query, folder_condition
from curator.query.parser import quote
from curator.runs.loop import RunOptions
from curator.runs.scan_run import scan_and_run
from db.engine import Catalog
from db.schema import File, Image, Problem

DEFAULT_TAGGER = "wd-vit-tagger-v3"


# Problems about folders and sidecars, and models failing on a catalogued image: they
# drop no image.
NOT_IMAGES = ("unreadable_folder", "sidecar_too_large", "unreadable_sidecar", "decode_failed")


@dataclass(slots=True)
class PrepareOptions:
    """What `prepare` does; names and defaults follow `ExportOptions` where they overlap.

    ``min_side`` is the bucket minimum (default: the preset's); images whose short side
    is under it are dropped, since they would be enlarged to fill any bucket.
    ``no_upscale`` gives small images smaller buckets instead. ``background`` is the
    colour transparency is flattened onto. Any other `ExportOptions` field goes in
    ``export`` (``max_area``, ``resolution``, ``step``, ...).
    """

    instance_token: str
    class_word: str
    layout: str = "kohya-dreambooth"
    bucket: str = "sd15"
    min_side: int | None = None
    no_upscale: bool = False
    background: tuple[int, int, int] = (255, 255, 255)
    crop: str = "focal"
    repeats: int = 10
    tagger: str | None = DEFAULT_TAGGER  # None: do not tag
    where: str = ""  # an extra query every kept image must match
    max_nsfw: float | None = None
    dedup_distance: int = 6
    reg_query: str | None = None
    image_format: str = "png"
    seed: int = 0
    force: bool = False
    workers: int | None = None
    reporter: Reporter | None = None  # progress events (see curator.progress)
    cancel: CancelToken | None = None
    export: dict[str, Any] = field(default_factory=dict)  # any other ExportOptions field


@dataclass(slots=True)
class PrepareReport:
    source: str
    target: str
    steps: list[str] = field(default_factory=list)
    found: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    details: list[dict[str, str]] = field(default_factory=list)
    export_id: int | None = None
    histogram: list[tuple[tuple[int, int], int]] = field(default_factory=list)

    def drop(self, reason: str, count: int, examples: list[dict[str, str]] | None = None) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + count
            self.details.extend(examples or [])

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "steps": self.steps,
            "found": self.found,
            "kept": self.kept,
            "dropped": self.dropped,
            "details": self.details,
            "export_id": self.export_id,
            "histogram": [{"bucket": list(b), "count": n} for b, n in self.histogram],
        }


def prepare(
    catalog: Catalog,
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: PrepareOptions,
) -> PrepareReport:
    """Turn the images under `source` into a DreamBooth training set at `out`."""
    if not options.instance_token.strip() or not options.class_word.strip():
        raise UsageError(
            "prepare needs instance_token and class_word (e.g. instance_token='sks', "
            "class_word='dog')"
        )
    export_settings = _export_settings(options)
    ExportOptions(**export_settings).check()  # bad settings fail before any work
    src = os.path.abspath(source)
    if not os.path.isdir(src):
        raise UsageError(f"no such folder: {src}")
    report = PrepareReport(source=src, target=os.path.abspath(out))
    in_folder = folder_condition(src)

    # 1. Scan, detect and tag in one pass (faces for focal crops, NSFW only when
    # filtering on it, the tagger when asked for): each new file is decoded once for
    # all of them. Unreadable files are dropped with their problem kind.
    specs = (
        (["faces"] if options.crop == "focal" else [])
        + (["nsfw"] if options.max_nsfw is not None else [])
        + ([options.tagger] if options.tagger else [])
    )
    models, notes = _load(specs)
    if models:
        run_opts = RunOptions(
            workers=options.workers, reporter=options.reporter, cancel=options.cancel
        )
        summary, runs = scan_and_run(
            catalog,
            [src],
            [m for _, m in models],
            run_opts,
            kind="prepare",
        )
        for (spec, _), run in zip(models, runs, strict=True):
            notes[_step(spec)].insert(
                0, f"{run.model} on {run.done} images ({run.skipped} already done)"
            )
    else:
        scan_options = ScanOptions(
            workers=options.workers, reporter=options.reporter, cancel=options.cancel
        )
        summary = scan(catalog, [src], scan_options)
    report.steps.append(
        f"scan: {summary.seen} images, {summary.new_images} new, {summary.problems} unreadable"
    )
    report.steps.extend(f"{kind}: " + "; ".join(lines) for kind, lines in notes.items())
    if not options.tagger:
        report.steps.append("tag: skipped (no tagger asked for)")
    with catalog.session() as s:
        for path, kind, message in s.execute(
            select(Problem.path, Problem.kind, Problem.message).where(
                Problem.path.startswith(src.rstrip(os.sep) + os.sep, autoescape=True),
                Problem.kind.not_in(NOT_IMAGES),
            )
        ):
            report.drop(f"unreadable ({kind})", 1, [{"path": path, "reason": f"{kind}: {message}"}])
        report.found = s.scalar(select(func.count(Image.id)).where(in_folder)) + sum(
            report.dropped.values()
        )

    # 2. Near-duplicates: the keeper stays (most pixels, best aesthetic, oldest).
    result = dedup(catalog, "phash", distance=options.dedup_distance, query=f"folder:{quote(src)}")
    report.steps.append(f"dedup: {len(result.groups)} groups of near-copies")
    for group in result.groups:
        for m in group.duplicates:
            report.drop(
                "near-duplicate",
                1,
                [
                    {
                        "path": m.paths[0] if m.paths else "",
                        "reason": f"near-copy of {group.keeper.paths[0]}",
                    }
                ],
            )

    # 5. The selection, and what it leaves out.
    query = f"folder:{quote(src)}"
    if options.max_nsfw is not None:
        query += f" score(nsfw)<{options.max_nsfw}"
    if options.where:
        query += f" ({options.where})"
    with catalog.session() as s:
        live = [in_folder, Image.duplicate_of.is_(None)]
        rejected = s.scalar(select(func.count(Image.id)).where(*live, Image.status == "rejected"))
        report.drop("rejected in review", rejected or 0)
        live.append(Image.status != "rejected")
        if options.max_nsfw is not None:
            nsfw_ok = compile_query(f"score(nsfw)<{options.max_nsfw}")
            report.drop(
                f"nsfw score >= {options.max_nsfw}",
                s.scalar(select(func.count(Image.id)).where(*live, ~nsfw_ok)) or 0,
            )
            live.append(nsfw_ok)
        if options.where:
            report.drop(
                f"not matching {options.where!r}",
                s.scalar(select(func.count(Image.id)).where(*live, ~compile_query(options.where)))
                or 0,
            )
            live.append(compile_query(options.where))
        # Images that would be enlarged to fill any bucket (48 px icons become 576 px).
        minimum = ExportOptions(**export_settings).bucket_spec().min_side
        small = (
            select(func.min(File.path), Image.width, Image.height)
            .join(File, File.image_id == Image.id)
            .where(*live, or_(Image.width < minimum, Image.height < minimum))
            .group_by(Image.id, Image.width, Image.height)
            .order_by(func.min(File.path))
        )
        for path, width, height in s.execute(small):
            report.drop(
                f"short side under {minimum} px",
                1,
                [{"path": path, "reason": f"{width}x{height} is under {minimum} px"}],
            )
        query += f" width>={minimum} height>={minimum}"

    # 6. Bucket, crop, caption, write.
    summary = export(catalog, out, ExportOptions(**{**export_settings, "query": query}))
    report.export_id = summary.export_id
    report.kept = summary.exported
    report.histogram = summary.histogram
    for skipped in summary.skipped:
        report.drop(
            f"not exported ({skipped.reason})",
            1,
            [{"path": skipped.name, "reason": skipped.reason}],
        )
    report.steps.append(f"export: {summary.exported} images in {summary.layout} layout")
    return report


def _export_settings(options: PrepareOptions) -> dict[str, Any]:
    """The `ExportOptions` fields prepare's options stand for (without the query)."""
    settings: dict[str, Any] = {
        "layout": options.layout,
        "bucket": options.bucket,
        "crop": options.crop,
        "instance": options.instance_token,
        "class_word": options.class_word,
        "repeats": options.repeats,
        "reg_query": options.reg_query,
        "image_format": options.image_format,
        "background": tuple(options.background),
        "seed": options.seed,
        "force": options.force,
        "workers": options.workers,
        "reporter": options.reporter,
        "cancel": options.cancel,
    }
    if options.min_side is not None:
        settings["min_side"] = options.min_side
    if options.no_upscale:
        settings["no_upscale"] = True
    return {**settings, **options.export}


def _step(spec: str) -> str:
    from taggers.registry import get_detector

    return "detect" if get_detector(spec) is not None else "tag"


def _load(specs: list[str]) -> tuple[list[tuple[str, Any]], dict[str, list[str]]]:
    """The models that load, and a note for each that cannot (not fatal), per step."""
    from curator.runs.loop import load_models
    from taggers.errors import TaggerError
    from taggers.factory import load_model

    models, notes = [], {_step(spec): [] for spec in specs}
    for spec in specs:
        try:
            model = load_model(spec)
            load_models([model])
            models.append((spec, model))
        except (TaggerError, CuratorError, ImportError) as exc:
            notes[_step(spec)].append(f"{spec} skipped, not available: {exc}")
    return models, notes
