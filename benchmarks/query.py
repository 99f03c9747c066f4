"""Query language latency on a large synthetic catalog.

    python benchmarks/query.py                        # 1,000,000 images, 30,000,000 image_tags
    python benchmarks/query.py --images 100000 --tags-per-image 20
    python benchmarks/query.py --db /tmp/q.db         # built once, reused on later runs
    python benchmarks/query.py --images 100000 --db postgresql+psycopg://me@host/qbench

The catalog is built in SQLite (fast raw SQL); with a server URL for `--db` it is then
moved there with `curator db copy`'s library call (the database must be new or empty;
it is reused when it already holds images), ANALYZEd, and queried on the server.

The catalog is made by the real migrations, then filled with raw SQL: tags drawn
from a Zipf law over ~10,000 names (general, character, copyright, artist, meta),
the four WD14 rating tags with scores plus the `rating` score row the tagger
writes, an `aesthetic` score per image, a few hand-added and hand-removed tags.
Indexes are dropped for the load and rebuilt after it, then ANALYZE runs.

Each query is parsed and compiled on every run (that is part of what a user
waits for), the catalog's tag rules loaded, and timed three ways: `SELECT count(*)`
of `compile_query(text, db=conn)`'s matches (the rules and the tags' ids looked up
first and written into the SQL), the first page
of 100 ids ordered by id from `page_ids` (which samples the catalog to pick its
plan; the plan it picked is shown), and the count again with `compile_query(text)`
alone, whose SQL reads the rules itself ("stored"). Median of several runs after a
warm-up. `--rules` adds an alias, implications and a blacklisted tag first.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Connection, func, select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from curator.query.compile import (  # noqa: E402
    compile_query,
    page_ids,
    page_statement,
)
from db import open_catalog  # noqa: E402
from db.copy import copy_catalog  # noqa: E402
from db.schema import Image, TagRule  # noqa: E402
from db.upsert import insert_ignore  # noqa: E402

# The most frequent tags get real names, so the queries below read like a user's.
TOP_TAGS = (
    "1girl solo long_hair looking_at_viewer smile blush short_hair breasts open_mouth "
    "blue_eyes simple_background brown_hair white_background shirt black_hair skirt "
    "hair_ornament thighhighs gloves red_eyes long_sleeves dress holding 1boy bow "
    "monochrome blonde_hair jewelry hat blue_hair closed_eyes ribbon navel school_uniform "
    "sitting standing outdoors sky cloud tree forest flower"
).split()
CATEGORIES = ("general", "character", "copyright", "artist", "meta")
CATEGORY_WEIGHTS = (0.78, 0.12, 0.05, 0.04, 0.01)
RATINGS = ("general", "sensitive", "questionable", "explicit")
MODEL = "model:wd14-vit-v2"

QUERIES = [
    ("one popular tag", "1girl"),
    ("one mid tag", "hat"),
    ("one rare tag", "{rare}"),
    ("3 tags AND 1 NOT", "1girl long_hair smile -monochrome"),
    ("3 mid tags AND 1 NOT", "blue_eyes hat skirt -1boy"),
    ("tag+rating+aspect+score", "long_hair rating:general aspect:portrait score(aesthetic)>=6"),
    ("wildcard + category", "blue_* character:*"),
    ("tag score threshold", "smile>=0.9"),
]


def tag_names(count: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(name, category) by popularity rank: rank 1 is the most frequent tag."""
    out = [(name, "general") for name in TOP_TAGS[:count]]
    cats = rng.choice(len(CATEGORIES), size=count, p=CATEGORY_WEIGHTS)
    for rank in range(len(out) + 1, count + 1):
        category = CATEGORIES[cats[rank - 1]] if rank > 100 else "general"
        out.append((f"{category}_{rank:05d}", category))
    return out


def draws_for(unique: int, cdf: np.ndarray, rng: np.random.Generator) -> int:
    """How many Zipf draws per image give `unique` distinct tags on average."""
    for draws in range(unique, unique * 4):
        sample = np.sort(np.searchsorted(cdf, rng.random((2000, draws))), axis=1)
        distinct = 1 + (np.diff(sample, axis=1) != 0).sum(axis=1)
        if distinct.mean() >= unique:
            return draws
    return unique * 4


