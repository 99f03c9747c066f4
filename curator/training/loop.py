"""What every training method shares: options, the denoising loss, the step loop, the
loss log, checkpoints on a schedule, cancellation and the run recorded in the catalog.

The loop is written out rather than taken from diffusers' example scripts (scripts, not
a library) or accelerate (adds nothing for one device at full precision); each method
supplies the parameters it trains, how a caption becomes text-encoder input, and how
its weights are saved.
"""

from __future__ import annotations

import csv
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from curator.errors import Cancelled, CuratorError, UsageError
from curator.progress import CancelToken, Reporter, RunOutcome, phase
from curator.training.data import Dataset, Example, check_batches

LR_SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
)


class TrainingError(CuratorError):
    """Training that cannot go on."""


@dataclass
class TrainOptions:
    base: str  # diffusers folder, hub id from the cache, or one .safetensors checkpoint
    data: str  # a training set in any Curator export layout ("" with `where`)
    out: str
    name: str = ""  # output file stem; each method has its default
    steps: int = 500
    lr: float = 1e-4
    batch_size: int = 1
    seed: int = 0
    save_every: int = 0  # 0: only at the end
    prior_loss_weight: float = 1.0  # the loss weight of regularization images
    cache_latents: bool = False  # encode each image once (VAE posterior kept in memory)
    lr_scheduler: str = "constant"  # a diffusers (and sd-scripts) schedule name
    lr_warmup_steps: int = 0
    device: str | None = None  # None: CUDA, MPS or CPU, whichever is there
    config: str | None = None  # component configs for a single-file base, offline
    where: str | None = None  # a catalog query, exported into OUT/data and trained on
    layout: str | None = None  # the data's layout (None: detected); with `where`, the export's
    buckets: dict[str, Any] = field(default_factory=dict)  # ExportOptions bucket fields
    allow_upscale: bool = False  # enlarge images smaller than their bucket
    export: dict[str, Any] = field(default_factory=dict)  # more ExportOptions for `where`
    reporter: Reporter | None = field(default=None, repr=False)
    cancel: CancelToken | None = field(default=None, repr=False)

    def recorded(self) -> dict[str, Any]:
        """The options as the catalog keeps them (no progress objects)."""
        skip = ("reporter", "cancel")  # asdict would deep-copy them (a lock cannot be)
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


@dataclass
class TrainResult:
    outputs: list[Path]
    losses: list[float]
    steps: int
    loss_log: Path
    run_id: int | None = None
    data_hash: str = ""
    seconds: float = 0.0


@dataclass
class Method:
    """What a training method plugs into the loop."""

    kind: str  # "lora", "textual-inversion"
    parameters: list[Any]  # the tensors the optimizer updates
    encode: Callable[[list[str]], Any]  # captions → encoder hidden states
    save: Callable[[Path, int], None]  # write the weights at a step to a path
    after_step: Callable[[], None] = lambda: None
    weight_decay: float = 1e-2  # AdamW's default
    lr_schedule: Callable[[Any], Any] | None = None  # optimizer → its own LR scheduler


def check_options(options: TrainOptions) -> None:
    if options.steps < 1:
        raise UsageError("--steps must be at least 1")
    if options.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if options.lr <= 0:
        raise UsageError("--lr must be positive")
    if options.prior_loss_weight < 0:
        raise UsageError("--prior-loss-weight must be 0 or more")
    if options.lr_scheduler not in LR_SCHEDULERS:
        raise UsageError(
            f"unknown --lr-scheduler {options.lr_scheduler!r}; one of {', '.join(LR_SCHEDULERS)}"
        )
    if not 0 <= options.lr_warmup_steps < options.steps:
        raise UsageError("--lr-warmup-steps must be 0 or more and fewer than --steps")
    if options.save_every < 0:
        raise UsageError("--save-every must be 0 (only at the end) or more")


def prepare_data(options: TrainOptions, reg: bool = True, catalog: Any = None) -> Dataset:
    from curator.training.selection import training_data

    check_options(options)
    dataset = training_data(options, catalog, reg=reg)
    check_batches(dataset, options.batch_size)
    return dataset


def load_base(options: TrainOptions):
    """The base pipeline in float32 (gradients in half precision need loss scaling)."""
    from curator.generation.loading import load_pipeline

    return load_pipeline(options.base, device=options.device, half=False, config=options.config)


