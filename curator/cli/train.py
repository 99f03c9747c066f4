"""`curator train dreambooth|lora|textual-inversion|hypernetwork`: train on an exported
training set (`--data`, any layout `curator export` writes) or on catalog images exported
on the fly (`--where`)."""

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
from curator.training.loop import (  # plain names: imports no torch
    LR_SCHEDULERS,
    MIXED_PRECISION,
    OPTIMIZERS,
)


@click.group("train")
def train_group() -> None:
    """Train DreamBooth, LoRA or textual-inversion weights on an exported training set."""


def _sample_size(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    width, _, height = value.lower().partition("x")
    try:
        size = (int(width), int(height or width))
    except ValueError:
        raise click.BadParameter("WIDTH[xHEIGHT], e.g. 512 or 512x768") from None
    if min(size) < 8 or size[0] % 8 or size[1] % 8:
        raise click.BadParameter("sides must be positive multiples of 8")
    return size


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
            default=None,
            help="Optimizer steps (default 500).",
        ),
        click.option(
            "--epochs",
            type=click.IntRange(1),
            default=None,
            help="Train N passes over the data instead of --steps: the steps are counted "
            "from the images, repeats, buckets, batch size and gradient accumulation "
            "(kohya's --max_train_epochs).",
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
            "--save-state",
            is_flag=True,
            help="With each save also write a NAME-00000N-state/ folder (weights, optimizer "
            "moments, schedule, random generators) that --resume continues exactly.",
        ),
        click.option(
            "--resume",
            metavar="PATH",
            help="Continue from a state folder this command saved (--save-state), or from a "
            "LoRA's .safetensors or a hypernetwork's .pt (this command's or A1111's: its "
            "layers and step; optimizer moments start again). "
            "The step count, loss log and learning-rate schedule carry on.",
        ),
        click.option(
            "--mixed-precision",
            type=click.Choice(MIXED_PRECISION),
            default="no",
            show_default=True,
            help="Compute in fp16 (CUDA, with loss scaling) or bf16; weights stay float32.",
        ),
        click.option(
            "--gradient-accumulation-steps",
            type=click.IntRange(1),
            default=1,
            show_default=True,
            metavar="N",
            help="Batches per optimizer step (an effective batch of N x --batch-size); "
            "--steps counts optimizer steps.",
        ),
        click.option(
            "--gradient-checkpointing",
            is_flag=True,
            help="Recompute activations in the backward pass: much less memory, ~30% slower.",
        ),
        click.option(
            "--optimizer",
            type=click.Choice(OPTIMIZERS),
            default="adamw",
            show_default=True,
            help="AdamW, or bitsandbytes' 8-bit AdamW (needs bitsandbytes).",
        ),
        click.option(
            "--min-snr-gamma",
            type=click.FloatRange(0),
            default=0.0,
            show_default=True,
            help="Min-SNR loss weighting with this gamma (5 is usual; 0: off).",
        ),
        click.option(
            "--noise-offset",
            type=click.FloatRange(0),
            default=0.0,
            show_default=True,
            help="Offset noise strength, for very dark or bright images (0.05-0.1; 0: off).",
        ),
        click.option(
            "--sample-every",
            type=click.IntRange(0),
            default=0,
            show_default=True,
            metavar="N",
            help="Every N steps generate one image per --sample-prompt into OUT/samples/ "
            "(A1111 PNGs with infotext, catalogued).",
        ),
        click.option(
            "--sample-prompt",
            "sample_prompts",
            multiple=True,
            metavar="PROMPT",
            help="A prompt for the samples (repeatable; A1111 prompt syntax).",
        ),
        click.option(
            "--sample-steps",
            type=click.IntRange(1),
            default=20,
            show_default=True,
            help="Sampling steps for each sample image.",
        ),
        click.option(
            "--sample-size",
            default="512",
            show_default=True,
            callback=_sample_size,
            metavar="W[xH]",
            help="Sample image size in pixels.",
        ),
        click.option(
            "--sample-sampler",
            default="Euler a",
            show_default=True,
            help="A1111 sampler name for the samples.",
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
            help="Output name without extension [default: the method's name; an embedding is "
            "named --token].",
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
    from curator.training import distributed

    if not distributed.is_main():
        return  # several processes: the main one reports
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
                "states": [str(p) for p in result.states],
                "samples": [str(p) for p in result.samples],
                "generated": [str(p) for p in result.generated],
            }
        )
        return
    tail = result.losses[-10:]
    click.echo(
        f"trained {result.steps} steps in {result.seconds:.1f}s, "
        f"loss (last {len(tail)} steps) {sum(tail) / max(len(tail), 1):.4f}"
    )
    if result.generated:
        click.echo(f"generated {len(result.generated)} image(s) in {result.generated[0].parent}")
    for path in result.outputs:
        click.echo(f"saved {path}")
    if not quiet:
        for path in result.states:
            click.echo(f"state {path}")
        if result.samples:
            click.echo(f"{len(result.samples)} sample(s) in {result.samples[0].parent}")
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


