"""Selecting images with a query string, compiled to one SQLAlchemy expression.

`compile_query(text)` is a boolean expression over `db.schema.Image`, usable in
any statement that has `images` in it: `select(Image.id).where(...)`, counts,
joins with `files`, or inside a statement over `image_tags`. Conditions on other
tables become `images.id IN (...)` over their own aliases (terms ANDed together
share one INTERSECT: see `curator.query.sets`), so nothing correlates with the
outer query but `images.id` itself. The syntax (`-` binds tighter than `|`, `|`
tighter than the implicit AND; quotes; columns for errors) lives in
`curator.query.parser`; the words mean:

Tags (an image has tag T when some source links them and no `user-removed`
row hides T; `"long hair"` is `long_hair`, names match as stored):
    cat  -cat  cat|dog  (a|b) -c  blue_*  cat>=0.6  cat<0.3
    character:*  character:hatsune_miku  artist:x  copyright:x  meta:x  general:x
    cat@user  cat@model:wd14  cat@model:wd14>=0.5
A score threshold compares the tag's best score over its sources (a tag set by
hand or read from a sidecar counts 1.0); `cat<0.3` needs the tag, below 0.3.

Fields (case-insensitive keys; `key:a|b` is either value):
    rating:general|sensitive|questionable|explicit (or g, s, q, e; also rating<=sensitive):
        the tagger's `rating` score row (index of its top rating tag)
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

`page_ids(db, text, limit=, after_id=)` answers a page of ids in id order (what a
review screen waits for) with the same rows as `compile_query`, by whichever of
two plans looks cheaper: the id sets above, or walking `images` in id order and
testing each image with an index seek per term (`curator.query.sets.probe`).
A few hundred images after the page start are tested first to see how often
each term holds.
"""

from __future__ import annotations

import operator
import os
import re
from collections.abc import Callable
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    exists,
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.orm import Session, aliased

from curator.errors import QueryError
from curator.query.parser import And, Node, Not, Or, Term, Value, parse, split_comparison
from curator.query.sets import (
    USER_REMOVED_SQL,
    Ids,
    Part,
    all_of,
    any_of,
    negate,
    not_removed,
    probe,
    tag_ids,
    to_expression,
)
from curator.tags.view import RATINGS, USER_REMOVED
from db.schema import Caption, Detection, Embedding, File, Generation, Image, ImageTag, Score

TAG_NAMESPACES = ("general", "character", "copyright", "artist", "meta")
STATUSES = ("pending", "accepted", "rejected")
FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF"}
SQUARE_LOW, SQUARE_HIGH = 95, 105  # width/height in hundredths: [0.95, 1.05) is square
RATING_SCORE = "rating"  # score row: index of the top rating in RATINGS
SCORE_OPS = (">=", ">", "<=", "<")
PAGE_SIZE = 100
# Images after the page start tested against every term to estimate how often it holds.
SAMPLE_IMAGES = 400
JOINT_HITS = 4  # matches of the whole query in the sample that make its own rate trustworthy
# Reading one row into an id set, in units of one per-image index seek.
SET_ROW_COST = 0.15

Strategy = Literal["auto", "probe", "sets"]

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "=": operator.eq,
    ":": operator.eq,
    "!=": operator.ne,
}
_SCORE_KEY = re.compile(r"^score\((.+)\)$", re.IGNORECASE)
_SIZE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(k|m|g|t)?(i)?(b)?$", re.IGNORECASE)
_RATIO = re.compile(r"^(\d+(?:\.\d*)?)\s*[:/]\s*(\d+(?:\.\d*)?)$")


def folder_condition(folder: str, *, base: str | None = None) -> ColumnElement[bool]:
    """Images with a present file in `folder` or below (relative to `base` or cwd)."""
    f = aliased(File)  # its own alias, so it never correlates with a File in the outer query
    return exists().where(f.image_id == Image.id, f.present.is_(True), _in_folder(f, folder, base))


def compile_query(text: str | None, *, base: str | None = None) -> ColumnElement[bool]:
    """A boolean expression over `Image` for a query string ('' selects everything).

    `base` is the folder `folder:` terms are relative to (default: the working folder).
    Raises `QueryError` naming the 1-based column of the first problem.
    """
    if not text or not text.strip():
        return true()
    node = parse(text)
    return true() if node is None else to_expression(_Compiler(base).node(node))


