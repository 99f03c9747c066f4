"""`curator train lora|textual-inversion|hypernetwork`: train on an exported training set
(`--data`, any layout `curator export` writes) or on catalog images exported on the fly
(`--where`)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from curator.cli.context import AppContext, emit_json, json_option, pass_app, quiet_option
from curator.cli.export_options import _resolution, cli_words
from curator.cli.progress import RichReporter
from curator.errors import UsageError
from curator.export.buckets import PRESETS
from curator.export.crops import MODES
from curator.export.options import CAPTION_TEXTS
from curator.training.layouts import BUCKET_FIELDS, LAYOUT_NAMES  # imports no torch
from curator.training.loop import LR_SCHEDULERS


@click.group("train")
def train_group() -> None:
    """Train a LoRA or a textual-inversion embedding on an exported training set."""


def _common(func):
    """Options every training method takes."""
    options = [
        click.option(
            "--base",
            required=True,
            metavar="PATH|HUB_ID",
            help="Base model: diffusers folder, hub id (from the local cache) or .safetensors.",
        ),
        click.option(
            "--config",
            metavar="FOLDER",
            help="Component configs for a single-file --base (a diffusers folder), offline.",
        ),
        click.option(
            "--data",
            default="",
            metavar="DIR",
            help="A training set in any layout `curator export` writes (kohya DreamBooth or "
            "fine-tune, imagefolder, diffusers DreamBooth, jsonl), recognised by its files.",
        ),
        click.option(
            "--where",
            metavar="QUERY",
            help="Train on the catalog images QUERY selects: exported first into OUT/data "
            "with the bucket and caption options below ('' selects every image).",
        ),
        click.option(
            "--layout",
            type=click.Choice(LAYOUT_NAMES),
            help="With --data: read it as this layout instead of recognising it. With "
            "--where: the layout to export in [default: kohya-dreambooth].",
        ),
        click.option(
            "--preset",
            "bucket",
            type=click.Choice(sorted(PRESETS)),
            help="Buckets to train at (sd15: 512x768 area; sdxl: 1024x1024), adjusted by "
            "the options below [default: --data's own buckets; sd15 for --where].",
        ),
        click.option(
            "--resolution",
            callback=_resolution,
            metavar="W,H",
            help="Training resolution: buckets of area W*H (kohya's --resolution). With "
            "--data, images are resized and centre-cropped to these buckets.",
        ),
        click.option("--max-area", type=click.IntRange(1), help="Bucket area in pixels."),
        click.option("--min-side", type=click.IntRange(1), help="Smallest bucket side."),
        click.option("--max-side", type=click.IntRange(1), help="Largest bucket side."),
        click.option("--step", type=click.IntRange(1), help="Bucket side step in pixels."),
        click.option(
            "--no-upscale",
            is_flag=True,
            default=None,
            help="Small images get smaller buckets instead of being enlarged.",
        ),
        click.option(
            "--allow-upscale",
            is_flag=True,
            help="Enlarge images smaller than their bucket instead of refusing them.",
        ),
        click.option(
            "--crop",
            type=click.Choice(MODES),
            default="center",
            show_default=True,
            help="With --where: center; random (seeded); focal (faces, else detail).",
        ),
        click.option(
            "--captions",
            type=click.Choice(CAPTION_TEXTS),
            default="tags",
            show_default=True,
            help="With --where: what a caption holds (tags, the natural caption, or both).",
        ),
        click.option(
            "--instance-token",
            "instance",
            default="",
            help="With --where: rare token the subject is trained under, e.g. sks.",
        ),
        click.option(
            "--class-word",
            default="",
            help="With --where: the subject's class, e.g. dog (names the reg images too).",
        ),
        click.option(
            "--repeats",
            type=click.IntRange(1),
            default=1,
            show_default=True,
            help="With --where: how often each image is seen per epoch.",
        ),
        click.option(
            "--reg-query",
            metavar="QUERY",
            help="With --where: query for regularisation (class) images.",
        ),
        click.option(
            "--keep-tokens",
            type=click.IntRange(0),
            default=0,
            show_default=True,
            help="With --where: leading caption tokens kept in place when captions shuffle.",
        ),
        click.option(
            "--shuffle-caption",
            is_flag=True,
            help="With --where: shuffle caption tokens at every step (after --keep-tokens).",
        ),
        click.option(
            "--out",
            "out",
            required=True,
            metavar="DIR",
            help="Folder for the weights, checkpoints and the loss log (CSV).",
        ),
        click.option(
            "--steps",
            type=click.IntRange(1),
            default=500,
            show_default=True,
            help="Optimizer steps.",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(1),
            default=1,
            show_default=True,
            help="Images per step, all from one aspect-ratio bucket.",
        ),
        click.option(
            "--lr-scheduler",
            type=click.Choice(LR_SCHEDULERS),
            default="constant",
            show_default=True,
            help="How the learning rate changes over the steps (diffusers' schedules).",
        ),
        click.option(
            "--lr-warmup-steps",
            type=click.IntRange(0),
            default=0,
            show_default=True,
            help="Steps over which the learning rate rises from 0 to --lr.",
        ),
        click.option("--seed", type=int, default=0, show_default=True, help="Random seed."),
        click.option(
            "--cache-latents",
            is_flag=True,
            help="Encode each image with the VAE once and keep it in memory (faster; a "
            "fresh latent is still drawn each step).",
        ),
        click.option(
            "--save-every",
            type=click.IntRange(0),
            default=0,
            show_default=True,
            metavar="N",
            help="Also save the weights every N steps as NAME-00000N.safetensors "
            "(0: only at the end).",
        ),
        click.option(
            "--device",
            default="auto",
            show_default=True,
            help="cuda, mps, cpu, or auto (the best there is).",
        ),
        click.option(
            "--name",
            default="",
            help="Output file name without extension (a LoRA; an embedding is named --token).",
        ),
        quiet_option,
        json_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


@contextmanager
def _ctrl_c_cancels(token: Any) -> Iterator[None]:
    """The first Ctrl-C stops at the next step and saves; a second one stops at once."""

    def handler(signum: int, frame: Any) -> None:
        if token.cancelled:
            raise KeyboardInterrupt
        token.cancel()

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave Ctrl-C as it is
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _report(result: Any, as_json: bool, quiet: bool) -> None:
    if as_json:
        emit_json(
            {
                "outputs": [str(p) for p in result.outputs],
                "steps": result.steps,
                "first_loss": result.losses[0] if result.losses else None,
                "final_loss": result.losses[-1] if result.losses else None,
                "loss_log": str(result.loss_log),
                "data_hash": result.data_hash,
                "run_id": result.run_id,
                "seconds": round(result.seconds, 3),
            }
        )
        return
    tail = result.losses[-10:]
    click.echo(
        f"trained {result.steps} steps in {result.seconds:.1f}s, "
        f"loss (last {len(tail)} steps) {sum(tail) / max(len(tail), 1):.4f}"
    )
    for path in result.outputs:
        click.echo(f"saved {path}")
    if not quiet:
        click.echo(f"loss log {result.loss_log}")


def _export_fields(o: dict[str, Any]) -> dict[str, Any]:
    """The `ExportOptions` a --where run exports with (bucket settings go separately)."""
    fields = {
        "crop": o["crop"],
        "captions": o["captions"],
        "instance": o["instance"],
        "class_word": o["class_word"],
        "repeats": o["repeats"],
        "reg_query": o["reg_query"],
        "keep_tokens": o["keep_tokens"],
        "shuffle_caption": o["shuffle_caption"],
    }
    return {k: v for k, v in fields.items() if v is not None}


def _base_fields(o: dict[str, Any], quiet: bool, as_json: bool) -> dict[str, Any]:
    from curator.progress import CancelToken

    if o["where"] is None:
        used = [
            name
            for name, flag in (
                ("--reg-query", o["reg_query"] is not None),
                ("--instance-token", bool(o["instance"])),
                ("--class-word", bool(o["class_word"])),
                ("--shuffle-caption", o["shuffle_caption"]),
                ("--keep-tokens", o["keep_tokens"] != 0),
                ("--repeats", o["repeats"] != 1),
                ("--captions", o["captions"] != "tags"),
                ("--crop", o["crop"] != "center"),
            )
            if flag
        ]
        if used:
            raise UsageError(f"{used[0]} goes with --where (a --data set has its own)")
    return {
        "base": o["base"],
        "config": o["config"],
        "data": o["data"],
        "where": o["where"],
        "layout": o["layout"],
        "buckets": {k: o[k] for k in BUCKET_FIELDS if o.get(k) is not None},
        "allow_upscale": o["allow_upscale"],
        "export": _export_fields(o) if o["where"] is not None else {},
        "out": o["out"],
        "name": o["name"],
        "steps": o["steps"],
        "batch_size": o["batch_size"],
        "seed": o["seed"],
        "save_every": o["save_every"],
        "cache_latents": o["cache_latents"],
        "lr_scheduler": o["lr_scheduler"],
        "lr_warmup_steps": o["lr_warmup_steps"],
        "device": None if o["device"] == "auto" else o["device"],
        "reporter": RichReporter(not (quiet or as_json)),
        "cancel": CancelToken(),
    }


@train_group.command("lora")
@_common
@click.option("--lr", type=float, default=1e-4, show_default=True, help="AdamW learning rate.")
@click.option(
    "--rank",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="LoRA rank (kohya's network_dim).",
)
@click.option(
    "--alpha",
    type=float,
    default=1.0,
    show_default=True,
    help="LoRA alpha (kohya's network_alpha); updates scale by alpha / rank.",
)
@click.option(
    "--train-text-encoder/--unet-only",
    default=False,
    show_default=True,
    help="Also put LoRA layers on the text encoder's attention projections.",
)
@click.option(
    "--prior-loss-weight",
    type=click.FloatRange(0),
    default=1.0,
    show_default=True,
    help="Loss weight of the export's reg/ (class) images, as sd-scripts weighs them.",
)
@click.option(
    "--text-encoder-lr",
    type=float,
    default=None,
    help="Learning rate for the text encoder's LoRA [default: --lr].",
)
@click.option(
    "--resume",
    metavar="FILE",
    help="Continue from a LoRA this command saved (e.g. NAME-000500.safetensors): its "
    "weights, step count and learning-rate schedule; optimizer moments start again.",
)
@pass_app
def lora_cmd(app: AppContext, quiet: bool, as_json: bool, **o: Any) -> None:
    """Train a LoRA on the UNet's attention layers; saved in kohya's .safetensors layout."""
    from curator.training.lora import LoraOptions, train_lora

    options = LoraOptions(
        **_base_fields(o, quiet, as_json),
        lr=o["lr"],
        rank=o["rank"],
        alpha=o["alpha"],
        train_text_encoder=o["train_text_encoder"],
        text_encoder_lr=o["text_encoder_lr"],
        prior_loss_weight=o["prior_loss_weight"],
        resume=o["resume"],
    )
    with _ctrl_c_cancels(options.cancel), cli_words():
        result = train_lora(options, app.catalog)
    _report(result, as_json, quiet)


@train_group.command("textual-inversion")
@_common
@click.option("--lr", type=float, default=5e-3, show_default=True, help="AdamW learning rate.")
@click.option(
    "--token",
    required=True,
    help="The new trigger word; the embedding is saved as TOKEN.safetensors.",
)
@click.option(
    "--init-text",
    default="*",
    show_default=True,
    help="Text whose token embeddings start the new vectors (empty: zeros).",
)
@click.option(
    "--vectors",
    type=click.IntRange(1, 75),
    default=1,
    show_default=True,
    help="Vectors per token: how many prompt tokens the embedding takes.",
)
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["safetensors", "pt"]),
    default="safetensors",
    show_default=True,
    help="TOKEN.safetensors (emb_params) or A1111's own TOKEN.pt dict.",
)
@pass_app
def textual_inversion_cmd(app: AppContext, quiet: bool, as_json: bool, **o: Any) -> None:
    """Learn a new token's embedding, saved as A1111 loads it: TOKEN.safetensors or .pt."""
    from curator.training.textual_inversion import (
        TextualInversionOptions,
        train_textual_inversion,
    )

    options = TextualInversionOptions(
        **_base_fields(o, quiet, as_json),
        lr=o["lr"],
        token=o["token"],
        init_text=o["init_text"],
        vectors=o["vectors"],
        file_format=o["file_format"],
    )
    with _ctrl_c_cancels(options.cancel), cli_words():
        result = train_textual_inversion(options, app.catalog)
    _report(result, as_json, quiet)


