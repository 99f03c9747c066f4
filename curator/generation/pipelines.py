"""The diffusers pipeline of a task (img2img, inpaint) for a loaded model's family,
sharing the loaded model's components (no copy of any weights)."""

from __future__ import annotations

from typing import Any

from curator.generation.sdxl import is_sdxl


def variant(pipe: Any, task: str) -> Any:
    """`task` is "img2img" or "inpaint"."""
    import diffusers

    family = "StableDiffusionXL" if is_sdxl(pipe) else "StableDiffusion"
    name = {"img2img": "Img2ImgPipeline", "inpaint": "InpaintPipeline"}[task]
    made = getattr(diffusers, family + name)(**pipe.components)
    made.set_progress_bar_config(disable=True)
    return made
