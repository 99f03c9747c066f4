"""A1111's hires fix: upscale the first pass, then an img2img pass at the new size.

A latent upscaler interpolates the latents; any other upscaler (`None`, `Lanczos`,
`Nearest` or a model file) works on pixels: the first pass is decoded to 8-bit images,
upscaled, and encoded again by the img2img pass, as A1111's `sample_hr_pass` does.
"""

from __future__ import annotations

from typing import Any

from curator.generation.conditioner import Conditioner, step_callback
from curator.generation.pipelines import decode
from curator.generation.sdxl import time_ids

# A1111's latent upscale modes: name → (torch interpolate mode, antialias)
LATENT_UPSCALERS = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}


def hires_size(params: Any) -> tuple[int, int]:
    return int(params.width * params.hr_scale), int(params.height * params.hr_scale)


def hires_pass(model, params, latents, seeds, factor, upscaler, reporter, cancel, img2img):
    """The second pass over first-pass `latents`; `upscaler` is None for latent upscaling.

    `img2img` builds the img2img pipeline of the model's family from its components.
    """
    import torch

    width, height = hires_size(params)
    if upscaler is None:
        mode, antialias = LATENT_UPSCALERS[params.hr_upscaler]
        image: Any = torch.nn.functional.interpolate(
            latents.float(),
            size=(height // factor, width // factor),
            mode=mode,
            antialias=antialias,
        ).to(latents.dtype)
    else:
        image = [upscaler.upscale(i, width, height) for i in decode(model.pipeline, latents)]
    steps = params.hr_steps or params.steps
    conditioner = Conditioner(model, params, steps)
    generators = [
        torch.Generator("cpu" if params.rng == "cpu" else model.device).manual_seed(s)
        for s in seeds
    ]
    return img2img(
        image=image,
        strength=params.denoising_strength,
        num_inference_steps=steps,
        guidance_scale=params.cfg_scale,
        generator=generators,
        output_type="pil",
        callback_on_step_end=step_callback(conditioner, params.cfg_scale > 1, reporter, cancel),
        callback_on_step_end_tensor_inputs=conditioner.tensor_inputs,
        **conditioner.pipeline_kwargs(0, size=time_ids(width, height)),
    ).images
