"""`curator generate` and `curator prompt`: the bundled diffusion backend."""

from __future__ import annotations

from pathlib import Path

import click

from curator.cli.context import AppContext, emit_json, json_option, pass_app, quiet_option
from curator.cli.generate_options import sampling_options
from curator.cli.progress import RichReporter


@click.command("prompt")
@click.argument("text")
@click.option(
    "--steps",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    help="Sampling steps the schedule is computed for.",
)
@click.option(
    "--model",
    "model_path",
    metavar="DIR",
    help="Use this diffusers folder's tokenizer [default: SD 1.x CLIP vocabulary].",
)
@json_option
def prompt_cmd(text: str, steps: int, model_path: str | None, as_json: bool) -> None:
    """Show how A1111 reads TEXT: schedule, weights, 75-token chunks."""
    from curator.generation.prompt_report import describe_prompt
    from curator.generation.tokenizer import clip_tokenizer

    if model_path:
        from transformers import CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(Path(model_path) / "tokenizer")
    else:
        tokenizer = clip_tokenizer()
    report = describe_prompt(text, steps, tokenizer)
    if as_json:
        emit_json(report)
        return
    for entry in report["schedule"]:
        click.echo(
            f"steps ..{entry['until_step']}: {entry['text']!r} ({entry['token_count']} tokens)"
        )
        for run, weight in entry["attention"]:
            label = "BREAK" if weight == -1 and run == "BREAK" else f"{weight:.4g}"
            click.echo(f"  {label:>7}  {run!r}")
        for number, chunk in enumerate(entry["chunks"], 1):
            click.echo(f"  chunk {number}: {chunk['tokens']}/75 tokens: {chunk['text']}")


def _params(prompt: str, o: dict, **extra):
    from curator.generation.generate import GenerationParams

    return GenerationParams(
        prompt=prompt,
        negative_prompt=o["negative"],
        steps=o["steps"],
        sampler=o["sampler"],
        schedule=o["schedule"],
        cfg_scale=o["cfg_scale"],
        seed=o["seed"],
        width=o["size"][0],
        height=o["size"][1],
        clip_skip=o["clip_skip"],
        init_image=o["init_image"],
        denoising_strength=o["strength"],
        rng=o["rng"],
        lora_dirs=list(o["lora_dirs"]),
        embeddings_dirs=list(o["embeddings_dirs"]),
        hypernetwork_dirs=list(o["hypernetwork_dirs"]),
        allow_pickle=o["allow_pickle"],
        hr_scale=o["hr_scale"],
        hr_steps=o["hr_steps"],
        hr_upscaler=o["hr_upscaler"],
        upscaler_dirs=list(o["upscaler_dirs"]),
        mask_image=o["mask_image"],
        mask_blur=o["mask_blur"],
        inpaint_only_masked=o["inpaint_area"].lower() == "only masked",
        inpaint_padding=o["inpaint_padding"],
        masked_content=o["masked_content"],
        mask_invert=o["invert_mask"],
        **extra,
    )


def _check_upscaler(params) -> None:
    """An unknown hires upscaler fails before a checkpoint is loaded."""
    from curator.generation.hires import LATENT_UPSCALERS
    from curator.generation.upscalers import resolve_upscaler

    if params.hr_scale > 1 and params.hr_upscaler not in LATENT_UPSCALERS:
        resolve_upscaler(
            params.hr_upscaler, params.upscaler_dirs, list(LATENT_UPSCALERS), params.allow_pickle
        )


def _loader(o: dict):
    """Load checkpoints on demand, keeping the last one (an X/Y/Z axis may switch)."""
    from curator.generation.loading import load_pipeline

    cache: dict = {}

    def load(source: str | None = None, vae: str | None = None):
        key = (source or o["model"], vae or o["vae"])
        if key not in cache:
            cache.clear()
            cache[key] = load_pipeline(
                key[0],
                device=o["device"],
                half=False if o["full_precision"] else None,
                vae=key[1],
                allow_pickle=o["allow_pickle"],
                config=o["config"],
                low_memory=o["low_memory"],
            )
        return cache[key]

    return load


def _add_registered_hypernetworks(app: AppContext, o: dict) -> None:
    """Hypernetwork files registered in the catalog join --hypernetwork-dir (the catalog is
    left alone with --no-catalog)."""
    if not o["no_catalog"]:
        from curator.generation.hypernetworks import registered_hypernetworks

        o["hypernetwork_dirs"] = [*o["hypernetwork_dirs"], *registered_hypernetworks(app.catalog)]


