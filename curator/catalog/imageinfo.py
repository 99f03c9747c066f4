"""Looking up one image, and tag frequencies: what `tags show` and `tags top` print."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session, aliased

from curator.errors import UsageError
from curator.query.compile import compile_query
from curator.query.meaning import KnownRules
from curator.query.sets import to_expression
from curator.tags.view import USER_REMOVED, TagRules, effective_tags
from db.engine import Catalog
from db.schema import Caption, Detection, File, Generation, Image, ImageTag, Score, Tag

MIN_PREFIX = 4  # sha256 hex digits a prefix needs, as short git hashes


def resolve_image(s: Session, ref: str) -> int:
    """An image id from a path, a sha256 (or a unique prefix of 4+ hex digits) or an id."""
    path = os.path.abspath(ref)
    image_id = s.scalar(select(File.image_id).where(File.path == path))
    if image_id is not None:
        return image_id
    if ref.isdigit() and int(ref) < 2**63 and s.get(Image, int(ref)) is not None:
        return int(ref)
    digits = ref.lower()
    if len(digits) >= MIN_PREFIX and all(c in "0123456789abcdef" for c in digits):
        if len(digits) > 64:
            raise UsageError(f"{ref!r} is longer than a sha256 (64 hex digits)")
        ids = s.scalars(select(Image.id).where(Image.sha256.startswith(digits)).limit(2)).all()
        if len(ids) == 1:
            return ids[0]
        if len(ids) > 1:
            raise UsageError(f"sha256 prefix {ref!r} matches several images; give more digits")
    raise UsageError(
        f"no catalogued image at {ref!r} (give a path, a sha256 or a prefix of "
        f"{MIN_PREFIX}+ of its digits, or an id)"
    )


def show_image(catalog: Catalog, ref: str) -> dict[str, Any]:
    """Everything known about the image `ref` names (path, sha256 prefix or id)."""
    with catalog.session() as s:
        return image_report(s, resolve_image(s, ref))


def image_report(s: Session, image_id: int) -> dict[str, Any]:
    image = s.get(Image, image_id)
    files = s.scalars(select(File).where(File.image_id == image_id).order_by(File.id)).all()
    present = [f.path for f in files if f.present]
    gen = s.get(Generation, image_id)
    return {
        "id": image.id,
        "path": present[0] if present else (files[0].path if files else None),
        "files": [{"path": f.path, "present": f.present} for f in files],
        "sha256": image.sha256,
        "width": image.width,
        "height": image.height,
        "format": image.format,
        "mode": image.mode,
        "status": image.status,
        "duplicate_of": image.duplicate_of,
        "tags": [
            {"name": t.name, "category": t.category, "score": t.score, "sources": list(t.sources)}
            for t in effective_tags(s, [image_id])[image_id]
        ],
        "scores": dict(
            s.execute(select(Score.name, Score.value).where(Score.image_id == image_id)).all()
        ),
        "detections": [
            {
                "detector": d.detector,
                "label": d.label,
                "score": d.score,
                "box": [d.x, d.y, d.w, d.h],
                "text": d.text,
            }
            for d in s.scalars(
                select(Detection).where(Detection.image_id == image_id).order_by(Detection.id)
            )
        ],
        "captions": [
            {"kind": c.kind, "source": c.source, "text": c.text}
            for c in s.scalars(
                select(Caption).where(Caption.image_id == image_id).order_by(Caption.id)
            )
        ],
        "generation": None
        if gen is None
        else {
            "prompt": gen.prompt,
            "negative_prompt": gen.negative_prompt,
            "steps": gen.steps,
            "sampler": gen.sampler,
            "cfg_scale": gen.cfg_scale,
            "seed": gen.seed,
            "model": gen.model,
            "model_hash": gen.model_hash,
        },
    }


def top_tags(
    s: Session, *, category: str | None = None, where: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Tags by the number of images that effectively have them (as the query `T` counts).

    Tags no rule touches are counted from their rows in one GROUP BY; each tag a rule
    touches (an alias's canonical tag, an implied tag) is counted like the query `T`;
    aliases and blacklisted tags are not listed.
    """
    rules = TagRules.load(s)
    meaning = KnownRules(rules)
    selected = compile_query(where, rules=rules) if where else None
    canonical = set(meaning.alias_groups) | set(meaning.implying)
    touched = sorted(canonical - rules.blacklist)
    skip = sorted(meaning.touched_names() | set(rules.aliases) | _spellings(meaning))
    removed = aliased(ImageTag)
    hidden = exists().where(
        removed.image_id == ImageTag.image_id,
        removed.tag_id == ImageTag.tag_id,
        removed.source == USER_REMOVED,
    )
    images = func.count(func.distinct(ImageTag.image_id)).label("images")
    stmt = (
        select(Tag.name, Tag.category, images)
        .join(ImageTag, ImageTag.tag_id == Tag.id)
        .where(ImageTag.source != USER_REMOVED, ~hidden)
        .group_by(Tag.id, Tag.name, Tag.category)
        .order_by(images.desc(), Tag.name)
        .limit(limit)
    )
    if skip:
        stmt = stmt.where(Tag.name.not_in(skip))
    if category:
        stmt = stmt.where(Tag.category == category)
    if selected is not None:
        stmt = stmt.where(ImageTag.image_id.in_(select(Image.id).where(selected)))
    rows = [(n, c, k) for n, c, k in s.execute(stmt).all()]
    categories = dict(s.execute(select(Tag.name, Tag.category).where(Tag.name.in_(touched))).all())
    for name in touched:
        tag_category = categories.get(name, "general")
        if category and tag_category != category:
            continue
        has = to_expression(meaning.exact(name, category=None, source=None, score=None))
        count = select(func.count()).select_from(Image).where(has)
        if selected is not None:
            count = count.where(selected)
        if n := s.scalar(count):
            rows.append((name, tag_category, n))
    rows.sort(key=lambda r: (-r[2], r[0]))
    return [{"name": n, "category": c, "images": k} for n, c, k in rows[:limit]]


def _spellings(meaning: KnownRules) -> set[str]:
    return {n for group in meaning.alias_groups.values() for n in group}


__all__ = ["image_report", "resolve_image", "show_image", "top_tags"]
