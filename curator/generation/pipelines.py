"""The diffusers pipeline of a task (img2img, inpaint) for a loaded model's family,
sharing the loaded model's components (no copy of any weights)."""

from __future__ import annotations

from typing import Any

from curator.generation.sdxl import is_sdxl


def variant(pipe: Any, task: str) -> Any:
    """`task` is "img2img" or "inpaint"."""
    import diffusers

    xl = is_sdxl(pipe)
    family = "StableDiffusionXL" if xl else "StableDiffusion"
    name = {"img2img": "Img2ImgPipeline", "inpaint": "InpaintPipeline"}[task]
    # the loaded model already went without a safety checker; no second warning
    extra = {} if xl else {"requires_safety_checker": False}
    made = getattr(diffusers, family + name)(**pipe.components, **extra)
    made.set_progress_bar_config(disable=True)
    return made


def decode(pipe: Any, latents) -> list:
    """Latents to 8-bit PIL images, as the pipelines' own output step makes them."""
    import torch

    vae = pipe.vae
    with torch.no_grad():
        pixels = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
    return pipe.image_processor.postprocess(pixels, output_type="pil")
