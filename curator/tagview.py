"""The tags an image effectively has, merged over every source.

Sources are `user`, `sidecar` and `model:NAME`. A person's word wins: a tag the
user removed (a `user-removed` row) stays hidden whatever a model re-run says.
Several sources with the same tag give one tag with the highest score (a tag set
by hand counts as score 1.0).

Curation rules (`curator.tagrules`) apply on top: a row under an alias reads as its
canonical tag, blacklisted tags are dropped, and with `implied=True` tags implied by
the image's tags are added (source `implied`) unless the user removed or blacklisted
them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from curator.tagrules import TagRules
from db.schema import ImageTag, Tag

USER = "user"
USER_REMOVED = "user-removed"
SIDECAR = "sidecar"
IMPLIED = "implied"
RATINGS = ("general", "sensitive", "questionable", "explicit")


def model_source(name: str) -> str:
    return f"model:{name}"


@dataclass(frozen=True, slots=True)
class TagRow:
    name: str
    category: str
    score: float
    sources: tuple[str, ...]


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
    """Add implied tags, scored as the best tag implying them, in place."""
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
                if target not in kept and (image_id, target) not in removed:
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
