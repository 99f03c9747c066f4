"""Scan throughput: first scan and rescan images/s, and peak memory.

    python benchmarks/scan.py                 # generates 2,000 PNG/JPEG images
    python benchmarks/scan.py FOLDER          # or scans your folder
    python benchmarks/scan.py --count 5000 --size 768

Each phase runs in a fresh process so its peak memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHASE = r"""
import json, sys, threading, time
import psutil
from db import open_catalog
from curator.ingest.scan import ScanOptions, scan

peak = {"writer": 0, "tree": 0}
done = threading.Event()

def sample():  # peak RSS of this process and of the whole tree (decode workers included)
    me = psutil.Process()
    while not done.wait(0.05):
        procs = [me, *me.children(recursive=True)]
        rss = [p.memory_info().rss for p in procs if p.is_running()]
        peak["writer"] = max(peak["writer"], rss[0])
        peak["tree"] = max(peak["tree"], sum(rss))

threading.Thread(target=sample, daemon=True).start()
cat = open_catalog(sys.argv[1])
t = time.perf_counter()
s = scan(cat, [sys.argv[2]], ScanOptions(workers=int(sys.argv[3]) or None))
dt = time.perf_counter() - t
done.set()
print(json.dumps({
    "seconds": dt, "seen": s.seen, "new_images": s.new_images, "problems": s.problems,
    "unchanged": s.unchanged,
    "rss_mb": peak["writer"] / 2**20, "tree_rss_mb": peak["tree"] / 2**20,
}))
"""


def generate(folder: Path, count: int, size: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        w = int(size * rng.uniform(0.6, 1.4)) // 8 * 8
        h = int(size * rng.uniform(0.6, 1.4)) // 8 * 8
        small = rng.integers(0, 255, (h // 32, w // 32, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
        sub = folder / f"d{i % 20:02d}"
        sub.mkdir(exist_ok=True)
        if i % 2:
            img.save(sub / f"{i:06d}.jpg", quality=90)
        else:
            img.save(sub / f"{i:06d}.png", compress_level=1)


def phase(db: Path, folder: Path, workers: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", PHASE, str(db), str(folder), str(workers)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("folder", nargs="?", type=Path)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--size", type=int, default=640, help="typical side of generated images")
    ap.add_argument("--workers", type=int, default=0, help="0: all cores")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            folder = Path(tmp) / "images"
            t = time.perf_counter()
            generate(folder, args.count, args.size)
            print(f"generated {args.count} images in {time.perf_counter() - t:.1f}s")
        db = Path(tmp) / "bench.db"
        first = phase(db, folder, args.workers)
        again = phase(db, folder, args.workers)
    n = first["seen"]
    print(f"images: {n} ({first['new_images']} distinct, {first['problems']} problems)")
    print(
        f"first scan: {n / first['seconds']:.1f} images/s ({first['seconds']:.2f}s); "
        f"peak RSS {first['rss_mb']:.0f} MB writer, {first['tree_rss_mb']:.0f} MB with workers"
    )
    print(
        f"rescan:     {again['seen'] / again['seconds']:.1f} images/s ({again['seconds']:.2f}s); "
        f"{again['unchanged']} unchanged; peak RSS {again['rss_mb']:.0f} MB"
    )
    print(f"rescan / first scan speed: {first['seconds'] / again['seconds']:.1f}x")


if __name__ == "__main__":
    main()
