"""The contract every model in `taggers/` honours.

A model knows nothing of the catalog: PIL images in, plain results out, so it
can run in a worker process. The run loop in `curator.runs.loop` drives it:

    arrays = [model.preprocess(img) for img in images]   # in decode workers
    results = model.predict(np.stack(arrays))            # one batch
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


@runtime_checkable
class Model(Protocol):
    name: str  # registry name or file stem, e.g. "wd-vit-tagger-v3"
    kind: str  # "tagger" | "detector" | "captioner" | "embedder"
    revision: str  # short hash of the weights (and of any option that changes output)
    input_size: int | None  # square side the model wants, for JPEG draft decoding

    def preprocess(self, image: Image.Image) -> Any: ...

    def predict(self, batch: list[Any]) -> list[Result]: ...

    def params(self) -> dict[str, Any]: ...