def _length(steps: int | None, epochs: int | None) -> dict[str, int]:
    if steps is not None and epochs is not None:
        raise UsageError("give --steps or --epochs, not both")
    if epochs is not None:
        return {"epochs": epochs}
    return {"steps": 500 if steps is None else steps}


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
        **_length(o["steps"], o["epochs"]),
        "batch_size": o["batch_size"],
        "seed": o["seed"],
        "save_every": o["save_every"],
        "cache_latents": o["cache_latents"],
        "lr_scheduler": o["lr_scheduler"],
        "lr_warmup_steps": o["lr_warmup_steps"],
        "save_state": o["save_state"],
        "resume": o["resume"],
        "mixed_precision": o["mixed_precision"],
        "gradient_accumulation_steps": o["gradient_accumulation_steps"],
        "gradient_checkpointing": o["gradient_checkpointing"],
        "optimizer": o["optimizer"],
        "min_snr_gamma": o["min_snr_gamma"],
        "noise_offset": o["noise_offset"],
        "sample_every": o["sample_every"],
        "sample_prompts": list(o["sample_prompts"]),
        "sample_steps": o["sample_steps"],
        "sample_size": o["sample_size"],
        "sample_sampler": o["sample_sampler"],
        "device": None if o["device"] == "auto" else o["device"],
        "reporter": RichReporter(not (quiet or as_json)),
        "cancel": CancelToken(),
    }


