"""Planning an export: which images, their buckets, captions, crop inputs and names."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from curator.errors import UsageError
from curator.export.buckets import Bucket, BucketError, BucketSpec, make_buckets, select_bucket
from curator.export.captions import build_caption, clean_text, comparable, format_tag
from curator.export.crops import Box, Crop, CropError
from curator.export.filenames import safe_stem, unique_names
from curator.export.layouts import REG, TRAIN, Layout, LayoutSettings
from curator.export.options import ExportOptions, ExportSummary, SkippedImage
from curator.media.imagewrite import normalize_format
from curator.query.compile import compile_query
from curator.tags.view import TagRow, TagRules, effective_tags
from db.engine import Catalog
from db.schema import Caption, Detection, Export, ExportItem, File, Image

_CHUNK = 900  # ids per IN (...) clause, under SQLite's variable limit


@dataclass(frozen=True, slots=True)
class _Source:
    image_id: int
    sha256: str
    width: int
    height: int
    path: str
    role: str


def _select(
    session: Session, query: str, role: str, include_rejected: bool, excluded: dict[str, int]
) -> list[_Source]:
    """Exportable images of a query, sorted by content hash; counts the rest in ``excluded``."""
    f = aliased(File)
    path = (
        select(func.min(f.path))
        .where(f.image_id == Image.id, f.present.is_(True))
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            Image.id,
            Image.sha256,
            Image.width,
            Image.height,
            Image.status,
            Image.duplicate_of,
            path.label("path"),
        )
        .where(compile_query(query, rules=TagRules.load(session)))
        .order_by(Image.sha256)
    ).all()
    out: list[_Source] = []
    for row in rows:
        reason = (
            "missing_file"
            if row.path is None
            else "duplicate"
            if row.duplicate_of is not None
            else "rejected"
            if row.status == "rejected" and not include_rejected
            else None
        )
        if reason:
            excluded[reason] = excluded.get(reason, 0) + 1
        else:
            out.append(_Source(row.id, row.sha256, row.width, row.height, row.path, role))
    return out


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


def _natural_captions(session: Session, ids: Sequence[int], source: str | None) -> dict[int, str]:
    """One natural caption per image: a person's first, then models', then a sidecar's."""
    best: dict[int, tuple[tuple[int, str, str], str]] = {}
    for chunk in _chunks(ids):
        stmt = select(Caption.image_id, Caption.kind, Caption.source, Caption.text).where(
            Caption.image_id.in_(chunk)
        )
        if source:
            stmt = stmt.where(Caption.source == source)
        else:
            stmt = stmt.where(Caption.kind.in_(("caption", "sidecar")))
        for image_id, kind, src, text in session.execute(stmt):
            if not text or not text.strip():
                continue
            rank = (0 if src == "user" else 2 if kind == "sidecar" else 1, src, kind)
            if image_id not in best or rank < best[image_id][0]:
                best[image_id] = (rank, text.strip())
    return {image_id: text for image_id, (_, text) in best.items()}


def _face_boxes(session: Session, ids: Sequence[int], detector: str) -> dict[int, list[Box]]:
    boxes: dict[int, list[Box]] = {}
    for chunk in _chunks(ids):
        rows = session.execute(
            select(Detection.image_id, Detection.x, Detection.y, Detection.w, Detection.h)
            .where(Detection.detector == detector, Detection.image_id.in_(chunk))
            .order_by(Detection.id)
        )
        for image_id, x, y, w, h in rows:
            boxes.setdefault(image_id, []).append((float(x), float(y), float(w), float(h)))
    return boxes


def _stored_crops(session: Session, export_id: int) -> dict[int, dict[str, Any]]:
    if session.get(Export, export_id) is None:
        raise UsageError(f"no export {export_id} in the catalog")
    rows = session.execute(
        select(ExportItem.image_id, ExportItem.crop).where(ExportItem.export_id == export_id)
    )
    return {image_id: crop for image_id, crop in rows if crop}


