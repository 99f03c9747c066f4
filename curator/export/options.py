"""Export settings and the summary an export returns."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from curator.errors import UsageError
from curator.export.buckets import Bucket, BucketSpec
from curator.export.buckets import preset as bucket_preset
from curator.export.captions import ORDERS
from curator.export.crops import MODES
from curator.media.imagewrite import normalize_format
from curator.progress import CancelToken, Reporter

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
GENERATOR = "curator"
CAPTION_TEXTS = ("tags", "caption", "both")
NAMINGS = ("original", "sha256")
CAPTION_EXTENSIONS = (".txt", ".caption")
_RUNTIME_FIELDS = frozenset({"force", "overwrite", "strict", "workers", "reporter", "cancel"})


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """Every export setting; `export` takes these as keyword arguments.

    Buckets: a ``bucket`` preset (``sd15``, ``sdxl``) adjusted by any of ``max_area``,
    ``resolution``, ``min_side``, ``max_side``, ``step``, ``no_upscale``.
    Captions: ``captions`` is what a line holds (``tags``, the natural ``caption``, or
    ``both``); ``instance`` and ``class_word`` lead it, then the catalog's trigger words
    (``trigger_words``); tags are the effective tags, with implied ones
    (``implied_tags``); the other caption fields are `curator.export.captions.build_caption`'s.
    ``shuffle`` shuffles each written caption once (seeded); ``shuffle_caption`` asks
    sd-scripts to shuffle at training time.
    ``background`` is the RGB colour transparent pixels are flattened onto (every
    written image is RGB: trainers would otherwise see black).
    ``strict`` refuses to write an export with findings (`curator.export.check`).
    ``png_compression`` is the zlib level (4: about 6's size on photos in half the
    time, a little larger on flat artwork). ``absolute_paths`` writes absolute paths
    into trainer configs (then the files depend on where the export is).
    """

    query: str = ""
    layout: str = "kohya-dreambooth"
    bucket: str = "sd15"
    max_area: int | None = None
    resolution: tuple[int, int] | None = None
    min_side: int | None = None
    max_side: int | None = None
    step: int | None = None
    no_upscale: bool | None = None
    crop: str = "center"
    seed: int = 0
    face_detector: str = "faces"
    reuse_crops: int | None = None
    captions: str = "tags"
    caption_source: str | None = None
    instance: str = ""
    class_word: str = ""
    include_rating: bool = False
    include_meta: bool = False
    characters_first: bool = True
    keep_tokens: int = 0
    keep_tokens_separator: str | None = "|||"
    shuffle: bool = False
    shuffle_caption: bool = False
    tag_order: str = "score"
    underscores: bool = False
    escape: bool = True
    min_score: float | None = None
    trigger_words: bool = True
    implied_tags: bool = True
    caption_extension: str = ".txt"
    image_format: str = "png"
    quality: int = 95
    lossless: bool = False
    png_compression: int = 4
    background: tuple[int, int, int] = (255, 255, 255)
    naming: str = "original"
    repeats: int = 1
    reg_query: str | None = None
    reg_repeats: int = 1
    instance_prompt: str = ""
    class_prompt: str = ""
    batch_size: int = 1
    absolute_paths: bool = False
    include_rejected: bool = False
    strict: bool = False
    force: bool = False
    overwrite: bool = False
    workers: int | None = None
    reporter: Reporter | None = None  # progress events (see curator.progress)
    cancel: CancelToken | None = None

    def bucket_spec(self) -> BucketSpec:
        spec = bucket_preset(self.bucket)
        changes: dict[str, Any] = {
            k: v
            for k, v in (
                ("min_side", self.min_side),
                ("max_side", self.max_side),
                ("step", self.step),
                ("no_upscale", self.no_upscale),
            )
            if v is not None
        }
        if self.max_area is not None:
            changes.update(max_area=self.max_area, resolution=None)
        if self.resolution is not None:
            changes.update(resolution=tuple(self.resolution), max_area=None)
        return dataclasses.replace(spec, **changes) if changes else spec

    def check(self) -> None:
        """Raise `UsageError` for settings that cannot work together."""
        if self.max_area is not None and self.resolution is not None:
            raise UsageError("give a bucket max area or a resolution, not both")
        if self.crop not in MODES:
            raise UsageError(f"unknown crop mode {self.crop!r} (known: {', '.join(MODES)})")
        if self.captions not in CAPTION_TEXTS:
            raise UsageError(f"captions must be one of {', '.join(CAPTION_TEXTS)}")
        if self.naming not in NAMINGS:
            raise UsageError(f"naming must be one of {', '.join(NAMINGS)}")
        if self.tag_order not in ORDERS:
            raise UsageError(f"tag order must be one of {', '.join(ORDERS)}")
        if self.caption_extension not in CAPTION_EXTENSIONS:
            raise UsageError(f"caption extension must be one of {', '.join(CAPTION_EXTENSIONS)}")
        if self.repeats < 1 or self.reg_repeats < 1 or self.batch_size < 1:
            raise UsageError("repeats and batch size must be at least 1")
        if not 1 <= self.quality <= 100:
            raise UsageError(f"quality must be between 1 and 100, got {self.quality}")
        if not 0 <= self.png_compression <= 9:
            raise UsageError(f"PNG compression must be 0 to 9, got {self.png_compression}")
        if self.keep_tokens < 0:
            raise UsageError("keep_tokens must be 0 or more")
        if len(self.background) != 3 or not all(
            isinstance(c, int) and 0 <= c <= 255 for c in self.background
        ):
            raise UsageError(f"background must be three values 0-255, got {self.background!r}")
        normalize_format(self.image_format)
        self.bucket_spec()

    def settings(self) -> dict[str, Any]:
        """The settings that shape the output (JSON-ready), as manifests record them."""
        data = dataclasses.asdict(self)
        for name in _RUNTIME_FIELDS:
            data.pop(name)
        data["image_format"] = normalize_format(self.image_format)
        data["resolution"] = list(self.resolution) if self.resolution else None
        data["background"] = list(self.background)
        return data

    @classmethod
    def from_settings(cls, data: dict[str, Any], **changes: Any) -> ExportOptions:
        """Options from a recorded `settings` dict (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in {**data, **changes}.items() if k in names}
        for name in ("resolution", "background"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class SkippedImage:
    """An image that was selected but not exported: its content hash, file name, why."""

    sha256: str
    name: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"source_sha256": self.sha256, "name": self.name, "reason": self.reason}


@dataclass(slots=True)
class ExportSummary:
    """What an export did. ``excluded`` counts images the selection left out (``duplicate``,
    ``rejected``, ``missing_file``; ``reg_...`` for the regularisation query)."""

    export_id: int | None = None
    target: str = ""
    layout: str = ""
    selected: int = 0
    exported: int = 0
    reg_exported: int = 0
    skipped: list[SkippedImage] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)
    histogram: list[tuple[Bucket, int]] = field(default_factory=list)
    crops_reused: int = 0
    files: int = 0
    moved_aside: str | None = None
    recovered: str | None = None  # an interrupted earlier export that was put right
    seconds: float = 0.0
    render_seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        done = self.exported + self.reg_exported
        return done / self.render_seconds if self.render_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["skipped"] = [s.as_dict() for s in self.skipped]
        data["histogram"] = [{"bucket": list(b), "count": n} for b, n in self.histogram]
        data["images_per_second"] = self.images_per_second
        return data
