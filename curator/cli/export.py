"""`curator export`, `reexport`, `exports` and `crops set`."""

from __future__ import annotations

from typing import Any

import click

from curator.cli.context import (
    AppContext,
    Int64Range,
    emit_json,
    json_option,
    pass_app,
    quiet_option,
    workers_option,
)
from curator.cli.export_options import (
    bucket_options,
    cli_words,
    crop_option,
    drop_unset,
    image_options,
    merge_aliases,
    out_option,
    reg_query_option,
    repeats_option,
    subject_options,
)
from curator.cli.progress import RichReporter
from curator.export import ExportSummary, export, preview_export, reexport
from curator.export.buckets import render_histogram
from curator.export.captions import ORDERS
from curator.export.layouts import LAYOUT_NAMES
from curator.export.options import CAPTION_EXTENSIONS, CAPTION_TEXTS, NAMINGS

_SHOWN_SKIPS = 10


def _print_summary(summary: ExportSummary) -> None:
    click.echo(render_histogram(summary.histogram))
    reg = f" + {summary.reg_exported} regularisation" if summary.reg_exported else ""
    click.echo(
        f"exported {summary.exported}{reg} images to {summary.target} "
        f"({summary.layout}) in {summary.seconds:.1f}s "
        f"(rendering {summary.images_per_second:.1f} img/s); skipped {len(summary.skipped)}"
    )
    if summary.crops_reused:
        click.echo(f"reused {summary.crops_reused} stored crops")
    excluded = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(summary.excluded.items()))
    if excluded:
        click.echo(f"not selected: {excluded}")
    for skip in summary.skipped[:_SHOWN_SKIPS]:
        click.echo(f"  skipped {skip.name} ({skip.sha256[:12]}): {skip.reason}")
    if len(summary.skipped) > _SHOWN_SKIPS:
        click.echo(f"  ... and {len(summary.skipped) - _SHOWN_SKIPS} more (see manifest.json)")
    if summary.recovered:
        click.echo(summary.recovered)
    if summary.moved_aside:
        click.echo(f"the folder that was there was moved to {summary.moved_aside}")
    click.echo(f"export {summary.export_id} recorded in the catalog")


def _emit(summary: ExportSummary, as_json: bool) -> None:
    if as_json:
        emit_json(summary.as_dict())
    else:
        _print_summary(summary)


def _print_findings(findings: list[Any]) -> None:
    if not findings:
        click.echo("check: no problems found")
    for f in findings:
        examples = ", ".join(f.examples) + (", ..." if f.count > len(f.examples) else "")
        click.echo(f"check: {f.count} {f.message}: {examples}")


def _print_preview(preview: Any) -> None:
    click.echo(render_histogram(preview.histogram))
    for (w, h), n in preview.histogram:
        click.echo(f"bucket {w}x{h}: {n} image{'' if n == 1 else 's'}")
    for item in preview.items:
        crop = item.crop
        window = (
            "focal, from the pixels when written"
            if crop is None
            else f"{crop['mode']} {crop['left']:.0f},{crop['top']:.0f},"
            f"{crop['width']:.0f},{crop['height']:.0f}"
        )
        sw, sh = item.source_size
        up = " (upscaled)" if item.scale > 1 else ""
        click.echo(
            f"  {item.path}: {sw}x{sh} -> {item.bucket[0]}x{item.bucket[1]}, "
            f"crop {window}, scale {item.scale:.3f}{up}"
        )
    click.echo(
        f"would export {len(preview.items)} images to {preview.target} ({preview.layout}); "
        f"skipped {len(preview.skipped)}; nothing was written"
    )


