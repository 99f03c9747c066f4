"""Tag edits on selections: add, remove, replace, rename, each one undoable edit.

How tag edits treat sources (see `curator.tags.view`):
- adding writes a `user` row (and lifts a `user-removed` mark); a model re-run only
  replaces its own `model:NAME` rows, so a person's tags stay.
- removing deletes the `user` row, and when a model, a sidecar or an implication
  still gives the tag, writes a `user-removed` row that hides it for good.
- `rename_tag` rewrites rows everywhere under the new name, sources kept: a one-off
  rewrite. To make a spelling permanent (models keep writing the old one), alias it.
- `replace_tags` on a selection is a removal plus an addition, as a person's edit.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from curator.curation.changeset import (
    ChangeSet,
    EditResult,
    TagRowData,
    chosen_ids,
    selected_ids,
    tag_rows,
)
from curator.errors import UsageError
from curator.tags.view import (
    IMPLIED,
    USER,
    USER_REMOVED,
    TagRules,
    effective_tags,
    normalize_tag,
)
from db.engine import Catalog
from db.schema import Image, Tag
from db.upsert import lock_rows


def canonical_names(rules: TagRules, tags: Iterable[str]) -> list[str]:
    names = [rules.canonical(normalize_tag(t)) for t in tags]
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise UsageError("no tag given")
    return names


def add_to(
    s: Session, cs: ChangeSet, rules: TagRules, wanted: dict[int, set[str]], category: str
) -> None:
    """Give images tags as the user: a `user` row each, lifting `user-removed` marks."""
    lock_rows(s, Image.__table__, wanted)  # racing edits of one image wait their turn
    spellings = {sp: n for names in wanted.values() for n in names for sp in rules.spellings(n)}
    rows = tag_rows(s, list(wanted), spellings)
    has_user: set[tuple[int, str]] = set()
    lift: list[TagRowData] = []
    for r in rows:
        canon = spellings[r.name]
        if canon not in wanted[r.image_id]:
            continue
        if r.source == USER and r.name == canon:
            has_user.add((r.image_id, canon))
        elif r.source == USER_REMOVED:
            lift.append(r)
    cs.delete_tags(lift)
    cs.insert_tags(
        [
            (image_id, name, USER)
            for image_id, names in wanted.items()
            for name in sorted(names)
            if (image_id, name) not in has_user
        ],
        category=category,
    )


def remove_from(s: Session, cs: ChangeSet, rules: TagRules, unwanted: dict[int, set[str]]) -> None:
    """Take tags off images: drop `user` rows, hide what models or implications give."""
    lock_rows(s, Image.__table__, unwanted)
    spellings = {sp: n for names in unwanted.values() for n in names for sp in rules.spellings(n)}
    rows = tag_rows(s, list(unwanted), spellings)
    drop: list[TagRowData] = []
    given: set[tuple[int, str]] = set()  # still given by a model, a sidecar or a rule
    hidden: set[tuple[int, str]] = set()
    for r in rows:
        canon = spellings[r.name]
        if canon not in unwanted[r.image_id]:
            continue
        key = (r.image_id, canon)
        if r.source == USER:
            drop.append(r)
        elif r.source == USER_REMOVED:
            hidden.add(key)
        else:
            given.add(key)
    implied_names = {t for targets in rules.implications.values() for t in targets}
    if any(names & implied_names for names in unwanted.values()):
        view = effective_tags(s, list(unwanted), rules=rules, implied=True)
        for image_id, tags in view.items():
            for t in tags:
                if t.name in unwanted[image_id] and t.sources == (IMPLIED,):
                    given.add((image_id, t.name))
    cs.delete_tags(drop)
    cs.insert_tags([(i, n, USER_REMOVED) for i, n in sorted(given - hidden)])


def add_tags(
    catalog: Catalog,
    query: str | None,
    tags: Iterable[str],
    *,
    category: str = "general",
    image_ids: Iterable[int] | None = None,
) -> EditResult:
    """Add tags (as the user) to every image the query (or ``image_ids``) selects.

    Aliases are resolved; the whole change is one undoable edit.
    """
    with catalog.write() as s:
        rules = TagRules.load(s)
        names = canonical_names(rules, tags)
        banned = [n for n in names if n in rules.blacklist]
        if banned:
            raise UsageError(
                f"blacklisted: {', '.join(banned)} (`curator tags blacklist remove` first)"
            )
        ids, chosen = chosen_ids(s, query, image_ids)
        cs = ChangeSet(s)
        add_to(s, cs, rules, {i: set(names) for i in ids}, category)
        return cs.record(
            "tags.add",
            f"add {', '.join(names)} to {len(cs.images_touched)} of {len(ids)} images",
            **chosen,
            tags=names,
        )


def remove_tags(
    catalog: Catalog,
    query: str | None,
    tags: Iterable[str],
    *,
    image_ids: Iterable[int] | None = None,
) -> EditResult:
    """Remove tags from every image the query (or ``image_ids``) selects.

    A removed model tag stays hidden after re-runs; the change is one undoable edit.
    """
    with catalog.write() as s:
        rules = TagRules.load(s)
        names = canonical_names(rules, tags)
        ids, chosen = chosen_ids(s, query, image_ids)
        cs = ChangeSet(s)
        remove_from(s, cs, rules, {i: set(names) for i in ids})
        return cs.record(
            "tags.remove",
            f"remove {', '.join(names)} from {len(cs.images_touched)} of {len(ids)} images",
            **chosen,
            tags=names,
        )


def replace_tags(catalog: Catalog, query: str, old: str, new: str) -> EditResult:
    """On the selected images that have `old`, remove it and add `new` (as the user)."""
    with catalog.write() as s:
        rules = TagRules.load(s)
        (old_name,) = canonical_names(rules, [old])
        (new_name,) = canonical_names(rules, [new])
        if old_name == new_name:
            raise UsageError(f"{old!r} and {new!r} are the same tag")
        if new_name in rules.blacklist:
            raise UsageError(f"blacklisted: {new_name}")
        having = _having(s, rules, selected_ids(s, query), old_name)
        # Racing edits of these images wait here; then look again at what they left.
        lock_rows(s, Image.__table__, having)
        having = _having(s, rules, having, old_name)
        cs = ChangeSet(s)
        remove_from(s, cs, rules, {i: {old_name} for i in having})
        add_to(s, cs, rules, {i: {new_name} for i in having}, _category(s, old_name))
        return cs.record(
            "tags.replace",
            f"replace {old_name} with {new_name} on {len(having)} images",
            query=query,
            old=old_name,
            new=new_name,
        )


def _having(s: Session, rules: TagRules, ids: list[int], name: str) -> list[int]:
    """Those of `ids` that effectively have tag `name`."""
    view = effective_tags(s, ids, rules=rules, implied=True)
    return [image_id for image_id, tags in view.items() if any(t.name == name for t in tags)]


def _category(s: Session, name: str, default: str = "general") -> str:
    return s.scalar(select(Tag.category).where(Tag.name == name)) or default


def rename_rows(s: Session, cs: ChangeSet, old: str, new: str) -> int:
    """Move every row of tag `old` to tag `new`, sources, scores and runs kept."""
    images = sorted({r.image_id for r in tag_rows(s, None, [old])})
    # A racing edit of these images finishes first; its rows are read after it. Rows of
    # `old` written meanwhile on other images came after this rename: they stay.
    lock_rows(s, Image.__table__, images)
    rows = tag_rows(s, images, [old])
    if not rows:
        return 0
    images = sorted({r.image_id for r in rows})
    taken = {(r.image_id, r.source) for r in tag_rows(s, images, [new])}
    cs.delete_tags(rows)
    moved = [r for r in rows if (r.image_id, r.source) not in taken]
    cs.insert_tags(
        [(r.image_id, new, r.source) for r in moved],
        category=_category(s, new, rows[0].category),
        values={(r.image_id, new, r.source): (r.score, r.run_id) for r in moved},
    )
    return len(images)


def rename_tag(catalog: Catalog, old: str, new: str) -> EditResult:
    """Rename a tag on every image, whatever the source (a one-off rewrite of rows)."""
    with catalog.write() as s:
        rules = TagRules.load(s)
        old_name = normalize_tag(old)
        (new_name,) = canonical_names(rules, [new])
        if not old_name or old_name == new_name:
            raise UsageError(f"nothing to rename: {old!r} → {new_name!r}")
        cs = ChangeSet(s)
        count = rename_rows(s, cs, old_name, new_name)
        return cs.record(
            "tags.rename",
            f"rename {old_name} to {new_name} on {count} images",
            old=old_name,
            new=new_name,
        )
