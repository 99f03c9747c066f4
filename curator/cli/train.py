"""`curator train dreambooth|lora|textual-inversion`: train on a kohya DreamBooth export."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from curator.cli.context import AppContext, emit_json, json_option, pass_app, quiet_option
from curator.cli.progress import RichReporter
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
            required=True,
            metavar="DIR",
            help="A kohya DreamBooth export (img/N_tokens/ with captions), e.g. from "
            "`curator export --layout kohya-dreambooth`.",
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
            "--save-state",
            is_flag=True,
            help="With each save also write a NAME-00000N-state/ folder (weights, optimizer "
            "moments, schedule, random generators) that --resume continues exactly.",
        ),
        click.option(
            "--resume",
            metavar="PATH",
            help="Continue from a state folder this command saved (--save-state), or for a "
            "LoRA from its .safetensors (weights and step; optimizer moments start again). "
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


def _base_fields(o: dict[str, Any], quiet: bool, as_json: bool) -> dict[str, Any]:
    from curator.progress import CancelToken

    return {
        "base": o["base"],
        "config": o["config"],
        "data": o["data"],
        "out": o["out"],
        "name": o["name"],
        "steps": o["steps"],
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
    "--resolution",
    type=click.IntRange(8),
    default=512,
    show_default=True,
    help="Side of generated class images, in pixels (a multiple of 8).",
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
        resolution=o["resolution"],
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
    )
    with _ctrl_c_cancels(options.cancel):
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
    with _ctrl_c_cancels(options.cancel):
        result = train_textual_inversion(options, app.catalog)
    _report(result, as_json, quiet)


def register(main: click.Group) -> None:
    main.add_command(train_group)
