"""Running an export: plan, render, write the layout and manifest, swap in, record."""

from __future__ import annotations

import dataclasses
import os
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from curator import __version__
from curator.errors import Cancelled, CuratorError, ExportError, UsageError
from curator.export.buckets import BucketSpec, bucket_histogram
from curator.export.check import plan_findings, strict_message
from curator.export.filenames import safe_join
from curator.export.layouts import REG, Layout, LayoutItem, get_layout
from curator.export.layouts.base import json_text, write_text
from curator.export.options import (
    GENERATOR,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    ExportOptions,
    ExportSummary,
    SkippedImage,
)
from curator.export.plan import Planned, layout_settings, plan_export
from curator.export.render import RenderJob, RenderResult, file_sha256, render
from curator.export.target import commit, inspect_target, recover, stage
from curator.media.imagewrite import normalize_format
from curator.progress import CancelToken, Reporter, phase
from curator.workers import process_pool
from db.engine import Catalog
from db.schema import Export, ExportItem


def run_export(
    catalog: Catalog,
    target_dir: str | os.PathLike[str],
    options: ExportOptions | None = None,
    /,
    **settings: Any,
) -> ExportSummary:
    """`curator.export.export`.

    ``settings`` are `ExportOptions` fields (``query=``, ``layout=``, ``crop=``, ...),
    applied over ``options``. Raises `ExportError` when the target is not empty (without
    ``force``) or nothing could be exported, `UsageError` for settings that do not fit.
    """
    started = time.monotonic()
    try:
        opts = dataclasses.replace(options or ExportOptions(), **settings)
    except TypeError as error:
        raise UsageError(f"unknown export setting: {error}") from None
    opts.check()
    layout = get_layout(opts.layout)
    spec = opts.bucket_spec()
    target = Path(target_dir).expanduser().absolute()
    layout.check(layout_settings(opts, ""), has_reg=opts.reg_query is not None)
    summary = ExportSummary(target=str(target), layout=layout.name)
    try:
        summary.recovered = recover(target)
    except OSError as error:
        raise ExportError(f"cannot tidy up beside {target}: {error.strerror or error}") from None
    state = inspect_target(target, opts.force, opts.overwrite)
    _check_cancel(opts.cancel, target)

    planned = plan_export(catalog, opts, layout, spec, summary)
    if not planned:
        raise ExportError(_nothing_message(opts, summary))
    if opts.strict and (findings := plan_findings(planned, opts, spec)):
        raise ExportError(strict_message(findings))

    try:
        staging = stage(target)
    except OSError as error:
        raise ExportError(_write_failure(target, error)) from error
    temp = staging.temp
    try:
        for folder in sorted({posix_dir(p.path) for p in planned}):
            safe_join(temp, *folder.split("/")).mkdir(parents=True, exist_ok=True)
        jobs = [_job(i, p, opts, temp) for i, p in enumerate(planned)]
        render_started = time.monotonic()
        results = render_all(jobs, opts.workers, opts.reporter, opts.cancel, target)
        summary.render_seconds = time.monotonic() - render_started
        rendered = _collect(planned, results, summary)
        if not rendered:
            raise ExportError(_nothing_message(opts, summary))
        manifest = _write_files(temp, target, rendered, opts, layout, spec, summary)
        _check_cancel(opts.cancel, target)
        summary.moved_aside = commit(staging, state)
    except OSError as error:  # a metadata file, a folder or the final move
        staging.discard()
        raise ExportError(_write_failure(target, error)) from error
    except BaseException:
        staging.discard()  # a finished target is never touched here
        raise

    summary.export_id = _record(catalog, target, opts, layout, manifest, rendered)
    summary.seconds = time.monotonic() - started
    return summary


def posix_dir(path: str) -> str:
    """The folder part of a POSIX relative path."""
    return path.rsplit("/", 1)[0]


def _nothing_message(opts: ExportOptions, summary: ExportSummary) -> str:
    if summary.skipped:
        first = summary.skipped[0]
        return (
            f"nothing exported: all {len(summary.skipped)} images were skipped "
            f"(first: {first.name}: {first.reason})"
        )
    excluded = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(summary.excluded.items()))
    return f"no images to export for query {opts.query!r}" + (
        f" (excluded: {excluded})" if excluded else ""
    )


