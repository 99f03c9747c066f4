"""Before an export or a training run: what the trainer will see, and what would spoil it.

`preview_export` plans an export exactly as `curator.export.export` would (selection,
buckets, captions, names, crops) without decoding or writing a pixel, and lists:

* the bucket histogram and each image's bucket, crop window and scale;
* findings that silently ruin training runs in the trainers: images with no caption
  (the trainer falls back to the class tokens, or to nothing), buckets holding fewer
  images than the batch size (sd-scripts batches per bucket, so those steps run
  smaller), images that are upscaled to fill their bucket, and images whose short side
  is under the bucket minimum;
* for a target that already holds a kohya export, caption files whose extension is
  not the one its ``dataset.toml`` declares (sd-scripts reads only that one, so those
  images train without their captions) and images with no caption file at all.

``strict`` exports (`ExportOptions.strict`) refuse to write when there is a finding.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curator.errors import UsageError
from curator.export.buckets import Bucket, BucketSpec, bucket_histogram
from curator.export.crops import compute_crop, cover_scale
from curator.export.layouts import get_layout
from curator.export.options import CAPTION_EXTENSIONS, ExportOptions, ExportSummary
from curator.export.plan import Planned, layout_settings, plan_export
from db.engine import Catalog

_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".avif"})
_EXAMPLES = 5


@dataclass(slots=True)
class Finding:
    """One kind of problem: a stable ``kind``, a sentence, how many, a few file names."""

    kind: str
    message: str
    count: int
    examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class PreviewItem:
    """One image as it would be written: name, source, bucket, crop window, scale."""

    path: str
    source: str
    source_size: tuple[int, int]
    bucket: Bucket
    crop: dict[str, Any] | None  # None: decided from the pixels when written (focal)
    scale: float
    caption: str

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["source_size"] = list(self.source_size)
        data["bucket"] = list(self.bucket)
        return data


@dataclass(slots=True)
class ExportPreview:
    """What an export would write, and what a trainer would make of it."""

    target: str
    layout: str
    selected: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    histogram: list[tuple[Bucket, int]] = field(default_factory=list)
    items: list[PreviewItem] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "layout": self.layout,
            "selected": self.selected,
            "images": len(self.items),
            "excluded": self.excluded,
            "skipped": self.skipped,
            "histogram": [{"bucket": list(b), "count": n} for b, n in self.histogram],
            "items": [i.as_dict() for i in self.items],
            "findings": [f.as_dict() for f in self.findings],
        }


def _finding(kind: str, message: str, names: list[str]) -> Finding | None:
    return Finding(kind, message, len(names), sorted(names)[:_EXAMPLES]) if names else None


def plan_findings(planned: list[Planned], opts: ExportOptions, spec: BucketSpec) -> list[Finding]:
    """Findings about a planned export (see the module doc)."""
    uncaptioned, upscaled, small = [], [], []
    for item in planned:
        width, height = item.source.width, item.source.height
        name = os.path.basename(item.source.path)
        if not item.caption.strip():
            uncaptioned.append(name)
        if cover_scale((width, height), item.bucket) > 1.0:
            upscaled.append(name)
        if min(width, height) < spec.min_side:
            small.append(name)
    counts = Counter(item.bucket for item in planned)
    thin = [f"{w}x{h} ({n})" for (w, h), n in sorted(counts.items()) if n < opts.batch_size]
    found = [
        _finding("uncaptioned", "images with no caption", uncaptioned),
        _finding(
            "small_bucket",
            f"buckets holding fewer images than the batch size {opts.batch_size}",
            thin,
        ),
        _finding("upscaled", "images enlarged to fill their bucket", upscaled),
        _finding(
            "under_min_side",
            f"images whose short side is under the minimum {spec.min_side} px",
            small,
        ),
    ]
    return [f for f in found if f is not None]


def folder_findings(target: Path) -> list[Finding]:
    """Caption files in an existing kohya export that its ``dataset.toml`` would not read."""
    config_path = target / "dataset.toml"
    if not config_path.is_file():
        return []
    try:
        config = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [Finding("bad_config", f"{config_path} cannot be read as TOML", 1)]
    general = config.get("general", {})
    mismatched, missing = [], []
    for dataset in config.get("datasets", []):
        for subset in dataset.get("subsets", []):
            if "metadata_file" in subset or "image_dir" not in subset:
                continue  # fine-tuning: captions live in the metadata file
            ext = subset.get("caption_extension", general.get("caption_extension", ".caption"))
            folder = Path(subset["image_dir"])
            folder = folder if folder.is_absolute() else target / folder
            if not folder.is_dir():
                continue
            for image in sorted(folder.iterdir()):
                if image.suffix.lower() not in _IMAGE_SUFFIXES:
                    continue
                if image.with_suffix(ext).is_file():
                    continue
                others = [e for e in CAPTION_EXTENSIONS if e != ext]
                if any(image.with_suffix(e).is_file() for e in others):
                    mismatched.append(image.name)
                else:
                    missing.append(image.name)
    found = [
        _finding(
            "caption_extension",
            "caption files whose extension is not the one dataset.toml declares",
            mismatched,
        ),
        _finding("no_caption_file", "images with no caption file", missing),
    ]
    return [f for f in found if f is not None]


def _preview_crop(item: Planned, opts: ExportOptions) -> dict[str, Any] | None:
    if item.crop is not None:
        return item.crop
    src = item.source
    if opts.crop == "focal" and not item.boxes:
        return None
    crop = compute_crop(
        (src.width, src.height),
        item.bucket,
        opts.crop,
        seed=opts.seed,
        sha256=src.sha256,
        boxes=item.boxes,
    )
    return crop.to_dict()


def preview_export(
    catalog: Catalog,
    target_dir: str | os.PathLike[str],
    options: ExportOptions | None = None,
    /,
    **settings: Any,
) -> ExportPreview:
    """Plan an export into ``target_dir`` without writing anything; see the module doc."""
    try:
        opts = dataclasses.replace(options or ExportOptions(), **settings)
    except TypeError as error:
        raise UsageError(f"unknown export setting: {error}") from None
    opts.check()
    layout = get_layout(opts.layout)
    spec = opts.bucket_spec()
    layout.check(layout_settings(opts, ""), has_reg=opts.reg_query is not None)
    target = Path(target_dir).expanduser().absolute()
    summary = ExportSummary(target=str(target), layout=layout.name)
    planned = plan_export(catalog, opts, layout, spec, summary)
    preview = ExportPreview(
        target=str(target),
        layout=layout.name,
        selected=summary.selected,
        excluded=dict(sorted(summary.excluded.items())),
        skipped=[s.as_dict() for s in summary.skipped],
        histogram=bucket_histogram(item.bucket for item in planned),
    )
    for item in planned:
        src = item.source
        preview.items.append(
            PreviewItem(
                path=item.path,
                source=src.path,
                source_size=(src.width, src.height),
                bucket=item.bucket,
                crop=_preview_crop(item, opts),
                scale=round(cover_scale((src.width, src.height), item.bucket), 4),
                caption=item.caption,
            )
        )
    preview.findings = plan_findings(planned, opts, spec) + folder_findings(target)
    return preview


def strict_message(findings: list[Finding]) -> str:
    """One line for a strict export that refuses to write."""
    parts = ", ".join(f"{f.count} {f.message}" for f in findings)
    return f"export refused (strict): {parts}"
