"""`curator prepare`: the one command a DreamBooth user runs."""

from __future__ import annotations

from pathlib import Path

import click

from curator.cli.context import AppContext, emit_json, json_option, pass_app, quiet_option
from curator.cli.progress import RichReporter
from curator.export.buckets import render_histogram
from curator.export.prepare import DEFAULT_TAGGER, PrepareOptions, prepare

LAYOUTS = ["kohya-dreambooth", "kohya-finetune", "diffusers-dreambooth", "imagefolder", "jsonl"]


@click.command("prepare")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Target folder.")
@click.option("--instance-token", required=True, help="The rare token, e.g. sks.")
@click.option("--class-word", required=True, help="The class, e.g. dog.")
@click.option("--layout", type=click.Choice(LAYOUTS), default="kohya-dreambooth", show_default=True)
@click.option("--bucket", type=click.Choice(["sd15", "sdxl"]), default="sd15", show_default=True)
@click.option(
    "--crop", type=click.Choice(["focal", "center", "random"]), default="focal", show_default=True
)
@click.option("--repeats", type=click.IntRange(1), default=10, show_default=True)
@click.option("--tagger", default=DEFAULT_TAGGER, show_default=True, help="Tagger for captions.")
@click.option("--no-tags", is_flag=True, help="Do not tag: captions are the tokens only.")
@click.option("--where", default="", metavar="QUERY", help="Keep only images matching QUERY.")
@click.option("--max-nsfw", type=click.FloatRange(0, 1), help="Drop images scoring this or more.")
@click.option("--dedup-distance", type=click.IntRange(0, 32), default=6, show_default=True)
@click.option("--reg-query", metavar="QUERY", help="Regularisation (class) images.")
@click.option("--format", "image_format", type=click.Choice(["png", "jpeg", "webp"]), default="png")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace a previous export at --out.")
@click.option("--workers", type=click.IntRange(1))
@quiet_option
@json_option
@pass_app
def prepare_cmd(app: AppContext, src, out, instance_token, class_word, layout, bucket, crop,
                repeats, tagger, no_tags, where, max_nsfw, dedup_distance, reg_query,
                image_format, seed, force, workers, quiet, as_json):  # fmt: skip
    """Scan SRC, drop duplicates, detect faces, tag, bucket, crop, caption and write a
    DreamBooth training set, then say what was kept and what was dropped and why.

    \b
    Example:
      curator prepare photos/ --out train/ --instance-token sks --class-word dog
    """
    options = PrepareOptions(
        instance_token=instance_token,
        class_word=class_word,
        layout=layout,
        bucket=bucket,
        crop=crop,
        repeats=repeats,
        tagger=None if no_tags else tagger,
        where=where,
        max_nsfw=max_nsfw,
        dedup_distance=dedup_distance,
        reg_query=reg_query,
        image_format=image_format,
        seed=seed,
        force=force,
        workers=workers,
        reporter=RichReporter(not (quiet or as_json)),
    )
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