def _tag_sort_key(order: str, tag: TagRow) -> tuple[Any, ...]:
    name = format_tag(tag.name).casefold()
    return (-tag.score, name) if order == "score" else (name,) if order == "alpha" else ()


def caption_line(
    tags: Sequence[TagRow],
    natural: str | None,
    triggers: Sequence[str],
    options: ExportOptions,
    sha256: str,
) -> tuple[str, tuple[str, ...]]:
    """The caption line for one image and the tag names it uses.

    The instance token and class word lead, then the catalog's trigger words (in the
    order they were added), then the natural caption and/or the tags: with
    ``characters_first`` character tags before the rest, each group in ``tag_order``.
    """
    kept = [
        t
        for t in tags
        if options.min_score is None or t.category == "rating" or t.score >= options.min_score
    ]
    if options.captions == "caption":
        kept = []
    natural = clean_text(natural) if natural else None
    if options.captions == "both" and natural:
        natural, kept = _each_once(natural, kept)
    front: list[TagRow] = []
    others = kept
    if options.characters_first:
        front = [t for t in kept if t.category == "character"]
        others = [t for t in kept if t.category != "character"]
    if options.tag_order != "as-is":
        for group in (front, others):
            group.sort(key=lambda t: _tag_sort_key(options.tag_order, t))
    # build_caption's own "character" group comes first: it holds exactly `front`.
    ordered = [
        *((t.name, "character", t.score) for t in front),
        *(
            (t.name, "general" if t.category == "character" else t.category, t.score)
            for t in others
        ),
    ]
    line = build_caption(
        ordered,
        caption=natural if options.captions in ("caption", "both") else None,
        trigger=options.instance or None,
        leading=triggers,
        class_word=options.class_word or None,
        include_rating=options.include_rating,
        include_meta=options.include_meta,
        characters_first=True,
        keep_tokens=options.keep_tokens,
        keep_tokens_separator=_separator(options),
        shuffle=options.shuffle,
        seed=f"caption:{options.seed}:{sha256}",
        order="as-is",
        underscores=options.underscores,
        escape=options.escape,
    )
    names = tuple(
        clean_text(name)
        for name, category, _ in ordered
        if (category != "meta" or options.include_meta) and category != "rating"
    )
    return clean_text(line), names


def _each_once(natural: str, tags: list[TagRow]) -> tuple[str | None, list[TagRow]]:
    """A natural caption and tags, with nothing said twice.

    A "caption" that is only a list of the image's tags (a tag sidecar imported as
    text, in any spelling) is dropped: the tags say it. Otherwise tags the caption
    already holds as a comma-separated piece are left out.
    """
    pieces = {comparable(p) for p in natural.split(",") if p.strip()}
    names = {comparable(t.name) for t in tags}
    if pieces <= names:
        return None, tags
    return natural, [t for t in tags if comparable(t.name) not in pieces]


def _separator(options: ExportOptions) -> str | None:
    """The keep-tokens separator, used only when sd-scripts shuffles (and so strips it)."""
    return options.keep_tokens_separator if options.shuffle_caption else None


_EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}


@dataclass(slots=True)
class Planned:
    """One image on its way into the export; ``crop`` is set when a stored one is reused."""

    source: _Source
    bucket: Bucket
    caption: str
    tags: tuple[str, ...]
    path: str = ""
    crop: dict[str, Any] | None = None
    boxes: tuple[Box, ...] = ()


