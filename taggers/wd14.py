"""SmilingWolf's WD14 taggers (ONNX + selected_tags.csv).

The contract, as in SmilingWolf's reference space: alpha composited onto white,
padded centrally to a square with white, bicubic resize to the model's input side
(read from the model), RGB → BGR, float32 in 0–255, NHWC. One sigmoid score per row
of selected_tags.csv. Workers send the pixels as uint8; `to_input` widens them.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from taggers.base import DecodedImage, as_decoded
from taggers.errors import ModelLoadError, ModelNotFoundError
from taggers.onnx_tagger import OnnxTagger, TagTable, read_text
from taggers.pixels import WHITE

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


def pad_to_square(image: Image.Image, fill: tuple[int, int, int] = WHITE) -> Image.Image:
    """`image` centred on a square canvas of its longer side."""
    width, height = image.size
    side = max(width, height)
    if width == height:
        return image
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def wd14_preprocess(image: DecodedImage | Image.Image, size: int) -> np.ndarray:
    """One image as a WD14 tagger wants it: (size, size, 3) uint8 BGR (0–255).

    A pure function of its arguments, so it can run in a worker process.
    """
    square = pad_to_square(as_decoded(image).rgb(WHITE))
    if square.size != (size, size):
        square = square.resize((size, size), Image.Resampling.BICUBIC)
    return np.ascontiguousarray(np.asarray(square, dtype=np.uint8)[:, :, ::-1])


def mcut_threshold(scores: np.ndarray) -> float:
    """MCut: the midpoint of the largest gap between consecutive sorted scores."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    ordered = ordered[np.isfinite(ordered)]
    if ordered.size < 2:
        # No gap to cut: fall back to an even split.
        return 0.5
    gaps = ordered[:-1] - ordered[1:]
    i = int(np.argmax(gaps))
    return float((ordered[i] + ordered[i + 1]) / 2)


def load_selected_tags(path: Path) -> TagTable:
    """Read selected_tags.csv (columns tag_id,name,category,count)."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing: a WD14 tagger needs its selected_tags.csv")
    reader = csv.DictReader(io.StringIO(read_text(path, "selected_tags.csv"), newline=""))
    try:
        fields = reader.fieldnames
        if fields is None or not {"name", "category"} <= set(fields):
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
            names.append((row["name"] or "").strip())
            categories.append(CATEGORY_NAMES.get(code, "general"))
    except csv.Error as exc:
        raise ModelLoadError(f"{path}:{reader.line_num}: not a CSV file ({exc})") from None
    if not names:
        raise ModelLoadError(f"{path} lists no tags")
    return TagTable(tuple(names), tuple(categories))


class WD14Tagger(OnnxTagger):
    """A WD14 tagger following the `taggers.base.Model` protocol."""

    FAMILY: ClassVar[str] = "WD14"
    OPTIONS: ClassVar[tuple[str, ...]] = ("general_threshold", "character_threshold", "mcut")

    def __init__(
        self,
        model_path: Path,
        tags_csv: Path,
        *,
        general_threshold: float = 0.35,
        character_threshold: float = 0.85,
        mcut: bool = False,
        **kwargs: Any,
    ):
        super().__init__(model_path, tags_csv, **kwargs)
        self.general_threshold = float(general_threshold)
        self.character_threshold = float(character_threshold)
        self.mcut = bool(mcut)

    @property
    def tags_csv(self) -> Path:
        return self.tags_path

    @classmethod
    def load_tags(cls, path: Path) -> TagTable:
        return load_selected_tags(path)

    def pixels(self, decoded: DecodedImage, side: int) -> np.ndarray:
        return wd14_preprocess(decoded, side)

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

    def picked(self, scores: np.ndarray) -> list[int]:
        """Every non-rating tag strictly above its category's cut-off."""
        cuts = self.thresholds(scores)
        out: list[int] = []
        for category, idx in self.table.groups.items():
            if category != "rating":
                out.extend(idx[scores[idx] > cuts[category]].tolist())
        return out

    def params(self) -> dict[str, Any]:
        return {
            "general_threshold": self.general_threshold,
            "character_threshold": self.character_threshold,
            "mcut": self.mcut,
            **super().params(),
        }
