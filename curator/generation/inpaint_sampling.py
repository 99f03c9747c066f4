"""Sampling an inpaint: A1111's latent blending for ordinary checkpoints, diffusers'
inpainting pipeline for 9-channel inpainting UNets.

An ordinary (4-channel) UNet runs the img2img pipeline while every model evaluation's
denoised estimate is blended with the source latents outside the mask, as A1111's
denoiser does (`denoised = init_latent * mask + nmask * denoised`); after sampling the
unmasked latents are put back once more, before decoding. The blend is applied to the
UNet's output: for a noise (or v) prediction at the timestep's noise level, replacing the
denoised estimate is replacing the prediction by the one that denoises to the blend. It
commutes with classifier-free guidance, whose weights sum to 1.

A 9-channel UNet gets the mask and the latents of the source with the masked area
blanked as extra input channels (diffusers' `StableDiffusionInpaintPipeline` semantics,
as A1111's `inpainting_image_conditioning`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image

from curator.generation.inpaint import PreparedInpaint, composite
from curator.generation.pipelines import decode, variant


def encode(pipe: Any, pixels_image: Image.Image | Any, generators):
    """VAE latents, one sample per generator (A1111 samples the latent distribution)."""
    import torch

    vae = pipe.vae
    if isinstance(pixels_image, Image.Image):
        pixels = pipe.image_processor.preprocess(pixels_image)
    else:
        pixels = pixels_image
    pixels = pixels.to(vae.device, vae.dtype)
    with torch.no_grad():
        return torch.cat(
            [
                vae.encode(pixels).latent_dist.sample(generator=g) * vae.config.scaling_factor
                for g in generators
            ]
        )


def latent_keep(mask: Image.Image, latents):
    """1 where the source is kept, at latent size (A1111 resizes, then rounds)."""
    import torch

    small = mask.resize((latents.shape[3], latents.shape[2]), Image.Resampling.BICUBIC)
    keep = 1.0 - np.around(np.array(small, np.float32) / 255)
    return torch.from_numpy(keep).to(latents)[None, None]


def initial_latents(pipe: Any, prepared: PreparedInpaint, content: str, noise, generators):
    """The source latents, with A1111's latent noise / latent nothing where masked."""
    latents = encode(pipe, prepared.image, generators)
    keep = latent_keep(prepared.mask, latents)
    if content == "latent noise":
        return latents * keep + noise.to(latents) * (1 - keep)
    if content == "latent nothing":
        return latents * keep
    return latents


def masked_image_latents(pipe: Any, prepared: PreparedInpaint, generators):
    """A 9-channel UNet's extra input: the source with the masked area blanked, encoded."""
    import torch

    pixels = pipe.image_processor.preprocess(prepared.image)
    mask = torch.from_numpy(np.array(prepared.mask, np.float32) / 255).to(pixels)
    return encode(pipe, pixels * (mask < 0.5), generators)


@contextmanager
def denoised_blend(unet: Any, scheduler: Any, init, keep):
    """While active, every UNet evaluation predicts `init` where `keep` is 1."""
    import torch

    config = scheduler.config
    kind = getattr(config, "prediction_type", "epsilon")
    alphas = scheduler.alphas_cumprod.double()
    log_sigmas = (((1 - alphas) / alphas) ** 0.5).log().numpy()
    original = unet.forward

    def forward(sample, timestep, *args, **kwargs):
        out = original(sample, timestep, *args, **kwargs)
        prediction = out[0] if isinstance(out, tuple) else out.sample
        t = float(torch.as_tensor(timestep).flatten()[0])
        # the noise level of a (possibly fractional) timestep, as the schedulers map it
        sigma = float(np.exp(np.interp(t, np.arange(len(log_sigmas)), log_sigmas)))
        a, b = 1 / (1 + sigma**2) ** 0.5, sigma / (1 + sigma**2) ** 0.5  # sqrt(ā), sqrt(1-ā)
        repeat = sample.shape[0] // init.shape[0]
        source = init.repeat(repeat, 1, 1, 1).to(prediction)
        if kind == "v_prediction":
            target = (a * sample - source) / b
        else:
            target = (sample - a * source) / b
        blended = prediction * (1 - keep) + target * keep
        return (blended,) if isinstance(out, tuple) else type(out)(sample=blended)

    unet.forward = forward
    try:
        yield
    finally:
        unet.forward = original


def sample(
    pipe: Any,
    prepared: PreparedInpaint,
    content: str,
    strength: float,
    noise,
    common: dict,
) -> list[Image.Image]:
    """Inpaint with `pipe`'s components and composite the results over the source."""
    generators = common["generator"]
    count = len(generators)
    latents = initial_latents(pipe, prepared, content, noise, generators)
    width, height = prepared.image.size
    if pipe.unet.config.in_channels == 9:
        inpaint = variant(pipe, "inpaint")
        results = inpaint(
            image=latents.to(pipe.unet.dtype),  # diffusers takes 4-channel input as latents
            mask_image=[prepared.mask] * count,
            masked_image_latents=masked_image_latents(pipe, prepared, generators).to(
                pipe.unet.dtype
            ),
            strength=strength,
            width=width,
            height=height,
            **common,
        ).images
    else:
        keep = latent_keep(prepared.mask, latents)
        with denoised_blend(pipe.unet, pipe.scheduler, latents, keep):
            sampled = variant(pipe, "img2img")(
                image=latents.to(pipe.unet.dtype),
                strength=strength,
                **{**common, "output_type": "latent"},
            ).images
        final = sampled * (1 - keep) + latents.to(sampled) * keep
        results = decode(pipe, final)
    return [composite(result, prepared) for result in results]