@train_group.command("dreambooth")
@_common
@click.option(
    "--lr", type=float, default=5e-6, show_default=True, help="AdamW learning rate (UNet)."
)
@click.option(
    "--instance-prompt",
    default="",
    help="Caption every training image with this prompt, e.g. 'photo of sks dog' "
    "[default: each image's caption file, else its folder's tokens].",
)
@click.option(
    "--class-prompt",
    default="",
    help="Prompt of the class images (captions them; generates missing ones), e.g. "
    "'photo of a dog'. Turns on prior preservation.",
)
@click.option(
    "--class-data",
    metavar="DIR",
    help="Folder of class images, reused across runs; missing ones are generated into it "
    "[default: OUT/class_images with --class-prompt].",
)
@click.option(
    "--num-class-images",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Class images to train with; the shortfall in --class-data is generated with the "
    "base model, catalogued, and reused next time.",
)
@click.option(
    "--prior-loss-weight",
    type=click.FloatRange(0),
    default=1.0,
    show_default=True,
    help="Loss weight of the class (prior-preservation) images.",
)
@click.option(
    "--class-negative-prompt", default="", help="Negative prompt for generated class images."
)
@click.option(
    "--class-steps",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    help="Sampling steps for generated class images.",
)
@click.option(
    "--class-sampler",
    default="Euler a",
    show_default=True,
    help="A1111 sampler name for generated class images.",
)
@click.option(
    "--class-cfg-scale",
    type=float,
    default=7.0,
    show_default=True,
    help="CFG scale for generated class images.",
)
@click.option(
    "--class-size",
    type=click.IntRange(8),
    help="Side of generated class images, in pixels (a multiple of 8) [default: the side "
    "of --resolution's area, else 512].",
)
@click.option(
    "--train-text-encoder/--unet-only",
    default=False,
    show_default=True,
    help="Also fine-tune the text encoder.",
)
@click.option(
    "--text-encoder-lr",
    type=float,
    default=None,
    help="Learning rate for the text encoder [default: --lr].",
)
@click.option(
    "--save-precision",
    type=click.Choice(["fp32", "fp16", "bf16"]),
    default="fp32",
    show_default=True,
    help="Float type of the single-file checkpoint (the diffusers folder stays fp32).",
)
@pass_app
def dreambooth_cmd(app: AppContext, quiet: bool, as_json: bool, **o: Any) -> None:
    """Fine-tune the whole UNet (and optionally the text encoder) on a subject, with prior
    preservation; saves OUT/NAME/ (diffusers) and OUT/NAME.safetensors (A1111, sd-scripts).

    \b
    Example (20 photos of one man, 50 class images generated once):
      curator train dreambooth --base sd15.safetensors --config sd15/ --data export/ \\
        --out db/ --instance-prompt "photo of jimmywalesstare man" \\
        --class-prompt "photo of a man" --num-class-images 50 --lr 5e-6 --steps 4000 \\
        --save-every 500 --mixed-precision fp16
    """
    from curator.training.dreambooth import DreamBoothOptions, train_dreambooth

    options = DreamBoothOptions(
        **_base_fields(o, quiet, as_json),
        lr=o["lr"],
        instance_prompt=o["instance_prompt"],
        class_prompt=o["class_prompt"],
        class_data=o["class_data"],
        num_class_images=o["num_class_images"],
        prior_loss_weight=o["prior_loss_weight"],
        class_negative_prompt=o["class_negative_prompt"],
        class_steps=o["class_steps"],
        class_sampler=o["class_sampler"],
        class_cfg_scale=o["class_cfg_scale"],
        resolution=_class_side(o["class_size"], o["resolution"]),
        train_text_encoder=o["train_text_encoder"],
        text_encoder_lr=o["text_encoder_lr"],
        save_precision=o["save_precision"],
    )
    with _ctrl_c_cancels(options.cancel):
        result = train_dreambooth(options, app.catalog)
    _report(result, as_json, quiet)


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
    "--conv-dim",
    type=click.IntRange(1),
    default=None,
    help="Also train the ResNet blocks' 3x3 convolutions at this rank (LoCon; "
    "kohya's network_args conv_dim) [default: off].",
)
@click.option(
    "--conv-alpha",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Alpha of the 3x3 convolutions' LoRA (kohya's conv_alpha) [default: 1].",
)
@click.option(
    "--train-text-encoder/--unet-only",
    default=False,
    show_default=True,
    help="Also put LoRA layers on the text encoder's attention and MLP layers.",
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
@pass_app
def lora_cmd(app: AppContext, quiet: bool, as_json: bool, **o: Any) -> None:
    """Train a LoRA on the UNet's transformer blocks (and with --conv-dim its convolutions),
    as sd-scripts does; saved in kohya's .safetensors layout."""
    from curator.training.lora import LoraOptions, train_lora

    options = LoraOptions(
        **_base_fields(o, quiet, as_json),
        lr=o["lr"],
        rank=o["rank"],
        alpha=o["alpha"],
        conv_dim=o["conv_dim"],
        conv_alpha=o["conv_alpha"],
        train_text_encoder=o["train_text_encoder"],
        text_encoder_lr=o["text_encoder_lr"],
        prior_loss_weight=o["prior_loss_weight"],
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
    help="TOKEN.safetensors (emb_params; SDXL: clip_l and clip_g) or A1111's own "
    "TOKEN.pt dict (SD 1.x/2.x only).",
)
@pass_app
def textual_inversion_cmd(app: AppContext, quiet: bool, as_json: bool, **o: Any) -> None:
    """Learn a new token's embedding, saved as A1111 loads it: TOKEN.safetensors or .pt.

    On SDXL the token is learned in both text encoders (--vectors each) and saved with
    A1111's SDXL keys, clip_l and clip_g."""
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


def _class_side(class_size: int | None, resolution: tuple[int, int] | None) -> int:
    """Generated class images are square: --class-size, else the side of the training
    resolution's area (rounded down to a multiple of 8), else 512."""
    if class_size is not None:
        return class_size
    if resolution is None:
        return 512
    return max(8, int((resolution[0] * resolution[1]) ** 0.5) // 8 * 8)


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
    )
    with _ctrl_c_cancels(options.cancel), cli_words():
        result = train_hypernetwork(options, app.catalog)
    _report(result, as_json, quiet)


def register(main: click.Group) -> None:
    main.add_command(train_group)
