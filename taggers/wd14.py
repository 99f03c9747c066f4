"""SmilingWolf's WD14 taggers (ONNX + selected_tags.csv).

The contract, as in SmilingWolf's reference space: alpha composited onto white,
padded centrally to a square with white, bicubic resize to the model's input side
(read from the model), RGB → BGR, float32 in 0–255, NHWC. One sigmoid score per row
of selected_tags.csv.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from taggers.base import Result, Tag
from taggers.errors import ModelLoadError, ModelNotFoundError
from taggers.onnx_session import (
    LazySession,
    file_revision,
    prepare_model_file,
    square_input_size,
)

# Danbooru category codes as written in selected_tags.csv.
CATEGORY_NAMES: dict[int, str] = {
    0: "general",
    1: "artist",
    3: "copyright",
    4: "character",
    5: "meta",
    9: "rating",
}
# Which threshold each category uses: identity-like categories are rare and need the
# stricter character threshold; meta tags behave like general ones.
CHARACTER_LIKE = frozenset({"character", "artist", "copyright"})
# MCut can collapse to near zero when characters score low across the board.
CHARACTER_MCUT_FLOOR = 0.15

# How tags are ordered in a Result: ratings first, then identities, then the rest.
CATEGORY_ORDER = {"rating": 0, "character": 1, "copyright": 2, "artist": 3}

WHITE = (255, 255, 255)


def to_rgb_on_white(image: Image.Image) -> Image.Image:
    """An RGB copy of `image` with any transparency composited onto white."""
    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or ("transparency" in image.info)
    if not has_alpha:
        return image.convert("RGB")
    try:
        rgba = image.convert("RGBA")
    except ValueError:  # a few premultiplied modes only convert via RGB
        rgba = image.convert("RGB").convert("RGBA")
    canvas = Image.new("RGBA", image.size, (*WHITE, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def pad_to_square(image: Image.Image, fill: tuple[int, int, int] = WHITE) -> Image.Image:
    """`image` centred on a square canvas of its longer side."""
    width, height = image.size
    side = max(width, height)
    if width == height:
        return image
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def wd14_preprocess(image: Image.Image, size: int) -> np.ndarray:
    """One image as a WD14 tagger wants it: (size, size, 3) float32 BGR in 0–255.

    A pure function of its arguments, so it can run in a worker process.
    """
    square = pad_to_square(to_rgb_on_white(image))
    if square.size != (size, size):
        square = square.resize((size, size), Image.Resampling.BICUBIC)
    rgb = np.asarray(square, dtype=np.float32)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def mcut_threshold(scores: np.ndarray) -> float:
    """MCut: the midpoint of the largest gap between consecutive sorted scores."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if ordered.size < 2:
        # No gap to cut: fall back to an even split.
        return 0.5
    gaps = ordered[:-1] - ordered[1:]
    i = int(np.argmax(gaps))
    return float((ordered[i] + ordered[i + 1]) / 2)


@dataclass(frozen=True)
class TagTable:
    """The tag names and categories that line up with a model's output columns."""

    names: tuple[str, ...]
    categories: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    @cached_property
    def groups(self) -> dict[str, np.ndarray]:
        """Column indices of each category, in first-seen order."""
        groups: dict[str, list[int]] = {}
        for i, category in enumerate(self.categories):
            groups.setdefault(category, []).append(i)
        return {category: np.array(idx, dtype=np.intp) for category, idx in groups.items()}


