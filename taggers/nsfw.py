"""NudeNet's packaged 320n body-part detector, run on our own onnxruntime session.

Pre- and post-processing re-implement nudenet 3.4's: pad right/bottom with black to a
square, bilinear resize to 320, RGB in 0–1, NCHW; YOLOv8 output rows (cx, cy, w, h,
18 class scores), candidates at ≥ 0.2, class-agnostic NMS (score 0.25, IoU 0.45).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from taggers.base import DecodedImage, Detection, Result, as_decoded
from taggers.errors import require
from taggers.onnx_session import LazySession, file_revision
from taggers.registry import detector_files

LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
# The labels that make an image NSFW; exposed feet, armpits or bellies do not.
NSFW_LABELS = frozenset(
    {
        "BUTTOCKS_EXPOSED",
        "FEMALE_BREAST_EXPOSED",
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "ANUS_EXPOSED",
    }
)
INPUT_SIDE = 320
CANDIDATE_SCORE = 0.2
NMS_SCORE = 0.25
NMS_IOU = 0.45


@dataclass(frozen=True, slots=True)
class LetterboxedImage:
    """A model-ready array and what is needed to map boxes back to the original."""

    array: np.ndarray  # (3, side, side) uint8 RGB; the model takes it scaled to 0–1
    width: int  # original image size
    height: int


def nudenet_preprocess(
    image: DecodedImage | Image.Image, side: int = INPUT_SIDE
) -> LetterboxedImage:
    """Pad right/bottom to a square with black, resize to `side`, RGB uint8, CHW.

    Boxes map back to the original size (also when the pixels were draft-decoded smaller).
    """
    import cv2

    decoded = as_decoded(image)
    rgb = np.asarray(decoded.rgb(), dtype=np.uint8)
    height, width = rgb.shape[:2]
    longest = max(width, height)
    padded = cv2.copyMakeBorder(
        rgb, 0, longest - height, 0, longest - width, cv2.BORDER_CONSTANT, value=(0, 0, 0)
    )
    resized = cv2.resize(padded, (side, side), interpolation=cv2.INTER_LINEAR)
    original_width, original_height = decoded.original_size
    return LetterboxedImage(
        np.ascontiguousarray(resized.transpose(2, 0, 1)), original_width, original_height
    )


def nudenet_postprocess(
    output: np.ndarray, *, width: int, height: int, side: int = INPUT_SIDE
) -> list[Detection]:
    """Detections in original pixels from one image's (4 + classes, anchors) output."""
    import cv2

    rows = np.asarray(output, dtype=np.float32).T  # (anchors, 4 + classes)
    class_scores = rows[:, 4:]
    best = class_scores.max(axis=1)
    keep = best >= CANDIDATE_SCORE
    if not keep.any():
        return []
    rows, best = rows[keep], best[keep]
    class_ids = class_scores[keep].argmax(axis=1)
    scale = max(width, height) / side
    cx, cy, w, h = (rows[:, i] * scale for i in range(4))
    x = np.clip(cx - w / 2, 0, width)
    y = np.clip(cy - h / 2, 0, height)
    w = np.minimum(w, width - x)
    h = np.minimum(h, height - y)
    boxes = np.stack([x, y, w, h], axis=1)
    indices = cv2.dnn.NMSBoxes(boxes.tolist(), best.tolist(), NMS_SCORE, NMS_IOU)
    detections = []
    for i in np.asarray(indices, dtype=int).reshape(-1):
        bx, by, bw, bh = (int(v) for v in boxes[i])
        detections.append(Detection(LABELS[class_ids[i]], float(best[i]), (bx, by, bw, bh)))
    detections.sort(key=lambda d: -d.score)
    return detections


class NsfwDetector:
    """Body-part detections and an `nsfw` score: the best exposed-part confidence."""

    name = "nsfw"
    kind = "detector"
    # JPEGs may be draft-decoded down to the model's side; boxes are scaled back to
    # original pixels through the decoded record's original size.
    input_size = INPUT_SIDE
    OPTIONS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, device: str = "auto", threads: int | None = None):
        (self.model_path,) = detector_files("nsfw")
        self.revision = file_revision(self.model_path)
        self._session = LazySession(self.model_path, device=device, threads=threads)

    def load(self) -> None:
        require("cv2", purpose="the nsfw detector")
        _ = self._session.session  # a broken or unloadable file fails before any image

    def preprocess(self, decoded: DecodedImage) -> LetterboxedImage:
        return nudenet_preprocess(decoded)

    def predict(self, batch: Sequence[LetterboxedImage]) -> list[Result]:
        items = list(batch)
        if not items:
            return []
        batch = np.stack([item.array for item in items]).astype(np.float32) / np.float32(255.0)
        outputs = self._session.run(batch)[0]
        results = []
        for item, output in zip(items, outputs, strict=True):
            detections = nudenet_postprocess(output, width=item.width, height=item.height)
            nsfw = max((d.score for d in detections if d.label in NSFW_LABELS), default=0.0)
            results.append(Result(scores={"nsfw": nsfw}, detections=detections))
        return results

    def params(self) -> dict[str, Any]:
        return {
            "input_side": INPUT_SIDE,
            "nms_score": NMS_SCORE,
            "nms_iou": NMS_IOU,
            "nsfw_labels": sorted(NSFW_LABELS),
        }
