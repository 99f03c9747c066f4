"""Training speed and memory: it/s and peak memory per method, and the loop's overhead.

    python benchmarks/train.py                    # tiny pipeline, CPU
    python benchmarks/train.py --device cuda      # also the SD1.5-sized UNet at 512x512
    python benchmarks/train.py --sd15             # the SD1.5-sized UNet on the CPU (slow)

Models have random weights (no downloads); the SD1.5-sized pipeline is the one
`benchmarks/generate.py` builds (SD 1.5's UNet, small text encoder and VAE). Batch 1,
LoRA rank 16; DreamBooth fine-tunes the whole UNet. `--mixed-precision` (default: fp16
on CUDA, no elsewhere) sets autocast; trained weights stay float32. DreamBooth also runs
with `--gradient-checkpointing`, and with 8-bit AdamW when bitsandbytes is installed.

The overhead ratio compares `train_lora`'s seconds per step (image decode, caption
tokenizing, bucketed batching, loss log, progress) with a bare loop of the same
forward, backward and AdamW step on tensors prepared beforehand.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_data(root: Path, size: int, count: int = 4) -> Path:
    import numpy as np
    from PIL import Image

    folder = root / "img" / "1_sks cat"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
            folder / f"{i}.png"
        )
        (folder / f"{i}.txt").write_text("sks cat, photo, outdoors")
    return root


def peak_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.max_memory_allocated() / 2**20:,.0f} MiB GPU"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB RSS (process)"


def bare_lora_seconds(model_dir: Path, data: Path, device: str, steps: int) -> float:
    """The same step with nothing around it: fixed tensors, no files, no logging."""
    import torch
    from peft import LoraConfig

    from curator.generation.loading import load_pipeline
    from curator.training.data import load_dataset
    from curator.training.loop import denoising_loss, noise_scheduler_for, pixel_batch, token_ids

    pipe = load_pipeline(str(model_dir), device=device, half=False).pipeline
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        part.requires_grad_(False)
    pipe.unet.add_adapter(
        LoraConfig(r=16, lora_alpha=16, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    )
    params = [p for p in pipe.unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    pixels = pixel_batch(load_dataset(data).examples[:1], device)
    ids = token_ids(pipe.tokenizer, ["sks cat, photo, outdoors"], device)
    scheduler = noise_scheduler_for(pipe)
    generator = torch.Generator(device).manual_seed(0)

    def step():
        with torch.no_grad():
            hidden = pipe.text_encoder(ids)[0]
        loss = denoising_loss(pipe, scheduler, pixels, hidden, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(name: str, model_dir: Path, size: int, device: str, steps: int, precision: str) -> None:
    import importlib.util

    from curator.training.dreambooth import DreamBoothOptions, train_dreambooth
    from curator.training.hypernetwork import HypernetworkOptions, train_hypernetwork
    from curator.training.lora import LoraOptions, train_lora
    from curator.training.textual_inversion import (
        TextualInversionOptions,
        train_textual_inversion,
    )

    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp) / "data", size)
        common = {
            "base": str(model_dir),
            "data": str(data),
            "device": device,
            "steps": steps,
            "mixed_precision": precision,
        }
        print(f"{name}: {size}x{size}, batch 1, {steps} steps, {device}, precision {precision}")
        seconds = {}
        runs = [
            (
                "dreambooth",
                lambda: train_dreambooth(DreamBoothOptions(**common, out=f"{tmp}/db")),
            ),
            (
                "dreambooth, ckpt",
                lambda: train_dreambooth(
                    DreamBoothOptions(**common, out=f"{tmp}/dbc", gradient_checkpointing=True)
                ),
            ),
        ]
        if importlib.util.find_spec("bitsandbytes") is not None and device.startswith("cuda"):
            runs.append(
                (
                    "dreambooth, adamw8bit",
                    lambda: train_dreambooth(
                        DreamBoothOptions(**common, out=f"{tmp}/db8", optimizer="adamw8bit")
                    ),
                )
            )
        for label, run in runs + [
            (
                "lora rank 16",
                lambda: train_lora(LoraOptions(**common, out=f"{tmp}/lora", rank=16, alpha=16.0)),
            ),
            (
                "lora, cached latents",
                lambda: train_lora(
                    LoraOptions(
                        **common, out=f"{tmp}/cached", rank=16, alpha=16.0, cache_latents=True
                    )
                ),
            ),
            (
                "textual inversion",
                lambda: train_textual_inversion(
                    TextualInversionOptions(**common, out=f"{tmp}/ti", token="skstok")
                ),
            ),
            (
                "hypernetwork 1,2,1",
                lambda: train_hypernetwork(
                    HypernetworkOptions(**common, out=f"{tmp}/hn", activation="relu")
                ),
            ),
        ]:
            peak_reset(device)
            result = run()
            # the first step pays for warm-up: time the rest from the loss log
            rows = result.loss_log.read_text().splitlines()[1:]
            first, last = float(rows[0].split(",")[-1]), float(rows[-1].split(",")[-1])
            per_step = (last - first) / max(len(rows) - 1, 1)
            seconds[label] = per_step
            print(f"  {label:22} {1 / per_step:8.2f} it/s   peak {peak_mib(device)}")
        bare = bare_lora_seconds(model_dir, data, device, steps)
        print(f"  overhead ratio train_lora/bare step: {seconds['lora rank 16'] / bare:.3f}")
        print(
            "  dreambooth/lora step time: "
            f"{seconds['dreambooth'] / seconds['lora rank 16']:.2f}, "
            f"checkpointing/plain: {seconds['dreambooth, ckpt'] / seconds['dreambooth']:.2f}"
        )


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sd15", action="store_true", help="the SD1.5-sized UNet on the CPU too")
    parser.add_argument(
        "--mixed-precision",
        choices=("no", "fp16", "bf16"),
        help="default: fp16 on CUDA, no elsewhere",
    )
    args = parser.parse_args()
    precision = args.mixed_precision or ("fp16" if args.device.startswith("cuda") else "no")
    torch.set_num_threads(args.threads)
    from benchmarks.generate import sd15_sized_pipeline
    from tests.fixtures.tiny_pipeline import save_tiny_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        tiny = save_tiny_pipeline(Path(tmp) / "tiny")
        measure("tiny", tiny, 64, args.device, args.steps, precision)
        if args.device.startswith("cuda") or args.sd15:
            sd15 = Path(tmp) / "sd15"
            sd15_sized_pipeline().save_pretrained(sd15, safe_serialization=True)
            steps = args.steps if args.device.startswith("cuda") else 2
            measure("sd15-sized unet", sd15, 512, args.device, steps, precision)


if __name__ == "__main__":
    main()