@click.command("export")
@click.argument("query", nargs=-1)
@out_option()
@click.option(
    "--layout",
    type=click.Choice(LAYOUT_NAMES),
    default="kohya-dreambooth",
    show_default=True,
    help="Folder layout and metadata for a trainer.",
)
@bucket_options()
@crop_option("center")
@click.option(
    "--reuse-crops",
    type=Int64Range(1),
    metavar="EXPORT_ID",
    help="Use an earlier export's stored crops.",
)
@click.option(
    "--captions",
    type=click.Choice(CAPTION_TEXTS),
    default="tags",
    show_default=True,
    help="What a caption holds: tags, the natural caption, or both (each once).",
)
@click.option("--caption-source", help="Take natural captions from this source only.")
@subject_options(required=False)
@click.option("--include-rating", is_flag=True, help="Add the rating tag.")
@click.option("--include-meta", is_flag=True, help="Keep meta tags.")
@click.option("--no-characters-first", is_flag=True, help="Sort character tags with the rest.")
@click.option(
    "--keep-tokens",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Leading caption tokens sd-scripts keeps in place when it shuffles.",
)
@click.option(
    "--keep-tokens-separator",
    default="|||",
    show_default=True,
    help="Marks the end of the kept tokens; written only with --shuffle-caption.",
)
@click.option("--shuffle", is_flag=True, help="Shuffle each caption once (seeded).")
@click.option("--shuffle-caption", is_flag=True, help="Ask sd-scripts to shuffle while training.")
@click.option(
    "--tag-order",
    type=click.Choice(ORDERS),
    default="score",
    show_default=True,
    help="Tag order in captions.",
)
@click.option("--underscores", is_flag=True, help="Keep underscores in tag names.")
@click.option("--no-escape", is_flag=True, help="Do not escape parentheses.")
@click.option("--min-score", type=float, help="Leave out tags scored below this.")
@click.option("--no-trigger-words", is_flag=True, help="Leave out the catalog's trigger words.")
@click.option("--no-implied", is_flag=True, help="Leave out tags implied by tag rules.")
@click.option(
    "--caption-extension",
    type=click.Choice(CAPTION_EXTENSIONS),
    default=".txt",
    show_default=True,
    help="Caption sidecar extension (the TOML declares the same).",
)
@image_options()
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=95,
    show_default=True,
    help="JPEG and lossy WebP quality.",
)
@click.option("--lossless", is_flag=True, help="Lossless WebP.")
@click.option(
    "--png-compression",
    type=click.IntRange(0, 9),
    default=4,
    show_default=True,
    help="zlib level for PNG: 4 is as small as 6 on photos at half the time.",
)
@click.option(
    "--naming",
    type=click.Choice(NAMINGS),
    default="original",
    show_default=True,
    help="File names from the source name or the content hash.",
)
@repeats_option(1)
@reg_query_option()
@click.option(
    "--reg-repeats",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Repeats for regularisation images.",
)
@click.option("--instance-prompt", default="", help="diffusers: the instance prompt.")
@click.option("--class-prompt", default="", help="diffusers: the class prompt.")
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Training batch size, for the TOML and the bucket check.",
)
@click.option("--absolute-paths", is_flag=True, help="Absolute paths in trainer configs.")
@click.option("--include-rejected", is_flag=True, help="Export images rejected in review too.")
@click.option(
    "--force",
    "-f",
    count=True,
    help="Replace a previous export in --out; twice: move any other folder aside.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the buckets, counts and crops the export would make; write nothing.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Print what would spoil training (no captions, thin buckets, upscaling, small "
    "images, caption extensions); write nothing.",
)
@click.option("--strict", is_flag=True, help="Refuse to export (or fail --check) on findings.")
@quiet_option
@json_option
@pass_app
def export_cmd(
    app: AppContext,
    query: tuple[str, ...],
    out: str,
    no_characters_first: bool,
    no_escape: bool,
    no_trigger_words: bool,
    no_implied: bool,
    force: int,
    dry_run: bool,
    check: bool,
    strict: bool,
    quiet: bool,
    as_json: bool,
    **settings: Any,
) -> None:
    """Write the images matching QUERY as a bucketed, captioned training set.

    Prints a bucket histogram and what was kept and skipped; `manifest.json` in the
    target lists every file. Examples:

    \b
        curator export 1girl -o out --instance-token sks --class-word woman --repeats 10
        curator export folder:cats/ -o cats --layout imagefolder --preset sdxl
        curator export 1girl -o out --check --batch-size 4
    """
    merge_aliases(settings)
    drop_unset(settings, "background")
    common = dict(
        query=" ".join(query),
        characters_first=not no_characters_first,
        escape=not no_escape,
        trigger_words=not no_trigger_words,
        implied_tags=not no_implied,
        **settings,
    )
    with cli_words():
        if dry_run or check:
            preview = preview_export(app.catalog, out, **common)
            if as_json:
                emit_json(preview.as_dict())
            else:
                if dry_run:
                    _print_preview(preview)
                _print_findings(preview.findings)
            if strict and preview.findings:
                raise click.exceptions.Exit(1)
            return
        summary = export(
            app.catalog,
            out,
            force=force >= 1,
            overwrite=force >= 2,
            strict=strict,
            reporter=RichReporter(not (quiet or as_json)),
            **common,
        )
    _emit(summary, as_json)


