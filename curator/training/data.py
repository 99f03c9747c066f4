"""Training data from a kohya DreamBooth folder: `img/N_tokens/` with caption sidecars.

The layout is sd-scripts' `--train_data_dir` convention, which `curator export --layout
kohya-dreambooth` writes: each subfolder of `img/` is named `{repeats}_{class tokens}`,
holds images already cut to their aspect-ratio buckets, and a caption file beside each
image (`.txt` unless `dataset.toml` says otherwise). `dataset.toml`, when present, also
supplies `shuffle_caption` and `keep_tokens`, applied per step as sd-scripts does.
`reg/N_class/` holds regularization images (their caption, or the folder's class
tokens); as in sd-scripts, an epoch uses as many of them as it has training images.
"""

from __future__ import annotations

import hashlib
import json
import random
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from curator.errors import UsageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class TrainingDataError(UsageError):
    """Training data that cannot work, found before any training step."""


@dataclass(frozen=True)
class Example:
    path: Path
    caption: str
    size: tuple[int, int]  # (width, height): the image's bucket
    folder: str  # the `N_tokens` folder it came from
    repeats: int = 1
    is_reg: bool = False


@dataclass
class Dataset:
    root: Path
    examples: list[Example]
    repeats: dict[str, int]  # folder name → repeats
    shuffle_caption: bool = False
    keep_tokens: int = 0
    caption_extension: str = ".txt"
    buckets: dict[tuple[int, int], list[int]] = field(default_factory=dict)

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
            tags = {t.strip() for t in example.caption.split(",") if t.strip()}
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
            inside = example.path.is_relative_to(self.root)  # class images may live elsewhere
            relative = (example.path.relative_to(self.root) if inside else example.path).as_posix()
            digest.update(relative.encode() + b"\0")
            digest.update(hashlib.sha256(example.path.read_bytes()).digest())
            digest.update(example.caption.encode() + b"\0")
        digest.update(json.dumps(self.repeats, sort_keys=True).encode())
        return digest.hexdigest()

    def caption_for_step(self, example: Example, rng: random.Random) -> str:
        """The caption as sd-scripts feeds it: the first `keep_tokens` tags stay in place,
        the rest are shuffled when `shuffle_caption` is on."""
        if not self.shuffle_caption:
            return example.caption
        tags = [t.strip() for t in example.caption.split(",") if t.strip()]
        kept, rest = tags[: self.keep_tokens], tags[self.keep_tokens :]
        rng.shuffle(rest)
        return ", ".join(kept + rest)

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


def _image_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError):
        return None


def _toml_settings(root: Path) -> dict:
    path = root / "dataset.toml"
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise TrainingDataError(f"{path}: not readable TOML ({error})") from error
    return data.get("general", {}) if isinstance(data.get("general"), dict) else {}


def _repeat_folder(path: Path) -> tuple[int, str] | None:
    count, sep, tokens = path.name.partition("_")
    if not sep or not count.isdigit() or int(count) < 1:
        return None
    return int(count), tokens


def load_dataset(root: str | Path, *, need_captions: bool = True, reg: bool = True) -> Dataset:
    """Read `root` (a kohya DreamBooth export, or its `img/` folder) or say why it cannot
    train: no repeat folders, no images, images without captions. `reg`: also read the
    export's `reg/` folders."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise TrainingDataError(f"no such training data folder: {root}")
    settings = _toml_settings(root)
    extension = settings.get("caption_extension", ".txt")
    images_dir = root / "img" if (root / "img").is_dir() else root
    folders = sorted(p for p in images_dir.iterdir() if p.is_dir() and _repeat_folder(p))
    if not folders:
        raise TrainingDataError(
            f"{images_dir} has no `N_tokens` folders (kohya DreamBooth layout: "
            "img/10_sks dog/ with images and caption files)"
        )
    reg_dir = root / "reg"
    if reg and images_dir != root and reg_dir.is_dir():
        folders += sorted(p for p in reg_dir.iterdir() if p.is_dir() and _repeat_folder(p))
    examples, repeats, uncaptioned, unreadable = [], {}, [], []
    for folder in folders:
        count, tokens = _repeat_folder(folder)  # type: ignore[misc]
        is_reg = folder.parent == reg_dir
        repeats[folder.name] = count
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            size = _image_size(path)
            if size is None:
                unreadable.append(path.name)
                continue
            caption_file = path.with_suffix(extension)
            if caption_file.is_file():
                caption = caption_file.read_text(encoding="utf-8-sig").strip()
            elif need_captions and not is_reg:
                uncaptioned.append(path.name)
                continue
            else:
                caption = tokens
            examples.append(Example(path, caption or tokens, size, folder.name, count, is_reg))
    if unreadable:
        raise TrainingDataError(
            f"{len(unreadable)} image(s) cannot be read, e.g. {unreadable[0]}; "
            "re-export or remove them"
        )
    if uncaptioned:
        raise TrainingDataError(
            f"{len(uncaptioned)} image(s) have no caption file ({extension}), e.g. {uncaptioned[0]}"
        )
    if not any(not e.is_reg for e in examples):
        raise TrainingDataError(f"no images under {images_dir}")
    return Dataset(
        root,
        examples,
        repeats,
        shuffle_caption=bool(settings.get("shuffle_caption", False)),
        keep_tokens=int(settings.get("keep_tokens", 0) or 0),
        caption_extension=extension,
    )


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
                "export with bucketing on"
            )