def build(path: Path, images: int, tags_per_image: int, names: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    open_catalog(str(path)).close()  # the real schema, by the real migrations
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-400000"):
        db.execute(f"PRAGMA {pragma}")
    indexes = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL"
        " AND tbl_name IN ('images', 'tags', 'image_tags', 'scores')"
    ).fetchall()
    for name, _ in indexes:
        db.execute(f'DROP INDEX "{name}"')
    db.execute("BEGIN")

    t = time.perf_counter()
    vocab = tag_names(names, rng)
    db.executemany("INSERT INTO tags(id, name, category) VALUES (?, ?, ?)", _tag_rows(vocab))
    rating_ids = {r: names + 1 + i for i, r in enumerate(RATINGS)}
    db.executemany(
        "INSERT INTO tags(id, name, category) VALUES (?, ?, 'rating')",
        [(i, r) for r, i in rating_ids.items()],
    )
    # Sizes from common buckets, a few formats and review states; ids are 1..N.
    db.execute(
        f"""
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?),
        r AS (SELECT i, abs(random()) AS a, abs(random()) AS b FROM n)
        INSERT INTO images(id, sha256, bytes, width, height, format, mode, frames,
                           orientation, phash, status, duplicate_of, added_at)
        SELECT i, printf('%064x', i), 20000 + a % 6000000,
               {_side("a")}, {_side("b")},
               CASE a % 10 WHEN 0 THEN 'WEBP' WHEN 1 THEN 'JPEG' WHEN 2 THEN 'JPEG'
                           ELSE 'PNG' END,
               'RGB', 1, 1, random(),
               CASE b % 20 WHEN 0 THEN 'rejected' WHEN 1 THEN 'accepted' WHEN 2 THEN 'accepted'
                           ELSE 'pending' END,
               CASE WHEN i > 1 AND b % 100 = 7 THEN i - 1 END,
               '2026-01-01 00:00:00'
        FROM r
        """,
        (images,),
    )
    print(f"  tags and images: {time.perf_counter() - t:.1f}s", flush=True)

    t = time.perf_counter()
    ranks = np.arange(1, names + 1, dtype=np.float64)
    cdf = np.cumsum(1.0 / ranks)
    cdf /= cdf[-1]
    zipf_unique = max(1, tags_per_image - len(RATINGS))
    draws = draws_for(zipf_unique, cdf, rng)
    rows = 0
    chunk = 50_000
    for start in range(1, images + 1, chunk):
        ids = np.arange(start, min(start + chunk, images + 1), dtype=np.int64)
        rows += _insert_tags(db, ids, cdf, draws, rating_ids, rng)
    print(f"  image_tags: {rows:,} rows in {time.perf_counter() - t:.1f}s", flush=True)

    t = time.perf_counter()
    for _, sql in indexes:
        db.execute(sql)
    db.execute("COMMIT")
    print(f"  indexes: {time.perf_counter() - t:.1f}s", flush=True)
    t = time.perf_counter()
    db.execute("ANALYZE")
    db.close()
    print(f"  analyze: {time.perf_counter() - t:.1f}s", flush=True)


def _side(var: str) -> str:
    """An image side from common training sizes, picked by a random column."""
    sides = (384, 512, 640, 768, 832, 896, 1024, 1216, 1536)
    whens = " ".join(f"WHEN {i} THEN {s}" for i, s in enumerate(sides))
    return f"(CASE {var} % {len(sides)} {whens} END)"


def _tag_rows(vocab: list[tuple[str, str]]) -> list[tuple[int, str, str]]:
    return [(i + 1, name, category) for i, (name, category) in enumerate(vocab)]