def _job(index: int, item: Planned, opts: ExportOptions, temp: Path) -> RenderJob:
    return RenderJob(
        index=index,
        source=item.source.path,
        sha256=item.source.sha256,
        size=(item.source.width, item.source.height),
        bucket=item.bucket,
        output=str(safe_join(temp, *item.path.split("/"))),
        mode=opts.crop,
        seed=opts.seed,
        boxes=item.boxes,
        crop=item.crop,
        image_format=normalize_format(opts.image_format),
        quality=opts.quality,
        lossless=opts.lossless,
        png_compression=opts.png_compression,
        background=opts.background,
    )


def _collect(
    planned: list[Planned], results: dict[int, RenderResult], summary: ExportSummary
) -> list[tuple[Planned, RenderResult]]:
    """The items that were rendered, with their results; failures go to ``summary.skipped``."""
    rendered: list[tuple[Planned, RenderResult]] = []
    for index, item in enumerate(planned):
        result = results[index]
        if result.error is not None or result.crop is None:
            name = os.path.basename(item.source.path)
            summary.skipped.append(SkippedImage(item.source.sha256, name, result.error or "?"))
            continue
        rendered.append((item, result))
        if item.source.role == REG:
            summary.reg_exported += 1
        else:
            summary.exported += 1
    summary.skipped.sort(key=lambda s: (s.name, s.sha256))
    summary.histogram = bucket_histogram(item.bucket for item, _ in rendered)
    return rendered


def _write_files(
    temp: Path,
    target: Path,
    rendered: list[tuple[Planned, RenderResult]],
    opts: ExportOptions,
    layout: Layout,
    spec: BucketSpec,
    summary: ExportSummary,
) -> dict[str, Any]:
    """Sidecars, the layout's files and the manifest; returns the manifest."""
    files: dict[str, dict[str, Any]] = {}
    items: list[LayoutItem] = []
    for item, result in rendered:
        src = item.source
        files[item.path] = {
            "sha256": result.sha256,
            "source_sha256": src.sha256,
            "role": src.role,
            "bucket": list(item.bucket),
        }
        items.append(
            LayoutItem(src.role, item.path, item.caption, item.tags, item.bucket, src.sha256)
        )
        if layout.sidecars and item.caption:
            # sd-scripts refuses an empty caption file; without one it uses the class tokens.
            sidecar = item.path.rsplit(".", 1)[0] + opts.caption_extension
            write_text(temp, sidecar, item.caption + "\n")
            files[sidecar] = {"source_sha256": src.sha256, "role": src.role}
    path_root = str(target) if opts.absolute_paths else ""
    settings = layout_settings(opts, path_root, (i.caption for i in items), str(target))
    for relative in layout.write(temp, items, settings):
        files.setdefault(relative, {})
    for relative, entry in files.items():
        if "sha256" not in entry:
            entry["sha256"] = file_sha256(safe_join(temp, *relative.split("/")))
    summary.files = len(files) + 1
    manifest = {
        "generator": GENERATOR,
        "manifest_version": MANIFEST_VERSION,
        "curator_version": __version__,
        "layout": layout.name,
        "query": opts.query,
        "reg_query": opts.reg_query,
        "seed": opts.seed,
        "settings": opts.settings(),
        "buckets": {
            "spec": dataclasses.asdict(spec),
            "histogram": [{"bucket": list(b), "count": n} for b, n in summary.histogram],
        },
        "counts": {
            "selected": summary.selected,
            "exported": summary.exported,
            "reg_exported": summary.reg_exported,
            "skipped": len(summary.skipped),
            "excluded": dict(sorted(summary.excluded.items())),
            "crops_reused": summary.crops_reused,
        },
        "skipped": [s.as_dict() for s in summary.skipped],
        "files": dict(sorted(files.items())),
    }
    write_text(temp, MANIFEST_NAME, json_text(manifest))
    return manifest


