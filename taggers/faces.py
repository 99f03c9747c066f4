"""Frontal faces with OpenCV's packaged Haar cascade.

Scores `faces`, the number of faces found, with one detection (label "face") per face.
Haar cascades give no calibrated confidence, so every detection scores 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from taggers.base import DecodedImage, Detection, Result, as_decoded
from taggers.errors import ModelLoadError, require
from taggers.onnx_session import file_revision
from taggers.registry import detector_files

# Cascades are slow on large images and gain nothing past this size.
MAX_SIDE = 1024


@dataclass(frozen=True, slots=True)
class GrayImage:
    gray: np.ndarray  # (h, w) uint8, histogram-equalised, longer side at most MAX_SIDE
    scale: float  # original pixels per array pixel


def faces_preprocess(image: DecodedImage | Image.Image, max_side: int = MAX_SIDE) -> GrayImage:
    import cv2

    decoded = as_decoded(image)
    gray = decoded.rgb().convert("L")
    if max(gray.size) > max_side:
        factor = max(gray.size) / max_side
        size = (max(1, round(gray.width / factor)), max(1, round(gray.height / factor)))
        gray = gray.resize(size, Image.Resampling.BOX)
    scale = decoded.original_size[0] / gray.width
    array = cv2.equalizeHist(np.asarray(gray, dtype=np.uint8))
    return GrayImage(array, scale)


class FaceDetector:
    """Face boxes in original-image pixels and a `faces` count."""

    name = "faces"
    kind = "detector"
    # JPEGs may be draft-decoded down to the side the cascade works at; boxes are scaled
    # back to original pixels through the decoded record's original size.
    input_size = MAX_SIDE
    OPTIONS: ClassVar[tuple[str, ...]] = ("scale_factor", "min_neighbors", "min_size")

    def __init__(
        self,
        *,
        device: str = "auto",
        threads: int | None = None,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 30,
    ):
        # device and threads are accepted for a uniform factory; the cascade runs on the
        # CPU, and OpenCV's thread count is process-wide, so it is left alone.
        del device, threads
        (self.cascade_path,) = detector_files("faces")
        self.revision = file_revision(self.cascade_path)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_size = int(min_size)
        self._cascade: Any = None

    def _classifier(self) -> Any:
        if self._cascade is None:
            require("cv2", purpose="the faces detector")
            import cv2

            self._cascade = cv2.CascadeClassifier(str(self.cascade_path))
        return self._cascade

    def load(self) -> None:
        if self._classifier().empty():
            raise ModelLoadError(f"cannot load the face cascade {self.cascade_path}")

    def preprocess(self, decoded: DecodedImage) -> GrayImage:
        return faces_preprocess(decoded)

    def predict(self, batch: Sequence[GrayImage]) -> list[Result]:
        cascade = self._classifier()
        results = []
        for item in batch:
            found = cascade.detectMultiScale(
                item.gray,
                scaleFactor=self.scale_factor,
                minNeighbors=self.min_neighbors,
                minSize=(self.min_size, self.min_size),
            )
            detections = [
                Detection("face", 1.0, tuple(int(round(v * item.scale)) for v in box))
                for box in np.asarray(found, dtype=np.float64).reshape(-1, 4)
            ]
            detections.sort(key=lambda d: (d.box[0], d.box[1]))
            results.append(Result(scores={"faces": float(len(detections))}, detections=detections))
        return results

    def params(self) -> dict[str, Any]:
        return {
            "scale_factor": self.scale_factor,
            "min_neighbors": self.min_neighbors,
            "min_size": self.min_size,
            "max_side": MAX_SIDE,
        }

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cascade"] = None
        return state
