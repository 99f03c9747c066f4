"""Training examples, batches from one bucket, captions per step, and the checks that
refuse data which cannot train.

The examples come from any layout Curator exports (`curator.training.layouts` reads
them); this module knows nothing of folders. Each example has a bucket (its training
size): the exported file's own size, or, when a training resolution is given, the
bucket that resolution gives the image (the file is then resized and centre-cropped to
it as it is read). Captions are fed as sd-scripts feeds them: with `shuffle_caption`,
the tokens before `keep_tokens_separator` (or the first `keep_tokens`) stay in place and
the rest are shuffled at every step.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curator.errors import UsageError

if TYPE_CHECKING:
    from curator.export.buckets import BucketSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class TrainingDataError(UsageError):
    """Training data that cannot work, found before any training step."""


@dataclass(frozen=True)
class Example:
    path: Path
    caption: str
    size: tuple[int, int]  # (width, height): the image's bucket
    folder: str  # the subset it came from (kohya: the `N_tokens` folder)
    repeats: int = 1
    is_reg: bool = False
    source_size: tuple[int, int] | None = None  # the file's size when it is not the bucket

    def load_rgb(self) -> Any:
        """The image as 8-bit RGB at its bucket size: scaled to cover the bucket, then
        centre-cropped (sd-scripts' bucketing without random crop)."""
        from PIL import Image

        from taggers.pixels import to_rgb

        with Image.open(self.path) as image:
            rgb = to_rgb(image)
            rgb.load()  # to_rgb may hand back the open file's image itself
        if rgb.size == self.size:
            return rgb
        width, height = self.size
        scale = max(width / rgb.width, height / rgb.height)
        scaled = (max(width, round(rgb.width * scale)), max(height, round(rgb.height * scale)))
        rgb = rgb.resize(scaled, Image.Resampling.LANCZOS)
        left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
        return rgb.crop((left, top, left + width, top + height))


@dataclass
class Dataset:
    root: Path
    examples: list[Example]
    repeats: dict[str, int]  # folder name → repeats
    shuffle_caption: bool = False
    keep_tokens: int = 0
    caption_extension: str = ".txt"
    buckets: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    keep_tokens_separator: str = ""  # kohya's: the kept tokens end where it stands
    layout: str = "kohya-dreambooth"  # the export layout it was read from
    spec: BucketSpec | None = None  # the buckets the images were cut to, when known

    def __post_init__(self) -> None:
        for index, example in enumerate(self.examples):
            self.buckets.setdefault(example.size, []).append(index)

    @property
    def train_count(self) -> int:
        """Training images per epoch, repeats counted."""
        return sum(e.repeats for e in self.examples if not e.is_reg)

    @property
    def reg_count(self) -> int:
        return sum(e.repeats for e in self.examples if e.is_reg)

    def epoch_pool(self, rng: random.Random | None = None) -> list[Example]:
        """One epoch's images: each training image `repeats` times, then regularization
        images (repeats counted) cycled or cut to as many as there are training images."""
        train = [e for e in self.examples if not e.is_reg for _ in range(e.repeats)]
        reg = [e for e in self.examples if e.is_reg for _ in range(e.repeats)]
        if rng is not None:
            rng.shuffle(reg)
        if reg:
            reg = [reg[i % len(reg)] for i in range(len(train))]
        return train + reg

    def bucket_counts(self) -> dict[tuple[int, int], int]:
        counts: Counter = Counter(e.size for e in self.epoch_pool())
        return dict(sorted(counts.items()))

    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """kohya's `ss_tag_frequency`: per folder, how many captions hold each tag."""
        out: dict[str, Counter] = {}
        for example in self.examples:
            caption = example.caption
            if self.keep_tokens_separator:
                caption = caption.replace(self.keep_tokens_separator, ",")
            tags = set(_tokens(caption))
            out.setdefault(example.folder, Counter()).update(tags)
        return {folder: dict(counts) for folder, counts in out.items()}

    def bucket_info(self) -> dict:
        """kohya's `ss_bucket_info`: each bucket's resolution and image count (with repeats)."""
        buckets = {}
        for index, (size, count) in enumerate(self.bucket_counts().items()):
            buckets[str(index)] = {"resolution": list(size), "count": count}
        return {"buckets": buckets, "mean_img_ar_error": 0.0}

    def content_hash(self) -> str:
        """sha256 over every image's and caption's relative path and bytes, in order."""
        digest = hashlib.sha256()
        for example in sorted(self.examples, key=lambda e: str(e.path)):
            inside = example.path.is_relative_to(self.root)  # class or fine-tuning images
            relative = (example.path.relative_to(self.root) if inside else example.path).as_posix()
            digest.update(relative.encode() + b"\0")
            digest.update(hashlib.sha256(example.path.read_bytes()).digest())
            digest.update(example.caption.encode() + b"\0")
        digest.update(json.dumps(self.repeats, sort_keys=True).encode())
        return digest.hexdigest()

    def caption_for_step(self, example: Example, rng: random.Random) -> str:
        """The caption as sd-scripts feeds it: when `shuffle_caption` is on, the tokens
        before `keep_tokens_separator` (else the first `keep_tokens`) stay in place, and
        after a second separator stay at the end; the rest are shuffled; the separator
        itself is dropped. Without shuffling the caption is used as written."""
        if not self.shuffle_caption:
            return example.caption
        caption, fixed, suffix = example.caption, [], []
        separator = self.keep_tokens_separator
        if separator and separator in caption:
            fixed_part, flex_part = caption.split(separator, 1)
            if separator in flex_part:
                flex_part, suffix_part = flex_part.split(separator, 1)
                suffix = _tokens(suffix_part)
            fixed, flex = _tokens(fixed_part), _tokens(flex_part)
        else:
            tokens = _tokens(caption)
            fixed, flex = tokens[: self.keep_tokens], tokens[self.keep_tokens :]
        rng.shuffle(flex)
        return ", ".join(fixed + flex + suffix)

    def epoch_batches(self, batch_size: int, rng: random.Random) -> list[list[Example]]:
        """One epoch: each image `repeats` times, batches drawn from one bucket each,
        bucket order shuffled; a bucket's last batch may be smaller, as in sd-scripts."""
        by_bucket: dict[tuple[int, int], list[Example]] = {}
        for example in self.epoch_pool(rng):
            by_bucket.setdefault(example.size, []).append(example)
        batches = []
        for size in sorted(by_bucket):
            pool = by_bucket[size]
            rng.shuffle(pool)
            batches += [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(batches)
        return batches


def _tokens(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def check_batches(dataset: Dataset, batch_size: int, multiple_of: int = 8) -> None:
    """Refuse, before training, buckets that cannot fill a batch or that the VAE cannot
    encode (sides must be multiples of 8)."""
    for size, count in dataset.bucket_counts().items():
        if count < batch_size:
            raise TrainingDataError(
                f"bucket {size[0]}x{size[1]} has {count} image(s) (with repeats), fewer than "
                f"--batch-size {batch_size}; lower the batch size or add images"
            )
        if size[0] % multiple_of or size[1] % multiple_of:
            raise TrainingDataError(
                f"bucket {size[0]}x{size[1]} is not a multiple of {multiple_of} pixels; "
                "export with bucketing on, or give a training --resolution"
            )


def load_dataset(
    root: str | Path,
    *,
    layout: str | None = None,
    need_captions: bool = True,
    reg: bool = True,
    spec: BucketSpec | None = None,
    allow_upscale: bool = False,
    buckets: dict[str, Any] | None = None,
) -> Dataset:
    """Read the training set at `root` in any layout Curator exports (detected, or the
    named `layout`) or say in one line why it cannot train. See
    `curator.training.layouts.read_training_set` for the arguments."""
    from curator.training.layouts import read_training_set

    return read_training_set(
        root,
        layout=layout,
        need_captions=need_captions,
        reg=reg,
        spec=spec,
        allow_upscale=allow_upscale,
        buckets=buckets,
    )
