"""A page of matching ids in id order, by the cheaper of two plans.

`page_ids(db, text, limit=, after_id=)` answers what a review screen waits for with
the same rows as `compile_query`: either the id sets of `curator.query.sets`
intersected, or a walk over `images` in id order testing each image with an index
seek per term (`curator.query.sets.probe`). A few hundred images after the page
start are tested first to see how often each term holds. The catalog's tag rules are
loaded once and written into the SQL with the tags' ids (`curator.query.meaning`).
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import Connection, Select, func, select
from sqlalchemy.orm import Session

from curator.query.meaning import KnownRules, TagIds
from curator.query.parser import And, parse
from curator.query.sets import Ids, Part, all_of, all_true, probe, to_expression
from curator.query.terms import Compiler, flatten
from curator.tags.view import TagRules
from db.schema import Image

PAGE_SIZE = 100
# Images after the page start tested against every term to estimate how often it holds.
SAMPLE_IMAGES = 400
JOINT_HITS = 4  # matches of the whole query in the sample that make its own rate trustworthy
# Reading one row into an id set, in units of one per-image index seek.
SET_ROW_COST = 0.15
# More terms than this are not sampled: one seek per term per image would not pay.
MAX_PROBED = 40

Strategy = Literal["auto", "probe", "sets"]


def load_rules(db: Session | Connection) -> TagRules:
    """The catalog's tag rules, read through a session or a connection."""
    return TagRules.load(db)  # type: ignore[arg-type]  # it only calls `execute`


def page_ids(
    db: Session | Connection,
    text: str | None,
    *,
    limit: int = PAGE_SIZE,
    after_id: int = 0,
    base: str | None = None,
    strategy: Strategy = "auto",
) -> list[int]:
    """Ids of up to `limit` matching images with id > `after_id`, in id order.

    The same ids as `select(Image.id).where(compile_query(text)).where(Image.id > after_id)
    .order_by(Image.id).limit(limit)`; pass the last id of a page as `after_id` for the next.
    """
    stmt = page_statement(db, text, limit=limit, after_id=after_id, base=base, strategy=strategy)
    return list(db.execute(stmt).scalars())


def page_statement(
    db: Session | Connection,
    text: str | None,
    *,
    limit: int = PAGE_SIZE,
    after_id: int = 0,
    base: str | None = None,
    strategy: Strategy = "auto",
) -> Select:
    """The statement `page_ids` runs: `strategy` "probe" walks images, "sets" intersects
    id sets, "auto" picks by sampling the catalog through `db`."""
    start = Image.id > after_id
    node = parse(text) if text and text.strip() else None
    parts: list[Part] = []
    if node is not None:
        compiler = Compiler(base, KnownRules(load_rules(db), TagIds(db)))
        children = flatten(node, And) if isinstance(node, And) else [node]
        parts = [compiler.node(child) for child in children]
    if strategy == "auto":
        strategy, parts = _choose_plan(db, parts, limit, after_id)
    if strategy == "sets" and parts:
        where = [start, to_expression(all_of(parts))]
    else:
        where = [start, all_true([probe(p) for p in parts])]
    return select(Image.id).where(*where).order_by(Image.id).limit(limit)


def _choose_plan(
    db: Session | Connection, parts: list[Part], limit: int, after_id: int
) -> tuple[Strategy, list[Part]]:
    """A plan and the parts in the order to test them (rarest first, so most images
    fail at the first seek), from how often each part holds on a sample of images."""
    if not any(isinstance(p, Ids) for p in parts):
        return "probe", parts  # plain conditions on `images`: both plans walk it
    if len(parts) > MAX_PROBED:
        return "sets", parts
    sample = select(Image.id).where(Image.id > after_id).order_by(Image.id).limit(SAMPLE_IMAGES)
    window = Image.id.in_(sample.scalar_subquery())
    tests = [probe(p) for p in parts]
    columns = [
        func.count(),
        func.count().filter(all_true(tests)),
        *(func.count().filter(t) for t in tests),
    ]
    tested, joint, *hits = db.execute(select(*columns).where(window)).one()
    if not tested:
        return "sets", parts
    total = db.execute(select(func.max(Image.id))).scalar_one()
    density = {id(p): h / tested for p, h in zip(parts, hits, strict=True)}
    # Plain conditions cost no seek: test them first; then one-seek terms, rarest first.
    ordered = sorted(parts, key=lambda p: (_seek_rank(p), density[id(p)]))
    seeks_per_image, passing = 0.0, 1.0
    for part in ordered:
        if isinstance(part, Ids):
            seeks_per_image += passing
        passing *= density[id(part)]
    if joint >= JOINT_HITS:  # enough matches in the sample to measure, correlations and all
        passing = joint / tested
    remaining = max(total - after_id, 1)
    walk = remaining if passing == 0 else min(limit / passing, remaining)
    set_rows = total * sum(
        1 - density[id(p)] if p.negated else density[id(p)] for p in parts if isinstance(p, Ids)
    )
    if walk * seeks_per_image <= set_rows * SET_ROW_COST:
        return "probe", ordered
    return "sets", parts


def _seek_rank(part: Part) -> int:
    if not isinstance(part, Ids):
        return 0
    return 1 if part.one_seek else 2
