"""`curator embed`, `curator similar IMAGE`, `curator search TEXT`."""

from __future__ import annotations

import click

from curator.cli.context import AppContext, emit_json, json_option, pass_app
from curator.cli.tagging import report_runs, run_options, run_options_from
from curator.runs.loop import run_models

DEFAULT_CLIP = "ViT-L-14/openai"

_search_options = [
    click.option(
        "--model",
        "-m",
        metavar="NAME",
        help="Embedding model to search (default: the only one in the catalog).",
    ),
    click.option(
        "--limit", type=click.IntRange(1), default=10, show_default=True, help="Most results."
    ),
    click.option("--where", metavar="QUERY", help="Only images matching QUERY."),
    click.option(
        "--index",
        "backend",
        type=click.Choice(["auto", "exact", "hnsw"]),
        default="auto",
        show_default=True,
        help="exact cosine, or hnswlib's approximate index (auto: exact up to 100,000).",
    ),
    click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda."),
    json_option,
]


def _with(options):
    def wrap(f):
        for option in reversed(options):
            f = option(f)
        return f

    return wrap


def _print_hits(hits, as_json: bool) -> None:
    if as_json:
        emit_json([h.as_dict() for h in hits])
        return
    for h in hits:
        click.echo(f"{h.score:.4f}  {h.path or f'image {h.image_id} (no file present)'}")


@click.command("embed")
@click.option(
    "--model",
    "-m",
    "specs",
    multiple=True,
    metavar="ARCH/PRETRAINED|hf-hub:REPO|DIR",
    help=f"CLIP model; repeat for several [default: {DEFAULT_CLIP}].",
)
@run_options
@pass_app
def embed_cmd(
    app: AppContext, specs, where, redo, batch_size, workers, device, threads, limit, quiet, as_json
):
    """Store a CLIP image embedding per image and model (for similar, search, dedup).

    \b
    Examples:
      curator embed                                   # ViT-L-14/openai
      curator embed -m ViT-H-14/laion2b_s32b_b79k --device cuda
      curator embed -m ./my-clip/ --where 'folder:new/'
    """
    from taggers.clip.loading import load_clip
    from taggers.clip.models import ClipEmbedder

    models = [
        ClipEmbedder(load_clip(spec, device=device, threads=threads), spec)
        for spec in specs or (DEFAULT_CLIP,)
    ]
    opts = run_options_from(where, redo, batch_size, workers, limit, quiet, as_json)
    report_runs(run_models(app.catalog, models, opts, kind="embed"), as_json)


@click.command("similar")
@click.argument("image")
@_with(_search_options)
@pass_app
def similar_cmd(app: AppContext, image, model, limit, where, backend, device, as_json):
    """Images most like IMAGE (a catalogued path, sha256 prefix or id, or any image file)."""
    from curator.search import similar_images

    hits = similar_images(
        app.catalog, image, model=model, limit=limit, where=where, backend=backend, device=device
    )
    _print_hits(hits, as_json)


@click.command("search")
@click.argument("text")
@_with(_search_options)
@pass_app
def search_cmd(app: AppContext, text, model, limit, where, backend, device, as_json):
    """Images that best match TEXT, e.g. curator search "a red bicycle"."""
    from curator.search import search_text

    hits = search_text(
        app.catalog, text, model=model, limit=limit, where=where, backend=backend, device=device
    )
    _print_hits(hits, as_json)


def register(main: click.Group) -> None:
    main.add_command(embed_cmd)
    main.add_command(similar_cmd)
    main.add_command(search_cmd)
