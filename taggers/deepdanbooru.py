"""DeepDanbooru taggers exported to ONNX (a model file + tags.txt).

Preprocessing follows DeepDanbooru's own evaluation code: RGB, an area resize that
keeps the aspect ratio and fits inside the model's square input, centred and padded
by repeating the edge pixels, float32 in 0–1. Two deliberate differences: transparent
pixels are composited onto white (DeepDanbooru drops alpha, exposing whatever colour
sits under it), and the padding offset is rounded to whole pixels (DeepDanbooru's affine
warp may land half a pixel off and blur the image by that half pixel). Workers send
uint8 pixels; `to_input` scales them to 0–1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from taggers.base import DecodedImage, as_decoded
from taggers.errors import ModelNotFoundError
from taggers.onnx_tagger import OnnxTagger, TagTable, read_text
from taggers.pixels import WHITE

RATING_PREFIX = "rating:"
# Per-category tag lists a DeepDanbooru project may ship beside tags.txt.
CATEGORY_FILES: dict[str, str] = {
    "tags-general.txt": "general",
    "tags-character.txt": "character",
    "tags-copyright.txt": "copyright",
    "tags-artist.txt": "artist",
    "tags-meta.txt": "meta",
}


def deepdanbooru_preprocess(image: DecodedImage | Image.Image, size: int) -> np.ndarray:
    """One image as DeepDanbooru wants it, as uint8: (size, size, 3) RGB (0–255).

    A pure function of its arguments, so it can run in a worker process.
    """
    rgb = as_decoded(image).rgb(WHITE)
    width, height = rgb.size
    scale = min(size / width, size / height)
    new_w = min(size, max(1, round(width * scale)))
    new_h = min(size, max(1, round(height * scale)))
    if (new_w, new_h) != (width, height):
        rgb = rgb.resize((new_w, new_h), Image.Resampling.BOX)
    array = np.asarray(rgb, dtype=np.uint8)
    top = (size - new_h) // 2
    left = (size - new_w) // 2
    padding = ((top, size - new_h - top), (left, size - new_w - left), (0, 0))
    return np.ascontiguousarray(np.pad(array, padding, mode="edge"))


def _lines(path: Path) -> list[str]:
    """Stripped lines; blank lines at the end are not columns, blank ones inside are."""
    lines = [line.strip() for line in read_text(path, "a tag list").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def load_tag_list(tags_path: Path) -> TagTable:
    """Names and categories from tags.txt and any per-category lists beside it."""
    tags_path = Path(tags_path)
    if not tags_path.is_file():
        raise ModelNotFoundError(f"{tags_path} is missing: a DeepDanbooru model needs its tags.txt")
    raw = _lines(tags_path)
    category_of: dict[str, str] = {}
    for filename, category in CATEGORY_FILES.items():
        listing = tags_path.parent / filename
        if listing.is_file():
            for line in _lines(listing):
                if line:
                    category_of[line] = category
    names: list[str] = []
    categories: list[str] = []
    for tag in raw:
        if tag.startswith(RATING_PREFIX):
            names.append(tag[len(RATING_PREFIX) :])
            categories.append("rating")
        else:
            names.append(tag)
            categories.append(category_of.get(tag, "general"))
    return TagTable(tuple(names), tuple(categories))


class DeepDanbooruTagger(OnnxTagger):
    """A DeepDanbooru ONNX tagger following the `taggers.base.Model` protocol."""

    FAMILY: ClassVar[str] = "DeepDanbooru"
    OPTIONS: ClassVar[tuple[str, ...]] = ("threshold",)

    def __init__(self, model_path: Path, tags_path: Path, *, threshold: float = 0.5, **kwargs: Any):
        super().__init__(model_path, tags_path, **kwargs)
        if kwargs.get("name") is None:
            self.name = Path(model_path).stem
        self.threshold = float(threshold)

    @property
    def names(self) -> tuple[str, ...]:
        return self.table.names

    @property
    def categories(self) -> tuple[str, ...]:
        return self.table.categories

    @classmethod
    def load_tags(cls, path: Path) -> TagTable:
        return load_tag_list(path)

    def pixels(self, decoded: DecodedImage, side: int) -> np.ndarray:
        return deepdanbooru_preprocess(decoded, side)

    def to_input(self, batch: np.ndarray) -> np.ndarray:
        return batch.astype(np.float32) / np.float32(255.0)

    def picked(self, scores: np.ndarray) -> list[int]:
        """Every non-rating tag at or above the threshold."""
        out: list[int] = []
        for category, idx in self.table.groups.items():
            if category != "rating":
                out.extend(idx[scores[idx] >= self.threshold].tolist())
        return out

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, **super().params()}
