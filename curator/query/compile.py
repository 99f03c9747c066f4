"""Selecting images with a query string, compiled to one SQLAlchemy expression.

`compile_query(text)` is a boolean expression over `db.schema.Image`, usable in
any statement that has `images` in it: `select(Image.id).where(...)`, counts,
joins with `files`, or inside a statement over `image_tags`. Conditions on other
tables become `images.id IN (...)` over their own aliases (terms ANDed together
share one INTERSECT: see `curator.query.sets`), so nothing correlates with the
outer query but `images.id` itself. The syntax (`-` binds tighter than `|`, `|`
tighter than the implicit AND; quotes; columns for errors) lives in
`curator.query.parser`; the words mean (`curator.query.terms`):

Tags: an image has tag T when its effective tags (`curator.tags.view`, with implied
tags) hold T: aliases read as their canonical tag, implications add tags (chains
followed), a blacklisted tag never matches, a tag a person removed does not match
whatever a model says (`curator.query.meaning`). `"long hair"` is `long_hair`.
    cat  -cat  cat|dog  (a|b) -c  blue_*  cat>=0.6  cat<0.3
    character:*  character:hatsune_miku  artist:x  copyright:x  meta:x  general:x
    cat@user  cat@model:wd14  cat@model:wd14>=0.5   (that source's rows only)
A score threshold compares the tag's best score over its rows and the tags implying
it (a tag set by hand or read from a sidecar counts 1.0); `cat<0.3` needs the tag.

Fields (case-insensitive keys; `key:a|b` is either value):
    rating:general|sensitive|questionable|explicit (or g, s, q, e; also rating<=sensitive):
        the tagger's `rating` score row (index of its top rating tag); a bare rating
        name (`explicit`, `-explicit`) means the same; `"explicit"` quoted is the tag
    source:user|sidecar|model|model:NAME|user-removed
    width>=768  height<1024  width:512      bytes<2MB (KB, MB, GB: 1000s; KiB, MiB, GiB: 1024s)
    aspect:portrait|landscape|square        square: 0.95 <= width/height < 1.05, as `curator stats`
    aspect>1.5  aspect>=16:9  aspect=4/3    (`=` within 0.01)
    format:png|jpg|webp|gif|bmp|tiff        folder:PATH (relative to the working folder)
    score(nsfw)<0.2  score(aesthetic)>=5
    caption~"forest"  prompt~castle  negative~lowres     (substring, case-insensitive)
    sampler:"Euler a"  model:anything-v3  model_hash:2700c435   (exact, case-insensitive, `*`)
    steps>=30  cfg>=7  seed:123  clip_skip:2  denoise<0.5
    status:pending|accepted|rejected        is:duplicate|missing
    has:caption|tags|infotext|faces|embedding

`page_ids` (`curator.query.plan`) answers a page of ids in id order by the cheaper
of two plans.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Connection, Select, exists, select, true
from sqlalchemy.orm import Session, aliased

from curator.query.meaning import KnownRules, Meaning, StoredRules, TagIds
from curator.query.parser import parse
from curator.query.plan import PAGE_SIZE, Strategy, load_rules, page_ids, page_statement
from curator.query.sets import to_expression
from curator.query.terms import Compiler, in_folder
from curator.tags.view import TagRules
from db.schema import File, Image


def folder_condition(folder: str, *, base: str | None = None) -> ColumnElement[bool]:
    """Images with a present file in `folder` or below (relative to `base` or cwd)."""
    f = aliased(File)  # its own alias, so it never correlates with a File in the outer query
    return exists().where(f.image_id == Image.id, f.present.is_(True), in_folder(f, folder, base))


def compile_query(
    text: str | None,
    *,
    base: str | None = None,
    rules: TagRules | None = None,
    db: Session | Connection | None = None,
) -> ColumnElement[bool]:
    """A boolean expression over `Image` for a query string ('' selects everything).

    `base` is the folder `folder:` terms are relative to (default: the working folder).
    `rules` (`TagRules.load(session)`) writes the tag rules into the SQL; `db` (the
    session or connection that will run it) also looks the tag names up, so the SQL
    holds tag ids, the fastest form (on PostgreSQL by far: its planner then knows how
    common each tag is). Without either the SQL reads the catalog's rules itself, and
    can be kept and run later. Either way tags mean effective tags. Raises `QueryError`
    naming the 1-based column of the first problem.
    """
    if not text or not text.strip():
        return true()
    node = parse(text)
    if node is None:
        return true()
    meaning: Meaning
    if db is not None:
        meaning = KnownRules(rules or load_rules(db), TagIds(db))
    else:
        meaning = StoredRules() if rules is None else KnownRules(rules)
    return to_expression(Compiler(base, meaning).node(node))


def select_images(
    text: str | None = None,
    *,
    base: str | None = None,
    rules: TagRules | None = None,
    db: Session | Connection | None = None,
) -> Select:
    """`SELECT images.* WHERE <query>` ordered by id."""
    where = compile_query(text, base=base, rules=rules, db=db)
    return select(Image).where(where).order_by(Image.id)


__all__ = [
    "PAGE_SIZE",
    "Strategy",
    "compile_query",
    "folder_condition",
    "load_rules",
    "page_ids",
    "page_statement",
    "select_images",
]
