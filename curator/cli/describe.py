"""`curator describe`, `curator interrogate`, `curator caption`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from curator.cli.context import AppContext, emit_json, pass_app
from curator.cli.tagging import report_runs, run_options, run_options_from
from curator.runs.loop import run_models

DEFAULT_CLIP = "ViT-L-14/openai"
DEFAULT_CAPTIONER = "blip-large"


@click.command("describe")
@click.argument("images", nargs=-1)
@click.option("--where", metavar="QUERY", help="Describe every image matching QUERY.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "html"]),
    default="text",
    show_default=True,
    help="text paragraphs, JSON, or HTML <img> elements with the description as alt text.",
)
@click.option(
    "--length",
    type=click.Choice(["short", "long"]),
    default="short",
    show_default=True,
    help="short: the caption and a few tags; long: more tags.",
)
@click.option(
    "--write-metadata",
    is_flag=True,
    help="Write the description into a copy of each image (PNG/JPEG/WebP metadata).",
)
@click.option(
    "--in-place", is_flag=True, help="With --write-metadata: change the images themselves."
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --write-metadata: put the copies here [default: NAME.described.EXT beside].",
)
@click.option("--no-store", is_flag=True, help="Do not save the descriptions in the catalog.")
@click.option("--plain", is_flag=True, help="No colour: one description per paragraph.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing (store and write only).")
@pass_app
def describe_cmd(
    app: AppContext,
    images,
    where,
    fmt,
    length,
    write_metadata,
    in_place,
    output_dir,
    no_store,
    plain,
    as_json,
    quiet,
):
    """Describe images in plain sentences for people using screen readers.

    Built from the caption, the strongest tags (in words), text found by OCR and the
    number of faces. Stored as a caption of kind `description` for export.

    \b
    Examples:
      curator describe photo.jpg
      curator describe --where 'folder:holiday/' --format html --length long
      curator describe photo.png --write-metadata --output-dir described/
    """
    from curator.describe import describe_images
    from curator.describe.render import as_html, as_text, plain_wanted
    from curator.errors import UsageError

    if not images and where is None:
        raise UsageError("give IMAGE paths (or sha256/ids) or --where QUERY")
    results = describe_images(
        app.catalog,
        list(images) or None,
        where=where,
        length=length,
        store=not no_store,
        write_metadata=write_metadata,
        in_place=in_place,
        output_dir=output_dir,
    )
    if quiet:
        return
    if as_json or fmt == "json":
        emit_json([r.as_dict() for r in results])
    elif fmt == "html":
        click.echo(as_html(results))
    else:
        click.echo(as_text(results, plain=plain_wanted(plain, sys.stdout.isatty())))


@click.command("interrogate")
@click.option(
    "--clip",
    "clip_spec",
    default=DEFAULT_CLIP,
    show_default=True,
    metavar="ARCH/PRETRAINED|hf-hub:REPO|DIR",
    help="The CLIP model.",
)
@click.option(
    "--mode",
    type=click.Choice(["best", "fast", "classic", "negative"]),
    default="best",
    show_default=True,
    help="clip-interrogator's modes.",
)
@click.option(
    "--caption-model",
    default=DEFAULT_CAPTIONER,
    show_default=True,
    metavar="NAME|DIR|none",
    help="Captioner the prompt starts from (blip-base, blip-large, blip2-2.7b, "
    "blip2-flan-t5-xl, git-large-coco, a folder, or none).",
)
@click.option(
    "--bank",
    "banks",
    multiple=True,
    metavar="NAME=FILE",
    help="Add or replace a term bank (one term per line): artists, flavors, mediums, "
    "movements, trendings, negative, or a new name.",
)
@click.option(
    "--min-flavors",
    type=click.IntRange(0),
    default=8,
    show_default=True,
    help="best: chain steps kept even when they lower the score.",
)
@click.option(
    "--max-flavors",
    type=click.IntRange(1),
    default=32,
    show_default=True,
    help="Most terms: fast, best and negative chains.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Bank text-embedding cache [default: ~/.cache/curator/text-embeddings].",
)
@run_options
@pass_app
def interrogate_cmd(
    app: AppContext,
    clip_spec,
    mode,
    caption_model,
    banks,
    min_flavors,
    max_flavors,
    cache_dir,
    where,
    redo,
    batch_size,
    workers,
    device,
    threads,
    limit,
    quiet,
    as_json,
):
    """Write a Stable Diffusion prompt per image, the clip-interrogator way.

    Stored as a caption of kind `interrogation`.

    \b
    Examples:
      curator interrogate                                  # best mode, ViT-L-14, BLIP large
      curator interrogate --mode fast --clip ViT-H-14/laion2b_s32b_b79k
      curator interrogate --mode negative --caption-model none
    """
    from taggers.clip.banks import parse_bank_option
    from taggers.clip.interrogator import InterrogatorSettings
    from taggers.clip.loading import load_clip
    from taggers.clip.models import ClipInterrogatorModel

    captioner = None
    if caption_model.lower() != "none" and mode != "negative":
        from taggers.blip import load_captioner

        captioner = load_captioner(caption_model, device=device)
    model = ClipInterrogatorModel(
        load_clip(clip_spec, device=device, threads=threads),
        clip_spec,
        mode=mode,
        captioner=captioner,
        bank_files=dict(parse_bank_option(b) for b in banks),
        cache_dir=cache_dir,
        settings=InterrogatorSettings(min_flavors=min_flavors, max_flavors=max_flavors),
    )
    opts = run_options_from(where, redo, batch_size, workers, limit, quiet, as_json)
    report_runs(run_models(app.catalog, [model], opts, kind="interrogate"), as_json)


@click.command("caption")
@click.option(
    "--model",
    "-m",
    "specs",
    multiple=True,
    metavar="NAME|DIR",
    help=f"Captioner (blip-base, blip-large, blip2-2.7b, blip2-flan-t5-xl, git-large-coco, "
    f"or a folder); repeat for several [default: {DEFAULT_CAPTIONER}].",
)
@click.option(
    "--beams", type=click.IntRange(1), default=1, show_default=True, help="Beam search width."
)
@click.option(
    "--min-length", type=click.IntRange(0), default=5, show_default=True, help="Fewest new tokens."
)
@click.option(
    "--max-length", type=click.IntRange(1), default=32, show_default=True, help="Most new tokens."
)
@run_options
@pass_app
def caption_cmd(
    app: AppContext,
    specs,
    beams,
    min_length,
    max_length,
    where,
    redo,
    batch_size,
    workers,
    device,
    threads,
    limit,
    quiet,
    as_json,
):
    """Caption images with BLIP, BLIP-2 or GIT (stored as captions of kind `caption`)."""
    from taggers.blip import load_captioner

    models = [
        load_captioner(
            spec,
            device=device,
            threads=threads,
            num_beams=beams,
            min_length=min_length,
            max_length=max_length,
        )
        for spec in specs or (DEFAULT_CAPTIONER,)
    ]
    opts = run_options_from(where, redo, batch_size, workers, limit, quiet, as_json)
    report_runs(run_models(app.catalog, models, opts, kind="caption"), as_json)


def register(main: click.Group) -> None:
    main.add_command(describe_cmd)
    main.add_command(interrogate_cmd)
    main.add_command(caption_cmd)
