"""What every training method shares: options, the step loop, the loss log, checkpoints
and sample images on a schedule, resumable state, cancellation and the run recorded in
the catalog.

The loop is written out rather than taken from diffusers' example scripts (scripts, not
a library); accelerate supplies mixed precision (autocast and fp16 loss scaling),
gradient accumulation and training in several processes (`accelerate launch`, see
`curator.training.distributed`). Each method supplies the parameters it trains, how a caption
becomes text-encoder input, and how its weights are saved.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from curator.errors import Cancelled, CuratorError, UsageError
from curator.progress import CancelToken, Reporter, RunOutcome, phase
from curator.training import distributed
from curator.training.data import Dataset, Example, check_batches
from curator.training.objective import (  # noqa: F401  (the loop's public names)
    LatentCache,
    denoising_loss,
    latent_loss,
    noise_scheduler_for,
    pixel_batch,
    token_ids,
)

LR_SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
)
MIXED_PRECISION = ("no", "fp16", "bf16")
OPTIMIZERS = ("adamw", "adamw8bit")


class TrainingError(CuratorError):
    """Training that cannot go on."""


@dataclass
class TrainOptions:
    base: str  # diffusers folder, hub id from the cache, or one .safetensors checkpoint
    data: str  # a training set in any Curator export layout ("" with `where`)
    out: str
    name: str = ""  # output file stem; each method has its default
    steps: int = 500
    epochs: int = 0  # > 0: the step count comes from the data (kohya's --max_train_epochs)
    lr: float = 1e-4
    batch_size: int = 1
    seed: int = 0
    save_every: int = 0  # 0: only at the end
    prior_loss_weight: float = 1.0  # the loss weight of regularization images
    cache_latents: bool = False  # encode each image once (VAE posterior kept in memory)
    lr_scheduler: str = "constant"  # a diffusers (and sd-scripts) schedule name
    lr_warmup_steps: int = 0
    mixed_precision: str = "no"  # "fp16" (GPU) or "bf16": autocast, float32 master weights
    gradient_accumulation_steps: int = 1  # batches per optimizer step
    gradient_checkpointing: bool = False  # recompute activations: less memory, slower
    optimizer: str = "adamw"  # or "adamw8bit" (bitsandbytes)
    min_snr_gamma: float = 0.0  # 0: off; 5 is the paper's and sd-scripts' usual value
    noise_offset: float = 0.0  # 0: off; sd-scripts' users take 0.05-0.1
    sample_every: int = 0  # 0: no samples
    sample_prompts: list[str] = field(default_factory=list)
    sample_steps: int = 20
    sample_size: tuple[int, int] = (512, 512)  # width, height
    sample_sampler: str = "Euler a"
    save_state: bool = False  # also write resumable state folders with each save
    resume: str | None = None  # a state folder this trainer saved
    device: str | None = None  # None: CUDA, MPS or CPU, whichever is there
    config: str | None = None  # component configs for a single-file base, offline
    where: str | None = None  # a catalog query, exported into OUT/data and trained on
    layout: str | None = None  # the data's layout (None: detected); with `where`, the export's
    buckets: dict[str, Any] = field(default_factory=dict)  # ExportOptions bucket fields
    allow_upscale: bool = False  # enlarge images smaller than their bucket
    export: dict[str, Any] = field(default_factory=dict)  # more ExportOptions for `where`
    reporter: Reporter | None = field(default=None, repr=False)
    cancel: CancelToken | None = field(default=None, repr=False)
    catalog: Any = field(default=None, repr=False)  # where samples are catalogued

    def recorded(self) -> dict[str, Any]:
        """The options as the catalog keeps them (no progress objects)."""
        skip = ("reporter", "cancel", "catalog")  # asdict would deep-copy them (a lock cannot be)
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
    states: list[Path] = field(default_factory=list)  # resumable state folders
    samples: list[Path] = field(default_factory=list)  # sample images
    generated: list[Path] = field(default_factory=list)  # images made to train on (class)


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
    if options.epochs < 0:
        raise UsageError("--epochs must be 1 or more (0: train --steps)")
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
    if not options.epochs:  # else checked once the data gives the step count
        check_warmup(options)
    if options.save_every < 0:
        raise UsageError("--save-every must be 0 (only at the end) or more")
    if options.mixed_precision not in MIXED_PRECISION:
        raise UsageError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}")
    if options.gradient_accumulation_steps < 1:
        raise UsageError("--gradient-accumulation-steps must be at least 1")
    if options.optimizer not in OPTIMIZERS:
        raise UsageError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
    if options.optimizer == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
        raise UsageError("--optimizer adamw8bit needs bitsandbytes: pip install bitsandbytes")
    if options.min_snr_gamma < 0 or options.noise_offset < 0:
        raise UsageError("--min-snr-gamma and --noise-offset must be 0 (off) or more")
    if options.sample_every < 0:
        raise UsageError("--sample-every must be 0 (no samples) or more")
    if options.sample_every and not options.sample_prompts:
        raise UsageError("--sample-every needs at least one --sample-prompt")
    if options.resume and not Path(options.resume).expanduser().exists():
        raise UsageError(f"no such state to resume from: {options.resume}")
    # every method checks first: launched as one of several processes, each takes its own
    # GPU (or the CPU) before anything is loaded
    options.device = distributed.process_device(options.device)


def check_warmup(options: TrainOptions) -> None:
    if not 0 <= options.lr_warmup_steps < options.steps:
        raise UsageError("--lr-warmup-steps must be 0 or more and fewer than the steps")


def steps_for_epochs(dataset: Dataset, options: TrainOptions) -> int:
    """kohya's `--max_train_epochs` count: epochs × ceil(batches per epoch / (gradient
    accumulation steps × processes)), each process taking its own batch per micro-step.
    The batches are those of the first epoch the loop draws (same seed): each image
    `repeats` times, regularization images matched to them, every bucket's last batch
    possibly smaller."""
    batches = dataset.epoch_batches(options.batch_size, random.Random(options.seed))
    return options.epochs * math.ceil(len(batches) / batches_per_step(options))


def batches_per_step(options: TrainOptions) -> int:
    """Batches one optimizer step consumes: each process's, times gradient accumulation."""
    return options.gradient_accumulation_steps * distributed.num_processes()


