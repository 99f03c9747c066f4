"""The catalog at team scale: PostgreSQL against SQLite.

    python benchmarks/scale_db.py --pg postgresql+psycopg://me@host/postgres
    python benchmarks/scale_db.py --pg URL --only inserts,writers --writers 4
    python benchmarks/scale_db.py --pg URL --only query --query-images 1000000

`--pg` names a server and a database to connect to first: each part creates its own
throwaway database on that server (the user needs CREATEDB) and drops it after. Three parts:

* inserts: model tags written by the run loop's batch writer (`write_batch`, the same
  statements a `curator tag` run issues), rows/s on each engine and their ratio;
* writers: N processes writing one catalog at once, each its own share of the images
  (a run split over machines); aggregate rows/s, and the speed-up over one writer on the
  same engine (SQLite lets one writer in at a time; a server takes them together);
* query: `benchmarks/query.py` on a catalog of `--query-images` images (1,000,000 by
  default, ~30 tags each: the build and the copy to the server take a while), on SQLite
  and then on the server.
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from sqlalchemy import create_engine, insert  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from curator.runs.writer import Item, write_batch  # noqa: E402
from db import open_catalog  # noqa: E402
from db.schema import Image  # noqa: E402
from taggers.base import Result, Tag  # noqa: E402

VOCABULARY = 5000
BATCH = 64  # images per write transaction, as the run loop's default batch


@contextmanager
def server_database(url: str) -> Iterator[str]:
    """A new empty database on the server of `url`, dropped afterwards: its URL."""
    admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"curator_scale_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield str(Path(tmp) / "scale.db")


def seed_images(url: str, count: int) -> None:
    """`count` images (ids 1..count) in a new catalog made by the real migrations."""
    with open_catalog(url) as cat, cat.write() as s:
        for start in range(0, count, 5000):
            s.execute(
                insert(Image),
                [
                    {
                        "sha256": f"{i:064x}",
                        "bytes": 1000,
                        "width": 512,
                        "height": 768,
                        "format": "PNG",
                        "mode": "RGB",
                    }
                    for i in range(start + 1, min(start + 5000, count) + 1)
                ],
            )


def results_for(image_ids: list[int], tags: int, seed: int) -> list[Result]:
    """Tagger-like results: `tags` general tags per image from a Zipf-ish vocabulary."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, VOCABULARY + 1, dtype=np.float64)
    p = 1 / ranks
    p /= p.sum()
    out = []
    for _ in image_ids:
        names = rng.choice(VOCABULARY, size=tags, replace=False, p=p)
        scores = rng.uniform(0.35, 1.0, tags)
        out.append(
            Result(
                tags=[
                    Tag(f"tag_{n:05d}", "general", round(float(sc), 4))
                    for n, sc in zip(names, scores, strict=True)
                ]
            )
        )
    return out


def write_share(
    url: str, image_ids: list[int], tags: int, seed: int, start_at: float = 0.0
) -> tuple[int, float, float, float]:
    """Write model tags for these images in run-loop batches, from `start_at` (a wall
    clock time): (rows, seconds spent writing, first write's start, last write's end)."""
    model = SimpleNamespace(name="scale", kind="tagger", revision="1", source=None)
    results = results_for(image_ids, tags, seed)
    rows, spent = 0, 0.0
    with open_catalog(url) as cat:
        with cat.session() as s:
            s.connection()  # connected before the clock starts
        time.sleep(max(0.0, start_at - time.time()))
        began = time.time()
        for i in range(0, len(image_ids), BATCH):
            items = [
                Item(0, image_id, result)
                for image_id, result in zip(
                    image_ids[i : i + BATCH], results[i : i + BATCH], strict=True
                )
            ]
            t = time.perf_counter()
            with cat.write() as s:
                counts = write_batch(s, [model], [None], items, [])
            spent += time.perf_counter() - t
            rows += counts.tags[0]
    return rows, spent, began, time.time()


def _share(args: tuple[str, list[int], int, int, float]) -> tuple[int, float, float, float]:
    return write_share(*args)


