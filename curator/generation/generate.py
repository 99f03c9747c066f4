"""txt2img and img2img with A1111's prompt handling, noise and infotext.

Every image gets its own seed (`seed + i` over the whole run, as A1111 numbers them) and
its initial noise from a generator seeded with it, on the CPU by default (A1111's
`RNG: CPU`), so the same parameters give the same pixels on any machine that runs the
same kernels. Prompt editing switches the conditioning between steps.
"""

from __future__ import annotations

import os
import random
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from curator.errors import CuratorError
from curator.generation import inpaint, inpaint_sampling
from curator.generation.conditioner import Conditioner, step_callback
from curator.generation.extra_networks import (
    activate_loras,
    deactivate_loras,
    lora_infotext,
    resolve_loras,
    split_extra_networks,
)
from curator.generation.hires import LATENT_UPSCALERS, hires_pass
from curator.generation.hypernetworks import (
    activate_hypernetworks,
    deactivate_hypernetworks,
    hypernet_infotext,
    resolve_hypernetworks,
)
from curator.generation.loading import LoadedModel
from curator.generation.pipelines import variant
from curator.generation.samplers import make_scheduler, resolve_sampler
from curator.generation.upscalers import Upscaler, resolve_upscaler
from curator.ingest.infotext import Infotext, format_infotext
from curator.progress import CancelToken, NullReporter, Reporter

MAX_SEED = 2**32 - 1


class GenerationError(CuratorError):
    """Parameters that cannot be generated."""


@dataclass
class GenerationParams:
    prompt: str
    negative_prompt: str = ""
    steps: int = 20
    sampler: str = "Euler a"
    schedule: str | None = None  # A1111 "Schedule type"; None: from the sampler name
    cfg_scale: float = 7.0
    seed: int = -1  # -1: random; the seed used is recorded
    width: int = 512
    height: int = 512
    batch_size: int = 1
    batch_count: int = 1
    clip_skip: int = 1
    init_image: str | None = None  # img2img source
    denoising_strength: float = 0.75
    rng: str = "cpu"  # "cpu" or "gpu": where initial noise is drawn (A1111's RNG setting)
    lora_dirs: list[str] = field(default_factory=list)  # where <lora:NAME:w> files are found
    embeddings_dirs: list[str] = field(default_factory=list)  # textual-inversion files
    hr_scale: float = 1.0  # hires fix: > 1 upscales the latents and runs a second pass
    hr_steps: int = 0  # hires steps (0: same as steps)
    hr_upscaler: str = "Latent"  # a latent mode, None, Lanczos, Nearest or a model's name
    upscaler_dirs: list[str] = field(default_factory=list)  # upscaler model files
    allow_pickle: bool = False  # pickled LoRA and embedding files too
    hypernetwork_dirs: list[str] = field(default_factory=list)  # folders / files, <hypernet:>
    mask_image: str | None = None  # inpaint: white is repainted (with init_image)
    mask_blur: int = 4  # A1111 "Mask blur", in pixels
    inpaint_only_masked: bool = False  # A1111 "Inpaint area": Only masked (else Whole picture)
    inpaint_padding: int = 32  # A1111 "Masked area padding" (only masked)
    masked_content: str = "original"  # fill, original, latent noise, latent nothing
    mask_invert: bool = False  # A1111 "Mask mode": Inpaint not masked


@dataclass
class GeneratedImage:
    path: Path
    seed: int
    infotext: str
    image: Image.Image = field(repr=False)


def resolve_seed(seed: int) -> int:
    return random.Random(secrets.randbits(64)).randrange(MAX_SEED) if seed == -1 else seed


def initial_noise(seeds: list[int], shape: tuple[int, ...], device: str, rng: str):
    """One noise tensor per seed, drawn as A1111 does (float32, own generator per image)."""
    import torch

    noise = []
    for seed in seeds:
        where = "cpu" if rng == "cpu" else device
        generator = torch.Generator(where).manual_seed(seed)
        noise.append(torch.randn(shape, generator=generator, device=where, dtype=torch.float32))
    return torch.stack(noise).to(device)


