"""What "the image has tag T" means in a query: the tags `effective_tags(..., implied=True)`
lists (`curator.tags.view`), so queries, `tags show`, `tags top` and exports agree.

An image has T when T is not blacklisted, no `user-removed` row of T (under any
spelling) is on the image, and it has a row of T under any spelling (T or an alias of
it) from any source, or has effectively a tag that implies T (chains followed). The
typed name is read canonically: an alias finds its canonical tag. A score threshold
compares the best score over all of these rows (a tag set by hand counts 1.0).

Two ways to know the rules, giving the same rows:
- `KnownRules`: the rules loaded (`page_ids` loads them; pass `rules=` or `db=` to
  `compile_query`) are written into the SQL as literal names. A tag no rule touches
  compiles to the single index range of before, so rules cost nothing where unused.
  Given a connection (`TagIds`), the tag names are looked up first and the SQL holds
  their ids: PostgreSQL's planner then reads from its statistics how common each tag
  is (a popular tag is walked in image order, a rare one read whole), which it cannot
  see through `tag_id = (SELECT id FROM tags WHERE name = ...)`.
- `StoredRules`: `compile_query(text)` takes no session, so its SQL reads `tag_rules`
  itself (subqueries and a recursive CTE over the few rule rows).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    bindparam,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    union,
)
from sqlalchemy.orm import Session, aliased

from curator.query.parser import Value
from curator.query.sets import USER_REMOVED_SQL, Ids, Part, any_of
from curator.tags.view import ALIAS, BLACKLIST, IMPLICATION, TagRules
from db.schema import Image, ImageTag, Tag, TagRule
from db.sql import like_ci

RowTest = Callable[[Any], ColumnElement[bool]]  # a condition on an image_tags alias


class Meaning:
    """Builds the id set of images that effectively have a tag."""

    def exact(
        self, name: str, *, category: str | None, source: RowTest | None, score: RowTest | None
    ) -> Part:
        raise NotImplementedError

    def pattern(
        self, value: Value, *, category: str | None, source: RowTest | None, score: RowTest | None
    ) -> Part:
        raise NotImplementedError

    def any_name(self, names: list[str], category: str | None) -> Part:
        """`a|b|c`: images with any of these tags."""
        return any_of([self.exact(n, category=category, source=None, score=None) for n in names])

    def has_tags(self) -> ColumnElement[bool]:
        """Probed per image (`has:tags`): some row that is neither removed nor blacklisted."""
        raise NotImplementedError


# --- the rules known at compile time ------------------------------------------------

# Tags a pattern may match before its ids stop being written into the SQL (the subquery
# then stays: a long literal list costs more to send and plan than it saves).
MAX_INLINED_IDS = 2000


class TagIds:
    """Tag names looked up once per compiled query, to be written into the SQL as ids."""

    def __init__(self, db: Session | Connection):
        self.db = db
        self.known: dict[str, tuple[int, str] | None] = {}  # name → (id, category)

    def lookup(self, names: list[str]) -> None:
        missing = sorted({n for n in names if n not in self.known})
        for i in range(0, len(missing), 500):
            chunk = missing[i : i + 500]
            self.known.update(dict.fromkeys(chunk))
            rows = self.db.execute(
                select(Tag.name, Tag.id, Tag.category).where(Tag.name.in_(chunk))
            ).all()
            self.known.update({name: (tag_id, category) for name, tag_id, category in rows})

    def ids(self, names: list[str], category: str | None = None) -> list[int]:
        """Ids of the tags with these names (and `category`) that exist, in id order."""
        self.lookup(names)
        found = (self.known[n] for n in names)
        return sorted({f[0] for f in found if f and (category is None or f[1] == category)})

    def matching(self, tag_select: Select) -> list[int] | None:
        """Ids a `SELECT tags.id` picks, or None when there are too many to inline."""
        ids = list(self.db.execute(tag_select.limit(MAX_INLINED_IDS + 1)).scalars())
        return None if len(ids) > MAX_INLINED_IDS else sorted(ids)


def inlined(ids: list[int]) -> Any:
    """Ids written into the statement's text (bound values may reach a prepared statement's
    generic plan, which knows nothing of how common each tag is)."""
    return bindparam("tag_ids", ids, expanding=True, literal_execute=True, unique=True)


class KnownRules(Meaning):
    def __init__(self, rules: TagRules, ids: TagIds | None = None):
        self.rules = rules
        self.tag_ids = ids
        implying: dict[str, set[str]] = {}
        for tag in rules.implications:
            for target in rules.implied_by(tag):
                implying.setdefault(target, set()).add(tag)
        self.implying = implying
        self.alias_groups: dict[str, set[str]] = {}
        for alias in rules.aliases:
            canonical = rules.canonical(alias)
            self.alias_groups.setdefault(canonical, {canonical}).add(alias)

    def touched(self, name: str) -> bool:
        """Whether any rule changes what `name` means."""
        return (
            name in self.rules.aliases
            or name in self.alias_groups
            or name in self.rules.blacklist
            or name in self.implying
        )

    def touched_names(self) -> set[str]:
        """Every tag name some rule changes the meaning of."""
        return (
            set(self.rules.aliases)
            | set(self.alias_groups)
            | set(self.rules.blacklist)
            | set(self.implying)
        )

    def spellings(self, canonical: str) -> list[str]:
        return sorted(self.alias_groups.get(canonical, {canonical}))

    def exact(
        self, name: str, *, category: str | None, source: RowTest | None, score: RowTest | None
    ) -> Part:
        tag = self.rules.canonical(name)
        if tag in self.rules.blacklist:
            return false()
        # Implied tags have the source `implied`: a source-qualified term reads rows only.
        groups = [tag] if source is not None else [tag, *sorted(self.implying.get(tag, ()))]
        groups = [g for g in groups if g not in self.rules.blacklist]
        names = sorted({s for g in groups for s in self.spellings(g)})
        if names == [tag]:
            return self._single(tag, category, source, score)
        it = aliased(ImageTag)
        where = [self._in(it.tag_id, names)]
        where += _row_tests(it, source, score)
        if category is not None:
            where.append(_category_is(literal(tag), category))
        multi = [self.spellings(g) for g in groups if len(self.spellings(g)) > 1]
        where.append(self._kept(it, lambda c: self._in(c, names), multi))
        return Ids(select(it.image_id).where(*where), self._removed_rows(self.spellings(tag)))

    def pattern(
        self, value: Value, *, category: str | None, source: RowTest | None, score: RowTest | None
    ) -> Part:
        matches = _matcher(value)
        rules = self.rules
        it = aliased(ImageTag)
        # Rows under a canonical name that matches, or under an alias whose canonical does.
        excluded = sorted(set(rules.aliases) | rules.blacklist)
        extra = sorted(
            a
            for a in rules.aliases
            if matches(rules.canonical(a)) and rules.canonical(a) not in rules.blacklist
        )
        t = aliased(Tag)
        own: list[Any] = [t.name.not_in(excluded)] if excluded else []
        if value.text.strip("*"):
            own.append(like_ci(t.name, value.like_pattern(), escape="\\"))
        by_name = and_(*own) if own else None
        if extra and by_name is not None:  # no exclusion: aliases match like any name
            by_name = or_(by_name, t.name.in_(extra))
        tag_select = select(t.id)
        if by_name is not None:
            tag_select = tag_select.where(by_name)
        if category is not None:
            tag_select = tag_select.where(t.category == category)
        ids = self.tag_ids.matching(tag_select) if self.tag_ids is not None else None

        def in_tags(column: Any) -> ColumnElement[bool]:
            if ids is None:
                return column.in_(tag_select)
            return _in_ids(column, ids)

        where = [in_tags(it.tag_id)]
        where += _row_tests(it, source, score)
        groups = [
            self.spellings(c) for c in self.alias_groups if matches(c) and c not in rules.blacklist
        ]
        where.append(self._kept(it, in_tags, groups))
        parts: list[Part] = [Ids(select(it.image_id).where(*where))]
        if source is None:  # images that imply a matching tag
            for target in sorted(self.implying):
                if matches(target) and target not in rules.blacklist:
                    parts.append(self.exact(target, category=category, source=None, score=score))
        return any_of(parts)

    def any_name(self, names: list[str], category: str | None) -> Part:
        plain = [n for n in names if not self.touched(n)]
        touched = [n for n in names if self.touched(n)]
        parts: list[Part] = []
        if len(plain) == 1:
            touched.append(plain[0])
        elif plain:  # one pass over the rows of several tags beats a union of passes
            it = aliased(ImageTag)
            rows = select(it.image_id).where(
                self._in(it.tag_id, plain, category),
                self._kept(it, lambda c: self._in(c, plain), []),
            )
            parts.append(Ids(rows))
        parts += [self.exact(n, category=category, source=None, score=None) for n in touched]
        return any_of(parts)

    def has_tags(self) -> ColumnElement[bool]:
        it = aliased(ImageTag)
        groups = [self.spellings(c) for c in self.alias_groups]
        where = [it.image_id == Image.id, self._kept(it, None, groups)]
        hidden = sorted({s for b in self.rules.blacklist for s in self.spellings(b)})
        if hidden:
            where.append(not_(self._in(it.tag_id, hidden)))
        return exists().where(*where)

    # -- tags by name: ids looked up first (`TagIds`) or a subquery on `tags` -----------

    def _in(
        self, column: Any, names: list[str], category: str | None = None, *, seek: bool = False
    ) -> Any:
        """`column` (a tag id) is the id of one of these tags (in `category`). `seek`: as
        `= (scalar subquery)` for one tag, whose rows then come in image order from one
        index range (never negated: a missing tag makes it NULL, not false)."""
        if self.tag_ids is not None:
            return _in_ids(column, self.tag_ids.ids(names, category))
        t = aliased(Tag)
        if seek and len(names) == 1 and category is None:
            return column == select(t.id).where(t.name == names[0]).scalar_subquery()
        tags = select(t.id).where(t.name.in_(names))
        if category is not None:
            tags = tags.where(t.category == category)
        return column.in_(tags)

    def _single(
        self, tag: str, category: str | None, source: RowTest | None, score: RowTest | None
    ) -> Part:
        """A tag no rule touches: its rows come in image order from one index range."""
        if self.tag_ids is not None and not self.tag_ids.ids([tag], category):
            return false()  # no such tag (in that category): nothing to read
        it = aliased(ImageTag)
        if self.tag_ids is not None or category is None:
            tag_is = self._in(it.tag_id, [tag], category, seek=True)
        else:
            t = aliased(Tag)
            tag_id = select(t.id).where(t.name == tag, t.category == category)
            tag_is = it.tag_id == tag_id.scalar_subquery()
        # A `user-removed` row is read with the others: `hidden` drops its image anyway, and
        # the index (tag_id, image_id, score) answers without touching the table.
        where = [tag_is, *_row_tests(it, source, score)]
        removed = aliased(ImageTag)
        hidden = select(removed.image_id).where(
            removed.source == USER_REMOVED_SQL,
            self._in(removed.tag_id, [tag], category, seek=True),
        )
        return Ids(select(it.image_id).where(*where), hidden, one_seek=True)

    def _removed_rows(self, names: list[str]) -> Select:
        removed = aliased(ImageTag)
        return select(removed.image_id).where(
            removed.source == USER_REMOVED_SQL, self._in(removed.tag_id, names, seek=True)
        )

    def _kept(
        self, it: Any, in_tags: Callable[[Any], Any] | None, groups: list[list[str]]
    ) -> ColumnElement[bool]:
        """Row `it` is no `user-removed` row, and none hides its tag (under any spelling in
        `groups`); `in_tags(column)` holds for every tag `it` may have.

        The cheap test first: most images have no removal among these tags at all, and only
        those that do are probed row by row (a removed row finds itself).
        """
        removed = aliased(ImageTag)
        candidates = select(removed.image_id).where(removed.source == USER_REMOVED_SQL)
        if in_tags is not None:
            candidates = candidates.where(in_tags(removed.tag_id))
        pair = aliased(ImageTag)
        checks = [
            ~exists().where(
                pair.tag_id == it.tag_id,
                pair.image_id == it.image_id,
                pair.source == USER_REMOVED_SQL,
            )
        ]
        for group in groups:
            other = aliased(ImageTag)
            checks.append(
                or_(
                    not_(self._in(it.tag_id, group)),
                    ~exists().where(
                        other.image_id == it.image_id,
                        other.source == USER_REMOVED_SQL,
                        self._in(other.tag_id, group),
                    ),
                )
            )
        return or_(it.image_id.not_in(candidates), and_(*checks))


def _in_ids(column: Any, ids: list[int]) -> Any:
    if not ids:
        return false()
    if len(ids) == 1:
        return column == literal(ids[0], literal_execute=True)
    return column.in_(inlined(ids))


def _row_tests(it: Any, source: RowTest | None, score: RowTest | None) -> list[Any]:
    out = []
    if source is not None:
        out.append(source(it.source))
    if score is not None:
        out.append(score(it))
    return out


def _category_is(name: Any, category: str) -> ColumnElement[bool]:
    """The effective category of tag `name` (a tag never seen as a row reads `general`)."""
    t = aliased(Tag)
    if category == "general":
        return ~exists().where(t.name == name, t.category != "general")
    return exists().where(t.name == name, t.category == category)


def _matcher(value: Value) -> Callable[[str], bool]:
    """The LIKE pattern of a wildcard value as a Python test (ASCII case-insensitive)."""
    regex = "".join(
        re.escape(text) if quoted else ".*".join(re.escape(p) for p in text.split("*"))
        for text, quoted in value.map(lambda s: s.replace(" ", "_")).parts
    )
    compiled = re.compile(regex, re.IGNORECASE | re.ASCII | re.DOTALL)
    return lambda name: compiled.fullmatch(name) is not None


# --- the rules read by the SQL itself ---------------------------------------------------


def _rule(kind: str) -> Any:
    r = aliased(TagRule)
    return r, r.kind == kind


def _canonical(name: Any) -> ColumnElement[str]:
    """A tag name read canonically (aliases are kept one step deep by `tags alias`)."""
    r, is_alias = _rule(ALIAS)
    # Correlated with whatever `name` comes from, however deep it sits.
    target = select(r.target).where(is_alias, r.tag == name).limit(1).correlate_except(r)
    target = target.scalar_subquery()
    return func.coalesce(target, name)


def _blacklisted(name: Any) -> ColumnElement[bool]:
    r, is_black = _rule(BLACKLIST)
    return select(r.id).where(is_black, r.tag == name).correlate_except(r).exists()


def _spellings_of(names: Select) -> Select:
    """Names and every alias that leads to one of them."""
    r, is_alias = _rule(ALIAS)
    return union(names, select(r.tag).where(is_alias, r.target.in_(names)))


def _implying(name: Any) -> Select:
    """`name` and every tag that implies it, through chains, not blacklisted."""
    r, is_implication = _rule(IMPLICATION)
    up = select(name.label("name")).cte("implying", recursive=True, nesting=True)
    up = up.union(select(r.tag).where(is_implication, r.target == up.c.name))
    return select(up.c.name).where(~_blacklisted(up.c.name))


def _closure() -> Any:
    """Every (tag, implied tag) pair, following chains."""
    r, is_implication = _rule(IMPLICATION)
    pairs = select(r.tag.label("tag"), r.target.label("target")).where(is_implication)
    pairs = pairs.cte("implications", recursive=True, nesting=True)
    step, is_step = _rule(IMPLICATION)
    return pairs.union(select(pairs.c.tag, step.target).where(is_step, step.tag == pairs.c.target))


def _row_name(it: Any) -> ColumnElement[str]:
    t = aliased(Tag)
    # Correlated by hand: it sits a few subqueries below the select over `it`.
    return select(t.name).where(t.id == it.tag_id).correlate_except(t).scalar_subquery()


def _removed_on_image(it: Any, canonical: Any) -> ColumnElement[bool]:
    """A `user-removed` row on `it`'s image of any spelling of tag `canonical`."""
    removed = aliased(ImageTag)
    t = aliased(Tag)
    return (
        select(removed.id)
        .join(t, t.id == removed.tag_id)
        .where(
            removed.image_id == it.image_id,
            removed.source == USER_REMOVED_SQL,
            _canonical(t.name) == canonical,
        )
        .correlate_except(removed, t)
        .exists()
    )


