"""`curator export` and `curator reexport`."""

from __future__ import annotations

from typing import Any

import click

from curator.cli.context import AppContext, emit_json, json_option, pass_app, quiet_option
from curator.cli.progress import RichReporter
from curator.export import ExportSummary, export, reexport
from curator.export.buckets import PRESETS, render_histogram
from curator.export.captions import ORDERS
from curator.export.crops import MODES
from curator.export.layouts import LAYOUT_NAMES
from curator.export.options import CAPTION_EXTENSIONS, CAPTION_TEXTS, NAMINGS
from curator.media.imagewrite import FORMATS

_SHOWN_SKIPS = 10


def _resolution(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        parts = [int(v) for v in value.lower().replace("x", ",").split(",")]
    except ValueError:
        raise click.BadParameter("give W,H (e.g. 512,768) or one side (512)") from None
    if len(parts) == 1:
        return (parts[0], parts[0])
    if len(parts) != 2:
        raise click.BadParameter("give W,H (e.g. 512,768) or one side (512)")
    return (parts[0], parts[1])


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
    if summary.moved_aside:
        click.echo(f"the folder that was there was moved to {summary.moved_aside}")
    click.echo(f"export {summary.export_id} recorded in the catalog")


def _emit(summary: ExportSummary, as_json: bool) -> None:
    if as_json:
        emit_json(summary.as_dict())
    else:
        _print_summary(summary)


@click.command("export")
@click.argument("query", nargs=-1)
@click.option("--out", "-o", "out", required=True, type=click.Path(), help="Target folder.")
@click.option(
    "--layout",
    type=click.Choice(LAYOUT_NAMES),
    default="kohya-dreambooth",
    show_default=True,
    help="Folder layout and metadata for a trainer.",
)
@click.option(
    "--preset",
    "bucket",
    type=click.Choice(sorted(PRESETS)),
    default="sd15",
    show_default=True,
    help="Bucket preset; the options below adjust it.",
)
@click.option("--max-area", type=click.IntRange(1), help="Bucket pixel area.")
@click.option("--resolution", callback=_resolution, metavar="W,H", help="Bucket area as W,H.")
@click.option("--min-side", type=click.IntRange(1), help="Smallest bucket side.")
@click.option("--max-side", type=click.IntRange(1), help="Largest bucket side.")
@click.option("--step", type=click.IntRange(1), help="Bucket side step in pixels.")
@click.option("--no-upscale", is_flag=True, default=None, help="Never enlarge an image.")
@click.option("--crop", type=click.Choice(MODES), default="center", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Random crops, shuffles.")
@click.option("--reuse-crops", type=int, metavar="EXPORT_ID", help="Use an export's stored crops.")
@click.option(
    "--captions",
    type=click.Choice(CAPTION_TEXTS),
    default="tags",
    show_default=True,
    help="What a caption holds: tags, the natural caption, or both.",
)
@click.option("--caption-source", help="Take natural captions from this source only.")
@click.option("--instance", "--trigger", "instance", default="", help="Instance/trigger token.")
@click.option("--class", "class_word", default="", help="Class word (e.g. dog, woman).")
@click.option("--include-rating", is_flag=True, help="Add the rating tag.")
@click.option("--include-meta", is_flag=True, help="Keep meta tags.")
@click.option("--no-characters-first", is_flag=True, help="Sort character tags with the rest.")
@click.option("--keep-tokens", type=click.IntRange(0), default=0, show_default=True)
@click.option("--keep-tokens-separator", default="|||", show_default=True)
@click.option("--shuffle", is_flag=True, help="Shuffle each caption once (seeded).")
@click.option("--shuffle-caption", is_flag=True, help="Ask sd-scripts to shuffle while training.")
@click.option("--tag-order", type=click.Choice(ORDERS), default="score", show_default=True)
@click.option("--underscores", is_flag=True, help="Keep underscores in tag names.")
@click.option("--no-escape", is_flag=True, help="Do not escape parentheses.")
@click.option("--min-score", type=float, help="Leave out tags scored below this.")
@click.option("--no-trigger-words", is_flag=True, help="Leave out the catalog's trigger words.")
@click.option("--no-implied", is_flag=True, help="Leave out tags implied by tag rules.")
@click.option(
    "--caption-extension", type=click.Choice(CAPTION_EXTENSIONS), default=".txt", show_default=True
)
@click.option(
    "--format", "image_format", type=click.Choice(FORMATS), default="png", show_default=True
)
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True)
@click.option("--lossless", is_flag=True, help="Lossless WebP.")
@click.option(
    "--png-compression",
    type=click.IntRange(0, 9),
    default=4,
    show_default=True,
    help="zlib level for PNG: 4 is as small as 6 on photos at half the time.",
)
@click.option("--naming", type=click.Choice(NAMINGS), default="original", show_default=True)
@click.option("--repeats", type=click.IntRange(1), default=1, show_default=True)
@click.option("--reg-query", help="Query for regularisation (class) images.")
@click.option("--reg-repeats", type=click.IntRange(1), default=1, show_default=True)
@click.option("--instance-prompt", default="", help="diffusers: the instance prompt.")
@click.option("--class-prompt", default="", help="diffusers: the class prompt.")
@click.option("--batch-size", type=click.IntRange(1), default=1, show_default=True)
@click.option("--absolute-paths", is_flag=True, help="Absolute paths in trainer configs.")
@click.option("--include-rejected", is_flag=True, help="Export images rejected in review too.")
@click.option(
    "--force",
    "-f",
    count=True,
    help="Replace a previous export in --out; twice: move any other folder aside.",
)
@click.option("--workers", type=click.IntRange(1), help="Rendering processes [default: all cores].")
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
    quiet: bool,
    as_json: bool,
    **settings: Any,
) -> None:
    """Write the images matching QUERY as a bucketed, captioned training set.

    Prints a bucket histogram and what was kept and skipped; `manifest.json` in the
    target lists every file. Examples:

        curator export 1girl -o out --instance sks --class woman --repeats 10

        curator export folder:cats/ -o cats --layout imagefolder --preset sdxl
    """
    summary = export(
        app.catalog,
        out,
        query=" ".join(query),
        characters_first=not no_characters_first,
        escape=not no_escape,
        trigger_words=not no_trigger_words,
        implied_tags=not no_implied,
        force=force >= 1,
        overwrite=force >= 2,
        reporter=RichReporter(not (quiet or as_json)),
        **settings,
    )
    _emit(summary, as_json)


@click.command("reexport")
@click.argument("export_id", type=int)
@click.option("--out", "-o", "out", type=click.Path(), help="Target [default: the same folder].")
@click.option("--workers", type=click.IntRange(1), help="Rendering processes [default: all cores].")
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
    """Render export EXPORT_ID again with its settings and stored (maybe adjusted) crops."""
    summary = reexport(
        app.catalog, export_id, out, workers=workers, reporter=RichReporter(not (quiet or as_json))
    )
    _emit(summary, as_json)


def register(main: click.Group) -> None:
    main.add_command(export_cmd)
    main.add_command(reexport_cmd)
