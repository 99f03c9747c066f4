"""The query's words and what they mean: the syntax tree → `Part`s (id sets or plain
conditions on `images`), combined by `curator.query.sets`.

Tags mean effective tags (`curator.query.meaning`); fields are listed in
`curator.query.compile`.
"""

from __future__ import annotations

import operator
import os
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, and_, func, literal, or_, select
from sqlalchemy.orm import aliased

from curator.errors import QueryError
from curator.query.meaning import Meaning
from curator.query.parser import And, Node, Not, Or, Term, Value, split_comparison
from curator.query.sets import (
    USER_REMOVED_SQL,
    Ids,
    Part,
    all_of,
    any_of,
    negate,
    not_removed,
)
from curator.query.values import (
    choice,
    looks_numeric,
    number,
    rating_index,
    ratio,
    shown,
    size,
)
from curator.tags.view import RATINGS, USER_REMOVED
from db.schema import Caption, Detection, Embedding, File, Generation, Image, ImageTag, Score
from db.sql import like_ci

TAG_NAMESPACES = ("general", "character", "copyright", "artist", "meta")
STATUSES = ("pending", "accepted", "rejected")
FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF"}
SQUARE_LOW, SQUARE_HIGH = 95, 105  # width/height in hundredths: [0.95, 1.05) is square
RATING_SCORE = "rating"  # score row: index of the top rating in RATINGS
SCORE_OPS = (">=", ">", "<=", "<")
_FLIP = {"<": ">=", "<=": ">"}

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


def in_folder(f: Any, folder: str, base: str | None) -> ColumnElement[bool]:
    """`f` (a `files` alias) lies in `folder` or below, relative to `base` or the cwd."""
    path = os.path.abspath(os.path.join(base or os.getcwd(), os.path.expanduser(folder)))
    prefix = path.rstrip(os.sep) + os.sep
    return (f.folder == path.rstrip(os.sep)) | f.folder.startswith(prefix, autoescape=True)


def flatten(node: And | Or, kind: type) -> list[Node]:
    """`(a b) c` is one AND of three; `a|(b|c)` one OR of three."""
    out: list[Node] = []
    for child in node.nodes:
        out.extend(flatten(child, kind) if isinstance(child, kind) else [child])
    return out