def _insert_tags(
    db: sqlite3.Connection,
    ids: np.ndarray,
    cdf: np.ndarray,
    draws: int,
    rating_ids: dict[str, int],
    rng: np.random.Generator,
) -> int:
    """One chunk of images: Zipf tags from the model (a few by hand), ratings, scores."""
    n = len(ids)
    tags = np.sort(np.searchsorted(cdf, rng.random((n, draws))) + 1, axis=1)
    keep = np.ones_like(tags, dtype=bool)
    keep[:, 1:] = np.diff(tags, axis=1) != 0
    image_col = np.broadcast_to(ids[:, None], tags.shape)[keep]
    tag_col = tags[keep]
    m = len(tag_col)
    kind = rng.random(m)
    scores = np.round(rng.uniform(0.35, 1.0, m), 4)
    sources = np.where(kind < 0.03, "user", np.where(kind < 0.04, "sidecar", MODEL))
    score_list: list[float | None] = scores.tolist()
    for i in np.flatnonzero(kind < 0.04):
        score_list[i] = None  # tags set by hand or read from a sidecar carry no score
    rows = list(
        zip(image_col.tolist(), tag_col.tolist(), sources.tolist(), score_list, strict=True)
    )
    # About one image in 500 has a model tag its owner removed.
    removed = np.flatnonzero((kind >= 0.04) & (rng.random(m) < 1 / 500 / 25))
    rows += [(int(image_col[i]), int(tag_col[i]), "user-removed", None) for i in removed]
    # Ratings: four scored rating tags, and the `rating` score row (index of the top one).
    probs = rng.dirichlet((6.0, 2.5, 1.0, 0.6), size=n)
    for j, name in enumerate(RATINGS):
        tid = rating_ids[name]
        scores = np.round(probs[:, j], 4).tolist()
        rows += zip(ids.tolist(), [tid] * n, [MODEL] * n, scores, strict=True)
    db.executemany(
        "INSERT INTO image_tags(image_id, tag_id, source, score) VALUES (?, ?, ?, ?)", rows
    )
    aesthetic = np.round(np.clip(rng.normal(5.5, 1.2, n), 1, 10), 3)
    score_rows = list(zip(ids.tolist(), ["rating"] * n, probs.argmax(axis=1).tolist(), strict=True))
    score_rows += zip(ids.tolist(), ["aesthetic"] * n, aesthetic.tolist(), strict=True)
    db.executemany(
        "INSERT INTO scores(image_id, name, value, source) VALUES (?, ?, ?, 'model')", score_rows
    )
    return len(rows)


def timed(fn: Callable[[], object], runs: int) -> tuple[float, object]:
    """Median milliseconds over `runs` after one warm-up, and the last result."""
    result = fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--db",
        help="SQLite file or database URL to build or reuse (default: a file in a temp dir)",
    )
    ap.add_argument("--images", type=int, default=1_000_000)
    ap.add_argument("--tags-per-image", type=int, default=30)
    ap.add_argument("--tag-names", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rebuild", action="store_true", help="build again even if --db exists")
    ap.add_argument("--plan", action="store_true", help="print each query's plan")
    ap.add_argument(
        "--rules",
        action="store_true",
        help="add tag rules to the catalog first (an alias, implications of `hair`, a "
        "blacklisted tag) and time queries that use them too",
    )
    ap.add_argument("query", nargs="*", help="time these queries instead of the built-in set")
    args = ap.parse_args()

    server = args.db if args.db and "://" in args.db and not args.db.startswith("sqlite") else None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "query-bench.db" if server or not args.db else Path(args.db)
        if args.rebuild and path.exists():
            path.unlink()
        if server and _images(server):
            run_queries(server, args)
            return
        if not path.exists():
            print(f"building {path}: {args.images:,} images, ~{args.tags_per_image} tags each")
            t = time.perf_counter()
            build(path, args.images, args.tags_per_image, args.tag_names, args.seed)
            print(f"built in {time.perf_counter() - t:.1f}s", flush=True)
        if server:
            t = time.perf_counter()
            copied = copy_catalog(str(path), server)
            with open_catalog(server) as catalog, catalog.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
            rows = sum(r.dest_rows for r in copied)
            print(f"copied {rows:,} rows to the server in {time.perf_counter() - t:.1f}s")
        run_queries(server or str(path), args)


def _images(url: str) -> int:
    with open_catalog(url) as catalog, catalog.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Image)).scalar_one()