def load_selected_tags(path: Path) -> TagTable:
    """Read selected_tags.csv (columns tag_id,name,category,count)."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing: a WD14 tagger needs its selected_tags.csv")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"name", "category"} <= set(reader.fieldnames):
            raise ModelLoadError(f"{path}: expected columns tag_id,name,category,count")
        names: list[str] = []
        categories: list[str] = []
        for row in reader:
            try:
                code = int(row["category"])
            except (TypeError, ValueError) as exc:
                raise ModelLoadError(
                    f"{path}:{reader.line_num}: bad category {row['category']!r}"
                ) from exc
            names.append(row["name"])
            categories.append(CATEGORY_NAMES.get(code, "general"))
    if not names:
        raise ModelLoadError(f"{path} lists no tags")
    return TagTable(tuple(names), tuple(categories))


def _as_batch(batch: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    array = batch if isinstance(batch, np.ndarray) else np.stack(list(batch))
    return np.ascontiguousarray(array, dtype=np.float32)


class WD14Tagger:
    """A WD14 tagger following the `taggers.base.Model` protocol."""

    kind = "tagger"
    OPTIONS: ClassVar[tuple[str, ...]] = ("general_threshold", "character_threshold", "mcut")

    def __init__(
        self,
        model_path: Path,
        tags_csv: Path,
        *,
        name: str | None = None,
        general_threshold: float = 0.35,
        character_threshold: float = 0.85,
        mcut: bool = False,
        device: str = "auto",
        threads: int | None = None,
        quantize: str | None = None,
        quantize_cache: Path | None = None,
    ):
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelNotFoundError(f"{model_path} is missing: a WD14 tagger needs its .onnx file")
        self.source_path = model_path
        self.quantize = quantize
        self.model_path = prepare_model_file(
            model_path,
            quantize=quantize,
            cache_dir=Path(quantize_cache or model_path.parent / ".quantized"),
        )
        self.tags_csv = Path(tags_csv)
        self.table = load_selected_tags(self.tags_csv)
        self.name = name or (
            model_path.parent.name if model_path.stem == "model" else model_path.stem
        )
        self.general_threshold = float(general_threshold)
        self.character_threshold = float(character_threshold)
        self.mcut = bool(mcut)
        self.revision = file_revision(self.model_path)
        self._session = LazySession(self.model_path, device=device, threads=threads)
        self._input_size: int | None = None

    @property
    def input_size(self) -> int:
        """The square side the model was exported with (loads the session once)."""
        if self._input_size is None:
            shape = self._session.input_shape()
            if len(shape) != 4 or shape[3] != 3:
                raise ModelLoadError(
                    f"{self.model_path}: a WD14 model takes NHWC input [batch, side, side, 3], "
                    f"got {shape}"
                )
            self._input_size = square_input_size(shape, layout="NHWC", model_path=self.model_path)
            self._check_outputs()
        return self._input_size

    def _check_outputs(self) -> None:
        width = self._session.output_shape()[-1]
        if isinstance(width, int) and width != len(self.table):
            raise ModelLoadError(
                f"{self.model_path} scores {width} tags but {self.tags_csv} lists "
                f"{len(self.table)}: the two files do not belong together"
            )

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return wd14_preprocess(image, self.input_size)

    def predict(self, batch: Sequence[np.ndarray] | np.ndarray) -> list[Result]:
        size = self.input_size
        array = _as_batch(batch)
        if array.shape[1:] != (size, size, 3):
            raise ValueError(f"expected arrays of shape ({size}, {size}, 3), got {array.shape[1:]}")
        scores = self._session.run(array)[0]
        if scores.shape[-1] != len(self.table):
            raise ModelLoadError(
                f"{self.model_path} scored {scores.shape[-1]} tags but {self.tags_csv} lists "
                f"{len(self.table)}"
            )
        return [self.result_from_scores(row) for row in scores]

    def thresholds(self, scores: np.ndarray) -> dict[str, float]:
        """The cut-off each non-rating category uses for this row of scores."""
        cuts: dict[str, float] = {}
        for category, idx in self.table.groups.items():
            if category == "rating":
                continue
            character_like = category in CHARACTER_LIKE
            if self.mcut:
                cut = mcut_threshold(scores[idx])
                if character_like:
                    cut = max(CHARACTER_MCUT_FLOOR, cut)
            else:
                cut = self.character_threshold if character_like else self.general_threshold
            cuts[category] = cut
        return cuts

    def result_from_scores(self, scores: np.ndarray) -> Result:
        """Tags and scores for one image's output row: every rating, and every other
        tag strictly above its category's cut-off."""
        scores = np.asarray(scores, dtype=np.float64)
        names = self.table.names
        result = Result()
        cuts = self.thresholds(scores)
        picked: list[Tag] = []
        for category, idx in self.table.groups.items():
            if category == "rating":
                for i in idx:
                    result.scores[f"rating:{names[i]}"] = float(scores[i])
                chosen = idx
            else:
                chosen = idx[scores[idx] > cuts[category]]
            picked.extend(Tag(names[i], category, float(scores[i])) for i in chosen)
        picked.sort(key=lambda t: (CATEGORY_ORDER.get(t.category, len(CATEGORY_ORDER)), -t.score))
        result.tags = picked
        return result

    def params(self) -> dict[str, Any]:
        return {
            "general_threshold": self.general_threshold,
            "character_threshold": self.character_threshold,
            "mcut": self.mcut,
            "quantize": self.quantize,
            "model_file": self.source_path.name,
            "tags": len(self.table),
        }

    def __getstate__(self) -> dict[str, Any]:
        # Resolve the input size before pickling so a worker calling `preprocess` never
        # loads the weights; the session itself is not pickled (see LazySession).
        _ = self.input_size
        return self.__dict__.copy()