@click.command("generate")
@click.argument("prompt")
@sampling_options
@click.option(
    "--batch-size", type=click.IntRange(1), default=1, show_default=True, help="Images per batch."
)
@click.option(
    "--batch-count", type=click.IntRange(1), default=1, show_default=True, help="Number of batches."
)
@quiet_option
@json_option
@pass_app
def generate_cmd(app: AppContext, prompt, batch_size, batch_count, quiet, as_json, **o) -> None:
    """Generate images from PROMPT (A1111 syntax); each PNG carries A1111 infotext."""
    from curator.generation.generate import generate
    from curator.generation.samplers import resolve_sampler

    resolve_sampler(o["sampler"], o["schedule"])  # a bad name fails before the model loads
    _add_registered_hypernetworks(app, o)
    params = _params(prompt, o, batch_size=batch_size, batch_count=batch_count)
    _check_upscaler(params)
    loaded = _loader(o)()
    images = generate(loaded, params, o["out_dir"], reporter=RichReporter(not (quiet or as_json)))
    if not o["no_catalog"]:
        from curator.generation.catalogue import catalogue_generated

        catalogue_generated(app.catalog, images, loaded, params)
    if as_json:
        emit_json([{"path": str(i.path), "seed": i.seed, "infotext": i.infotext} for i in images])
        return
    for image in images:
        click.echo(f"{image.path}  seed {image.seed}")


@click.command("xyz")
@click.argument("prompt")
@sampling_options
@click.option(
    "--x",
    "x_spec",
    metavar="LABEL=VALUES",
    help="X axis, e.g. 'Steps=10-30 (+10)', 'Sampler=Euler,DDIM', "
    "'Prompt S/R=cat,dog', 'CFG Scale=5-9 [3]', 'LoRA=None,style', 'LoRA strength=0.5,1', "
    "'Embedding=name', 'Embedding strength=0.8,1.2'.",
)
@click.option("--y", "y_spec", metavar="LABEL=VALUES", help="Y axis.")
@click.option("--z", "z_spec", metavar="LABEL=VALUES", help="Z axis (one sub-grid per value).")
@click.option("--dry-run", is_flag=True, help="Print the expanded axes and cells; run nothing.")
@quiet_option
@json_option
@pass_app
def xyz_cmd(app: AppContext, prompt, x_spec, y_spec, z_spec, dry_run, quiet, as_json, **o) -> None:
    """An A1111 X/Y/Z plot: one image per cell and a labelled grid, all catalogued."""
    from curator.generation.generate import generate
    from curator.generation.xyz import dry_run as describe
    from curator.generation.xyz import parse_axis, plan_cells, run_xyz

    x, y, z = parse_axis(x_spec), parse_axis(y_spec), parse_axis(z_spec)
    _add_registered_hypernetworks(app, o)
    cells = plan_cells(_params(prompt, o), x, y, z, checkpoint=o["model"])
    _check_upscaler(cells[0].params)
    if dry_run:
        report = describe(cells, x, y, z)
        if as_json:
            emit_json(report)
        else:
            for name in ("x", "y", "z"):
                axis = report["axes"][name]
                click.echo(f"{name}: {axis['type']}: {axis['values']}")
            click.echo(f"{len(cells)} cells")
        return
    load = _loader(o)
    reporter = RichReporter(not (quiet or as_json))
    loaded_for: dict = {}

    def generate_cell(cell):
        loaded = load(cell.checkpoint, cell.vae)
        images = generate(loaded, cell.params, o["out_dir"], reporter=reporter)
        loaded_for[images[0].path] = (loaded, cell.params)
        return images

    grid, images = run_xyz(cells, x, y, z, generate_cell, o["out_dir"])
    if not o["no_catalog"]:
        from curator.generation.catalogue import catalogue_generated

        for image in images:
            loaded, params = loaded_for[image.path]
            catalogue_generated(app.catalog, [image], loaded, params)
        from curator.ingest.scan import ScanOptions, scan

        scan(app.catalog, [str(grid)], ScanOptions(workers=1))
    if as_json:
        emit_json({"grid": str(grid), "cells": [str(i.path) for i in images]})
        return
    click.echo(f"{grid}  ({len(images)} cells)")


def _image_ids(app: AppContext, image: str | None, where: str | None) -> list[int]:
    from sqlalchemy import select

    from curator.generation.catalogue import image_id_for_path
    from curator.query.compile import compile_query
    from db.schema import Generation, Image

    if (image is None) == (where is None):
        raise click.UsageError("give IMAGE or --where QUERY")
    if image is not None:
        found = int(image) if image.isdigit() else image_id_for_path(app.catalog, image)
        if found is None:
            raise click.ClickException(f"{image} is not in the catalog; scan it first")
        return [found]
    with app.catalog.session() as session:
        stmt = (
            select(Image.id)
            .join(Generation, Generation.image_id == Image.id)
            .where(compile_query(where))
            .order_by(Image.id)
        )
        return list(session.scalars(stmt))


@click.command("regenerate")
@click.argument("image", required=False)
@click.option("--where", metavar="QUERY", help="Regenerate every image this query selects.")
@click.option(
    "--override",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Change one parameter: steps, sampler, schedule, cfg, seed, size, "
    "clip_skip, denoising, prompt, negative, checkpoint (repeatable).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="outputs",
    show_default=True,
    help="Folder for the PNGs.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, mps.")