@train_group.command("hypernetwork")
@_common
@click.option(
    "--lr",
    "lr_text",
    default="0.00001",
    show_default=True,
    metavar="RATE|SCHEDULE",
    help="AdamW learning rate, or A1111's schedule: '1e-5:7000, 5e-6:180000' trains at "
    "1e-5 until step 7000, then at 5e-6 (training ends where the schedule ends).",
)
@click.option(
    "--layer-structure",
    default="1, 2, 1",
    show_default=True,
    help="Layer widths as multiples of the context width, starting and ending with 1 "
    "(e.g. '1, 1.5, 1.5, 1').",
)
@click.option(
    "--activation",
    default="linear",
    show_default=True,
    help="A1111's activation name: linear, relu, leakyrelu, elu, swish (Hardswish), tanh, "
    "sigmoid, mish, gelu, silu, ... (any torch activation, lower-cased).",
)
@click.option(
    "--layer-norm", is_flag=True, help="Add layer normalization after each layer (A1111)."
)
@click.option(
    "--dropout",
    is_flag=True,
    help="Use dropout: 0.3 after every hidden layer but the last unless "
    "--dropout-structure says otherwise.",
)
@click.option(
    "--dropout-structure",
    metavar="P, P, ...",
    help="Dropout after each layer, one value per --layer-structure entry, first and last 0 "
    "(e.g. '0, 0.05, 0.15, 0').",
)
@click.option(
    "--weight-init",
    type=click.Choice(
        ["Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal"]
    ),
    default="Normal",
    show_default=True,
    help="A1111's weight initialization.",
)
@click.option(
    "--activate-output",
    is_flag=True,
    help="Apply the activation after the last layer too (A1111's 'activate_output').",
)
@click.option(
    "--sizes",
    default="auto",
    show_default=True,
    help="Context widths to train layers for, e.g. '768, 320, 640, 1280' (auto: every "
    "width the model's attentions take).",
)
@click.option(
    "--resume",
    metavar="FILE",
    help="Train on from a hypernetwork .pt (this command's or A1111's), as A1111 trains an "
    "existing one: its layers, structure and step count; the layout options are ignored.",
)
@pass_app
def hypernetwork_cmd(app: AppContext, quiet: bool, as_json: bool, **o: Any) -> None:
    """Train an A1111 hypernetwork; saved as NAME.pt for <hypernet:NAME:STRENGTH>."""
    from curator.training.hypernetwork import HypernetworkOptions, train_hypernetwork

    text = o["lr_text"].strip()
    try:
        lr, schedule = float(text), None
    except ValueError:
        lr, schedule = 1e-5, text
    options = HypernetworkOptions(
        **_base_fields(o, quiet, as_json),
        lr=lr,
        lr_schedule=schedule,
        layer_structure=o["layer_structure"],
        activation=o["activation"],
        layer_norm=o["layer_norm"],
        dropout=o["dropout"],
        dropout_structure=o["dropout_structure"],
        weight_init=o["weight_init"],
        activate_output=o["activate_output"],
        sizes=o["sizes"],
        resume=o["resume"],
    )
    with _ctrl_c_cancels(options.cancel), cli_words():
        result = train_hypernetwork(options, app.catalog)
    _report(result, as_json, quiet)


def register(main: click.Group) -> None:
    main.add_command(train_group)
