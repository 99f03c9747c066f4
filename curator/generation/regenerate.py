"""Rebuild a generation from an image's catalogued infotext, with overrides.

Everything that cannot be honoured (an unknown sampler, a checkpoint no registered
file matches, extra networks, hires fix) is collected and reported in one line before
anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sqlalchemy import select

from curator.errors import CuratorError
from curator.generation.extra_networks import (
    ExtraNetworkError,
    resolve_loras,
    split_extra_networks,
)
from curator.generation.generate import GenerationParams
from curator.generation.hires import LATENT_UPSCALERS
from curator.generation.hypernetworks import (
    HypernetworkError,
    registered_hypernetworks,
    resolve_hypernetworks,
)
from curator.generation.registry import find_model_file
from curator.generation.samplers import SamplerError, resolve_sampler
from curator.generation.upscalers import UpscalerError, resolve_upscaler
from db import Catalog
from db.schema import File, GeneratedBy, Generation


class RegenerateError(CuratorError):
    """A generation that cannot be rebuilt as recorded."""


# --override keys (A1111 infotext names or Curator's field names) → GenerationParams fields.
OVERRIDE_KEYS = {
    "prompt": "prompt",
    "negative": "negative_prompt",
    "negative prompt": "negative_prompt",
    "negative_prompt": "negative_prompt",
    "steps": "steps",
    "sampler": "sampler",
    "schedule": "schedule",
    "schedule type": "schedule",
    "cfg": "cfg_scale",
    "cfg scale": "cfg_scale",
    "cfg_scale": "cfg_scale",
    "seed": "seed",
    "width": "width",
    "height": "height",
    "clip skip": "clip_skip",
    "clip_skip": "clip_skip",
    "denoising": "denoising_strength",
    "denoising strength": "denoising_strength",
    "strength": "denoising_strength",
    "rng": "rng",
}
CHECKPOINT_KEYS = {"checkpoint", "model", "model hash"}
UNSUPPORTED = ("Refiner",)


# infotext keys of an inpainted image (A1111 writes those that are not defaults)
INPAINT_KEYS = ("Mask blur", "Mask mode", "Masked content", "Inpaint area", "Masked area padding")
INPAINT_FIELDS = (
    "mask_blur",
    "inpaint_only_masked",
    "inpaint_padding",
    "masked_content",
    "mask_invert",
)


def _restore_inpaint(params: GenerationParams, recorded: dict, problems: list[str]) -> None:
    """The mask and its settings as Curator recorded them when it made the image; an
    image inpainted elsewhere has no mask file to use."""
    mask = recorded.get("mask_image")
    if not mask:
        problems.append("the inpainting mask is unknown (not made by Curator)")
        return
    if not Path(mask).is_file():
        problems.append(f"the inpainting mask {mask} is missing")
        return
    params.mask_image = mask
    for name in INPAINT_FIELDS:
        if name in recorded:
            setattr(params, name, recorded[name])


@dataclass
class RegenerationPlan:
    image_id: int
    params: GenerationParams
    checkpoint: str


def parse_overrides(items: list[str]) -> dict[str, str]:
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise RegenerateError(f"override {item!r} is not KEY=VALUE")
        result[key.strip().lower()] = value.strip()
    return result


def _typed(name: str, value: str) -> Any:
    kinds = {f.name: f.type for f in fields(GenerationParams)}
    kind = str(kinds[name])
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except ValueError:
        raise RegenerateError(f"override {name}={value!r} is not a number") from None
    return value


def _ti_names(value: str) -> list[str]:
    """Names in `TI hashes: "name: hash, name2: hash"`."""
    return [part.split(":")[0].strip() for part in value.split(",") if ":" in part]


def plan_regeneration(
    catalog: Catalog,
    image_id: int,
    overrides: dict[str, str] | None = None,
    lora_dirs: list[str] | None = None,
    allow_pickle: bool = False,
    embeddings_dirs: list[str] | None = None,
    upscaler_dirs: list[str] | None = None,
    hypernetwork_dirs: list[str] | None = None,
) -> RegenerationPlan:
    overrides = dict(overrides or {})
    problems: list[str] = []
    with catalog.session() as session:
        gen = session.get(Generation, image_id)
        made = session.get(GeneratedBy, image_id)
        source_path = None
        recorded = dict(made.params or {}) if made is not None else {}
        if made is not None and made.source_image_id is not None:
            source_path = session.scalar(
                select(File.path).where(
                    File.image_id == made.source_image_id, File.present.is_(True)
                )
            )
    if gen is None:
        raise RegenerateError(f"image {image_id} has no generation parameters in the catalog")
    extra = {str(k): str(v) for k, v in (gen.extra or {}).items()}
    params = GenerationParams(
        prompt=gen.prompt,
        negative_prompt=gen.negative_prompt,
        steps=gen.steps or 20,
        sampler=gen.sampler or "Euler a",
        schedule=extra.get("Schedule type"),
        cfg_scale=gen.cfg_scale if gen.cfg_scale is not None else 7.0,
        seed=gen.seed if gen.seed is not None else -1,
        width=gen.width or 512,
        height=gen.height or 512,
        clip_skip=gen.clip_skip or 1,
        rng=extra.get("RNG", "GPU").lower(),
    )
    if "Hires upscale" in extra:
        try:
            params.hr_scale = float(extra["Hires upscale"])
            params.hr_steps = int(extra.get("Hires steps", "0"))
        except ValueError:
            problems.append("hires fix values are not numbers")
        params.hr_upscaler = extra.get("Hires upscaler", "Latent")
        params.upscaler_dirs = list(upscaler_dirs or [])
        if params.hr_upscaler not in LATENT_UPSCALERS:
            try:
                resolve_upscaler(params.hr_upscaler, params.upscaler_dirs, [], allow_pickle)
            except UpscalerError:
                problems.append(f"hires upscaler {params.hr_upscaler!r} not found")
        if gen.denoising_strength is not None:
            params.denoising_strength = gen.denoising_strength
    elif gen.denoising_strength is not None:
        if source_path:
            params.init_image = source_path
            params.denoising_strength = gen.denoising_strength
        else:
            problems.append("img2img source image is unknown")
    inpainted = recorded.get("mask_image") or any(key in extra for key in INPAINT_KEYS)
    if inpainted and params.init_image:
        _restore_inpaint(params, recorded, problems)
    for key in UNSUPPORTED:
        if key in extra:
            problems.append(f"{key} is not supported")
    params.lora_dirs, params.allow_pickle = list(lora_dirs or []), allow_pickle
    params.embeddings_dirs = list(embeddings_dirs or [])
    for name in _ti_names(extra.get("TI hashes", "")):
        if not any(
            p.stem == name for d in params.embeddings_dirs for p in Path(d).expanduser().rglob("*")
        ):
            problems.append(f"embedding {name!r} not found in --embeddings-dir")
    if "Hypernet" in extra:  # older A1111 named one hypernetwork outside the prompt
        params.prompt += f"<hypernet:{extra['Hypernet']}:{extra.get('Hypernet strength', '1.0')}>"
    params.hypernetwork_dirs = [*(hypernetwork_dirs or []), *registered_hypernetworks(catalog)]
    _, networks = split_extra_networks(params.prompt)
    try:
        resolve_loras(networks, params.lora_dirs, allow_pickle)
    except ExtraNetworkError as error:
        problems.append(str(error))
    try:
        resolve_hypernetworks(networks, params.hypernetwork_dirs, load=False)
    except HypernetworkError as error:
        problems.append(str(error))

    checkpoint_key = None
    for key in list(overrides):
        if key in CHECKPOINT_KEYS:
            checkpoint_key = overrides.pop(key)
        elif key == "size":
            w, _, h = overrides.pop(key).partition("x")
            params.width, params.height = _typed("width", w), _typed("height", h)
        elif key in OVERRIDE_KEYS:
            name = OVERRIDE_KEYS[key]
            setattr(params, name, _typed(name, overrides.pop(key)))
        else:
            problems.append(f"unknown override {key!r}")
    if params.rng not in ("cpu", "gpu"):
        problems.append(f"RNG {params.rng!r} is not supported")
    try:
        resolve_sampler(params.sampler, params.schedule)
    except SamplerError as error:
        problems.append(str(error).split(";")[0])

    checkpoint = None
    if checkpoint_key and Path(checkpoint_key).expanduser().exists():
        checkpoint = checkpoint_key
    else:
        for key in [checkpoint_key] if checkpoint_key else [gen.model_hash, gen.model]:
            record = find_model_file(catalog, key) if key else None
            if record is not None:
                checkpoint = record.path
                break
        if checkpoint is None:
            wanted = checkpoint_key or gen.model_hash or gen.model or "(none recorded)"
            problems.append(f"no registered checkpoint matches {wanted}")
    if problems:
        raise RegenerateError(f"image {image_id}: " + "; ".join(problems))
    return RegenerationPlan(image_id, params, checkpoint)
