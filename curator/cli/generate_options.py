"""The options `curator generate` and `curator xyz` share: model, sampling, img2img,
inpainting, hires fix and extra-network folders."""

from __future__ import annotations

import re

import click

_SIZE = re.compile(r"^(\d+)x(\d+)$")


def _size(ctx, param, value: str) -> tuple[int, int]:
    match = _SIZE.match(value.strip().lower())
    if not match:
        raise click.BadParameter("expected WIDTHxHEIGHT, e.g. 512x768")
    return int(match.group(1)), int(match.group(2))


def sampling_options(func):
    """Options shared by `generate` and `xyz`: the model and the sampling parameters."""
    options = [
        click.option(
            "--model",
            "-m",
            "model",
            required=True,
            metavar="PATH|HUB_ID",
            help="Diffusers folder, hub id (from the local cache) or .safetensors.",
        ),
        click.option("--negative", "-n", default="", help="Negative prompt."),
        click.option(
            "--steps", type=click.IntRange(1), default=20, show_default=True, help="Sampling steps."
        ),
        click.option(
            "--sampler",
            default="Euler a",
            show_default=True,
            help="A1111 sampler name, e.g. 'DPM++ 2M' or 'DPM++ 2M Karras'.",
        ),
        click.option(
            "--schedule",
            default=None,
            help="A1111 schedule type: Automatic, Karras, Exponential, ...",
        ),
        click.option(
            "--cfg", "cfg_scale", type=float, default=7.0, show_default=True, help="CFG scale."
        ),
        click.option(
            "--seed",
            type=int,
            default=-1,
            show_default=True,
            help="Seed of the first image (-1: random); image i uses seed + i.",
        ),
        click.option(
            "--size",
            callback=_size,
            default="512x512",
            show_default=True,
            help="Image size WIDTHxHEIGHT.",
        ),
        click.option(
            "--clip-skip",
            type=click.IntRange(1),
            default=1,
            show_default=True,
            help="Stop the text encoder this many layers early (A1111 'Clip skip').",
        ),
        click.option(
            "--init",
            "init_image",
            type=click.Path(exists=True, dir_okay=False),
            help="img2img: start from this image (never modified).",
        ),
        click.option(
            "--mask",
            "mask_image",
            type=click.Path(exists=True, dir_okay=False),
            help="Inpaint: repaint the white (or opaque) part of this mask over --init.",
        ),
        click.option(
            "--mask-blur",
            type=click.IntRange(0),
            default=4,
            show_default=True,
            help="Blur the mask by this many pixels (A1111 'Mask blur').",
        ),
        click.option(
            "--inpaint-area",
            type=click.Choice(["whole picture", "only masked"], case_sensitive=False),
            default="whole picture",
            show_default=True,
            help="Generate the whole picture, or only the masked area (plus padding) at "
            "--size, pasted back into the source.",
        ),
        click.option(
            "--inpaint-padding",
            type=click.IntRange(0),
            default=32,
            show_default=True,
            help="Pixels around the masked area with --inpaint-area 'only masked'.",
        ),
        click.option(
            "--masked-content",
            type=click.Choice(["fill", "original", "latent noise", "latent nothing"]),
            default="original",
            show_default=True,
            help="What the masked area starts from (A1111 'Masked content').",
        ),
        click.option(
            "--invert-mask",
            is_flag=True,
            help="Repaint what the mask leaves out (A1111 'Inpaint not masked').",
        ),
        click.option(
            "--strength",
            type=click.FloatRange(0, 1, min_open=True),
            default=0.75,
            show_default=True,
            help="Denoising strength of img2img and hires fix.",
        ),
        click.option(
            "--rng",
            type=click.Choice(["cpu", "gpu"]),
            default="cpu",
            show_default=True,
            help="Where initial noise is drawn (A1111's RNG).",
        ),
        click.option("--vae", metavar="PATH", help="Replace the checkpoint's VAE."),
        click.option(
            "--config", metavar="DIR", help="Diffusers config folder for a single-file checkpoint."
        ),
        click.option(
            "--allow-pickle",
            is_flag=True,
            help="Allow .ckpt/.pt checkpoints (unpickling can run code).",
        ),
        click.option(
            "--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, mps."
        ),
        click.option("--full-precision", is_flag=True, help="float32 on a GPU too."),
        click.option(
            "--low-memory",
            is_flag=True,
            help="Attention slicing and model CPU offload for small GPUs.",
        ),
        click.option(
            "--out",
            "out_dir",
            type=click.Path(file_okay=False),
            default="outputs",
            show_default=True,
            help="Folder for the PNGs.",
        ),
        click.option("--no-catalog", is_flag=True, help="Do not add the images to the catalog."),
        click.option(
            "--lora-dir",
            "lora_dirs",
            multiple=True,
            metavar="DIR",
            help="Folder of LoRA files for <lora:NAME:WEIGHT> in the prompt (repeatable).",
        ),
        click.option(
            "--hr-scale",
            type=click.FloatRange(1),
            default=1.0,
            show_default=True,
            help="Hires fix: upscale the first pass by this factor, then refine it "
            "(--strength is the refining denoising strength).",
        ),
        click.option(
            "--hr-steps",
            type=click.IntRange(0),
            default=0,
            show_default=True,
            help="Hires fix steps (0: as many as --steps).",
        ),
        click.option(
            "--hr-upscaler",
            default="Latent",
            show_default=True,
            help="Hires upscaler: Latent, Latent (antialiased), Latent (bicubic), "
            "Latent (bicubic antialiased), Latent (nearest), Latent (nearest-exact), "
            "None, Lanczos, Nearest, or the file name (without extension) of an "
            "ESRGAN / Real-ESRGAN / SwinIR / ... model in --upscaler-dir.",
        ),
        click.option(
            "--upscaler-dir",
            "upscaler_dirs",
            multiple=True,
            metavar="DIR",
            help="Folder of upscaler models (.pth, .safetensors) for --hr-upscaler (repeatable).",
        ),
        click.option(
            "--embeddings-dir",
            "embeddings_dirs",
            multiple=True,
            metavar="DIR",
            help="Folder of textual-inversion embeddings, used by file name in the prompt "
            "(repeatable).",
        ),
        click.option(
            "--hypernetwork-dir",
            "hypernetwork_dirs",
            multiple=True,
            metavar="DIR",
            help="Folder of A1111 hypernetworks (NAME.pt) for <hypernet:NAME:STRENGTH> in the "
            "prompt (repeatable); files registered with `models checkpoints add --kind "
            "hypernetwork` are found too.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func