def select_images(text: str | None = None, *, base: str | None = None) -> Select:
    """`SELECT images.* WHERE <query>` ordered by id."""
    return select(Image).where(compile_query(text, base=base)).order_by(Image.id)


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
        compiler = _Compiler(base)
        children = _flatten(node, And) if isinstance(node, And) else [node]
        parts = [compiler.node(child) for child in children]
    if strategy == "auto":
        strategy, parts = _choose_plan(db, parts, limit, after_id)
    if strategy == "sets" and parts:
        where = [start, to_expression(all_of(parts))]
    else:
        where = [start, *(probe(p) for p in parts)]
    return select(Image.id).where(*where).order_by(Image.id).limit(limit)


def _choose_plan(
    db: Session | Connection, parts: list[Part], limit: int, after_id: int
) -> tuple[Strategy, list[Part]]:
    """A plan and the parts in the order to test them (rarest first, so most images
    fail at the first seek), from how often each part holds on a sample of images."""
    if not any(isinstance(p, Ids) for p in parts):
        return "probe", parts  # plain conditions on `images`: both plans walk it
    sample = select(Image.id).where(Image.id > after_id).order_by(Image.id).limit(SAMPLE_IMAGES)
    window = Image.id.in_(sample.scalar_subquery())
    tests = [probe(p) for p in parts]
    columns = [
        func.count(),
        func.count().filter(and_(*tests)),
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


def _in_folder(f: Any, folder: str, base: str | None) -> ColumnElement[bool]:
    path = os.path.abspath(os.path.join(base or os.getcwd(), os.path.expanduser(folder)))
    prefix = path.rstrip(os.sep) + os.sep
    return (f.folder == path.rstrip(os.sep)) | f.folder.startswith(prefix, autoescape=True)


class _Compiler:
    """Turns the syntax tree into `Part`s: id sets (`Ids`) or plain conditions on `images`."""

    def __init__(self, base: str | None):
        self.base = base
        self.fields: dict[str, Callable[[Term], Part]] = {
            "width": lambda t: self._compare(t, Image.width),
            "height": lambda t: self._compare(t, Image.height),
            "bytes": lambda t: self._compare(t, Image.bytes, parse=_size),
            "aspect": self.aspect,
            "format": self.format,
            "folder": self.folder,
            "status": self.status,
            "is": self.is_,
            "has": self.has,
            "rating": self.rating,
            "source": self.source,
            "caption": lambda t: self.contains(t, Caption, "text"),
            "prompt": lambda t: self.contains(t, Generation, "prompt"),
            "negative": lambda t: self.contains(t, Generation, "negative_prompt"),
            "sampler": lambda t: self.generation_text(t, "sampler"),
            "model": lambda t: self.generation_text(t, "model"),
            "model_hash": lambda t: self.generation_text(t, "model_hash"),
            "steps": lambda t: self.generation_number(t, "steps"),
            "cfg": lambda t: self.generation_number(t, "cfg_scale"),
            "seed": lambda t: self.generation_number(t, "seed"),
            "clip_skip": lambda t: self.generation_number(t, "clip_skip"),
            "denoise": lambda t: self.generation_number(t, "denoising_strength"),
        }

    # -- structure ---------------------------------------------------------------

    def node(self, node: Node) -> Part:
        match node:
            case And():
                return all_of([self.node(n) for n in _flatten(node, And)])
            case Or():
                children = _flatten(node, Or)
                names = [_plain_tag(n) for n in children]
                if sum(n is not None for n in names) < 2:
                    return any_of([self.node(n) for n in children])
                # `a|b|c`: one pass over the rows of several tags beats a union of passes.
                tags = self.tag_names([n for n in names if n is not None])
                rest = [self.node(c) for c, n in zip(children, names, strict=True) if n is None]
                return any_of([tags, *rest])
            case Not(inner):
                return negate(self.node(inner))
            case Term():
                return self.term(node)
        raise AssertionError(node)  # pragma: no cover

    def term(self, term: Term) -> Part:
        if term.key is None:
            return self.tag(term.value, source=term.source)
        if term.key.quoted:  # `"long hair">=0.5`: a quoted key is always a tag
            return self.tag_threshold(term)
        key = term.key.text.lower()
        if term.op == ":" and key in TAG_NAMESPACES:
            return self.category_tag(term, key)
        score = _SCORE_KEY.match(term.key.text)
        handler = self.fields.get(key)
        if term.source is not None and (score or handler):
            raise QueryError(f"'@{term.source}' qualifies a tag, not '{key}'", column=term.column)
        if score:
            return self.score(term, score[1])
        if handler:
            return handler(term)
        if term.op == ":":
            raise QueryError(
                f"unknown field '{term.key.text}' (quote a tag that has a colon: \"{term.text}\")",
                column=term.column,
            )
        if term.op == "~":
            raise QueryError(
                f"'~' (contains) works on caption, prompt and negative, not '{term.key.text}'",
                column=term.column,
            )
        return self.tag_threshold(term)

    # -- tags --------------------------------------------------------------------

    def tag(
        self,
        name: Value | None,
        *,
        category: str | None = None,
        source: str | None = None,
        threshold: tuple[str, float] | None = None,
    ) -> Ids:
        """Images that effectively have a tag matching `name` (and category, source, score)."""
        tag_filter: list[Callable[[Any], Any]] = []
        exact = False
        if name is not None:
            name = name.map(lambda s: s.replace(" ", "_"))
            if not name.has_wildcard:
                exact, text = True, name.text
                tag_filter.append(lambda t: t.name == text)
            elif name.text.strip("*"):
                pattern = name.like_pattern()
                tag_filter.append(lambda t: t.name.like(pattern, escape="\\"))
        if category is not None:
            tag_filter.append(lambda t: t.category == category)
        by_source = None if source is None else (lambda col: _source_match(col, source))
        by_score = None if threshold is None else _score_test(threshold, by_source)
        return tag_ids(tag_filter, exact=exact, source=by_source, score=by_score)

    def tag_names(self, names: list[str], category: str | None = None) -> Ids:
        """Images that effectively have any of these tags (exact names)."""
        tag_filter: list[Callable[[Any], Any]] = [lambda t: t.name.in_(names)]
        if category is not None:
            tag_filter.append(lambda t: t.category == category)
        return tag_ids(tag_filter, exact=False)

    def tag_threshold(self, term: Term) -> Ids:
        """`cat>=0.6`: a tag with a score comparison."""
        assert term.key is not None and term.op is not None
        if term.op not in SCORE_OPS:
            raise QueryError(
                f"a tag's score takes >=, >, <= or <, not '{term.op}'", column=term.column
            )
        value = _number(term.value, term.op)
        return self.tag(term.key, source=term.source, threshold=(term.op, value))

    def category_tag(self, term: Term, category: str) -> Part:
        """`character:*`, `character:hatsune_miku`, `character:miku|rin`, `character:x>=0.8`."""
        alternatives: list[Part] = []
        names = [v.text.replace(" ", "_") for v in term.values if _is_plain(v)]
        if len(names) > 1:
            alternatives.append(self.tag_names(names, category))
        for value in term.values:
            if len(names) > 1 and _is_plain(value):
                continue
            threshold = None
            if split := split_comparison(value):
                value, op, number = split
                if op not in SCORE_OPS:
                    raise QueryError(
                        f"a tag's score takes >=, >, <= or <, not '{op}'", column=number.column
                    )
                threshold = (op, _number(number, op))
            alternatives.append(
                self.tag(value, category=category, source=term.source, threshold=threshold)
            )
        return any_of(alternatives)

    def source(self, term: Term) -> Part:
        """`source:user`, `source:model:wd14`: images with effective tags from that source."""
        _require(term, ":")
        alternatives: list[Part] = []
        for value in term.values:
            it = aliased(ImageTag)
            if value.text == USER_REMOVED:
                rows = select(it.image_id).where(it.source == USER_REMOVED_SQL)
            else:
                rows = select(it.image_id).where(
                    _source_match(it.source, value.text), not_removed(it)
                )
            alternatives.append(Ids(rows))
        return any_of(alternatives)

    # -- scores and ratings ------------------------------------------------------

    def score(self, term: Term, name: str) -> Ids:
        s = aliased(Score)
        condition = self._compare(term, s.value)
        return Ids(select(s.image_id).where(s.name == name, condition), one_seek=True)

    def rating(self, term: Term) -> Ids:
        """`rating:general|sensitive`, `rating<=sensitive`: the tagger's top rating."""
        s = aliased(Score)
        if term.op == ":":
            wanted = sorted({_rating_index(v) for v in term.values})
            condition = s.value == wanted[0] if len(wanted) == 1 else s.value.in_(wanted)
        elif term.op in _OPS:
            condition = _OPS[term.op](s.value, _rating_index(term.value))
        else:
            raise _bad_op(term)
        return Ids(select(s.image_id).where(s.name == RATING_SCORE, condition), one_seek=True)

    # -- image metadata ----------------------------------------------------------

    def aspect(self, term: Term) -> ColumnElement[bool]:
        w, h = Image.width, Image.height
        if term.op == ":" and not any(_looks_numeric(v.text) for v in term.values):
            shapes = {
                "portrait": w * 100 < h * SQUARE_LOW,
                "square": and_(w * 100 >= h * SQUARE_LOW, w * 100 < h * SQUARE_HIGH),
                "landscape": w * 100 >= h * SQUARE_HIGH,
            }
            conditions = []
            for value in term.values:
                if value.text.lower() not in shapes:
                    raise QueryError(
                        f"unknown aspect '{value.text}' (portrait, landscape, square, or a ratio)",
                        column=value.column,
                    )
                conditions.append(shapes[value.text.lower()])
            return or_(*conditions)
        if term.op not in _OPS:
            raise _bad_op(term)
        conditions = []
        for value in term.values:
            ratio = literal(_ratio(value, term.op))
            if term.op in (":", "="):
                conditions.append(func.abs(w - ratio * h) < 0.01 * h)
            elif term.op == "!=":
                conditions.append(func.abs(w - ratio * h) >= 0.01 * h)
            else:
                conditions.append(_OPS[term.op](w, ratio * h))
        return or_(*conditions)

    def format(self, term: Term) -> ColumnElement[bool]:
        _require(term, ":", "=", "!=")
        names = [v.text.upper().lstrip(".") for v in term.values]
        formats = sorted({FORMAT_ALIASES.get(n, n) for n in names})
        return Image.format.not_in(formats) if term.op == "!=" else Image.format.in_(formats)

    def folder(self, term: Term) -> Part:
        _require(term, ":")
        alternatives: list[Part] = []
        for value in term.values:
            f = aliased(File)
            present = f.present.is_(True)
            rows = select(f.image_id).where(present, _in_folder(f, value.text, self.base))
            alternatives.append(Ids(rows))
        return any_of(alternatives)

    def status(self, term: Term) -> ColumnElement[bool]:
        _require(term, ":", "=", "!=")
        wanted = [_choice(v, STATUSES, "status") for v in term.values]
        return Image.status.not_in(wanted) if term.op == "!=" else Image.status.in_(wanted)

    def is_(self, term: Term) -> Part:
        _require(term, ":")

        def missing() -> Ids:
            f = aliased(File)
            return Ids(select(f.image_id).where(f.present.is_(True)), negated=True)

        states: dict[str, Callable[[], Part]] = {
            "duplicate": lambda: Image.duplicate_of.is_not(None),
            "missing": missing,
        }
        return any_of([states[_choice(v, tuple(states), "state")]() for v in term.values])

    def has(self, term: Term) -> Part:
        _require(term, ":")

        def rows_of(table: type, *where: Callable[[Any], Any]) -> Callable[[], Ids]:
            def build() -> Ids:
                row = aliased(table)
                return Ids(select(row.image_id).where(*(w(row) for w in where)))

            return build

        what: dict[str, Callable[[], Part]] = {
            "caption": rows_of(Caption),
            "tags": _has_tags,
            "infotext": rows_of(Generation),
            "faces": rows_of(Detection, lambda d: d.detector == "faces"),
            "embedding": rows_of(Embedding),
        }
        return any_of([what[_choice(v, tuple(what), "'has:' value")]() for v in term.values])

    # -- captions and generation parameters --------------------------------------

    def contains(self, term: Term, table: type, attr: str) -> Ids:
        """`caption~"forest"`: a case-insensitive substring (`*` outside quotes: anything)."""
        _require(term, "~", ":")
        row = aliased(table)
        column = getattr(row, attr)
        alternatives = []
        for value in term.values:
            if not value.text:
                raise QueryError(f"expected text after '{term.op}'", column=value.column)
            alternatives.append(column.ilike(f"%{value.like_pattern()}%", escape="\\"))
        return Ids(select(row.image_id).where(or_(*alternatives)))

    def generation_text(self, term: Term, attr: str) -> Ids:
        _require(term, ":", "=", "!=")
        g = aliased(Generation)
        column = getattr(g, attr)
        alternatives = []
        for value in term.values:
            if value.has_wildcard:
                alternatives.append(column.ilike(value.like_pattern(), escape="\\"))
            else:
                alternatives.append(func.lower(column) == value.text.lower())
        return Ids(select(g.image_id).where(or_(*alternatives)), negated=term.op == "!=")

    def generation_number(self, term: Term, attr: str) -> Ids:
        g = aliased(Generation)
        return Ids(select(g.image_id).where(self._compare(term, getattr(g, attr))))

    # -- shared ------------------------------------------------------------------

    def _compare(
        self, term: Term, column: Any, parse: Callable[[Value, str], float] | None = None
    ) -> ColumnElement[bool]:
        if term.op not in _OPS:
            raise _bad_op(term)
        parse = parse or _number
        numbers = [parse(v, term.op) for v in term.values]
        if len(numbers) > 1:  # `key:a|b`
            return column.in_(numbers)
        return _OPS[term.op](column, numbers[0])


def _plain_tag(node: Node) -> str | None:
    """The name of a bare exact tag term (`cat`, `"long hair"`), else None."""
    if isinstance(node, Term) and node.key is None and node.source is None:
        if _is_plain(node.value):
            return node.value.text.replace(" ", "_")
    return None


def _is_plain(value: Value) -> bool:
    """An exact name: no wildcard, no score threshold."""
    return not value.has_wildcard and split_comparison(value) is None


def _has_tags() -> ColumnElement[bool]:
    """Probed per image: a set of every tagged image would read all of image_tags."""
    it = aliased(ImageTag)
    return exists().where(it.image_id == Image.id, not_removed(it))


def _flatten(node: And | Or, kind: type) -> list[Node]:
    """`(a b) c` is one AND of three; `a|(b|c)` one OR of three."""
    out: list[Node] = []
    for child in node.nodes:
        out.extend(_flatten(child, kind) if isinstance(child, kind) else [child])
    return out


def _score_test(
    threshold: tuple[str, float], by_source: Callable[[Any], Any] | None
) -> Callable[[Any], ColumnElement[bool]]:
    """A tag's best score (a tag by hand counts 1.0) against a threshold."""
    op, limit = threshold

    def test(it: Any) -> ColumnElement[bool]:
        row_passes = _OPS[op](func.coalesce(it.score, 1.0), limit)
        if op in (">", ">="):
            return row_passes
        # Below a limit: this row is, and no other row of the tag on the image reaches it.
        other = aliased(ImageTag)
        beats = [
            other.image_id == it.image_id,
            other.tag_id == it.tag_id,
            other.source != USER_REMOVED_SQL,
            ~_OPS[op](func.coalesce(other.score, 1.0), limit),
        ]
        if by_source is not None:
            beats.append(by_source(other.source))
        return and_(row_passes, ~exists().where(*beats))

    return test


def _source_match(column: Any, source: str) -> ColumnElement[bool]:
    """`model` matches every model; `model:NAME` may use `*`."""
    if source == "model":
        return column.like("model:%")
    if "*" in source:
        pattern = source.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return column.like(pattern.replace("*", "%"), escape="\\")
    return column == source


def _require(term: Term, *ops: str) -> None:
    if term.op not in ops:
        raise _bad_op(term)


def _bad_op(term: Term) -> QueryError:
    assert term.key is not None
    return QueryError(f"'{term.key.text}' cannot be used with '{term.op}'", column=term.column)


def _number(value: Value, op: str) -> float:
    text = value.text.strip()
    try:
        number = float(text)
    except ValueError:
        raise QueryError(f"expected a number after '{op}'", column=value.column) from None
    return int(number) if number.is_integer() and "." not in text else number


def _looks_numeric(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or text[0] == ".")


def _size(value: Value, op: str) -> float:
    """`2MB`, `500KB`, `1.5GiB`, `123`: a byte count."""
    match = _SIZE.match(value.text.strip())
    if not match:
        raise QueryError(f"expected a size after '{op}' (e.g. 500KB, 2MB)", column=value.column)
    number, unit, binary, _ = match.groups()
    power = "kmgt".index(unit.lower()) + 1 if unit else 0
    return round(float(number) * (1024 if binary else 1000) ** power)


def _ratio(value: Value, op: str) -> float:
    """`1.5`, `16:9`, `4/3`: width / height."""
    if match := _RATIO.match(value.text.strip()):
        width, height = float(match[1]), float(match[2])
        if height == 0:
            raise QueryError("an aspect ratio cannot have height 0", column=value.column)
        return width / height
    return float(_number(value, op))


def _rating_index(value: Value) -> int:
    text = value.text.lower()
    for index, name in enumerate(RATINGS):
        if text in (name, name[0]):
            return index
    raise QueryError(f"unknown rating '{value.text}' ({', '.join(RATINGS)})", column=value.column)


def _choice(value: Value, choices: tuple[str, ...], what: str) -> str:
    text = value.text.lower()
    if text not in choices:
        raise QueryError(f"unknown {what} '{value.text}' ({', '.join(choices)})", value.column)
    return text


__all__ = ["compile_query", "folder_condition", "page_ids", "page_statement", "select_images"]