class Compiler:
    """Turns the syntax tree into `Part`s: id sets (`Ids`) or plain conditions on `images`."""

    def __init__(self, base: str | None, meaning: Meaning):
        self.base = base
        self.meaning = meaning
        self.fields: dict[str, Callable[[Term], Part]] = {
            "width": lambda t: self._compare(t, Image.width),
            "height": lambda t: self._compare(t, Image.height),
            "bytes": lambda t: self._compare(t, Image.bytes, parse=size),
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
                return all_of([self.node(n) for n in flatten(node, And)])
            case Or():
                children = flatten(node, Or)
                names = [_plain_tag(n) for n in children]
                if sum(n is not None for n in names) < 2:
                    return any_of([self.node(n) for n in children])
                # `a|b|c`: one pass over the rows of several tags beats a union of passes.
                tags = self.meaning.any_name([n for n in names if n is not None], None)
                rest = [self.node(c) for c, n in zip(children, names, strict=True) if n is None]
                return any_of([tags, *rest])
            case Not(inner):
                return negate(self.node(inner))
            case Term():
                return self.term(node)
        raise AssertionError(node)  # pragma: no cover

    def term(self, term: Term) -> Part:
        if term.key is None:
            if rating := _rating_word(term):
                return self.rating(rating)
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
                f"unknown field '{shown(term.key.text)}' "
                f'(quote a tag that has a colon: "{shown(term.text)}")',
                column=term.column,
            )
        if term.op == "~":
            raise QueryError(
                "'~' (contains) works on caption, prompt and negative, "
                f"not '{shown(term.key.text)}'",
                column=term.column,
            )
        return self.tag_threshold(term)

    # -- tags --------------------------------------------------------------------

    def tag(
        self,
        name: Value,
        *,
        category: str | None = None,
        source: str | None = None,
        threshold: tuple[str, float] | None = None,
    ) -> Part:
        """Images that effectively have a tag matching `name` (and category, source, score)."""
        if threshold is not None and threshold[0] in ("<", "<="):
            # Below a limit: the tag is there, and its best score does not reach the limit.
            op, limit = threshold
            reaches = self.tag(name, category=category, source=source, threshold=(_FLIP[op], limit))
            return all_of([self.tag(name, category=category, source=source), negate(reaches)])
        name = name.map(lambda s: s.replace(" ", "_"))
        by_source = None if source is None else (lambda col: _source_match(col, source))
        by_score = None if threshold is None else _score_test(threshold)
        if name.has_wildcard:
            return self.meaning.pattern(name, category=category, source=by_source, score=by_score)
        return self.meaning.exact(name.text, category=category, source=by_source, score=by_score)

    def tag_threshold(self, term: Term) -> Part:
        """`cat>=0.6`: a tag with a score comparison."""
        assert term.key is not None and term.op is not None
        if term.op not in SCORE_OPS:
            raise QueryError(
                f"a tag's score takes >=, >, <= or <, not '{term.op}'", column=term.column
            )
        value = number(term.value, term.op)
        return self.tag(term.key, source=term.source, threshold=(term.op, value))

    def category_tag(self, term: Term, category: str) -> Part:
        """`character:*`, `character:hatsune_miku`, `character:miku|rin`, `character:x>=0.8`."""
        alternatives: list[Part] = []
        names = [v.text.replace(" ", "_") for v in term.values if _is_plain(v)]
        if len(names) > 1 and term.source is None:
            alternatives.append(self.meaning.any_name(names, category))
        for value in term.values:
            if len(names) > 1 and term.source is None and _is_plain(value):
                continue
            threshold = None
            if split := split_comparison(value):
                value, op, limit = split
                if op not in SCORE_OPS:
                    raise QueryError(
                        f"a tag's score takes >=, >, <= or <, not '{op}'", column=limit.column
                    )
                threshold = (op, number(limit, op))
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
            wanted = sorted({rating_index(v) for v in term.values})
            condition = s.value == wanted[0] if len(wanted) == 1 else s.value.in_(wanted)
        elif term.op in _OPS:
            condition = _OPS[term.op](s.value, rating_index(term.value))
        else:
            raise _bad_op(term)
        return Ids(select(s.image_id).where(s.name == RATING_SCORE, condition), one_seek=True)

    # -- image metadata ----------------------------------------------------------

    def aspect(self, term: Term) -> ColumnElement[bool]:
        w, h = Image.width, Image.height
        if term.op == ":" and not any(looks_numeric(v.text) for v in term.values):
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
            wanted = literal(ratio(value, term.op))
            if term.op in (":", "="):
                conditions.append(func.abs(w - wanted * h) < 0.01 * h)
            elif term.op == "!=":
                conditions.append(func.abs(w - wanted * h) >= 0.01 * h)
            else:
                conditions.append(_OPS[term.op](w, wanted * h))
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
            rows = select(f.image_id).where(present, in_folder(f, value.text, self.base))
            alternatives.append(Ids(rows))
        return any_of(alternatives)

    def status(self, term: Term) -> ColumnElement[bool]:
        _require(term, ":", "=", "!=")
        wanted = [choice(v, STATUSES, "status") for v in term.values]
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
        return any_of([states[choice(v, tuple(states), "state")]() for v in term.values])

    def has(self, term: Term) -> Part:
        _require(term, ":")

        def rows_of(table: type, *where: Callable[[Any], Any]) -> Callable[[], Ids]:
            def build() -> Ids:
                row = aliased(table)
                return Ids(select(row.image_id).where(*(w(row) for w in where)))

            return build

        what: dict[str, Callable[[], Part]] = {
            "caption": rows_of(Caption),
            "tags": self.meaning.has_tags,
            "infotext": rows_of(Generation),
            "faces": rows_of(Detection, lambda d: d.detector == "faces"),
            "embedding": rows_of(Embedding),
        }
        return any_of([what[choice(v, tuple(what), "'has:' value")]() for v in term.values])

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
        parse = parse or number
        numbers = [parse(v, term.op) for v in term.values]
        if len(numbers) > 1:  # `key:a|b`
            return column.in_(numbers)
        return _OPS[term.op](column, numbers[0])


def _plain_tag(node: Node) -> str | None:
    """The name of a bare exact tag term (`cat`, `"long hair"`), else None."""
    if isinstance(node, Term) and node.key is None and node.source is None:
        if _is_plain(node.value) and _rating_word(node) is None:
            return node.value.text.replace(" ", "_")
    return None


def _is_plain(value: Value) -> bool:
    """An exact name: no wildcard, no score threshold."""
    return not value.has_wildcard and split_comparison(value) is None


def _score_test(threshold: tuple[str, float]) -> Callable[[Any], ColumnElement[bool]]:
    """A tag row's score (a tag by hand counts 1.0) against a threshold."""
    op, limit = threshold
    return lambda it: _OPS[op](func.coalesce(it.score, 1.0), limit)


def _rating_word(term: Term) -> Term | None:
    """A bare rating name (`explicit`, `-general`) means `rating:NAME`, as a user expects:
    the rating tags a tagger writes are scores, so the tag rows are not the rating.
    A quoted word (`"explicit"`) is the tag."""
    value = term.value
    if term.source is None and not value.quoted and value.text.lower() in RATINGS:
        key = Value((("rating", False),), term.column)
        return Term(key, ":", (value,), term.column, term.text)
    return None


def _source_match(column: Any, source: str) -> ColumnElement[bool]:
    """`model` matches every model; `model:NAME` may use `*`."""
    if source == "model":
        return column.like("model:%")
    if "*" in source:
        pattern = source.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return like_ci(column, pattern.replace("*", "%"), escape="\\")
    return column == source


def _require(term: Term, *ops: str) -> None:
    if term.op not in ops:
        raise _bad_op(term)


def _bad_op(term: Term) -> QueryError:
    assert term.key is not None
    return QueryError(
        f"'{shown(term.key.text)}' cannot be used with '{term.op}'", column=term.column
    )
