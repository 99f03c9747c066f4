"""The tags an image effectively has, merged over every source.

Sources are `user`, `sidecar` and `model:NAME`. A person's word wins: a tag the
user removed (a `user-removed` row) stays hidden whatever a model re-run says.
Several sources with the same tag give one tag with the highest score (a tag set
by hand counts as score 1.0).

Curation rules (`curator.tags.rules`) apply on top: a row under an alias reads as its
canonical tag, blacklisted tags are dropped, and with `implied=True` tags implied by
the image's tags are added (source `implied`) unless the user removed or blacklisted
them; an implied tag scores as the best tag implying it, so a tag that is also there
on its own scores at least that (the query language compares the same score).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.schema import ImageTag, Tag, TagRule

USER = "user"
USER_REMOVED = "user-removed"
SIDECAR = "sidecar"
IMPLIED = "implied"
RATINGS = ("general", "sensitive", "questionable", "explicit")

ALIAS = "alias"
IMPLICATION = "implication"
BLACKLIST = "blacklist"
TRIGGER = "trigger"
RULE_KINDS = (ALIAS, IMPLICATION, BLACKLIST, TRIGGER)

_SPACES = re.compile(r"\s+")


def model_source(name: str) -> str:
    return f"model:{name}"


@dataclass(frozen=True, slots=True)
class TagRow:
    name: str
    category: str
    score: float
    sources: tuple[str, ...]


def normalize_tag(text: str) -> str:
    """A tag as typed (`long hair`) in booru spelling (`long_hair`), as sidecars are read."""
    return _SPACES.sub("_", text.strip())


@dataclass(frozen=True, slots=True)
class TagRules:
    """Every rule of a catalog, loaded once; cheap to query."""

    aliases: Mapping[str, str] = field(default_factory=dict)  # alias → canonical
    implications: Mapping[str, frozenset[str]] = field(default_factory=dict)
    blacklist: frozenset[str] = frozenset()
    triggers: tuple[str, ...] = ()

    @classmethod
    def load(cls, session: Session) -> TagRules:
        aliases: dict[str, str] = {}
        implications: dict[str, set[str]] = {}
        blacklist: set[str] = set()
        triggers: list[str] = []
        rows = session.execute(
            select(TagRule.kind, TagRule.tag, TagRule.target).order_by(TagRule.id)
        ).all()
        for kind, tag, target in rows:
            if kind == ALIAS:
                aliases[tag] = target
            elif kind == IMPLICATION:
                implications.setdefault(tag, set()).add(target)
            elif kind == BLACKLIST:
                blacklist.add(tag)
            elif kind == TRIGGER and tag not in triggers:
                triggers.append(tag)
        rules = cls(aliases=aliases)
        # Rules written before an alias existed may name the alias: read them canonically.
        canonical_implications: dict[str, set[str]] = {}
        for tag, targets in implications.items():
            canonical_implications.setdefault(rules.canonical(tag), set()).update(
                rules.canonical(t) for t in targets
            )
        return cls(
            aliases=aliases,
            implications={k: frozenset(v) for k, v in canonical_implications.items()},
            blacklist=frozenset(rules.canonical(t) for t in blacklist),
            triggers=tuple(triggers),
        )

    @property
    def empty(self) -> bool:
        return not (self.aliases or self.implications or self.blacklist or self.triggers)

    def canonical(self, name: str) -> str:
        """The canonical spelling of a tag (itself when it is no alias)."""
        seen = {name}
        while name in self.aliases:
            name = self.aliases[name]
            if name in seen:  # a cycle can only come from hand-edited rows; stop on it
                break
            seen.add(name)
        return name

    def spellings(self, canonical: str) -> set[str]:
        """The canonical name and every alias that leads to it."""
        return {canonical} | {a for a in self.aliases if self.canonical(a) == canonical}

    def is_blacklisted(self, name: str) -> bool:
        return self.canonical(name) in self.blacklist

    def implied_by(self, name: str) -> set[str]:
        """Every tag `name` implies, following chains (not including `name`)."""
        out: set[str] = set()
        stack = [self.canonical(name)]
        while stack:
            for target in self.implications.get(stack.pop(), ()):
                if target not in out:
                    out.add(target)
                    stack.append(target)
        out.discard(self.canonical(name))
        return out

    def implied(self, names: Iterable[str]) -> dict[str, str]:
        """Tags implied by `names` and not among them: implied tag → a tag implying it."""
        present = {self.canonical(n) for n in names}
        out: dict[str, str] = {}
        for name in sorted(present):
            for target in sorted(self.implied_by(name)):
                if target not in present:
                    out.setdefault(target, name)
        return out


def effective_tags(
    session: Session,
    image_ids: Sequence[int],
    *,
    rules: TagRules | None = None,
    apply_rules: bool = True,
    implied: bool = False,
) -> dict[int, list[TagRow]]:
    """image id → its tags (sorted by score, then name), for many images at once.

    `rules` saves loading the catalog's rules again when calling often; with
    `apply_rules=False` the raw rows are merged as they are (no alias, blacklist or
    implication), e.g. to show a user what the models said.
    """
    if not apply_rules:
        rules = TagRules()
    elif rules is None:
        rules = TagRules.load(session)
    merged: dict[int, dict[str, list]] = {i: {} for i in image_ids}
    removed: set[tuple[int, str]] = set()
    for chunk in _chunks(image_ids, 900):
        rows = session.execute(
            select(ImageTag.image_id, Tag.name, Tag.category, ImageTag.source, ImageTag.score)
            .join(Tag, Tag.id == ImageTag.tag_id)
            .where(ImageTag.image_id.in_(chunk))
        ).all()
        for image_id, raw_name, category, source, score in rows:
            name = rules.canonical(raw_name)
            if source == USER_REMOVED:
                removed.add((image_id, name))
                continue
            value = 1.0 if score is None else float(score)
            entry = merged[image_id].setdefault(name, [category, value, []])
            if raw_name == name:  # the canonical tag's own category wins over an alias's
                entry[0] = category
            entry[1] = max(entry[1], value)
            entry[2].append(source)
    if implied and rules.implications:
        _add_implied(session, rules, merged, removed)
    out: dict[int, list[TagRow]] = {}
    for image_id, tags in merged.items():
        rows = [
            TagRow(name, cat, score, tuple(sorted(set(srcs))))
            for name, (cat, score, srcs) in tags.items()
            if (image_id, name) not in removed and name not in rules.blacklist
        ]
        rows.sort(key=lambda r: (-r.score, r.name))
        out[image_id] = rows
    return out


def _add_implied(
    session: Session,
    rules: TagRules,
    merged: dict[int, dict[str, list]],
    removed: set[tuple[int, str]],
) -> None:
    """Add implied tags, scored as the best tag implying them, in place; a tag both present
    and implied keeps the higher of its own score and theirs."""
    wanted: dict[int, dict[str, float]] = {}
    for image_id, tags in merged.items():
        kept = {
            n: e[1]
            for n, e in tags.items()
            if (image_id, n) not in removed and n not in rules.blacklist
        }
        extra: dict[str, float] = {}
        for name, score in kept.items():
            for target in rules.implied_by(name):
                if (image_id, target) in removed:
                    continue
                if target in kept:  # `long_hair` at 0.8 makes `hair` at least 0.8 likely
                    tags[target][1] = max(tags[target][1], score)
                else:
                    extra[target] = max(extra.get(target, 0.0), score)
        if extra:
            wanted[image_id] = extra
    names = sorted({n for extra in wanted.values() for n in extra})
    categories: dict[str, str] = {}
    for i in range(0, len(names), 900):
        chunk = names[i : i + 900]
        categories.update(
            session.execute(select(Tag.name, Tag.category).where(Tag.name.in_(chunk))).all()
        )
    for image_id, extra in wanted.items():
        for name, score in extra.items():
            merged[image_id][name] = [categories.get(name, "general"), score, [IMPLIED]]


def top_rating(tags: Iterable[TagRow]) -> str | None:
    """The highest-scoring rating tag, as the WD14 reference picks it."""
    ratings = [t for t in tags if t.category == "rating"]
    return max(ratings, key=lambda t: t.score).name if ratings else None


def _chunks(seq: Sequence[int], n: int) -> Iterable[Sequence[int]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]
