"""Generation speed: seconds per step, and Curator's overhead over a bare diffusers call.

    python benchmarks/generate.py                 # tiny pipeline + SD1.5-sized UNet, CPU
    python benchmarks/generate.py --skip-sd15     # tiny pipeline only
    python benchmarks/generate.py --device cuda   # on a GPU: SD1.5-sized it/s at 512, fp16
    python benchmarks/generate.py --skip-sd15 --skip-sdxl --skip-hires   # tiny SD only

Models have random weights (no downloads). The SD1.5-sized pipeline has SD 1.5's UNet
(320/640/1280/1280 channels, 768-wide cross-attention) with a small text encoder and a
small 8x VAE, so the UNet dominates as it does with real weights.

The overhead figure runs the same parameters twice: `curator.generation.generate`
(prompt parsing, chunked weighted encoding, schedule callback, infotext PNG written
atomically) against `pipe(prompt_embeds=..., negative_prompt_embeds=..., latents=...)`
with embeddings encoded beforehand and no file written; the ratio is Curator / bare.
The tiny SDXL pipeline is measured the same way (both encoders, pooled output and size
conditioning passed to the bare call). The hires-fix figures compare the image upscalers
(Lanczos, a small random-weight ESRGAN through spandrel) with latent upscaling, as
seconds per image and a ratio to latent.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def sd15_sized_pipeline():
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from curator.generation.tokenizer import clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64)
    vae = AutoencoderKL(
        block_out_channels=[16, 16, 16, 16],
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=8,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768,
            intermediate_size=1024,
            num_attention_heads=12,
            num_hidden_layers=2,
            vocab_size=49408,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    return StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text,
        tokenizer=clip_tokenizer(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def measure(pipe, name: str, size: int, steps: int, device: str, half: bool, repeats: int):
    import torch

    from curator.generation.conditioning import encode_texts
    from curator.generation.generate import GenerationParams, generate, initial_noise
    from curator.generation.loading import LoadedModel
    from curator.generation.sdxl import encode_sdxl, is_sdxl, time_ids

    dtype = torch.float16 if half else torch.float32
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    model = LoadedModel(pipe, name, None, device, dtype, name)
    prompt = "a (photo:1.2) of a cat, [sitting:standing:0.5], masterpiece, best quality"
    params = GenerationParams(
        prompt=prompt,
        negative_prompt="lowres, blurry",
        steps=steps,
        width=size,
        height=size,
        seed=1,
        sampler="Euler a",
    )
    factor = pipe.vae_scale_factor

    def embeds() -> dict:
        if is_sdxl(pipe):
            positive, pooled = encode_sdxl(pipe, [prompt])
            negative, negative_pooled = encode_sdxl(pipe, ["lowres, blurry"])
            return {
                "prompt_embeds": positive,
                "negative_prompt_embeds": negative,
                "pooled_prompt_embeds": pooled,
                "negative_pooled_prompt_embeds": negative_pooled,
                **time_ids(size, size),
            }
        return {
            "prompt_embeds": encode_texts(pipe.text_encoder, pipe.tokenizer, [prompt]),
            "negative_prompt_embeds": encode_texts(
                pipe.text_encoder, pipe.tokenizer, ["lowres, blurry"]
            ),
        }

    def bare():
        latents = initial_noise([1], (4, size // factor, size // factor), device, "cpu")
        generator = [torch.Generator("cpu").manual_seed(1)]
        pipe(
            **embeds(),
            latents=latents.to(dtype),
            num_inference_steps=steps,
            guidance_scale=7.0,
            generator=generator,
            height=size,
            width=size,
        )

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    with tempfile.TemporaryDirectory() as tmp:
        generate(model, params, tmp)  # warm-up
        timings = {"curator": [], "bare": []}
        for _ in range(repeats):
            for label, run in (("curator", lambda: generate(model, params, tmp)), ("bare", bare)):
                sync()
                start = time.perf_counter()
                run()
                sync()
                timings[label].append(time.perf_counter() - start)
    curator_s, bare_s = min(timings["curator"]), min(timings["bare"])
    print(f"{name}: {size}x{size}, {steps} steps, {device}, {'fp16' if half else 'fp32'}")
    print(
        f"  curator {curator_s:.3f}s ({curator_s / steps:.3f} s/step, {steps / curator_s:.2f} it/s)"
    )
    print(f"  bare    {bare_s:.3f}s ({bare_s / steps:.3f} s/step)")
    print(f"  overhead ratio curator/bare: {curator_s / bare_s:.3f}")


def measure_hires(size: int, steps: int, repeats: int) -> None:
    """Seconds per image of a 2x hires fix on the tiny pipeline, by upscaler."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN

    from curator.generation.generate import GenerationParams, generate
    from curator.generation.loading import LoadedModel
    from tests.fixtures.tiny_pipeline import build_tiny_pipeline

    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    model = LoadedModel(pipe, "tiny", None, "cpu", torch.float32, "tiny")
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        net = ESRGAN(num_filters=32, num_blocks=2, scale=2)
        save_file(
            {k: v.contiguous() for k, v in net.state_dict().items()}, f"{tmp}/esrgan.safetensors"
        )
        times = {}
        for upscaler in ("Latent", "Lanczos", "esrgan"):
            params = GenerationParams(
                prompt="a cat",
                steps=steps,
                width=size,
                height=size,
                seed=1,
                hr_scale=2,
                denoising_strength=0.5,
                hr_upscaler=upscaler,
                upscaler_dirs=[tmp],
            )
            generate(model, params, f"{tmp}/out")  # warm-up
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                generate(model, params, f"{tmp}/out")
                best = min(best, time.perf_counter() - start)
            times[upscaler] = best
    print(f"hires fix 2x, tiny pipeline, {size}x{size} -> {2 * size}x{2 * size}, {steps} steps")
    for upscaler, seconds in times.items():
        ratio = seconds / times["Latent"]
        print(f"  {upscaler:<8} {seconds:.3f}s per image, ratio to Latent {ratio:.2f}")


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--skip-sd15", action="store_true")
    parser.add_argument("--skip-sdxl", action="store_true", help="skip the tiny SDXL pipeline")
    parser.add_argument("--skip-hires", action="store_true", help="skip the upscaler figures")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from tests.fixtures.tiny_pipeline import build_tiny_pipeline

    gpu = args.device.startswith("cuda")
    measure(build_tiny_pipeline(), "tiny", 64, 20, args.device, False, args.repeats)
    if not args.skip_sdxl:
        from tests.fixtures.tiny_sdxl import build_tiny_sdxl

        measure(build_tiny_sdxl(), "tiny sdxl", 64, 20, args.device, False, args.repeats)
    if not args.skip_hires:
        measure_hires(64, 10, args.repeats)
    if not args.skip_sd15:
        steps = 20 if gpu else 1
        measure(
            sd15_sized_pipeline(),
            "sd15-sized unet",
            512,
            steps,
            args.device,
            gpu,
            args.repeats if gpu else 1,
        )


if __name__ == "__main__":
    main()
