"""Where to crop an image so it fills a bucket.

Every crop first scales the source to COVER the bucket (``scale = max(bw / w, bh / h)``,
so one side matches and the other overhangs), then cuts a bucket-sized window out of
the scaled image. Only the window position differs between modes:

* ``center``: the middle of the overhang.
* ``random``: uniform over the overhang, drawn from ``random.Random`` seeded with
  `image_seed` ``(seed, sha256)``, so one image always gets the same crop whatever
  order the export visits images in.
* ``focal``: keeps face boxes inside the window (see `focal_crop`); without boxes,
  the window with the highest grey-level entropy (the most detailed region).

A `Crop` is plain numbers, stored as JSON (`Crop.to_dict` / `Crop.from_dict`) so an
export can be re-rendered, or a user can move the window, later. Source coordinates
are those of the image as displayed, i.e. after its EXIF orientation is applied.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from curator.errors import CuratorError

Box = tuple[float, float, float, float]  # x, y, width, height

MODES = ("center", "random", "focal")
_ANALYSIS_SIDE = 256  # entropy search runs on a copy this big: plenty to find a region
_ENTROPY_BINS = 32


class CropError(CuratorError):
    """A crop cannot be made as asked (unknown mode, bad sizes, bad stored crop)."""


def _check_size(size: tuple[int, int], what: str) -> tuple[int, int]:
    width, height = int(size[0]), int(size[1])
    if width <= 0 or height <= 0:
        raise CropError(f"{what} size must be positive, got {width}x{height}")
    return width, height


def cover_scale(source_size: tuple[int, int], bucket: tuple[int, int]) -> float:
    """The smallest scale at which the source covers the bucket on both sides."""
    (width, height), (bw, bh) = _check_size(source_size, "source"), _check_size(bucket, "bucket")
    return max(bw / width, bh / height)


@dataclass(frozen=True, slots=True)
class Crop:
    """A bucket-sized window in the source scaled by ``scale``.

    ``scaled_left`` / ``scaled_top`` place the window in the scaled image, whose size
    is `scaled_size`; `left`, `top`, `width`, `height` are the same window in source
    pixels (floats: the window rarely falls on whole source pixels).
    """

    source_width: int
    source_height: int
    bucket_width: int
    bucket_height: int
    scale: float
    scaled_left: int
    scaled_top: int
    mode: str = "center"

    def __post_init__(self) -> None:
        _check_size((self.source_width, self.source_height), "source")
        _check_size((self.bucket_width, self.bucket_height), "bucket")
        minimum = cover_scale(self.source_size, self.bucket)
        # A stored scale may have lost its last bit in a round trip; allow for that.
        if not self.scale >= minimum * (1 - 1e-9):
            raise CropError(f"scale {self.scale} does not cover the bucket (needs {minimum})")
        scaled_w, scaled_h = self.scaled_size
        if not (0 <= self.scaled_left <= scaled_w - self.bucket_width) or not (
            0 <= self.scaled_top <= scaled_h - self.bucket_height
        ):
            raise CropError(
                f"crop window at ({self.scaled_left}, {self.scaled_top}) falls outside the "
                f"scaled image {scaled_w}x{scaled_h}"
            )

    @property
    def source_size(self) -> tuple[int, int]:
        return (self.source_width, self.source_height)

    @property
    def bucket(self) -> tuple[int, int]:
        return (self.bucket_width, self.bucket_height)

    @property
    def scaled_size(self) -> tuple[int, int]:
        """The size the whole source is resized to; never smaller than the bucket."""
        return (
            max(self.bucket_width, round(self.source_width * self.scale)),
            max(self.bucket_height, round(self.source_height * self.scale)),
        )

    @property
    def source_box(self) -> Box:
        """The window in source pixels as (left, top, width, height)."""
        scaled_w, scaled_h = self.scaled_size
        fx, fy = self.source_width / scaled_w, self.source_height / scaled_h
        return (
            self.scaled_left * fx,
            self.scaled_top * fy,
            self.bucket_width * fx,
            self.bucket_height * fy,
        )

    @property
    def left(self) -> float:
        return self.source_box[0]

    @property
    def top(self) -> float:
        return self.source_box[1]

    @property
    def width(self) -> float:
        return self.source_box[2]

    @property
    def height(self) -> float:
        return self.source_box[3]

    def moved_to(self, scaled_left: int, scaled_top: int) -> Crop:
        """The same crop with its window moved (clamped into the scaled image)."""
        scaled_w, scaled_h = self.scaled_size
        return Crop(
            self.source_width,
            self.source_height,
            self.bucket_width,
            self.bucket_height,
            self.scale,
            min(max(0, int(scaled_left)), scaled_w - self.bucket_width),
            min(max(0, int(scaled_top)), scaled_h - self.bucket_height),
            "manual",
        )

    @classmethod
    def around(cls, source_size: tuple[int, int], bucket: tuple[int, int], box: Box) -> Crop:
        """The crop whose window is ``box`` (x, y, w, h in source pixels), as a person sets it.

        The box is scaled so that it covers the bucket; when its aspect differs from
        the bucket's, the window keeps the box's centre and covers the whole box on its
        tighter side. A box reaching outside the image is refused.
        """
        (sw, sh), (bw, bh) = _check_size(source_size, "source"), _check_size(bucket, "bucket")
        x, y, w, h = (float(v) for v in box)
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > sw + 1e-6 or y + h > sh + 1e-6:
            raise CropError(f"crop box {x:g},{y:g},{w:g},{h:g} is not inside the {sw}x{sh} image")
        scale = max(bw / w, bh / h, cover_scale((sw, sh), (bw, bh)))
        probe = cls(sw, sh, bw, bh, scale, 0, 0, "manual")
        scaled_w, scaled_h = probe.scaled_size
        fx, fy = scaled_w / sw, scaled_h / sh
        left = round((x + w / 2) * fx - bw / 2)
        top = round((y + h / 2) * fy - bh / 2)
        return probe.moved_to(left, top)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; source-pixel fields are included for people and tools."""
        scaled_w, scaled_h = self.scaled_size
        left, top, width, height = self.source_box
        return {
            "mode": self.mode,
            "source": [self.source_width, self.source_height],
            "bucket": [self.bucket_width, self.bucket_height],
            "scale": self.scale,
            "scaled": {"width": scaled_w, "height": scaled_h},
            "scaled_left": self.scaled_left,
            "scaled_top": self.scaled_top,
            "left": left,
            "top": top,
            "width": width,
            "height": height,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Crop:
        """Rebuild a crop from `to_dict` output; derived fields are recomputed, not trusted."""
        try:
            return cls(
                source_width=int(data["source"][0]),
                source_height=int(data["source"][1]),
                bucket_width=int(data["bucket"][0]),
                bucket_height=int(data["bucket"][1]),
                scale=float(data["scale"]),
                scaled_left=int(data["scaled_left"]),
                scaled_top=int(data["scaled_top"]),
                mode=str(data.get("mode", "manual")),
            )
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise CropError(f"not a stored crop: {error!r}") from None


def _crop_at(
    source_size: tuple[int, int], bucket: tuple[int, int], left: float, top: float, mode: str
) -> Crop:
    """A cover-scaled crop with its window at (left, top), rounded and clamped."""
    (width, height), (bw, bh) = _check_size(source_size, "source"), _check_size(bucket, "bucket")
    scale = cover_scale((width, height), (bw, bh))
    probe = Crop(width, height, bw, bh, scale, 0, 0, mode)
    scaled_w, scaled_h = probe.scaled_size
    return Crop(
        width,
        height,
        bw,
        bh,
        scale,
        min(max(0, round(left)), scaled_w - bw),
        min(max(0, round(top)), scaled_h - bh),
        mode,
    )


def _overhang(source_size: tuple[int, int], bucket: tuple[int, int]) -> tuple[int, int]:
    probe = _crop_at(source_size, bucket, 0, 0, "center")
    scaled_w, scaled_h = probe.scaled_size
    return scaled_w - probe.bucket_width, scaled_h - probe.bucket_height


def center_crop(source_size: tuple[int, int], bucket: tuple[int, int]) -> Crop:
    """The window in the middle of the overhang (the extra pixel goes right/down)."""
    slack_x, slack_y = _overhang(source_size, bucket)
    return _crop_at(source_size, bucket, (slack_x + 1) // 2, (slack_y + 1) // 2, "center")


def image_seed(seed: int | str, sha256: str) -> int:
    """A per-image seed from the export seed and the image's content hash."""
    digest = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def random_crop(
    source_size: tuple[int, int], bucket: tuple[int, int], seed: int | str, sha256: str
) -> Crop:
    """A window drawn uniformly over the overhang; the same (seed, sha256) gives the same crop."""
    slack_x, slack_y = _overhang(source_size, bucket)
    rng = random.Random(image_seed(seed, sha256))
    left = rng.randint(0, slack_x)
    top = rng.randint(0, slack_y)
    return _crop_at(source_size, bucket, left, top, "random")


def _place(lo: float, hi: float, window: int, limit: int) -> int:
    """Start of a ``window`` in [0, limit] centred on the span [lo, hi].

    When the span fits, the start stays where the whole span is inside the window.
    """
    start = round((lo + hi) / 2 - window / 2)
    first, last = math.ceil(hi - window - 1e-9), math.floor(lo + 1e-9)
    if first <= last:
        start = min(max(start, first), last)
    return min(max(start, 0), limit)


def _clip(box: Box, size: tuple[int, int]) -> Box:
    """The part of ``box`` inside an image of ``size`` (empty boxes get zero size)."""
    x0, y0 = min(max(box[0], 0.0), size[0]), min(max(box[1], 0.0), size[1])
    x1 = min(max(box[0] + box[2], x0), size[0])
    y1 = min(max(box[1] + box[3], y0), size[1])
    return (x0, y0, x1 - x0, y1 - y0)


def _union(boxes: Sequence[Box]) -> Box:
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    return (x0, y0, x1 - x0, y1 - y0)


def focal_boxes(boxes: Sequence[Box], window: tuple[float, float]) -> list[Box]:
    """The boxes a focal crop keeps: the largest, then each next-largest that still fits.

    ``boxes`` and ``window`` share one coordinate system. Boxes fit together when
    their bounding box is no bigger than the window.
    """
    ordered = sorted(
        (b for b in boxes if b[2] > 0 and b[3] > 0), key=lambda b: (-b[2] * b[3], b[0], b[1])
    )
    kept: list[Box] = []
    for box in ordered:
        _, _, union_w, union_h = _union([*kept, box])
        if not kept or (union_w <= window[0] and union_h <= window[1]):
            kept.append(box)
    return kept


def focal_crop(
    source_size: tuple[int, int],
    bucket: tuple[int, int],
    boxes: Sequence[Box] = (),
    image: Image.Image | None = None,
) -> Crop:
    """A window around what matters: face ``boxes`` first, else the most detailed region.

    ``boxes`` are (x, y, width, height) in source pixels. The window keeps every box
    when they fit together; otherwise the largest box and then each next-largest box
    that still fits (`focal_boxes`). The kept boxes are centred as far as the image
    edges allow; a single box bigger than the window gets the window centred on it.

    Without boxes, ``image`` (the source, any size with the same aspect) is searched
    for the window of highest grey-level entropy (`entropy_offset`); without an image
    either, this is a `center_crop`.
    """
    probe = _crop_at(source_size, bucket, 0, 0, "focal")
    scaled_w, scaled_h = probe.scaled_size
    fx, fy = scaled_w / probe.source_width, scaled_h / probe.source_height
    scaled_boxes = [
        (b[0] * fx, b[1] * fy, b[2] * fx, b[3] * fy)
        for b in (_clip(box, probe.source_size) for box in boxes)
    ]
    kept = focal_boxes(scaled_boxes, (probe.bucket_width, probe.bucket_height))
    if kept:
        x, y, w, h = _union(kept)
        left = _place(x, x + w, probe.bucket_width, scaled_w - probe.bucket_width)
        top = _place(y, y + h, probe.bucket_height, scaled_h - probe.bucket_height)
        return _crop_at(source_size, bucket, left, top, "focal")
    if image is not None:
        fraction_x, fraction_y, is_centre = _most_detailed(
            image, (probe.bucket_width / scaled_w, probe.bucket_height / scaled_h)
        )
        if not is_centre:
            return _crop_at(
                source_size, bucket, fraction_x * scaled_w, fraction_y * scaled_h, "focal"
            )
    centred = center_crop(source_size, bucket)
    return _crop_at(source_size, bucket, centred.scaled_left, centred.scaled_top, "focal")


def _entropy_analysis_image(image: Image.Image) -> np.ndarray:
    grey = image.convert("L")
    grey.thumbnail((_ANALYSIS_SIDE, _ANALYSIS_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(grey)


def entropy_offset(image: Image.Image, window: tuple[float, float]) -> tuple[float, float]:
    """Where the most detailed window starts, as fractions of the image width and height.

    ``window`` is the window size as fractions of the image. Every window position on a
    copy at most 256 px across is scored by the Shannon entropy of its grey-level
    histogram (32 levels); the histograms come from one integral image per level, so
    each position costs 4 lookups per level. Among the best-scoring positions the one
    nearest the centre wins, so a flat image gets the centre.
    """
    x, y, _ = _most_detailed(image, window)
    return x, y


def _most_detailed(image: Image.Image, window: tuple[float, float]) -> tuple[float, float, bool]:
    """`entropy_offset`, plus whether the winner is the central position itself."""
    grey = _entropy_analysis_image(image)
    height, width = grey.shape
    win_w = min(width, max(1, round(window[0] * width)))
    win_h = min(height, max(1, round(window[1] * height)))
    levels = (grey.astype(np.int32) * _ENTROPY_BINS) >> 8
    onehot = (levels[None, :, :] == np.arange(_ENTROPY_BINS)[:, None, None]).astype(np.int32)
    integral = np.zeros((_ENTROPY_BINS, height + 1, width + 1), dtype=np.int32)
    integral[:, 1:, 1:] = onehot.cumsum(axis=1).cumsum(axis=2)

    y0, x0 = np.meshgrid(np.arange(height - win_h + 1), np.arange(width - win_w + 1), indexing="ij")
    y1, x1 = y0 + win_h, x0 + win_w
    counts = integral[:, y1, x1] - integral[:, y0, x1] - integral[:, y1, x0] + integral[:, y0, x0]
    p = counts / float(win_w * win_h)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=0)

    distance = (x0 - (width - win_w) / 2) ** 2 + (y0 - (height - win_h) / 2) ** 2
    best = entropy >= entropy.max() - 1e-9
    chosen = int(np.argmin(np.where(best, distance, np.inf)))
    row, col = np.unravel_index(chosen, distance.shape)
    is_centre = chosen == int(np.argmin(distance))
    return float(x0[row, col]) / width, float(y0[row, col]) / height, is_centre


def compute_crop(
    source_size: tuple[int, int],
    bucket: tuple[int, int],
    mode: str = "center",
    *,
    seed: int | str = 0,
    sha256: str = "",
    boxes: Sequence[Box] = (),
    image: Image.Image | None = None,
) -> Crop:
    """The crop for one image in ``mode`` (``center``, ``random`` or ``focal``)."""
    if mode == "center":
        return center_crop(source_size, bucket)
    if mode == "random":
        return random_crop(source_size, bucket, seed, sha256)
    if mode == "focal":
        return focal_crop(source_size, bucket, boxes, image)
    raise CropError(f"unknown crop mode {mode!r} (known: {', '.join(MODES)})")