def resolve_epochs(dataset: Dataset, options: TrainOptions) -> None:
    """With `epochs`, set `steps` from the data before anything trains (and is recorded)."""
    if options.epochs:
        options.steps = steps_for_epochs(dataset, options)
        check_warmup(options)


def prepare_data(options: TrainOptions, reg: bool = True, catalog: Any = None) -> Dataset:
    from curator.training.selection import training_data

    check_options(options)
    with distributed.main_first():  # one process exports `--where`; the others read it
        dataset = training_data(options, catalog, reg=reg)
    check_batches(dataset, options.batch_size)
    resolve_epochs(dataset, options)
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


def output_path(options: TrainOptions, name: str, step: int | None, suffix: str) -> Path:
    """kohya's names: `NAME.safetensors` at the end, `NAME-000500.safetensors` on the way."""
    stem = name if step is None else f"{name}-{step:06d}"
    return Path(options.out).expanduser().absolute() / f"{stem}{suffix}"


def make_optimizer(options: TrainOptions, method: Method):
    """AdamW, or bitsandbytes' 8-bit AdamW (moments in 8 bits: a quarter of the memory)."""
    import torch

    if options.optimizer == "adamw8bit":
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit(
            method.parameters, lr=options.lr, weight_decay=method.weight_decay
        )
    return torch.optim.AdamW(method.parameters, lr=options.lr, weight_decay=method.weight_decay)


def make_accelerator(options: TrainOptions, device: str):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if options.mixed_precision == "fp16" and not device.startswith("cuda"):
        raise UsageError("--mixed-precision fp16 needs a CUDA GPU; use bf16 here")
    # accelerate keeps one process-wide state and refuses a second precision in the same
    # process; a long-lived process (the review app, a notebook) trains more than once
    AcceleratorState._reset_state()
    return Accelerator(
        mixed_precision=options.mixed_precision,
        gradient_accumulation_steps=options.gradient_accumulation_steps,
        cpu=device == "cpu",
    )


def enable_gradient_checkpointing(pipe: Any) -> None:
    pipe.unet.enable_gradient_checkpointing()
    encoder = pipe.text_encoder
    if any(p.requires_grad for p in encoder.parameters()):
        # transformers 5 renamed it; 4.x (sd-scripts' pin) has only the old name
        enable = getattr(encoder, "activation_checkpointing_enable", None)
        (enable or encoder.gradient_checkpointing_enable)()
        encoder.train()  # transformers checkpoints only in training mode


def tensorboard_writer(out: Path, name: str):
    """A TensorBoard event writer under OUT/logs/NAME when tensorboard is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "logs" / name))


class LossMeter:
    """The mean loss of the last ten steps, for the progress bar's description."""

    def __init__(self) -> None:
        self.recent: list[float] = []

    def text(self, kind: str, loss: float) -> str:
        self.recent = [*self.recent[-9:], loss]
        return f"train {kind} · loss {sum(self.recent) / len(self.recent):.4f}"


def _tensors(parameters: list[Any]) -> list[Any]:
    """The tensors of a parameter list or of optimizer parameter groups."""
    found = []
    for item in parameters:
        found += list(item["params"]) if isinstance(item, dict) else [item]
    return found


