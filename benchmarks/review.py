"""The review app on a large synthetic catalog: first paint, keys, a filter, memory.

    python benchmarks/review.py                       # 1,000,000 images, ~10 tags each
    python benchmarks/review.py --images 100000
    python benchmarks/review.py --db /tmp/r.db        # built once, reused on later runs

The catalog is `benchmarks/query.py`'s (real migrations, Zipf tags, ratings, an
aesthetic score per image) plus one file row per image, so the list has names.
The app runs headless through Textual's Pilot at 160x50, as a person would drive it:
the time to the first painted screen (from constructing the app, query compiled and
counted), 100 presses of `j`, 100 of `PgDn`, `G` and `g`, and applying a filter.
Each key's time includes Textual handling it and repainting; the detail panel loads
in a worker thread meanwhile. Peak memory is the process's maximum resident set.
Targets: first paint under 1 s, each key under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from query import build  # noqa: E402

from db import open_catalog  # noqa: E402

FILTER = "1girl -monochrome"
SIZE = (160, 50)


def add_files(path: Path) -> None:
    """One present file per image: /bench/NNN/IIIIIII.png."""
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=OFF", "synchronous=OFF"):
        db.execute(f"PRAGMA {pragma}")
    if db.execute("SELECT count(*) FROM files").fetchone()[0]:
        return
    db.execute(
        """
        INSERT INTO files(path, folder, image_id, size, mtime_ns, present, first_seen, last_seen)
        SELECT printf('/bench/%03d/%07d.png', id / 10000, id), printf('/bench/%03d', id / 10000),
               id, bytes, 0, 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00'
        FROM images
        """
    )
    db.execute("ANALYZE files")
    db.close()


async def shown(app, pilot) -> None:  # noqa: ANN001
    """Wait until the list is counted, read and painted."""
    await pilot.pause()
    while app.loading:
        await pilot.pause(0.005)
    await pilot.pause()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def baseline(presses: int) -> tuple[float, float, float]:
    """(startup s, wall ms per key, CPU ms per key) of an empty Textual app under the
    same Pilot: what the harness and this machine cost before the review app does
    anything."""
    from textual.app import App
    from textual.widgets import Static

    class Empty(App[None]):
        BINDINGS = [("j", "noop", "")]

        def compose(self):  # noqa: ANN202
            yield Static("")

        def action_noop(self) -> None:
            pass

    start = time.perf_counter()
    async with Empty().run_test(size=SIZE) as pilot:
        await pilot.pause()
        startup = time.perf_counter() - start
        t, cpu = time.perf_counter(), time.process_time()
        for _ in range(presses):
            await pilot.press("j")
        await pilot.pause()
        wall = (time.perf_counter() - t) / presses * 1000
        return startup, wall, (time.process_time() - cpu) / presses * 1000


async def drive(path: Path, presses: int) -> None:
    from tui.app import ReviewApp

    base_start, base_key, base_cpu = await baseline(presses)
    print(
        f"empty Textual app under Pilot: startup {base_start * 1000:.0f} ms, "
        f"{base_key:.1f} ms per key, {base_cpu:.1f} ms CPU per key (the floor here)"
    )
    catalog = open_catalog(str(path))
    before = peak_mb()
    start = time.perf_counter()
    app = ReviewApp(catalog)
    async with app.run_test(size=SIZE) as pilot:
        await shown(app, pilot)
        first_paint = time.perf_counter() - start
        count = app.image_list.count
        print(f"catalog: {count:,} images")
        print(
            f"first paint, rows on screen: {first_paint * 1000:.0f} ms, "
            f"{(first_paint - base_start) * 1000:.0f} above the floor (target < 1000)"
        )

        async def keys(label: str, *names: str) -> float:
            await app.workers.wait_for_complete()
            t, cpu = time.perf_counter(), time.process_time()
            for name in names:
                await pilot.press(name)
            await pilot.pause()
            per_key = (time.perf_counter() - t) / len(names) * 1000
            cpu_key = (time.process_time() - cpu) / len(names) * 1000
            print(
                f"{label:<22} {per_key:7.1f} ms per key ({per_key - base_key:6.1f} above the floor)"
                f", {cpu_key:6.1f} ms CPU ({cpu_key - base_cpu:6.1f} above) (target < 50)",
                flush=True,
            )
            return per_key - base_key

        worst = max(
            await keys(f"{presses} x j", *["j"] * presses),
            await keys(f"{presses} x PgDn", *["pagedown"] * presses),
            await keys("G (last image)", "G"),
            await keys("g (first image)", "g"),
            await keys(f"{presses} x k after G", "G", *["k"] * presses),
        )
        print(f"cursor at {app.image_list.cursor + 1:,}; pages held: {len(app.listing._pages)}")

        await pilot.press("slash", *FILTER)
        t = time.perf_counter()
        await pilot.press("enter")
        await shown(app, pilot)
        filtered = time.perf_counter() - t
        print(f"filter {FILTER!r}: {filtered * 1000:.0f} ms, {app.image_list.count:,} images")
        worst = max(worst, await keys(f"{presses} x j filtered", *["j"] * presses))
    catalog.close()
    print(f"slowest key above the floor: {worst:.1f} ms")
    print(f"peak memory: {peak_mb():.0f} MB (before the app: {before:.0f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--db", type=Path, help="catalog to build or reuse (default: a temp dir)")
    ap.add_argument("--images", type=int, default=1_000_000)
    ap.add_argument("--tags-per-image", type=int, default=10)
    ap.add_argument("--tag-names", type=int, default=10_000)
    ap.add_argument("--presses", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "review-bench.db"
        if not path.exists():
            print(f"building {path}: {args.images:,} images, ~{args.tags_per_image} tags each")
            t = time.perf_counter()
            build(path, args.images, args.tags_per_image, args.tag_names, args.seed)
            add_files(path)
            print(f"built in {time.perf_counter() - t:.1f}s", flush=True)
        add_files(path)
        asyncio.run(drive(path, args.presses))


if __name__ == "__main__":
    main()
