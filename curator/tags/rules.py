"""Curation rules over tag names: aliases, implications, blacklist, trigger words, overlap.

Rules live in the `tag_rules` table. `TagRules` (defined in `curator.tags.view`, which
applies them to every read, re-exported here) loads them; this module changes them,
each change an undoable edit, and prunes overlapping tags.

- alias `old → canon`: `old` is another spelling of `canon`. Tags are written under the
  canonical name, and the effective view reads any leftover `old` rows as `canon`.
- implication `a → b`: an image with `a` also shows `b` in the effective view when
  implied tags are asked for (`effective_tags(..., implied=True)`): computed, never
  stored, so removing `a` takes `b` with it. Chains are followed (a → b → c).
- blacklist `t`: `t` never appears in effective tags or exports.
- trigger `w`: a word exports put first in every caption, in the order added.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from curator.curation.edits import (
    ChangeSet,
    EditResult,
    canonical_names,
    remove_from,
    rename_rows,
    selected_ids,
)
from curator.errors import UsageError
from curator.tags.view import (
    ALIAS,
    BLACKLIST,
    IMPLICATION,
    RULE_KINDS,
    TRIGGER,
    TagRules,
    effective_tags,
    normalize_tag,
)
from db.engine import Catalog
from db.schema import TagRule

__all__ = [
    "ALIAS",
    "BLACKLIST",
    "IMPLICATION",
    "RULE_KINDS",
    "TRIGGER",
    "TagRules",
    "normalize_tag",
]

_WORD_SEPARATORS = re.compile(r"[_\s]+")


def tag_words(name: str) -> tuple[str, ...]:
    """The words of a tag: `white_shirt` → ('white', 'shirt')."""
    return tuple(w for w in _WORD_SEPARATORS.split(name.lower()) if w)


def contains(specific: str, general: str, *, subset: bool = False) -> bool:
    """Whether tag `specific` says everything tag `general` says, and more.

    By default the general tag's words must end the specific one's (`hair` in
    `long_hair`, `long_hair` in `very_long_hair`): the last word names the thing, so
    `hair_ornament` does not contain `hair`. With `subset`, any proper subset of the
    words counts (`hair` in `hair_ornament` too).
    """
    g, s = tag_words(general), tag_words(specific)
    if not g or len(g) >= len(s):
        return False
    if subset:
        return set(g) < set(s)
    return s[-len(g) :] == g


def overlapped(names: Iterable[str], *, subset: bool = False) -> dict[str, str]:
    """Tags among `names` contained in another of them: general tag → a specific one."""
    names = list(dict.fromkeys(names))
    out: dict[str, str] = {}
    for general in names:
        for specific in names:
            if specific != general and contains(specific, general, subset=subset):
                out[general] = specific
                break
    return out


def trigger_words(session: Session) -> list[str]:
    """Trigger words in the order they were added: exports put them first."""
    return list(TagRules.load(session).triggers)


# --- pruning -----------------------------------------------------------------------


def prune_tags(catalog: Catalog, query: str = "", *, subset: bool = False) -> EditResult:
    """Remove general tags that a more specific tag on the same image contains.

    `hair` beside `long_hair`, `shirt` beside `white_shirt`, `long_hair` beside
    `very_long_hair`; see `curator.tags.rules.contains` for `subset`.
    """
    with catalog.write() as s:
        rules = TagRules.load(s)
        ids = selected_ids(s, query)
        unwanted: dict[int, set[str]] = {}
        for image_id, tags in effective_tags(s, ids, rules=rules).items():
            general = [t.name for t in tags if t.category == "general"]
            drop = overlapped(general, subset=subset)
            if drop:
                unwanted[image_id] = set(drop)
        cs = ChangeSet(s)
        remove_from(s, cs, rules, unwanted)
        total = sum(len(v) for v in unwanted.values())
        return cs.record(
            "tags.prune",
            f"prune {total} overlapping tags on {len(unwanted)} images",
            query=query,
            subset=subset,
        )


# --- rules ---------------------------------------------------------------------------


def add_alias(catalog: Catalog, alias: str, canonical: str) -> EditResult:
    """Make `alias` another spelling of `canonical`, and rewrite its rows and rules."""
    with catalog.write() as s:
        rules = TagRules.load(s)
        old, target = normalize_tag(alias), normalize_tag(canonical)
        if not old or not target or old == target:
            raise UsageError(f"an alias needs two different tags, got {alias!r} and {canonical!r}")
        canon = rules.canonical(target)
        if canon == old:
            raise UsageError(f"{target!r} is an alias of {old!r}; remove that alias first")
        cs = ChangeSet(s)
        for kind, tag, target in _rules(s):
            if kind == ALIAS and tag == old:
                cs.delete_rule(kind, tag, target)  # re-pointed below
            elif kind == ALIAS and target == old:
                cs.delete_rule(kind, tag, target)
                cs.add_rule(ALIAS, tag, canon)
            elif kind in (IMPLICATION, BLACKLIST) and old in (tag, target):
                cs.delete_rule(kind, tag, target)
                new_tag = canon if tag == old else tag
                new_target = canon if target == old else target
                if new_tag != new_target:
                    cs.add_rule(kind, new_tag, new_target)
        cs.add_rule(ALIAS, old, canon)
        count = rename_rows(s, cs, old, canon)
        return cs.record(
            "tags.alias",
            f"alias {old} → {canon} (rewrote {count} images)",
            alias=old,
            canonical=canon,
        )


def remove_alias(catalog: Catalog, alias: str) -> EditResult:
    """Forget an alias (rows already rewritten keep the canonical name)."""
    with catalog.write() as s:
        old = normalize_tag(alias)
        cs = ChangeSet(s)
        for kind, tag, target in _rules(s):
            if kind == ALIAS and tag == old:
                cs.delete_rule(kind, tag, target)
        if cs.empty:
            raise UsageError(f"{old!r} is not an alias")
        return cs.record("tags.unalias", f"unalias {old}", alias=old)


def add_implication(catalog: Catalog, tag: str, implied: str) -> EditResult:
    """Images with `tag` also show `implied` (computed in the effective view, not stored)."""
    with catalog.write() as s:
        rules = TagRules.load(s)
        (a,) = canonical_names(rules, [tag])
        (b,) = canonical_names(rules, [implied])
        if a == b:
            raise UsageError(f"{a!r} cannot imply itself")
        if a in rules.implied_by(b):
            raise UsageError(f"{b!r} already implies {a!r}; that would be a cycle")
        cs = ChangeSet(s)
        cs.add_rule(IMPLICATION, a, b)
        return cs.record("tags.imply", f"{a} implies {b}", tag=a, implied=b)


def remove_implication(catalog: Catalog, tag: str, implied: str) -> EditResult:
    with catalog.write() as s:
        rules = TagRules.load(s)
        (a,) = canonical_names(rules, [tag])
        (b,) = canonical_names(rules, [implied])
        cs = ChangeSet(s)
        if not cs.delete_rule(IMPLICATION, a, b):
            raise UsageError(f"no rule {a!r} implies {b!r}")
        return cs.record("tags.unimply", f"{a} no longer implies {b}", tag=a, implied=b)


def blacklist_add(catalog: Catalog, tags: Iterable[str]) -> EditResult:
    """Blacklisted tags never appear in effective tags or exports (rows are kept)."""
    with catalog.write() as s:
        rules = TagRules.load(s)
        names = canonical_names(rules, tags)
        cs = ChangeSet(s)
        for name in names:
            cs.add_rule(BLACKLIST, name)
        return cs.record("tags.blacklist.add", f"blacklist {', '.join(names)}", tags=names)


def blacklist_remove(catalog: Catalog, tags: Iterable[str]) -> EditResult:
    with catalog.write() as s:
        rules = TagRules.load(s)
        names = canonical_names(rules, tags)
        cs = ChangeSet(s)
        for name in names:
            cs.delete_rule(BLACKLIST, name)
        return cs.record("tags.blacklist.remove", f"unblacklist {', '.join(names)}", tags=names)


def trigger_add(catalog: Catalog, words: Iterable[str]) -> EditResult:
    """Trigger words go first in every exported caption, in the order added."""
    with catalog.write() as s:
        names = _words(words)
        cs = ChangeSet(s)
        for name in names:
            cs.add_rule(TRIGGER, name)
        return cs.record("tags.trigger.add", f"trigger word {', '.join(names)}", words=names)


def trigger_remove(catalog: Catalog, words: Iterable[str]) -> EditResult:
    with catalog.write() as s:
        names = _words(words)
        cs = ChangeSet(s)
        for name in names:
            cs.delete_rule(TRIGGER, name)
        return cs.record("tags.trigger.remove", f"drop trigger {', '.join(names)}", words=names)


def _words(words: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(w.strip() for w in words if w.strip()))
    if not names:
        raise UsageError("no word given")
    return names


def _rules(s: Session) -> list[tuple[str, str, str]]:
    return [
        tuple(r)
        for r in s.execute(select(TagRule.kind, TagRule.tag, TagRule.target).order_by(TagRule.id))
    ]


def list_rules(catalog: Catalog, kind: str | None = None) -> list[dict[str, Any]]:
    """Rules in the order added: kind, tag, target."""
    with catalog.session() as s:
        return [
            {"kind": k, "tag": t, "target": g} for k, t, g in _rules(s) if kind is None or k == kind
        ]