@click.command("reexport")
@click.argument("export_id", type=Int64Range(1))
@click.option("--out", "-o", "out", type=click.Path(), help="Target [default: the same folder].")
@workers_option("Rendering")
@quiet_option
@json_option
@pass_app
def reexport_cmd(
    app: AppContext,
    export_id: int,
    out: str | None,
    workers: int | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Render export EXPORT_ID again with its settings and stored (maybe adjusted) crops.

    `curator exports` lists the ids; `curator crops set` moves a stored crop.
    """
    with cli_words():
        summary = reexport(
            app.catalog,
            export_id,
            out,
            workers=workers,
            reporter=RichReporter(not (quiet or as_json)),
        )
    _emit(summary, as_json)


@click.command("exports")
@click.option("--limit", type=Int64Range(1), help="Show only the newest N.")
@json_option
@click.option("--quiet", "-q", is_flag=True, help="Print only the ids.")
@pass_app
def exports_cmd(app: AppContext, limit: int | None, as_json: bool, quiet: bool) -> None:
    """List past exports, newest first, with the ids `reexport` and `crops set` take."""
    from curator.export.history import list_exports

    records = list_exports(app.catalog, limit)
    if as_json:
        emit_json([r.as_dict() for r in records])
        return
    if not records:
        if not quiet:
            click.echo("no exports yet")
        return
    for r in records:
        if quiet:
            click.echo(r.id)
            continue
        gone = "" if r.exists else " (folder gone)"
        query = f" query {r.query!r}" if r.query else ""
        click.echo(
            f"{r.id:>4}  {r.at}  {r.layout:<20} {r.count:>6} images  {r.target}{gone}{query}"
        )


def _box(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4 or not all(p >= 0 and p == p and p != float("inf") for p in parts):
        raise click.BadParameter("give x,y,w,h in source pixels, e.g. 120,0,800,1200")
    return parts


@click.group("crops")
def crops_group() -> None:
    """Stored crops of past exports."""


@crops_group.command("set")
@click.argument("export_id", type=Int64Range(1))
@click.argument("image")
@click.argument("box", callback=_box, metavar="X,Y,W,H")
@json_option
@click.option("--quiet", "-q", is_flag=True, help="Print nothing.")
@pass_app
def crops_set_cmd(
    app: AppContext,
    export_id: int,
    image: str,
    box: tuple[float, ...],
    as_json: bool,
    quiet: bool,
) -> None:
    """Move IMAGE's crop in EXPORT_ID to the window X,Y,W,H (source pixels).

    IMAGE is an image id, a content-hash prefix, its path in the export or its file
    name. The window is scaled to the image's bucket; `curator reexport EXPORT_ID`
    renders it.

    \b
        curator crops set 3 cat.png 120,0,800,1200 && curator reexport 3
    """
    from curator.export.history import set_crop

    crop = set_crop(app.catalog, export_id, image, box)  # type: ignore[arg-type]
    if as_json:
        emit_json(crop)
        return
    if quiet:
        return
    click.echo(
        f"crop of {image} in export {export_id}: {crop['left']:.0f},{crop['top']:.0f},"
        f"{crop['width']:.0f},{crop['height']:.0f} -> {crop['bucket'][0]}x{crop['bucket'][1]}; "
        f"run `curator reexport {export_id}` to render it"
    )


def register(main: click.Group) -> None:
    main.add_command(export_cmd)
    main.add_command(reexport_cmd)
    main.add_command(exports_cmd)
    main.add_command(crops_group)
