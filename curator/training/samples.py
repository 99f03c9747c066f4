"""Sample images during training, made by the generation backend from the weights being
trained: A1111 PNGs with infotext (`Model: NAME-000500` says the step), catalogued with
their provenance when a catalog is given."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class SampleSettings:
    prompts: list[str]
    steps: int = 20
    width: int = 512
    height: int = 512
    sampler: str = "Euler a"
    cfg_scale: float = 7.0
    negative_prompt: str = ""
    seed: int = 0


def sample_images(
    pipe: Any,
    settings: SampleSettings,
    out: Path,
    name: str,
    step: int,
    base: str,
    catalog: Any = None,
) -> list[Path]:
    """One image per prompt into `out` (seed + prompt index, the same at every step, so
    samples compare across steps). The pipeline's scheduler and train/eval modes are
    restored afterwards."""
    import torch

    from curator.generation.generate import GenerationParams, generate
    from curator.generation.loading import LoadedModel

    model = LoadedModel(
        pipe,
        name=f"{name}-{step:06d}",
        hash=None,
        device=str(pipe.device),
        dtype=next(pipe.unet.parameters()).dtype,
        source=base,
    )
    scheduler = pipe.scheduler
    modes = {part: part.training for part in (pipe.unet, pipe.text_encoder, pipe.vae)}
    paths: list[Path] = []
    try:
        for part in modes:
            part.eval()
        for index, prompt in enumerate(settings.prompts):
            params = GenerationParams(
                prompt=prompt,
                negative_prompt=settings.negative_prompt,
                steps=settings.steps,
                sampler=settings.sampler,
                cfg_scale=settings.cfg_scale,
                seed=settings.seed + index,
                width=settings.width,
                height=settings.height,
            )
            with torch.no_grad():
                images = generate(model, params, out)
            if catalog is not None:
                from curator.generation.catalogue import catalogue_generated

                catalogue_generated(catalog, images, model, params, workers=0)  # our own PNGs
            paths += [image.path for image in images]
    finally:
        pipe.scheduler = scheduler
        for part, training in modes.items():
            part.train(training)
    return paths