def infotext_params(
    params: GenerationParams,
    model: LoadedModel,
    seed: int,
    lora_hashes: str | None = None,
    ti_hashes: dict[str, str] | None = None,
    hypernet_hashes: str | None = None,
) -> dict[str, str]:
    """The parameter line A1111 writes, in A1111's order."""
    sampler = resolve_sampler(params.sampler, params.schedule)
    values: dict[str, Any] = {"Steps": params.steps, **sampler.infotext()}
    values["CFG scale"] = _number(params.cfg_scale)
    values["Seed"] = seed
    values["Size"] = f"{params.width}x{params.height}"
    if model.hash:
        values["Model hash"] = model.hash
    values["Model"] = model.name
    if params.init_image or params.hr_scale > 1:
        values["Denoising strength"] = _number(params.denoising_strength)
    if params.clip_skip > 1:
        values["Clip skip"] = params.clip_skip
    if params.init_image and params.mask_image:
        values.update(
            inpaint.infotext(
                params.mask_blur,
                params.inpaint_only_masked,
                params.inpaint_padding,
                params.masked_content,
                params.mask_invert,
            )
        )
    if params.hr_scale > 1 and not params.init_image:
        values["Hires upscale"] = _number(params.hr_scale)
        if params.hr_steps:
            values["Hires steps"] = params.hr_steps
        values["Hires upscaler"] = params.hr_upscaler
    if params.rng != "gpu":
        values["RNG"] = params.rng.upper()
    if ti_hashes:
        values["TI hashes"] = ", ".join(
            f"{name.replace(':', '').replace(',', '')}: {short}"
            for name, short in ti_hashes.items()
        )
    if lora_hashes:
        values["Lora hashes"] = lora_hashes
    if hypernet_hashes:
        values["Hypernet hashes"] = hypernet_hashes
    return {key: str(value) for key, value in values.items()}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _validate(params: GenerationParams, model: LoadedModel) -> int:
    factor = model.pipeline.vae_scale_factor
    step = max(factor, 8)  # diffusers' pipelines require multiples of 8
    if params.width % step or params.height % step or params.width <= 0 or params.height <= 0:
        raise GenerationError(f"size must be a positive multiple of {step}")
    if params.steps < 1 or params.batch_size < 1 or params.batch_count < 1:
        raise GenerationError("steps, batch size and batch count must be at least 1")
    if params.clip_skip < 1:
        raise GenerationError("clip skip must be at least 1")
    if params.init_image and not 0 < params.denoising_strength <= 1:
        raise GenerationError("denoising strength must be in (0, 1]")
    if params.hr_scale > 1 and not 0 < params.denoising_strength <= 1:
        raise GenerationError("denoising strength must be in (0, 1]")
    if params.mask_image and not params.init_image:
        raise GenerationError("a mask needs the image it masks (--init)")
    if params.masked_content not in inpaint.MASKED_CONTENT:
        raise GenerationError(
            f"unknown masked content {params.masked_content!r}; use one of "
            + ", ".join(inpaint.MASKED_CONTENT)
        )
    if params.mask_blur < 0 or params.inpaint_padding < 0:
        raise GenerationError("mask blur and masked area padding cannot be negative")
    if params.rng not in ("cpu", "gpu"):
        raise GenerationError("rng must be cpu or gpu")
    resolve_sampler(params.sampler, params.schedule)
    return factor


