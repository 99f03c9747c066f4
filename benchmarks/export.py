"""Export throughput: 2048-px JPEGs into sd15 buckets, images/s for the export alone.

    python benchmarks/export.py                       # 200 images, 2 workers, JPEG and PNG
    python benchmarks/export.py --count 500 --format webp
    python benchmarks/export.py --cache ~/bench-jpegs # keep the generated images

The source images are generated once per (count, size) and kept in the cache folder;
the catalog and the exports go to a fresh temporary folder on every run.

Two figures per format: the wall-clock rate of the export with ``--workers`` processes,
and the CPU time one image costs (an export in this process, ``workers=1``), with the
rate that cost allows on that many otherwise idle cores. On a busy machine the first
drops; the second stays put. Last, how much faster the ``--dry-run`` / ``--check``
preview of the same export is than writing it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def generate(folder: Path, count: int, size: int) -> None:
    """``count`` JPEGs with a long side of ``size`` and assorted aspect ratios."""
    import numpy as np
    from PIL import Image

    marker = folder / f".complete-{count}-{size}"
    if marker.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    aspects = [1.0, 2 / 3, 3 / 2, 3 / 4, 4 / 3, 9 / 16, 16 / 9]
    for i in range(count):
        aspect = aspects[i % len(aspects)]
        w, h = (size, round(size / aspect)) if aspect >= 1 else (round(size * aspect), size)
        coarse = rng.integers(0, 255, (h // 64 + 1, w // 64 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        grain = rng.integers(-12, 12, (h, w, 3), dtype=np.int16)  # photo-like fine detail
        pixels = np.clip(np.asarray(img, dtype=np.int16) + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"photo_{i:05d}.jpg", quality=90)
    marker.touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--format", nargs="+", default=["jpeg", "png"], choices=["png", "jpeg", "webp"]
    )
    parser.add_argument("--no-cpu", action="store_true", help="Skip the CPU-cost measurement.")
    parser.add_argument("--preset", default="sd15")
    parser.add_argument("--crop", default="center")
    parser.add_argument("--cache", type=Path, help="Folder for the generated source images.")
    args = parser.parse_args()

    from curator.export import export, preview_export
    from curator.ingest.scan import ScanOptions, scan
    from db import open_catalog

    cache = args.cache or Path(tempfile.gettempdir()) / "curator-bench-export"
    source = cache / f"{args.count}x{args.size}"
    t = time.perf_counter()
    generate(source, args.count, args.size)
    print(f"source images ready in {time.perf_counter() - t:.1f}s: {source}")

    with tempfile.TemporaryDirectory() as work:
        catalog = open_catalog(os.path.join(work, "catalog.db"))
        summary = scan(catalog, [str(source)], ScanOptions(workers=args.workers))
        print(f"scanned {summary.seen} images in {summary.seconds:.1f}s")
        settings = dict(
            layout="kohya-dreambooth",
            bucket=args.preset,
            crop=args.crop,
            instance="sks",
            class_word="photo",
        )
        for fmt in args.format:
            t = time.perf_counter()
            result = export(
                catalog,
                os.path.join(work, f"out-{fmt}"),
                image_format=fmt,
                workers=args.workers,
                **settings,
            )
            seconds = time.perf_counter() - t
            n = result.exported
            line = (
                f"{fmt:>4}: {n} images, {args.workers} workers: {seconds:.2f}s = "
                f"{n / seconds:.1f} images/s"
            )
            if not args.no_cpu:
                cpu = time.process_time()
                out = os.path.join(work, f"cpu-{fmt}")
                export(catalog, out, image_format=fmt, workers=1, **settings)
                per_image = (time.process_time() - cpu) / n
                line += (
                    f"; CPU {per_image * 1000:.1f} ms/image = "
                    f"{args.workers / per_image:.1f} images/s on {args.workers} idle cores"
                )
            print(line)
        # The preview (--dry-run, --check) plans the same export without pixels.
        t = time.perf_counter()
        preview = preview_export(catalog, os.path.join(work, "preview"), **settings)
        preview_seconds = time.perf_counter() - t
        print(
            f"preview: {len(preview.items)} images planned in {preview_seconds * 1000:.0f} ms "
            f"= {seconds / max(preview_seconds, 1e-9):.0f}x faster than the last export"
        )
        catalog.close()


if __name__ == "__main__":
    main()