def _trim_log(path: Path, last_step: int) -> None:
    """Keep the loss log's rows up to the step a resumed run continues from."""
    rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    kept = [rows[0]] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= last_step]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(kept)


def run_loop(
    pipe: Any,
    dataset: Dataset,
    options: TrainOptions,
    method: Method,
    name: str,
    suffix: str = ".safetensors",
    start_step: int = 0,
) -> TrainResult:
    """Train `method.parameters` for `options.steps` optimizer steps (each of
    `gradient_accumulation_steps` batches); save, sample and keep state on schedule.

    A cancelled run saves its weights at the step it reached, then raises `Cancelled`.
    """
    import torch
    from accelerate.utils import gather_object
    from diffusers.optimization import get_scheduler

    from curator.training import training_state
    from curator.training.samples import SampleSettings, sample_images

    out = Path(options.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    device = str(pipe.device)
    accelerator = make_accelerator(options, device)
    rank, world = accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process
    # one process: one generator for order and captions, as before; several: the batch
    # order comes from the shared seed (the same everywhere), captions and noise differ
    rng = random.Random(options.seed + rank)
    torch.manual_seed(options.seed)
    generator = torch.Generator(device).manual_seed(options.seed + rank)
    noise_scheduler = noise_scheduler_for(pipe)
    optimizer = make_optimizer(options, method)
    schedule = method.lr_schedule(optimizer) if method.lr_schedule else None
    schedule = schedule or get_scheduler(
        options.lr_scheduler,
        optimizer,
        num_warmup_steps=options.lr_warmup_steps,
        num_training_steps=options.steps,
    )
    batches: list[list[Example]] = []
    epoch = 0
    if training_state.is_state(options.resume):
        loaded = training_state.load_state(options.resume, method.kind, options.steps)
        training_state.restore(
            loaded,
            parameters=method.parameters,
            optimizer=optimizer,
            schedule=schedule,
            rng=rng,
            generator=generator,
            scaler=accelerator.scaler,
        )
        start_step, epoch = loaded.step, loaded.epoch
        if all(i < len(dataset.examples) for b in loaded.batches for i in b):
            batches = [[dataset.examples[i] for i in b] for b in loaded.batches]
        if rank:  # the saved generators are the main process's
            rng.seed(options.seed + rank + 7919 * start_step)
            generator.manual_seed(options.seed + rank + 7919 * start_step)
    else:
        with warnings.catch_warnings():  # stepping the schedule alone is the point here
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
            for _ in range(start_step):  # a resumed run's learning rate continues where it was
                schedule.step()
    optimizer = accelerator.prepare(optimizer)
    if options.gradient_checkpointing:  # before any DDP wrapping, as DDP asks
        enable_gradient_checkpointing(pipe)
    wrapped: dict[str, Any] = {}
    orphans: list[Any] = []
    if world > 1:
        # DistributedDataParallel averages the gradients of the modules that train;
        # tensors outside them (a hypernetwork's layers) are averaged by hand
        modules = distributed.trained_modules(pipe)
        prepared = accelerator.prepare(*modules.values()) if modules else ()
        prepared = prepared if isinstance(prepared, tuple) else (prepared,)
        wrapped = dict(zip(modules, prepared, strict=True))
        distributed.guard(modules, wrapped)
        owned = {id(p) for m in modules.values() for p in m.parameters()}
        orphans = [p for p in _tensors(method.parameters) if id(p) not in owned]
    cache = LatentCache(pipe) if options.cache_latents else None
    index = {example: i for i, example in enumerate(dataset.examples)}
    log_path = out / f"{name}-loss.csv"
    losses: list[float] = []
    outputs: list[Path] = []
    states: list[Path] = []
    samples: list[Path] = []
    started = time.monotonic()
    appending = start_step > 0 and log_path.is_file()
    if appending and main:
        _trim_log(log_path, start_step)
    settings = SampleSettings(
        prompts=list(options.sample_prompts),
        steps=options.sample_steps,
        width=options.sample_size[0],
        height=options.sample_size[1],
        sampler=options.sample_sampler,
        seed=options.seed,
    )
    writer = tensorboard_writer(out, name) if main else None

    def save(step: int, final: bool) -> Path:
        """Only the main process writes; the others wait until it has."""
        path = output_path(options, name, None if final else step, suffix)
        outputs.append(path)
        if options.save_state:
            states.append(out / f"{path.stem}-state")
        if main:
            write(path, step)
        accelerator.wait_for_everyone()
        return path

    def write(path: Path, step: int) -> None:
        method.save(path, step)
        if options.save_state:
            folder = out / f"{path.stem}-state"
            training_state.save_state(
                folder,
                kind=method.kind,
                step=step,
                epoch=epoch,
                parameters=method.parameters,
                optimizer=optimizer,
                schedule=schedule,
                rng=rng,
                generator=generator,
                batches=[[index[e] for e in b] for b in batches],
                scaler=accelerator.scaler,
                recorded=options.recorded(),
            )

    def forward(batch: list[Example]):
        captions = [dataset.caption_for_step(e, rng) for e in batch]
        weights = torch.tensor(
            [options.prior_loss_weight if e.is_reg else 1.0 for e in batch], device=device
        )
        shaping = {"noise_offset": options.noise_offset, "min_snr_gamma": options.min_snr_gamma}
        with accelerator.autocast():
            hidden = method.encode(captions)
            if cache is not None:
                latents = cache.sample(batch, generator)
                return latent_loss(
                    pipe, noise_scheduler, latents, hidden, generator, weights, **shaping
                )
            pixels = pixel_batch(batch, device)
            return denoising_loss(
                pipe, noise_scheduler, pixels, hidden, generator, weights, **shaping
            )

    def refill() -> list[list[Example]]:
        nonlocal epoch
        epoch += 1
        # several processes: the order from the shared seed and the epoch, the same in
        # every process whatever each drew for its captions
        order = rng if world == 1 else random.Random(f"{options.seed}:{epoch}")
        return dataset.epoch_batches(options.batch_size, order)

    def cancelled() -> bool:
        flag = options.cancel is not None and options.cancel.cancelled
        if world == 1:
            return flag
        # all stop together: a process left waiting on the others would hang
        return bool(accelerator.reduce(torch.tensor([float(flag)], device=device)).item())

    mode = "a" if appending else "w"
    reporter = options.reporter if main else None  # one progress bar
    with open(log_path if main else os.devnull, mode, newline="", encoding="utf-8") as log_file:
        log = csv.writer(log_file)
        if not appending:
            log.writerow(["step", "epoch", "loss", "lr", "bucket", "seconds", "images"])
        with phase(reporter, f"train {method.kind}", options.steps - start_step) as bar:
            # a reporter that can show the loss; its rate (it/s) and ETA count steps
            describe = getattr(bar, "describe", None)
            meter = LossMeter()
            for step in range(start_step + 1, options.steps + 1):
                if cancelled():
                    path = save(step - 1, final=False)
                    error = Cancelled(
                        f"cancelled at step {step - 1}; weights so far saved to {path.name}"
                    )
                    error.outputs = outputs  # type: ignore[attr-defined]
                    raise error
                parts, names = [], []
                for _ in range(options.gradient_accumulation_steps):
                    batch = distributed.share(batches, refill, rank, world)
                    names += [e.path.name for e in batch]
                    with accelerator.accumulate(*(wrapped.values() or [pipe.unet])):
                        with distributed.swapped(pipe, wrapped):
                            loss = forward(batch)
                        accelerator.backward(loss)  # divided by the accumulation steps
                        if orphans and accelerator.sync_gradients:
                            distributed.average_gradients(accelerator, orphans)
                        optimizer.step()  # only on the last batch of the step
                        optimizer.zero_grad(set_to_none=True)
                    parts.append(float(loss.detach()))
                rate = schedule.get_last_lr()[0]  # the rate this step used
                if not optimizer.step_was_skipped:  # fp16 loss scaling skips overflowed steps
                    schedule.step()
                method.after_step()
                value = sum(parts) / len(parts)
                images = " ".join(names)
                if world > 1:  # the mean over processes; each process's images, `|` apart
                    value = float(accelerator.reduce(torch.tensor([value], device=device)) / world)
                    images = " | ".join(gather_object([images]))
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
                        images,
                    ]
                )
                log_file.flush()  # readable while training runs
                if writer is not None:
                    writer.add_scalar("loss", value, step)
                    writer.add_scalar("lr", rate, step)
                if options.sample_every and step % options.sample_every == 0:
                    if main:
                        samples += sample_images(
                            pipe,
                            settings,
                            out / "samples",
                            name,
                            step,
                            options.base,
                            options.catalog,
                        )
                    accelerator.wait_for_everyone()
                if options.save_every and step % options.save_every == 0 and step < options.steps:
                    save(step, final=False)
                bar.advance()
                if describe is not None:
                    describe(meter.text(method.kind, value), unit="it")
    if writer is not None:
        writer.close()
    save(options.steps, final=True)
    seconds = time.monotonic() - started
    return TrainResult(
        outputs, losses, options.steps, log_path, seconds=seconds, states=states, samples=samples
    )


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
    if not distributed.is_main():
        catalog = None  # one run record, one set of catalogued samples: the main process's
    if options.catalog is None:
        options.catalog = catalog  # samples are catalogued where the run is
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
        "processes": distributed.num_processes(),
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
                    "states": [str(p) for p in result.states],
                    "samples": [str(p) for p in result.samples],
                }
    result.data_hash = data_hash
    result.run_id = run.id
    return result