def _record(
    catalog: Catalog,
    target: Path,
    opts: ExportOptions,
    layout: Layout,
    manifest: dict[str, Any],
    rendered: list[tuple[Planned, RenderResult]],
) -> int:
    """The export and its items in the catalog (the per-file list stays in the manifest)."""
    with catalog.write() as s:
        row = Export(
            query=opts.query,
            format=layout.name,
            target=str(target),
            params=opts.settings(),
            manifest={k: v for k, v in manifest.items() if k != "files"},
            count=len(rendered),
        )
        s.add(row)
        s.flush()
        s.add_all(
            ExportItem(
                export_id=row.id,
                image_id=item.source.image_id,
                path=item.path,
                bucket_w=item.bucket[0],
                bucket_h=item.bucket[1],
                crop=result.crop or {},
                caption=item.caption,
            )
            for item, result in rendered
        )
        return row.id


def run_reexport(
    catalog: Catalog,
    export_id: int,
    target_dir: str | os.PathLike[str] | None = None,
    /,
    **changes: Any,
) -> ExportSummary:
    """Export again with a recorded export's settings and its stored (maybe moved) crops.

    ``target_dir`` defaults to the recorded target, which is replaced if it is still
    the untouched previous export (``force`` is on). ``changes`` adjust settings.
    """
    with catalog.session() as s:
        row = s.get(Export, export_id)
        if row is None:
            raise UsageError(f"no export {export_id} in the catalog")
        params, target = dict(row.params), row.target
    options = ExportOptions.from_settings(params, reuse_crops=export_id, force=True)
    return run_export(catalog, target_dir if target_dir is not None else target, options, **changes)


def _check_cancel(cancel: CancelToken | None, target: Path) -> None:
    if cancel is not None and cancel.cancelled:
        raise Cancelled(f"export cancelled; nothing was written to {target}")


def _write_failure(target: Path, error: BaseException | str) -> str:
    """One line: the export failed to write, why, and that nothing was changed."""
    if isinstance(error, OSError):
        reason = error.strerror or str(error)
        if error.filename:
            reason += f" ({os.path.basename(os.fsdecode(error.filename))})"
    else:
        reason = str(error)
    reason = " ".join(reason.split())
    return f"export to {target} failed, nothing was changed or recorded: {reason}"


def _done(
    result: RenderResult, results: dict[int, RenderResult], bar: Reporter, target: Path
) -> None:
    if result.write_error is not None:  # a full disk, a size limit, no permission
        raise ExportError(_write_failure(target, result.write_error))
    results[result.index] = result
    bar.advance()


def render_all(
    jobs: Sequence[RenderJob],
    workers: int | None,
    reporter: Reporter | None,
    cancel: CancelToken | None = None,
    target: Path | None = None,
) -> dict[int, RenderResult]:
    """Render every job, in a forkserver process pool when more than one worker is asked.

    Stops at the first image that cannot be written (raising `ExportError`) and between
    images when ``cancel`` is set (raising `Cancelled`); unreadable sources are results.
    """
    results: dict[int, RenderResult] = {}
    where = target or Path(".")
    wanted = (os.cpu_count() or 1) if workers is None else workers  # 0: in this process
    count = min(wanted, max(1, len(jobs)))
    with phase(reporter, "export", len(jobs)) as bar:
        if count <= 1:
            for job in jobs:
                _check_cancel(cancel, where)
                _done(render(job), results, bar, where)
            return results
        pool = process_pool(count)
        inflight: deque[Future[RenderResult]] = deque()
        try:
            for job in jobs:
                _check_cancel(cancel, where)
                inflight.append(pool.submit(render, job))
                while len(inflight) > count * 4:
                    _done(inflight.popleft().result(), results, bar, where)
            while inflight:
                _check_cancel(cancel, where)
                _done(inflight.popleft().result(), results, bar, where)
        except Exception as error:  # a worker died (BrokenProcessPool) or similar
            if isinstance(error, CuratorError):
                raise
            raise ExportError(f"an export worker failed: {error}") from error
        finally:
            pool.shutdown(cancel_futures=True)
    return results
