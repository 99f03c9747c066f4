"""`curator scan` and `curator problems`."""

from __future__ import annotations

import click

from curator.catalog.problems import WARNING, list_problems
from curator.cli.context import (
    AppContext,
    emit_json,
    json_option,
    pass_app,
    quiet_option,
    workers_option,
)
from curator.cli.progress import RichReporter
from curator.ingest.probe import DEFAULT_PIXEL_LIMIT
from curator.ingest.scan import ScanOptions, scan


@click.command("scan")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--exclude",
    multiple=True,
    metavar="GLOB",
    help="Skip names or paths matching GLOB (repeatable); skipped files keep their state.",
)
@workers_option("Decoding")
@click.option(
    "--pixel-limit",
    type=click.IntRange(1),
    default=DEFAULT_PIXEL_LIMIT,
    show_default=True,
    help="Images with more pixels are recorded as decompression bombs.",
)
@click.option("--no-follow-symlinks", is_flag=True, help="Do not follow symbolic links.")
@quiet_option
@json_option
@pass_app
def scan_cmd(
    app: AppContext, paths, exclude, workers, pixel_limit, no_follow_symlinks, quiet, as_json
):
    """Record every image under PATHS in the catalog (incremental; safe to re-run).

    Ctrl-C stops the scan and keeps what is done; running it again resumes.
    """
    summary = scan(
        app.catalog,
        paths,
        ScanOptions(
            exclude=exclude,
            workers=workers,
            pixel_limit=pixel_limit,
            follow_symlinks=not no_follow_symlinks,
            reporter=RichReporter(not (quiet or as_json)),
        ),
    )
    if as_json:
        emit_json(summary.as_dict())
        return
    rate = summary.seen / summary.seconds if summary.seconds else 0.0
    click.echo(
        f"scanned {summary.seen} images in {summary.seconds:.1f}s ({rate:.0f}/s): "
        f"{summary.new_images} new images, {summary.new_files} new files, "
        f"{summary.changed} changed, {summary.unchanged} unchanged, "
        f"{summary.relinked} at a new path, {summary.missing} now missing, "
        f"{summary.with_parameters} with generation parameters, {summary.sidecars} with sidecars"
    )
    if summary.problems:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(summary.problem_kinds.items()))
        click.echo(f"{summary.problems} problems ({kinds}); see `curator problems`")
    if summary.warnings:
        click.echo(
            f"{summary.warnings} images read with decoder warnings; "
            "see `curator problems --warnings`"
        )


@click.command("problems")
@click.option("--kind", help=f"Only problems of this kind (`{WARNING}`: only warnings).")
@click.option(
    "--warnings",
    "with_warnings",
    is_flag=True,
    help="Also list what decoders warned about catalogued images (e.g. corrupt EXIF).",
)
@click.option(
    "--folder",
    type=click.Path(file_okay=False),
    help="Only files under this folder.",
)
@json_option
@pass_app
def problems_cmd(
    app: AppContext, kind: str | None, with_warnings: bool, folder: str | None, as_json: bool
) -> None:
    """List files that could not be catalogued, and why."""
    entries = list_problems(app.catalog, kind=kind, warnings=with_warnings, folder=folder)
    if as_json:
        emit_json([e.as_dict() for e in entries])
        return
    if not entries:
        click.echo("no problems")
        return
    for e in entries:
        click.echo(f"{e.path}: {e.kind}: {e.message}")


def register(main: click.Group) -> None:
    main.add_command(scan_cmd)
    main.add_command(problems_cmd)