def base_model_hashes(source: str) -> tuple[str, str]:
    """(A1111's old 8-digit hash, full sha256) of the base weights: the checkpoint file,
    or a diffusers folder's UNet weights file."""
    from curator.generation.hashes import old_model_hash

    path = Path(source).expanduser()
    if path.is_dir():
        candidates = sorted((path / "unet").glob("diffusion_pytorch_model*.safetensors"))
        path = candidates[0] if candidates else path
    if not path.is_file():
        return "", ""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return old_model_hash(path), digest.hexdigest()


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


def denoising_loss(pipe: Any, noise_scheduler: Any, pixels, hidden, generator, weights=None):
    """The Stable Diffusion objective: predict the noise (or v) added at a random step;
    `weights` (one per image) weigh each image's loss, as sd-scripts' prior loss weight."""
    import torch

    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.sample(generator)
    return latent_loss(pipe, noise_scheduler, latents, hidden, generator, weights)


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
            with torch.no_grad():
                posterior = self.pipe.vae.encode(pixel_batch(missing, self.pipe.device)).latent_dist
            for i, example in enumerate(missing):
                self.stored[example.path] = (posterior.mean[i], posterior.std[i])
        mean = torch.stack([self.stored[e.path][0] for e in batch])
        std = torch.stack([self.stored[e.path][1] for e in batch])
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * noise


def latent_loss(pipe: Any, noise_scheduler: Any, latents, hidden, generator, weights=None):
    """`denoising_loss` from unscaled VAE latents."""
    import torch
    import torch.nn.functional as F

    latents = latents * pipe.vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator, device=latents.device)
    steps = noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(
        0, steps, (latents.shape[0],), generator=generator, device=noise.device
    )
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    prediction = pipe.unet(noisy, timesteps, **unet_conditioning(pipe, hidden, latents)).sample
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    if weights is None:
        return F.mse_loss(prediction.float(), target.float())
    each = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (each * weights).mean()


def unet_conditioning(pipe: Any, hidden: Any, latents: Any) -> dict[str, Any]:
    """The UNet's conditioning: the encoder's hidden states, or SDXL's dict, completed
    with its micro-conditioning `time_ids` (original size, crop corner, target size).
    The images are already cut to their bucket, so both sizes are the bucket's and the
    crop corner is 0, 0."""
    import torch

    if not isinstance(hidden, dict):
        return {"encoder_hidden_states": hidden}
    factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    height, width = latents.shape[-2] * factor, latents.shape[-1] * factor
    states = hidden["encoder_hidden_states"]
    time_ids = torch.tensor(
        [[height, width, 0, 0, height, width]], dtype=states.dtype, device=states.device
    ).repeat(latents.shape[0], 1)
    added = {**hidden["added_cond_kwargs"], "time_ids": time_ids}
    return {"encoder_hidden_states": states, "added_cond_kwargs": added}


def noise_scheduler_for(pipe: Any):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


def output_path(options: TrainOptions, name: str, step: int | None, suffix: str) -> Path:
    """kohya's names: `NAME.safetensors` at the end, `NAME-000500.safetensors` on the way."""
    stem = name if step is None else f"{name}-{step:06d}"
    return Path(options.out).expanduser().absolute() / f"{stem}{suffix}"


