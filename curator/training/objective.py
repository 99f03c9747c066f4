"""The Stable Diffusion training objective: images to latents, noise at a random step,
the UNet's prediction against the noise (or v), weighed per image (prior preservation)
and per step (min-SNR), with the optional noise offset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curator.training.data import Example


def pixel_batch(examples: list[Example], device: str):
    """Images as a [-1, 1] float tensor, NCHW (all of one bucket, so one size)."""
    import numpy as np
    import torch

    arrays = [np.asarray(example.load_rgb(), dtype=np.float32) for example in examples]
    stacked = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return (stacked / 127.5 - 1.0).to(device)


def token_ids(tokenizer: Any, captions: list[str], device: str):
    return tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)


def noise_scheduler_for(pipe: Any):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


def denoising_loss(
    pipe: Any,
    noise_scheduler: Any,
    pixels,
    hidden,
    generator,
    weights=None,
    *,
    noise_offset: float = 0.0,
    min_snr_gamma: float = 0.0,
):
    """The Stable Diffusion objective: predict the noise (or v) added at a random step;
    `weights` (one per image) weigh each image's loss, as sd-scripts' prior loss weight."""
    import torch

    vae_dtype = next(pipe.vae.parameters()).dtype
    with torch.no_grad():
        latents = pipe.vae.encode(pixels.to(vae_dtype)).latent_dist.sample(generator)
    return latent_loss(
        pipe,
        noise_scheduler,
        latents.float(),
        hidden,
        generator,
        weights,
        noise_offset=noise_offset,
        min_snr_gamma=min_snr_gamma,
    )


class LatentCache:
    """Each image's VAE posterior (mean and std), encoded once. A fresh latent is still
    drawn from it every step, so caching changes the speed, not what is learned."""

    def __init__(self, pipe: Any):
        self.pipe = pipe
        self.stored: dict[Path, tuple[Any, Any]] = {}

    def sample(self, batch: list[Example], generator):
        import torch

        missing = list({e.path: e for e in batch if e.path not in self.stored}.values())
        if missing:
            vae_dtype = next(self.pipe.vae.parameters()).dtype
            pixels = pixel_batch(missing, self.pipe.device).to(vae_dtype)
            with torch.no_grad():
                posterior = self.pipe.vae.encode(pixels).latent_dist
            for i, example in enumerate(missing):
                self.stored[example.path] = (posterior.mean[i].float(), posterior.std[i].float())
        mean = torch.stack([self.stored[e.path][0] for e in batch])
        std = torch.stack([self.stored[e.path][1] for e in batch])
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * noise


def snr_weights(noise_scheduler: Any, timesteps, gamma: float):
    """Min-SNR-γ loss weights (Hang et al. 2023, as diffusers' and sd-scripts' trainers
    apply them): min(SNR, γ) / SNR for noise prediction, min(SNR, γ) / (SNR + 1) for v."""
    import torch

    alphas = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alphas / (1.0 - alphas)
    clipped = torch.clamp(snr, max=gamma)
    if noise_scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    return clipped / snr


def latent_loss(
    pipe: Any,
    noise_scheduler: Any,
    latents,
    hidden,
    generator,
    weights=None,
    *,
    noise_offset: float = 0.0,
    min_snr_gamma: float = 0.0,
):
    """`denoising_loss` from unscaled VAE latents.

    `noise_offset` adds a per-image, per-channel constant to the noise (crosstalk's
    offset noise, sd-scripts' `--noise_offset`), so the model learns to change an image's
    mean brightness; `min_snr_gamma` > 0 weighs each step by min-SNR-γ.
    """
    import torch
    import torch.nn.functional as F

    latents = latents * pipe.vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator, device=latents.device)
    if noise_offset:
        shape = (latents.shape[0], latents.shape[1], 1, 1)
        noise = noise + noise_offset * torch.randn(shape, generator=generator, device=noise.device)
    steps = noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(
        0, steps, (latents.shape[0],), generator=generator, device=noise.device
    )
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    unet_dtype = next(pipe.unet.parameters()).dtype
    conditioning = unet_conditioning(pipe, hidden, latents, unet_dtype)
    prediction = pipe.unet(noisy.to(unet_dtype), timesteps, **conditioning).sample
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    if weights is None and not min_snr_gamma:
        return F.mse_loss(prediction.float(), target.float())
    each = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if min_snr_gamma:
        each = each * snr_weights(noise_scheduler, timesteps, min_snr_gamma)
    if weights is not None:
        each = each * weights
    return each.mean()


def unet_conditioning(pipe: Any, hidden: Any, latents: Any, dtype: Any) -> dict[str, Any]:
    """The UNet's conditioning: the encoder's hidden states, or SDXL's dict, completed
    with its micro-conditioning `time_ids` (original size, crop corner, target size).
    The images are already cut to their bucket, so both sizes are the bucket's and the
    crop corner is 0, 0."""
    import torch

    if not isinstance(hidden, dict):
        return {"encoder_hidden_states": hidden.to(dtype)}
    factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    height, width = latents.shape[-2] * factor, latents.shape[-1] * factor
    states = hidden["encoder_hidden_states"].to(dtype)
    time_ids = torch.tensor(
        [[height, width, 0, 0, height, width]], dtype=dtype, device=states.device
    ).repeat(latents.shape[0], 1)
    added = {k: v.to(dtype) for k, v in hidden["added_cond_kwargs"].items()}
    return {"encoder_hidden_states": states, "added_cond_kwargs": {**added, "time_ids": time_ids}}