def bulk_tag_inserts(url: str, images: int, tags: int) -> dict[str, float]:
    """One writer: rows/s of model tags through `write_batch`."""
    seed_images(url, images)
    write_share(url, list(range(1, min(images, BATCH * 2) + 1)), tags, 99)  # warm-up
    rows, seconds, _, _ = write_share(url, list(range(1, images + 1)), tags, 0)
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


def concurrent_writers(url: str, images: int, tags: int, workers: int) -> dict[str, float]:
    """`workers` processes, each writing its own share of the images at the same time."""
    seed_images(url, images)
    ids = list(range(1, images + 1))
    # Every process starts writing at one moment, its imports and results made before.
    start_at = time.time() + 5 + workers
    shares = [(url, ids[w::workers], tags, w, start_at) for w in range(workers)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        done = pool.map(_share, shares)
    rows = sum(d[0] for d in done)
    wall = max(d[3] for d in done) - min(d[2] for d in done)
    return {"rows": rows, "seconds": wall, "rows_per_s": rows / wall}


def query_benchmark(url: str, images: int, runs: int) -> None:
    """`benchmarks/query.py` on a catalog of `images` images (built, then copied for a server)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "query.py"), "--images", str(images)]
    cmd += ["--runs", str(runs), "--rules", "--db", url]
    subprocess.run(cmd, check=True)


def _both(
    pg: str, label: str, measure: Callable[[str], dict[str, float]]
) -> tuple[dict[str, float], dict[str, float]]:
    with sqlite_database() as path:
        lite = measure(path)
    with server_database(pg) as url:
        server = measure(url)
    print(
        f"{label:<34} {lite['rows_per_s']:>12,.0f} {server['rows_per_s']:>12,.0f}"
        f" {server['rows_per_s'] / lite['rows_per_s']:>8.2f}x",
        flush=True,
    )
    return lite, server


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pg", required=True, help="PostgreSQL URL (user may CREATE DATABASE)")
    ap.add_argument("--only", default="inserts,writers,query", help="parts to run, by name")
    ap.add_argument("--images", type=int, default=4000, help="images for inserts and writers")
    ap.add_argument("--tags", type=int, default=40, help="model tags per image")
    ap.add_argument("--writers", type=int, default=4, help="processes for the writers part")
    ap.add_argument("--query-images", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per query")
    run(ap.parse_args())


def run(args: argparse.Namespace) -> None:
    """The parts `args.only` names (also `benchmarks/scale.py --only db`)."""
    parts = {p.strip() for p in args.only.split(",")}
    n, tags = args.images, args.tags

    if parts & {"inserts", "writers"}:
        print(f"{args.images:,} images, {args.tags} model tags each, batches of {BATCH}")
        print(f"{'rows/s':<34} {'SQLite':>12} {'PostgreSQL':>12} {'PG/SQLite':>9}")
    if "inserts" in parts:
        _both(
            args.pg,
            "bulk tag inserts, 1 writer",
            lambda u: bulk_tag_inserts(u, args.images, args.tags),
        )
    if "writers" in parts:
        one = _both(
            args.pg,
            "concurrent writers: 1",
            lambda u: concurrent_writers(u, args.images, args.tags, 1),
        )
        many = _both(
            args.pg,
            f"concurrent writers: {args.writers}",
            lambda u: concurrent_writers(u, n, tags, args.writers),
        )
        print(
            f"{'speed-up of ' + str(args.writers) + ' writers over 1':<34}"
            f" {many[0]['rows_per_s'] / one[0]['rows_per_s']:>11.2f}x"
            f" {many[1]['rows_per_s'] / one[1]['rows_per_s']:>11.2f}x",
            flush=True,
        )
    if "query" in parts:
        with sqlite_database() as path:
            print(f"\nquery benchmark, SQLite, {args.query_images:,} images", flush=True)
            query_benchmark(path, args.query_images, args.runs)
            with server_database(args.pg) as url:
                print(f"\nquery benchmark, PostgreSQL, {args.query_images:,} images", flush=True)
                # query.py builds in SQLite and copies; pointing it at the server rebuilds
                # the same catalog from the same seed.
                query_benchmark(url, args.query_images, args.runs)


if __name__ == "__main__":
    main()
