"""Sets of image ids for the query compiler, combined the way SQLite runs them fast.

A term about another table (tags, scores, captions, files, ...) becomes an `Ids`:
a one-column SELECT of `image_id`. Terms ANDed together become ONE `images.id IN
(a INTERSECT b INTERSECT c ORDER BY 1)`: with the ORDER BY, SQLite merges the
arms as sorted streams (each tag arm comes sorted from the image_tags(tag_id,
image_id, score) index) instead of building a temporary table per term.

Tags a user removed are kept apart (`Ids.hidden`): (A − Ra) ∩ (B − Rb) is
(A ∩ B) − (Ra ∪ Rb), so an AND of tags subtracts one small set once, instead of
probing for a `user-removed` row beside every candidate row.

Every subquery uses its own aliases, so nothing correlates with the caller's
statement (which may itself select from image_tags). `probe(part)` is the other
form of the same part: per-image EXISTS tests correlated with `images.id`, for a
plan that walks `images` in id order and stops after a page of matches.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Select,
    and_,
    except_,
    exists,
    false,
    intersect,
    literal_column,
    not_,
    or_,
    select,
    true,
    union,
)
from sqlalchemy.orm import aliased

from curator.tags.view import USER_REMOVED
from db.schema import Image, ImageTag, Tag

# SQLite refuses a compound SELECT of more than 500 arms; longer ANDs and ORs are split.
MAX_ARMS = 200
# SQLite parses `a AND b AND ...` into a tree as deep as the list, and refuses depth 1000:
# long lists go in parenthesised groups.
GROUP = 50
# Written into the SQL, not bound, so SQLite sees it matches the partial index's WHERE.
USER_REMOVED_SQL = literal_column(f"'{USER_REMOVED}'")

Selectable = Select | CompoundSelect


@dataclass(frozen=True, slots=True)
class Ids:
    """Image ids `select` (minus `hidden`), or every image but those when `negated`.

    `one_seek`: testing one image is one index seek (an exact tag, a named score), not
    one per tag a pattern matches; such sets are probed first.
    """

    select: Selectable
    hidden: Selectable | None = None
    negated: bool = False
    one_seek: bool = False


Part = ColumnElement[bool] | Ids


def to_expression(part: Part) -> ColumnElement[bool]:
    """The boolean expression over `Image` for a part."""
    if not isinstance(part, Ids):
        return part
    if part.negated:
        if part.hidden is None:
            return Image.id.not_in(part.select)
        return Image.id.not_in(except_(arm(part.select), arm(part.hidden)))
    condition = Image.id.in_(part.select)
    if part.hidden is None:
        return condition
    return and_(condition, Image.id.not_in(part.hidden))


def probe(part: Part) -> ColumnElement[bool]:
    """The part as tests of one image (`images.id`), each an index seek: same rows as
    `to_expression`, fast when an early page of images holds many matches."""
    if not isinstance(part, Ids):
        return part
    found = _exists(part.select)
    if part.hidden is not None:
        found = and_(found, not_(_exists(part.hidden)))
    return not_(found) if part.negated else found


def _exists(selectable: Selectable) -> ColumnElement[bool]:
    if isinstance(selectable, CompoundSelect):
        arms = [_exists(s) for s in selectable.selects]
        keyword = selectable.keyword.value
        if keyword == "UNION":
            return any_true(arms)
        if keyword == "INTERSECT":
            return all_true(arms)
        raise AssertionError(keyword)  # pragma: no cover: the compiler makes no other
    return selectable.where(selectable.selected_columns[0] == Image.id).exists()


def all_of(parts: list[Part]) -> Part:
    """AND: positive id sets intersect in one merged compound; the rest are filters."""
    positive = [p for p in parts if isinstance(p, Ids) and not p.negated]
    others = [to_expression(p) for p in parts if not (isinstance(p, Ids) and not p.negated)]
    if not positive:
        return all_true(others)
    if len(positive) > MAX_ARMS:  # several INTERSECTs, each within SQLite's limit
        chunks = [positive[i : i + MAX_ARMS] for i in range(0, len(positive), MAX_ARMS)]
        return all_true([*(to_expression(all_of(c)) for c in chunks), *others])
    if len(positive) == 1:
        ids = positive[0]
    else:
        merged = intersect(*(arm(p.select) for p in positive)).order_by(literal_column("1"))
        hidden = [p.hidden for p in positive if p.hidden is not None]
        ids = Ids(merged, _union(hidden))
    return ids if not others else all_true([to_expression(ids), *others])


def any_of(parts: list[Part]) -> Part:
    """OR: plain id sets become one UNION; anything else an OR of expressions."""
    if len(parts) > MAX_ARMS:  # several UNIONs, each within SQLite's limit
        chunks = [parts[i : i + MAX_ARMS] for i in range(0, len(parts), MAX_ARMS)]
        return any_true([to_expression(any_of(c)) for c in chunks])
    if all(isinstance(p, Ids) and not p.negated and p.hidden is None for p in parts):
        return Ids(_union([p.select for p in parts]))  # type: ignore[union-attr]
    return any_true([to_expression(p) for p in parts])


def all_true(conditions: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    """AND of many conditions, nested so SQLite's expression tree stays shallow."""
    if not conditions:
        return true()
    while len(conditions) > GROUP:
        groups = [conditions[i : i + GROUP] for i in range(0, len(conditions), GROUP)]
        conditions = [and_(*g).self_group() for g in groups]
    return and_(*conditions)