def run_loop(
    pipe: Any,
    dataset: Dataset,
    options: TrainOptions,
    method: Method,
    name: str,
    suffix: str = ".safetensors",
    start_step: int = 0,
) -> TrainResult:
    """Train `method.parameters` for `options.steps` steps; save on schedule and at the end.

    A cancelled run saves its weights at the step it reached, then raises `Cancelled`.
    """
    import torch
    from diffusers.optimization import get_scheduler

    out = Path(options.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(options.seed)
    torch.manual_seed(options.seed)
    device = str(pipe.device)
    generator = torch.Generator(device).manual_seed(options.seed)
    noise_scheduler = noise_scheduler_for(pipe)
    optimizer = torch.optim.AdamW(
        method.parameters, lr=options.lr, weight_decay=method.weight_decay
    )
    schedule = method.lr_schedule(optimizer) if method.lr_schedule else None
    schedule = schedule or get_scheduler(
        options.lr_scheduler,
        optimizer,
        num_warmup_steps=options.lr_warmup_steps,
        num_training_steps=options.steps,
    )
    cache = LatentCache(pipe) if options.cache_latents else None
    log_path = out / f"{name}-loss.csv"
    losses: list[float] = []
    outputs: list[Path] = []
    started = time.monotonic()
    batches: list[list[Example]] = []
    epoch = 0
    for _ in range(start_step):  # a resumed run's learning rate continues where it was
        schedule.step()
    appending = start_step > 0 and log_path.is_file()
    with open(log_path, "a" if appending else "w", newline="", encoding="utf-8") as log_file:
        log = csv.writer(log_file)
        if not appending:
            log.writerow(["step", "epoch", "loss", "lr", "bucket", "seconds"])
        with phase(options.reporter, f"train {method.kind}", options.steps - start_step) as bar:
            for step in range(start_step + 1, options.steps + 1):
                if options.cancel is not None and options.cancel.cancelled:
                    path = output_path(options, name, step - 1, suffix)
                    method.save(path, step - 1)
                    outputs.append(path)
                    error = Cancelled(
                        f"cancelled at step {step - 1}; weights so far saved to {path.name}"
                    )
                    error.outputs = outputs  # type: ignore[attr-defined]
                    raise error
                if not batches:
                    epoch += 1
                    batches = dataset.epoch_batches(options.batch_size, rng)
                batch = batches.pop()
                captions = [dataset.caption_for_step(e, rng) for e in batch]
                weights = torch.tensor(
                    [options.prior_loss_weight if e.is_reg else 1.0 for e in batch], device=device
                )
                hidden = method.encode(captions)
                if cache is not None:
                    latents = cache.sample(batch, generator)
                    loss = latent_loss(pipe, noise_scheduler, latents, hidden, generator, weights)
                else:
                    pixels = pixel_batch(batch, device)
                    loss = denoising_loss(pipe, noise_scheduler, pixels, hidden, generator, weights)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                rate = schedule.get_last_lr()[0]  # the rate this step used
                schedule.step()
                method.after_step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise TrainingError(
                        f"the loss became {value} at step {step}; lower --lr "
                        "(weights saved before this step are kept)"
                    )
                losses.append(value)
                size = batch[0].size
                log.writerow(
                    [
                        step,
                        epoch,
                        f"{value:.6g}",
                        f"{rate:.6g}",
                        f"{size[0]}x{size[1]}",
                        f"{time.monotonic() - started:.3f}",
                    ]
                )
                log_file.flush()  # readable while training runs
                if options.save_every and step % options.save_every == 0 and step < options.steps:
                    path = output_path(options, name, step, suffix)
                    method.save(path, step)
                    outputs.append(path)
                bar.advance()
    final = output_path(options, name, None, suffix)
    method.save(final, options.steps)
    outputs.append(final)
    seconds = time.monotonic() - started
    return TrainResult(outputs, losses, options.steps, log_path, seconds=seconds)


def train_recorded(
    catalog: Any,
    kind: str,
    options: TrainOptions,
    dataset: Dataset,
    extra: dict[str, Any],
    train: Callable[[], TrainResult],
) -> TrainResult:
    """Run `train`, recording it as a `train` run (parameters, data hash, outputs, status)
    when a catalog is given."""
    from db.schema import Run, utcnow

    data_hash = dataset.content_hash()
    if catalog is None:
        result = train()
        result.data_hash = data_hash
        return result
    base = Path(options.base).expanduser()
    model = str(base.resolve()) if base.exists() else options.base  # else a hub id
    params = {
        "method": kind,
        **options.recorded(),
        **extra,
        "base": model,
        "data": str(dataset.root),
        "out": str(Path(options.out).expanduser().resolve()),
        "data_hash": data_hash,
    }
    with catalog.write() as session:
        run = Run(kind="train", model=model, revision=data_hash[:12], params=params)
        session.add(run)
    outcome, result, started = RunOutcome(), None, time.monotonic()
    try:
        with outcome.track():
            result = train()
    except Cancelled as error:
        saved = getattr(error, "outputs", [])
        with catalog.write() as session:
            session.get(Run, run.id).counts = {"outputs": [str(p) for p in saved]}
        raise
    finally:
        with catalog.write() as session:
            row = session.get(Run, run.id)
            row.status = outcome.status
            row.finished_at = utcnow()
            row.duration_s = time.monotonic() - started
            if result is not None:
                row.counts = {
                    "steps": result.steps,
                    "images": sum(not e.is_reg for e in dataset.examples),
                    "reg_images": sum(e.is_reg for e in dataset.examples),
                    "final_loss": result.losses[-1] if result.losses else None,
                    "outputs": [str(p) for p in result.outputs],
                    "loss_log": str(result.loss_log),
                }
    result.data_hash = data_hash
    result.run_id = run.id
    return result
