"""DeepDanbooru taggers exported to ONNX (a model file + tags.txt).

Preprocessing follows DeepDanbooru's own evaluation code: RGB, an area resize that
keeps the aspect ratio and fits inside the model's square input, centred and padded
by repeating the edge pixels, float32 in 0–1. Two deliberate differences: transparent
pixels are composited onto white (DeepDanbooru drops alpha, exposing whatever colour
sits under it), and the padding offset is rounded to whole pixels (DeepDanbooru's affine
warp may land half a pixel off and blur the image by that half pixel).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from taggers.base import Result, Tag
from taggers.errors import ModelLoadError, ModelNotFoundError
from taggers.onnx_session import (
    LazySession,
    file_revision,
    input_layout,
    prepare_model_file,
    square_input_size,
)
from taggers.wd14 import to_rgb_on_white

RATING_PREFIX = "rating:"
# Per-category tag lists a DeepDanbooru project may ship beside tags.txt.
CATEGORY_FILES: dict[str, str] = {
    "tags-general.txt": "general",
    "tags-character.txt": "character",
    "tags-copyright.txt": "copyright",
    "tags-artist.txt": "artist",
    "tags-meta.txt": "meta",
}


def deepdanbooru_preprocess(image: Image.Image, size: int) -> np.ndarray:
    """One image as DeepDanbooru wants it: (size, size, 3) float32 RGB in 0–1.

    A pure function of its arguments, so it can run in a worker process.
    """
    rgb = to_rgb_on_white(image)
    width, height = rgb.size
    scale = min(size / width, size / height)
    new_w = min(size, max(1, round(width * scale)))
    new_h = min(size, max(1, round(height * scale)))
    if (new_w, new_h) != (width, height):
        rgb = rgb.resize((new_w, new_h), Image.Resampling.BOX)
    array = np.asarray(rgb, dtype=np.float32) / np.float32(255.0)
    top = (size - new_h) // 2
    left = (size - new_w) // 2
    padding = ((top, size - new_h - top), (left, size - new_w - left), (0, 0))
    return np.ascontiguousarray(np.pad(array, padding, mode="edge"))


def load_tag_list(tags_path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(names, categories) from tags.txt and any per-category lists beside it."""
    tags_path = Path(tags_path)
    if not tags_path.is_file():
        raise ModelNotFoundError(f"{tags_path} is missing: a DeepDanbooru model needs its tags.txt")
    lines = [line.strip() for line in tags_path.read_text(encoding="utf-8").splitlines()]
    raw = [line for line in lines if line]
    if not raw:
        raise ModelLoadError(f"{tags_path} lists no tags")
    category_of: dict[str, str] = {}
    for filename, category in CATEGORY_FILES.items():
        listing = tags_path.parent / filename
        if listing.is_file():
            for line in listing.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    category_of[line.strip()] = category
    names: list[str] = []
    categories: list[str] = []
    for tag in raw:
        if tag.startswith(RATING_PREFIX):
            names.append(tag[len(RATING_PREFIX) :])
            categories.append("rating")
        else:
            names.append(tag)
            categories.append(category_of.get(tag, "general"))
    return tuple(names), tuple(categories)


class DeepDanbooruTagger:
    """A DeepDanbooru ONNX tagger following the `taggers.base.Model` protocol."""

    kind = "tagger"
    OPTIONS: ClassVar[tuple[str, ...]] = ("threshold",)

    def __init__(
        self,
        model_path: Path,
        tags_path: Path,
        *,
        name: str | None = None,
        threshold: float = 0.5,
        device: str = "auto",
        threads: int | None = None,
        quantize: str | None = None,
        quantize_cache: Path | None = None,
    ):
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelNotFoundError(
                f"{model_path} is missing: a DeepDanbooru model needs its .onnx file"
            )
        self.source_path = model_path
        self.quantize = quantize
        self.model_path = prepare_model_file(
            model_path,
            quantize=quantize,
            cache_dir=Path(quantize_cache or model_path.parent / ".quantized"),
        )
        self.tags_path = Path(tags_path)
        self.names, self.categories = load_tag_list(self.tags_path)
        self.name = name or model_path.stem
        self.threshold = float(threshold)
        self.revision = file_revision(self.model_path)
        self._session = LazySession(self.model_path, device=device, threads=threads)
        self._input_size: int | None = None
        self._layout = "NHWC"

    @property
    def input_size(self) -> int:
        """The square side the model was exported with (loads the session once)."""
        if self._input_size is None:
            shape = self._session.input_shape()
            self._layout = input_layout(shape)
            self._input_size = square_input_size(
                shape, layout=self._layout, model_path=self.model_path
            )
            width = self._session.output_shape()[-1]
            if isinstance(width, int) and width != len(self.names):
                raise ModelLoadError(
                    f"{self.model_path} scores {width} tags but {self.tags_path} lists "
                    f"{len(self.names)}: the two files do not belong together"
                )
        return self._input_size

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return deepdanbooru_preprocess(image, self.input_size)

    def predict(self, batch: Sequence[np.ndarray] | np.ndarray) -> list[Result]:
        size = self.input_size
        array = batch if isinstance(batch, np.ndarray) else np.stack(list(batch))
        array = np.ascontiguousarray(array, dtype=np.float32)
        if array.shape[1:] != (size, size, 3):
            raise ValueError(f"expected arrays of shape ({size}, {size}, 3), got {array.shape[1:]}")
        if self._layout == "NCHW":
            array = np.ascontiguousarray(array.transpose(0, 3, 1, 2))
        scores = self._session.run(array)[0]
        if scores.shape[-1] != len(self.names):
            raise ModelLoadError(
                f"{self.model_path} scored {scores.shape[-1]} tags but {self.tags_path} "
                f"lists {len(self.names)}"
            )
        return [self.result_from_scores(row) for row in scores]

    def result_from_scores(self, scores: np.ndarray) -> Result:
        result = Result()
        tags: list[Tag] = []
        for name, category, score in zip(self.names, self.categories, scores, strict=True):
            value = float(score)
            if category == "rating":
                result.scores[f"rating:{name}"] = value
                tags.append(Tag(name, category, value))
            elif value >= self.threshold:
                tags.append(Tag(name, category, value))
        tags.sort(key=lambda t: (t.category != "rating", -t.score, t.name))
        result.tags = tags
        return result

    def params(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "quantize": self.quantize,
            "model_file": self.source_path.name,
            "tags": len(self.names),
        }

    def __getstate__(self) -> dict[str, Any]:
        # Resolve the input size first so a worker calling `preprocess` never loads weights.
        _ = self.input_size
        return self.__dict__.copy()