def generate(
    model: LoadedModel,
    params: GenerationParams,
    out_dir: str | Path,
    *,
    reporter: Reporter | None = None,
    cancel: CancelToken | None = None,
) -> list[GeneratedImage]:
    """Generate `batch_count` batches of `batch_size` images into `out_dir` as A1111 PNGs."""
    reporter = reporter or NullReporter()
    factor = _validate(params, model)
    pipe = model.pipeline
    _, networks = split_extra_networks(params.prompt)
    loras = resolve_loras(networks, params.lora_dirs, params.allow_pickle)
    hypernets = resolve_hypernetworks(networks, params.hypernetwork_dirs, params.allow_pickle)
    init = _load_init(params) if params.init_image else None
    mask = inpaint.load_mask(params.mask_image) if params.mask_image else None
    upscaler = None
    if params.hr_scale > 1 and init is None and params.hr_upscaler not in LATENT_UPSCALERS:
        found = resolve_upscaler(
            params.hr_upscaler, params.upscaler_dirs, list(LATENT_UPSCALERS), params.allow_pickle
        )
        upscaler = Upscaler(params.hr_upscaler, found, model.device)
    base_seed = resolve_seed(params.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sampler = resolve_sampler(params.sampler, params.schedule)
    pipe.scheduler = make_scheduler(sampler, pipe.scheduler.config)
    activate_loras(pipe, loras)
    attached = activate_hypernetworks(pipe, hypernets)
    used = (lora_infotext(loras), hypernet_infotext(hypernets))
    try:
        return _generate(
            model, params, out, base_seed, factor, (init, mask, upscaler), used, reporter, cancel
        )
    except (ValueError, RuntimeError) as error:  # diffusers and torch (out of memory, ...)
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise GenerationError(f"generation failed: {first}") from error
    finally:
        deactivate_hypernetworks(pipe, attached)
        deactivate_loras(pipe)


def _generate(model, params, out, base_seed, factor, sources, used, reporter, cancel):
    import torch

    pipe = model.pipeline
    init, mask, upscaler = sources
    prepared = None
    if mask is not None:
        prepared = inpaint.prepare(
            init,
            mask,
            params.width,
            params.height,
            blur=params.mask_blur,
            only_masked=params.inpaint_only_masked,
            padding=params.inpaint_padding,
            content=params.masked_content,
            invert=params.mask_invert,
        )
    run_steps = (
        min(int(params.steps * params.denoising_strength), params.steps)
        if init is not None
        else params.steps
    )
    conditioner = Conditioner(model, params, params.steps)
    guided = params.cfg_scale > 1
    if init is None and params.hr_scale > 1:
        run_steps += int((params.hr_steps or params.steps) * params.denoising_strength)
    reporter.start("generating", total=params.batch_count * max(run_steps, 1))
    results: list[GeneratedImage] = []
    index = _next_index(out)
    for batch in range(params.batch_count):
        if cancel is not None:
            cancel.check()
        seeds = [base_seed + batch * params.batch_size + i for i in range(params.batch_size)]
        generators = [
            torch.Generator("cpu" if params.rng == "cpu" else model.device).manual_seed(s)
            for s in seeds
        ]
        common: dict[str, Any] = {
            **conditioner.pipeline_kwargs(0),
            "num_inference_steps": params.steps,
            "guidance_scale": params.cfg_scale,
            "generator": generators,
            "output_type": "pil",
            "callback_on_step_end": step_callback(conditioner, guided, reporter, cancel),
            "callback_on_step_end_tensor_inputs": conditioner.tensor_inputs,
        }
        if init is None:
            shape = (4, params.height // factor, params.width // factor)
            common["latents"] = initial_noise(seeds, shape, model.device, params.rng).to(
                model.dtype
            )
            if params.hr_scale > 1:
                common["output_type"] = "latent"
                latents = pipe(height=params.height, width=params.width, **common).images
                images = hires_pass(
                    model,
                    params,
                    latents,
                    seeds,
                    factor,
                    upscaler,
                    reporter,
                    cancel,
                    variant(pipe, "img2img"),
                )
            else:
                images = pipe(height=params.height, width=params.width, **common).images
        elif prepared is not None:
            shape = (4, params.height // factor, params.width // factor)
            noise = initial_noise(seeds, shape, model.device, params.rng)
            images = inpaint_sampling.sample(
                pipe,
                prepared,
                params.masked_content,
                params.denoising_strength,
                noise,
                common,
            )
        else:
            source = init.resize((params.width, params.height), Image.Resampling.LANCZOS)
            images = variant(pipe, "img2img")(
                image=[source] * params.batch_size,
                strength=params.denoising_strength,
                **common,
            ).images
        for seed, image in zip(seeds, images, strict=True):
            text = format_infotext(
                Infotext(
                    params.prompt,
                    params.negative_prompt,
                    infotext_params(
                        params, model, seed, used[0], conditioner.used, hypernet_hashes=used[1]
                    ),
                )
            )
            path = out / f"{index:05d}-{seed}.png"
            _write_png(image, path, text)
            results.append(GeneratedImage(path, seed, text, image))
            index += 1
    reporter.finish()
    return results


def _load_init(params: GenerationParams) -> Image.Image:
    """The init image as RGB, EXIF orientation applied; the file itself is only read."""
    from PIL import ImageOps, UnidentifiedImageError

    from taggers.pixels import to_rgb

    try:
        with Image.open(params.init_image) as image:
            return to_rgb(ImageOps.exif_transpose(image)).copy()
    except (OSError, UnidentifiedImageError) as error:
        raise GenerationError(f"cannot read init image {params.init_image}: {error}") from error


def _next_index(out: Path) -> int:
    numbers = [int(p.name[:5]) for p in out.glob("*.png") if p.name[:5].isdigit()]
    return max(numbers, default=-1) + 1


def _write_png(image: Image.Image, path: Path, infotext: str) -> None:
    """Atomic write: a temporary file in the same folder, then rename."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", infotext)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        image.save(tmp, format="PNG", pnginfo=info)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def with_overrides(params: GenerationParams, **changes: Any) -> GenerationParams:
    return replace(params, **changes)
