"""Text in images: RapidOCR's packaged PP-OCRv4 detector and recogniser.

Scores `text_area`, the fraction of the image covered by text boxes, and one detection
per line of text with what it says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from taggers.base import DecodedImage, Detection, Result, as_decoded
from taggers.errors import require
from taggers.onnx_session import file_sha256, select_providers
from taggers.registry import detector_files

# RapidOCR shrinks anything larger itself; shrinking in the worker keeps batches small.
MAX_SIDE = 2000


@dataclass(frozen=True, slots=True)
class OcrInput:
    bgr: np.ndarray  # (h, w, 3) uint8, longer side at most MAX_SIDE
    scale: float  # original pixels per array pixel


def text_preprocess(image: DecodedImage | Image.Image, max_side: int = MAX_SIDE) -> OcrInput:
    decoded = as_decoded(image)
    rgb = decoded.rgb()
    shrink = max(rgb.size) / max_side
    if shrink > 1:
        size = (max(1, round(rgb.width / shrink)), max(1, round(rgb.height / shrink)))
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    scale = decoded.original_size[0] / rgb.width
    bgr = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)[:, :, ::-1])
    return OcrInput(bgr, scale)


def covered_fraction(polygons: Sequence[np.ndarray], shape: tuple[int, int]) -> float:
    """Fraction of an (h, w) image inside any of `polygons`, overlaps counted once."""
    import cv2

    if not polygons:
        return 0.0
    mask = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(p).astype(np.int32) for p in polygons], 1)
    return float(mask.mean())


class TextDetector:
    """OCR lines as detections (label "text") and the `text_area` score."""

    name = "text"
    kind = "detector"
    # JPEGs may be draft-decoded down to the side OCR works at; boxes are scaled back
    # to original pixels through the decoded record's original size.
    input_size = MAX_SIDE
    OPTIONS: ClassVar[tuple[str, ...]] = ("min_score",)

    def __init__(self, *, device: str = "auto", threads: int | None = None, min_score: float = 0.5):
        self.model_paths = detector_files("text")
        digest = hashlib.sha256("".join(file_sha256(p) for p in self.model_paths).encode())
        self.revision = digest.hexdigest()[:12]
        self.device = device
        self.threads = threads
        self.min_score = float(min_score)
        self._engine: Any = None

    def _ocr(self) -> Any:
        if self._engine is None:
            from rapidocr_onnxruntime import RapidOCR

            providers = select_providers(self.device)
            det, cls, rec = (str(p) for p in self.model_paths)
            options: dict[str, Any] = {
                "det_model_path": det,
                "cls_model_path": cls,
                "rec_model_path": rec,
                "text_score": self.min_score,
                "intra_op_num_threads": self.threads or -1,
            }
            for part in ("det", "cls", "rec"):
                options[f"{part}_use_cuda"] = "CUDAExecutionProvider" in providers
                options[f"{part}_use_dml"] = "DmlExecutionProvider" in providers
            self._engine = RapidOCR(**options)
        return self._engine

    def load(self) -> None:
        require("rapidocr_onnxruntime", purpose="the text detector")
        self._ocr()

    def preprocess(self, decoded: DecodedImage) -> OcrInput:
        return text_preprocess(decoded)

    def predict(self, batch: Sequence[OcrInput]) -> list[Result]:
        engine = self._ocr()
        results = []
        for item in batch:
            lines, _ = engine(item.bgr, text_score=self.min_score)
            polygons = [np.asarray(box, dtype=np.float32) for box, _text, _score in lines or []]
            area = covered_fraction(polygons, item.bgr.shape[:2])
            detections = []
            for polygon, (_box, text, score) in zip(polygons, lines or [], strict=True):
                points = polygon * item.scale
                x0, y0 = np.floor(points.min(axis=0)).astype(int)
                x1, y1 = np.ceil(points.max(axis=0)).astype(int)
                box = (int(x0), int(y0), int(x1 - x0), int(y1 - y0))
                detections.append(Detection("text", float(score), box, text=str(text)))
            results.append(Result(scores={"text_area": area}, detections=detections))
        return results

    def params(self) -> dict[str, Any]:
        return {"min_score": self.min_score, "max_side": MAX_SIDE}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_engine"] = None
        return state
