"""`curator prepare`: the one command a DreamBooth user runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from curator.cli.context import AppContext, emit_json, json_option, pass_app, quiet_option
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
from curator.export.buckets import render_histogram
from curator.export.layouts import LAYOUT_NAMES
from curator.export.prepare import DEFAULT_TAGGER, PrepareOptions, prepare

# Bucket adjustments that go to the export as they are.
_EXPORT_FIELDS = ("max_area", "resolution", "max_side", "step")


@click.command("prepare")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@out_option()
@subject_options(required=True)
@click.option(
    "--layout",
    type=click.Choice(LAYOUT_NAMES),
    default="kohya-dreambooth",
    show_default=True,
    help="Folder layout and metadata for a trainer.",
)
@bucket_options()
@crop_option("focal")
@repeats_option(10)
@click.option("--tagger", default=DEFAULT_TAGGER, show_default=True, help="Tagger for captions.")
@click.option("--no-tags", is_flag=True, help="Do not tag: captions are the tokens only.")
@click.option("--where", default="", metavar="QUERY", help="Keep only images matching QUERY.")
@click.option(
    "--max-nsfw", type=click.FloatRange(0, 1), help="Drop images whose nsfw score is this or more."
)
@click.option(
    "--dedup-distance",
    type=click.IntRange(0, 64),
    default=6,
    show_default=True,
    help="Most differing perceptual-hash bits for a near copy (as `dedup --distance`).",
)
@reg_query_option()
@image_options()
@click.option(
    "--force",
    "-f",
    count=True,
    help="Replace a previous export in --out; twice: move any other folder aside.",
)
@quiet_option
@json_option
@pass_app
def prepare_cmd(
    app: AppContext,
    src: Path,
    out: str,
    tagger: str,
    no_tags: bool,
    force: int,
    quiet: bool,
    as_json: bool,
    **settings: Any,
) -> None:
    """Scan SRC, drop duplicates and images too small to train on, detect faces, tag,
    bucket, crop, caption and write a DreamBooth training set, then say what was kept
    and what was dropped and why.

    \b
    Example:
      curator prepare photos/ -o train/ --instance-token sks --class-word dog
    """
    merge_aliases(settings)
    drop_unset(settings, "background")
    export_extra = {k: settings.pop(k) for k in _EXPORT_FIELDS if settings.get(k) is not None}
    for name in _EXPORT_FIELDS:
        settings.pop(name, None)
    if force >= 2:
        export_extra["overwrite"] = True
    options = PrepareOptions(
        instance_token=settings.pop("instance"),
        class_word=settings.pop("class_word"),
        tagger=None if no_tags else tagger,
        force=force >= 1,
        no_upscale=bool(settings.pop("no_upscale")),
        reporter=RichReporter(not (quiet or as_json)),
        export=export_extra,
        **settings,
    )
    with cli_words():
        report = prepare(app.catalog, src, out, options)
    if as_json:
        emit_json(report.as_dict())
        return
    for step in report.steps:
        click.echo(step)
    click.echo(render_histogram(report.histogram))
    click.echo(f"kept {report.kept} of {report.found} images → {report.target}")
    for reason, count in sorted(report.dropped.items(), key=lambda kv: -kv[1]):
        click.echo(f"dropped {count}: {reason}")
    for d in report.details:
        click.echo(f"  {d['path']}: {d['reason']}")


def register(main: click.Group) -> None:
    main.add_command(prepare_cmd)