def any_true(conditions: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    """OR of many conditions, nested so SQLite's expression tree stays shallow."""
    if not conditions:
        return false()
    while len(conditions) > GROUP:
        groups = [conditions[i : i + GROUP] for i in range(0, len(conditions), GROUP)]
        conditions = [or_(*g).self_group() for g in groups]
    return or_(*conditions)


def negate(part: Part) -> Part:
    if isinstance(part, Ids):
        return replace(part, negated=not part.negated)
    return not_(part)


def arm(selectable: Selectable) -> Select:
    """A compound as one arm of another (SQLite takes no parentheses there)."""
    if isinstance(selectable, CompoundSelect):
        sub = selectable.subquery()
        return select(sub.c.image_id)
    return selectable


def _union(selects: list[Selectable]) -> Selectable | None:
    if not selects:
        return None
    if len(selects) == 1:
        return selects[0]
    return union(*(arm(s) for s in selects))


def tag_ids(
    tag_filter: list[Any],
    *,
    exact: bool,
    source: Any | None = None,
    score: Any | None = None,
) -> Ids:
    """Images that effectively have a tag picked by `tag_filter` (conditions on `Tag`).

    `source(column)` and `score(column, image_tags alias)` narrow the rows. With
    `exact` the filter picks at most one tag, read as a scalar subquery so its rows
    come in image order from the index, and removals go to `hidden`.
    """
    it = aliased(ImageTag)
    where: list[Any] = []
    if exact:
        where.append(it.tag_id == _tag_select(tag_filter).scalar_subquery())
    elif tag_filter:
        where.append(it.tag_id.in_(_tag_select(tag_filter)))
    if source is not None:
        where.append(source(it.source))
    if score is not None:
        where.append(score(it))
    if exact:
        removed = aliased(ImageTag)
        hidden = select(removed.image_id).where(
            removed.source == USER_REMOVED_SQL,
            removed.tag_id == _tag_select(tag_filter).scalar_subquery(),
        )
        return Ids(select(it.image_id).where(*where), hidden, one_seek=True)
    where.append(not_removed(it, tag_filter))
    return Ids(select(it.image_id).where(*where))


def not_removed(it: Any, tag_filter: list[Any] | None = None) -> ColumnElement[bool]:
    """No `user-removed` row hides this row's tag on this image.

    The cheap test first: most images have no removal among these tags at all, and
    only those that do are probed row by row.
    """
    removed = aliased(ImageTag)
    candidates = select(removed.image_id).where(removed.source == USER_REMOVED_SQL)
    if tag_filter:
        candidates = candidates.where(removed.tag_id.in_(_tag_select(tag_filter)))
    pair = aliased(ImageTag)
    return or_(
        it.image_id.not_in(candidates),
        ~exists().where(
            pair.tag_id == it.tag_id,
            pair.image_id == it.image_id,
            pair.source == USER_REMOVED_SQL,
        ),
    )


def _tag_select(tag_filter: list[Any]) -> Select:
    """`SELECT tags.id WHERE <filter>`; the filter is built on `Tag` and re-aliased here."""
    t = aliased(Tag)
    return select(t.id).where(*(f(t) for f in tag_filter))
