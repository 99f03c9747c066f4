"""Interrogator speed: images/s per mode, bank cache hit vs miss, and `best` mode
against clip-interrogator 0.6.0 on the same model, image, caption and banks.

    python benchmarks/interrogate.py [--bank-size 2000] [--intermediate 2048]
                                     [--max-flavors 32] [--device cpu|cuda] [--tiny]

Builds a CLIP with ViT-B-32's architecture and random weights (--tiny: a tiny one),
samples each of clip-interrogator's banks down to --bank-size terms (0: all), and
times, with bank embeddings already computed on both sides:

* `best` mode here (the prefix-KV chain) and clip-interrogator's `interrogate`,
  their ratio, and whether the two prompts are the same;
* `best` here with whole-text encoding (no prefix-KV), to show where the gain is;
* images/s for each mode here;
* building the bank tables with an empty cache (miss) and a filled one (hit).

On a CPU keep --intermediate and --max-flavors small: clip-interrogator encodes
--intermediate texts of 77 tokens per chain step.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CAPTION = "a painting of a red fox standing in a snowy forest at dawn"


def sample_banks(dest: Path, size: int) -> Path:
    from taggers.clip import banks

    rng = random.Random(0)
    dest.mkdir(parents=True, exist_ok=True)
    for name in banks.DATA_FILES:
        terms = banks.read_terms(banks.data_dir() / f"{name}.txt")
        if size and len(terms) > size:
            terms = rng.sample(terms, size)
        (dest / f"{name}.txt").write_text("\n".join(terms), encoding="utf-8")
    return dest


def write_reference_cache(ours, folder: Path, model_name: str) -> None:
    """Bank embeddings as clip-interrogator's LabelTable cache files."""
    import hashlib

    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("artists", "flavors", "mediums", "movements", "trendings", "negative"):
        table = ours.table(name)
        digest = hashlib.sha256(",".join(table.labels).encode()).hexdigest()
        tensors = {
            "embeds": table.embeds.cpu().numpy().astype(np.float16),
            "hash": np.array([ord(c) for c in digest], dtype=np.int8),
        }
        save_file(tensors, str(folder / f"{model_name}_{name}.safetensors"))


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank-size", type=int, default=2000, help="terms per bank (0: all)")
    parser.add_argument("--intermediate", type=int, default=2048, help="chain candidates")
    parser.add_argument("--chunk-size", type=int, default=2048)
    parser.add_argument("--min-flavors", type=int, default=8)
    parser.add_argument("--max-flavors", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model, for a smoke run")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--skip-whole", action="store_true", help="skip whole-text best")
    parser.add_argument(
        "--cache-dir", type=Path, help="reuse bank embeddings from an earlier run's cache"
    )
    args = parser.parse_args()

    import torch
    from PIL import Image

    from taggers.clip.banks import EmbeddingCache, load_banks
    from taggers.clip.interrogator import MODES, Interrogator, InterrogatorSettings
    from taggers.clip.loading import load_clip
    from tests.fixtures.tiny_clip import TINY_CFG, build_tiny_clip, vit_b_32_cfg

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="curator-bench-"))
    cfg = TINY_CFG if args.tiny else vit_b_32_cfg()
    model_dir = build_tiny_clip(work / "clip", cfg=cfg)
    data = sample_banks(work / "data", args.bank_size)
    clip = load_clip(str(model_dir), models_dir=work / "models", device=args.device)
    banks = load_banks(data=data)
    settings = InterrogatorSettings(
        chunk_size=args.chunk_size,
        flavor_intermediate_count=args.intermediate,
        min_flavors=args.min_flavors,
        max_flavors=args.max_flavors,
    )
    image = Image.effect_mandelbrot((320, 240), (-2, -1.2, 1, 1.2), 64).convert("RGB")
    print(
        f"model: {'tiny' if args.tiny else 'ViT-B-32'} (random weights) on {args.device}, "
        f"{sum(len(v) for v in banks.values())} bank terms, intermediate {args.intermediate}, "
        f"flavors {args.min_flavors}-{args.max_flavors}, torch threads {torch.get_num_threads()}"
    )

    cache_dir = args.cache_dir or work / "cache"

    def build():
        ours = Interrogator(clip, banks, EmbeddingCache(cache_dir), settings)
        ours.merged()
        ours.table("negative")
        return ours

    miss, _ = timed(build)
    hit, ours = timed(build)
    first = "first build (given cache)" if args.cache_dir else "cache miss"
    print(f"bank tables: {first} {miss:.2f}s, cache hit {hit:.3f}s ({miss / hit:.0f}x)")

    pixels = clip.transform(image).unsqueeze(0)
    features = ours.image_features(pixels)
    for mode in MODES:
        seconds, _ = timed(lambda m=mode: ours.interrogate(ours.image_features(pixels), CAPTION, m))
        print(f"{mode:>8}: {seconds:.2f}s per image ({1 / seconds:.2f} images/s)")

    best_time, best_prompt = timed(lambda: ours.best(features, CAPTION))
    if args.skip_whole:
        whole_time, whole_prompt = float("nan"), best_prompt
    ours.settings.prefix_kv = False
    if not args.skip_whole:
        whole_time, whole_prompt = timed(lambda: ours.best(features, CAPTION))
    ours.settings.prefix_kv = True
    print(
        f"best, prefix-KV {best_time:.2f}s vs whole-text encoding {whole_time:.2f}s: "
        f"{whole_time / best_time:.1f}x (same prompt: {best_prompt == whole_prompt})"
    )
    if args.skip_reference:
        return
    try:
        import clip_interrogator as ci
    except ImportError:
        print("clip-interrogator is not installed: pip install clip-interrogator==0.6.0")
        return
    # Hand clip-interrogator the same float16 bank embeddings in its own cache format,
    # so it does not spend minutes encoding the banks again.
    ref_cache = work / "reference-cache"
    write_reference_cache(ours, ref_cache, "ViT-B-32_none")
    config = ci.Config(
        caption_model_name=None,
        clip_model_name="ViT-B-32/none",
        cache_path=str(ref_cache),
        download_cache=False,
        data_path=str(data),
        device=args.device,
        quiet=True,
        chunk_size=args.chunk_size,
        flavor_intermediate_count=args.intermediate,
    )
    config.clip_model = clip.model
    config.clip_preprocess = clip.transform
    reference = ci.Interrogator(config)
    ref_time, ref_prompt = timed(
        lambda: reference.interrogate(
            image, min_flavors=args.min_flavors, max_flavors=args.max_flavors, caption=CAPTION
        )
    )
    print(
        f"best mode: curator {best_time:.2f}s, clip-interrogator 0.6.0 {ref_time:.2f}s, "
        f"ratio {ref_time / best_time:.1f}x (same prompt: {best_prompt == ref_prompt})"
    )


if __name__ == "__main__":
    main()