def plan_export(
    catalog: Catalog, opts: ExportOptions, layout: Layout, spec: BucketSpec, summary: ExportSummary
) -> list[Planned]:
    """Every image to render, with bucket, caption, crop inputs and output path.

    Fills ``summary`` with what was selected, excluded and skipped on the way.
    """
    with catalog.session() as s:
        train = _select(s, opts.query, TRAIN, opts.include_rejected, summary.excluded)
        reg: list[_Source] = []
        if opts.reg_query is not None:
            reg_excluded: dict[str, int] = {}
            reg = _select(s, opts.reg_query, REG, opts.include_rejected, reg_excluded)
            summary.excluded.update({f"reg_{k}": v for k, v in reg_excluded.items()})
        train_ids = {src.image_id for src in train}
        for src in reg:
            if src.image_id in train_ids:
                summary.skipped.append(
                    SkippedImage(src.sha256, os.path.basename(src.path), "also a training image")
                )
        sources = train + [src for src in reg if src.image_id not in train_ids]
        summary.selected = len(sources)
        ids = [src.image_id for src in sources]
        rules = TagRules.load(s)
        train_image_ids = [src.image_id for src in train]
        tags = effective_tags(s, train_image_ids, rules=rules, implied=opts.implied_tags)
        naturals = _natural_captions(s, ids, opts.caption_source) if opts.captions != "tags" else {}
        triggers = rules.triggers if opts.trigger_words else ()
        boxes = _face_boxes(s, ids, opts.face_detector) if opts.crop == "focal" else {}
        stored = _stored_crops(s, opts.reuse_crops) if opts.reuse_crops is not None else {}

    buckets = None if spec.no_upscale else make_buckets(spec)
    planned: list[Planned] = []
    for src in sources:
        try:
            bucket = select_bucket(src.width, src.height, spec, buckets)
        except BucketError as error:
            summary.skipped.append(SkippedImage(src.sha256, os.path.basename(src.path), str(error)))
            continue
        if src.role == REG:
            caption, names = clean_text(opts.class_prompt or opts.class_word), ()
        else:
            caption, names = caption_line(
                tags.get(src.image_id, []), naturals.get(src.image_id), triggers, opts, src.sha256
            )
        item = Planned(src, bucket, caption, names, boxes=tuple(boxes.get(src.image_id, ())))
        if (crop := _reusable(stored.get(src.image_id), src, bucket)) is not None:
            item.crop = crop.to_dict()
            summary.crops_reused += 1
        planned.append(item)
    _name(planned, opts, layout)
    return planned


def _reusable(stored: dict[str, Any] | None, src: _Source, bucket: Bucket) -> Crop | None:
    """A stored crop, if it still fits: same source size, same bucket."""
    if not stored:
        return None
    try:
        crop = Crop.from_dict(stored)
    except CropError:
        return None
    fits = crop.source_size == (src.width, src.height) and crop.bucket == bucket
    return crop if fits else None


def _name(planned: list[Planned], opts: ExportOptions, layout: Layout) -> None:
    """Give every item its path: a folder per role, a unique stem, the format's extension."""
    extension = _EXTENSIONS[normalize_format(opts.image_format)]
    settings = layout_settings(opts, "")
    for role in (TRAIN, REG):
        members = {i: p for i, p in enumerate(planned) if p.source.role == role}
        bases = {
            i: p.source.sha256[:16]
            if opts.naming == "sha256"
            else safe_stem(os.path.basename(p.source.path))
            for i, p in members.items()
        }
        names = unique_names(bases, lambda i: planned[i].source.sha256)
        folder = layout.folder(role, settings)
        for i, name in names.items():
            planned[i].path = f"{folder}/{name}{extension}"


def layout_settings(
    opts: ExportOptions, path_root: str, captions: Iterable[str] = (), export_root: str = ""
) -> LayoutSettings:
    """What the layout needs; the keep-tokens separator only if ``captions`` use it."""
    separator = _separator(opts)
    used = bool(separator) and opts.keep_tokens > 0 and any(f" {separator} " in c for c in captions)
    return LayoutSettings(
        bucket=opts.bucket_spec(),
        instance=opts.instance,
        class_word=opts.class_word,
        repeats=opts.repeats,
        reg_repeats=opts.reg_repeats,
        caption_extension=opts.caption_extension,
        batch_size=opts.batch_size,
        shuffle_caption=opts.shuffle_caption,
        keep_tokens=opts.keep_tokens,
        keep_tokens_separator=separator if used else None,
        captions=opts.captions,
        instance_prompt=opts.instance_prompt,
        class_prompt=opts.class_prompt,
        path_root=path_root,
        export_root=export_root,
    )