RULE_QUERIES = [
    ("implied tag", "hair"),
    ("implied + 2 tags AND NOT", "hair smile -1boy"),
    ("alias spelling", "longhair solo"),
]


def add_rules(conn: Connection) -> None:
    """Rules touching popular tags: what a curated catalog holds (idempotent)."""
    rules = [("alias", "longhair", "long_hair"), ("blacklist", "monochrome", "")]
    rules += [("implication", t, "hair") for t in ("long_hair", "short_hair", "blonde_hair")]
    with Session(conn) as s:
        insert_ignore(
            s,
            TagRule.__table__,
            [{"kind": k, "tag": t, "target": g} for k, t, g in rules],
            ["kind", "tag", "target"],
        )
        s.commit()


def run_queries(spec: str, args: argparse.Namespace) -> None:
    queries = [("", q) for q in args.query] or QUERIES + (RULE_QUERIES if args.rules else [])
    catalog = open_catalog(spec)
    if args.rules:
        with catalog.engine.connect() as conn:
            add_rules(conn)
    with catalog.engine.connect() as conn:
        # A general tag about a fifth of the way down the popularity ranks (ids are ranks).
        rare = conn.exec_driver_sql(
            "SELECT name FROM tags WHERE category = 'general' AND id >= "
            "(SELECT max(id) / 5 FROM tags) ORDER BY id LIMIT 1"
        ).scalar_one()
        queries = [(label, text.replace("{rare}", rare)) for label, text in queries]
        total = conn.execute(select(func.count()).select_from(Image)).scalar_one()
        tag_rows = conn.exec_driver_sql("SELECT max(id) FROM image_tags").scalar_one()
        print(
            f"catalog ({conn.dialect.name}): {total:,} images, ~{tag_rows:,} image_tags rows;"
            f" median of {args.runs}"
        )
        print(
            f"{'':<24} {'query':<44} {'matches':>9} {'count ms':>9} {'page ms':>8}"
            f" {'stored ms':>9}  plan"
        )
        worst = 0.0
        for label, text in queries:

            def count(text: str = text) -> int:  # rules and tag ids looked up first
                where = compile_query(text, db=conn)
                return conn.execute(
                    select(func.count()).select_from(Image).where(where)
                ).scalar_one()

            def stored(text: str = text) -> int:  # the SQL reads the rules itself
                stmt = select(func.count()).select_from(Image).where(compile_query(text))
                return conn.execute(stmt).scalar_one()

            def page(text: str = text) -> list[int]:
                return page_ids(conn, text, limit=100)

            count_ms, matches = timed(count, args.runs)
            page_ms, _ = timed(page, args.runs)
            stored_ms, same = timed(stored, min(args.runs, 3))
            assert same == matches, (text, same, matches)
            worst = max(worst, count_ms, page_ms)
            shown = text if len(text) <= 44 else text[:41] + "..."
            print(
                f"{label:<24} {shown:<44} {matches:>9,} {count_ms:>9.1f} {page_ms:>8.1f}"
                f" {stored_ms:>9.1f}  {_plan_name(conn, text)}",
                flush=True,
            )
            if args.plan:
                _print_plan(conn, text)
        longest = max((q for _, q in queries), key=len)
        compile_ms, _ = timed(lambda: compile_query(longest), args.runs)
        print(
            f"slowest: {worst:.1f} ms; parsing and compiling the longest query: {compile_ms:.2f} ms"
        )
    catalog.close()


def _plan_name(conn: Connection, text: str) -> str:
    """`probe` when the page walks images, `sets` when it reads id sets."""

    def sql(**kw: str) -> str:
        return str(page_statement(conn, text, **kw).compile(conn))

    return "sets" if sql() == sql(strategy="sets") else "probe"


def _print_plan(conn: Connection, text: str) -> None:
    stmt = page_statement(conn, text)
    compiled = stmt.compile(conn, compile_kwargs={"literal_binds": True})
    explain = "EXPLAIN QUERY PLAN" if conn.dialect.name == "sqlite" else "EXPLAIN"
    for row in conn.exec_driver_sql(f"{explain} {compiled}").all():
        print("    ", row[-1])


if __name__ == "__main__":
    main()
