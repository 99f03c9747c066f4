"""The contract every model in `taggers/` honours.

A model knows nothing of the catalog: decoded images in, plain results out, so it
can run in a worker process. The run loop in `curator.runs.loop` drives it:

    model.load()                                          # validate before any image
    arrays = [model.preprocess(decoded) for decoded in images]   # in decode workers
    results = model.predict(arrays)                       # one batch
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from taggers.pixels import WHITE, to_rgb


@dataclass(frozen=True, slots=True)
class Tag:
    name: str  # as the model spells it (e.g. "long_hair"); formatting belongs to export
    category: str  # "general" | "character" | "rating" | "copyright" | "artist" | "meta"
    score: float


@dataclass(frozen=True, slots=True)
class Detection:
    label: str
    score: float
    box: tuple[int, int, int, int]  # x, y, width, height in original image pixels
    text: str | None = None


@dataclass(slots=True)
class Result:
    """Everything one model says about one image. Unused kinds stay empty."""

    tags: list[Tag] = field(default_factory=list)
    caption: str | None = None
    embedding: np.ndarray | None = None
    scores: dict[str, float] = field(default_factory=dict)
    detections: list[Detection] = field(default_factory=list)


@dataclass(slots=True)
class DecodedImage:
    """One decoded image and what format-specific models need beside its pixels.

    ``image`` is as decoded, in its own mode, possibly draft-reduced (JPEG) below
    ``original_size``; boxes are reported in ``original_size`` pixels. ``quantization``
    holds a JPEG's quantisation tables (for quality estimation), else None.
    """

    image: Image.Image
    original_size: tuple[int, int]
    format: str | None = None
    path: str | None = None
    quantization: dict[int, list[int]] | None = None
    _rgb: dict[tuple[int, int, int], Image.Image] = field(default_factory=dict, repr=False)

    def rgb(self, background: tuple[int, int, int] = WHITE) -> Image.Image:
        """8-bit RGB with transparency on ``background`` (see `taggers.pixels.to_rgb`)."""
        if background not in self._rgb:
            self._rgb[background] = to_rgb(self.image, background)
        return self._rgb[background]

    @property
    def scale(self) -> float:
        """Original pixels per decoded pixel (above 1 when JPEG draft decoding shrank it)."""
        return self.original_size[0] / max(1, self.image.width)

    @classmethod
    def of(cls, image: Image.Image, path: str | None = None) -> DecodedImage:
        """The record for an image already in memory, read as it stands."""
        quantization = getattr(image, "quantization", None) or None
        return cls(
            image,
            image.size,
            image.format,
            path,
            {int(k): list(v) for k, v in quantization.items()} if quantization else None,
        )


def as_decoded(image: DecodedImage | Image.Image) -> DecodedImage:
    """Accept a bare PIL image wherever a `DecodedImage` is expected (library callers)."""
    return image if isinstance(image, DecodedImage) else DecodedImage.of(image)


@runtime_checkable
class Model(Protocol):
    """What the run loop drives. A model may also define ``load()``: load and validate its
    weights (and tag list), raising `taggers.errors.TaggerError` when it cannot run; the
    loop calls it before any image is touched."""

    name: str  # registry name or file stem, e.g. "wd-vit-tagger-v3"
    kind: str  # "tagger" | "detector" | "captioner" | "embedder"
    revision: str  # short hash of the weights (and of any option that changes output)
    input_size: int | None  # square side the model wants, for JPEG draft decoding

    def preprocess(self, decoded: DecodedImage) -> Any: ...

    def predict(self, batch: list[Any]) -> list[Result]: ...

    def params(self) -> dict[str, Any]: ...