@click.option("--full-precision", is_flag=True, help="float32 on a GPU too.")
@click.option(
    "--allow-pickle", is_flag=True, help="Allow .ckpt/.pt checkpoints (unpickling can run code)."
)
@click.option(
    "--lora-dir",
    "lora_dirs",
    multiple=True,
    metavar="DIR",
    help="Folder of LoRA files the prompts name (repeatable).",
)
@click.option(
    "--embeddings-dir",
    "embeddings_dirs",
    multiple=True,
    metavar="DIR",
    help="Folder of textual-inversion embeddings (repeatable).",
)
@click.option(
    "--hypernetwork-dir",
    "hypernetwork_dirs",
    multiple=True,
    metavar="DIR",
    help="Folder of A1111 hypernetworks the prompts name (repeatable; registered "
    "hypernetwork files are found too).",
)
@click.option(
    "--upscaler-dir",
    "upscaler_dirs",
    multiple=True,
    metavar="DIR",
    help="Folder of upscaler models a hires fix names (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="Only check and print what would run.")
@quiet_option
@json_option
@pass_app
def regenerate_cmd(
    app: AppContext,
    image,
    where,
    overrides,
    out_dir,
    device,
    full_precision,
    allow_pickle,
    lora_dirs,
    embeddings_dirs,
    hypernetwork_dirs,
    upscaler_dirs,
    dry_run,
    quiet,
    as_json,
) -> None:
    """Rebuild IMAGE's generation (or each one --where selects) from its infotext."""
    from dataclasses import asdict

    from curator.generation.catalogue import catalogue_generated
    from curator.generation.generate import generate
    from curator.generation.loading import load_pipeline
    from curator.generation.regenerate import parse_overrides, plan_regeneration

    changes = parse_overrides(list(overrides))
    plans = [
        plan_regeneration(
            app.catalog,
            i,
            changes,
            list(lora_dirs),
            allow_pickle,
            list(embeddings_dirs),
            list(upscaler_dirs),
            hypernetwork_dirs=list(hypernetwork_dirs),
        )
        for i in _image_ids(app, image, where)
    ]
    if dry_run:
        rows = [
            {"image_id": p.image_id, "checkpoint": p.checkpoint, **asdict(p.params)} for p in plans
        ]
        if as_json:
            emit_json(rows)
        else:
            for row in rows:
                click.echo(f"image {row['image_id']}: {row['checkpoint']} seed {row['seed']}")
        return
    loaded_models: dict[str, object] = {}
    made = []
    for plan in plans:
        if plan.checkpoint not in loaded_models:
            loaded_models.clear()
            loaded_models[plan.checkpoint] = load_pipeline(
                plan.checkpoint,
                device=device,
                half=False if full_precision else None,
                allow_pickle=allow_pickle,
            )
        loaded = loaded_models[plan.checkpoint]
        images = generate(
            loaded, plan.params, out_dir, reporter=RichReporter(not (quiet or as_json))
        )
        catalogue_generated(app.catalog, images, loaded, plan.params, plan.image_id)
        made += [{"from": plan.image_id, "path": str(i.path), "seed": i.seed} for i in images]
    if as_json:
        emit_json(made)
        return
    for row in made:
        click.echo(f"{row['path']}  from image {row['from']}  seed {row['seed']}")


@click.group("checkpoints")
def checkpoints_group() -> None:
    """Register model files so infotext `Model hash:` values find them."""


@checkpoints_group.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--kind",
    type=click.Choice(["checkpoint", "vae", "lora", "embedding", "hypernetwork"]),
    default="checkpoint",
    show_default=True,
    help="What the files are.",
)
@quiet_option
@json_option
@pass_app
def checkpoints_add(app: AppContext, paths, kind, quiet, as_json) -> None:
    """Register model files (or folders of them); hashes are computed once and cached."""
    from curator.generation.registry import register_model_files

    records = register_model_files(
        app.catalog, list(paths), kind, reporter=RichReporter(not (quiet or as_json))
    )
    if as_json:
        emit_json([r.as_dict() for r in records])
        return
    for r in records:
        click.echo(f"{r.name}  [{r.autov2 or '-'}] [{r.old_hash or '-'}]  {r.path}")


@checkpoints_group.command("ls")
@click.option("--kind", help="Only this kind.")
@json_option
@pass_app
def checkpoints_ls(app: AppContext, kind, as_json) -> None:
    """List registered model files with their AutoV2 and old hashes."""
    from curator.generation.registry import list_model_files

    records = list_model_files(app.catalog, kind)
    if as_json:
        emit_json([r.as_dict() for r in records])
        return
    for r in records:
        click.echo(f"{r.kind:<12} {r.name}  [{r.autov2 or '-'}] [{r.old_hash or '-'}]  {r.path}")


def register(main: click.Group) -> None:
    main.add_command(prompt_cmd)
    main.add_command(generate_cmd)
    main.add_command(regenerate_cmd)
    main.add_command(xyz_cmd)
    # The `models` group lives in curator.cli.tagging, which the command table loads first.
    models = main.get_command(None, "models")  # type: ignore[arg-type]
    if isinstance(models, click.Group):
        models.add_command(checkpoints_group)
    else:
        main.add_command(click.Group("models", commands={"checkpoints": checkpoints_group}))