def _kept_stored(it: Any, tag_ids: Select) -> ColumnElement[bool]:
    """No `user-removed` row hides `it`'s tag; `tag_ids` holds it (the cheap test first)."""
    removed = aliased(ImageTag)
    candidates = select(removed.image_id).where(
        removed.source == USER_REMOVED_SQL, removed.tag_id.in_(tag_ids)
    )
    return or_(
        it.image_id.not_in(candidates), not_(_removed_on_image(it, _canonical(_row_name(it))))
    )


class StoredRules(Meaning):
    def exact(
        self, name: str, *, category: str | None, source: RowTest | None, score: RowTest | None
    ) -> Part:
        tag = _canonical(literal(name))
        groups = select(tag.label("name")) if source is not None else _implying(tag)
        it = aliased(ImageTag)
        t = aliased(Tag)
        tag_ids = select(t.id).where(t.name.in_(_spellings_of(groups)))
        where = [
            it.tag_id.in_(tag_ids),
            it.source != USER_REMOVED_SQL,
            ~_blacklisted(tag),
            *_row_tests(it, source, score),
            _kept_stored(it, tag_ids),
        ]
        if category is not None:
            where.append(_category_is(tag, category))
        removed = aliased(ImageTag)
        rt = aliased(Tag)
        hidden = select(removed.image_id).where(
            removed.source == USER_REMOVED_SQL,
            removed.tag_id.in_(
                select(rt.id).where(rt.name.in_(_spellings_of(select(tag.label("name")))))
            ),
        )
        return Ids(select(it.image_id).where(*where), hidden)

    def pattern(
        self, value: Value, *, category: str | None, source: RowTest | None, score: RowTest | None
    ) -> Part:
        def matching(name: Any) -> list[Any]:
            out = [~_blacklisted(name)]
            if value.text.strip("*"):
                out.append(like_ci(name, value.like_pattern(), escape="\\"))
            return out

        it = aliased(ImageTag)
        t = aliased(Tag)
        tags = select(t.id).where(*matching(_canonical(t.name)))
        if category is not None:
            tags = tags.where(t.category == category)
        common = [it.source != USER_REMOVED_SQL, *_row_tests(it, source, score)]
        kept = _kept_stored(it, tags)
        parts: list[Part] = [Ids(select(it.image_id).where(it.tag_id.in_(tags), *common, kept))]
        if source is None:  # rows of a tag implying a matching tag the image keeps
            pairs = _closure()
            row_tag = _canonical(_row_name(it))
            target_ok = [
                pairs.c.tag == row_tag,
                *matching(pairs.c.target),
                ~_removed_on_image(it, pairs.c.target),
            ]
            if category is not None:
                target_ok.append(_category_is(pairs.c.target, category))
            implying = select(pairs.c.tag).where(*matching(pairs.c.target))
            implying_ids = select(Tag.id).where(Tag.name.in_(_spellings_of(implying)))
            implied = select(it.image_id).where(
                it.tag_id.in_(implying_ids),
                *common,
                _kept_stored(it, select(Tag.id)),
                ~_blacklisted(row_tag),
                select(pairs.c.tag).where(*target_ok).exists(),
            )
            parts.append(Ids(implied))
        return any_of(parts)

    def has_tags(self) -> ColumnElement[bool]:
        it = aliased(ImageTag)
        return exists().where(
            it.image_id == Image.id,
            it.source != USER_REMOVED_SQL,
            _kept_stored(it, select(Tag.id)),
            ~_blacklisted(_canonical(_row_name(it))),
        )
