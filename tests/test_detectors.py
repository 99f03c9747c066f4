"""Bundled detectors (NudeNet, RapidOCR, OpenCV faces) on real images."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from skimage import data

from taggers.base import Model
from taggers.errors import TaggerError
from taggers.factory import load_model
from taggers.nsfw import LABELS, nudenet_postprocess, nudenet_preprocess

# Where the astronaut's face is in skimage.data.astronaut() (512 x 512).
FACE_CENTRE = (222, 120)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def text_image() -> Image.Image:
    image = Image.new("RGB", (640, 200), "white")
    draw = ImageDraw.Draw(image)
    draw.text((20, 60), "Hello Curator 42", fill="black", font=ImageFont.load_default(size=48))
    return image


@pytest.fixture(scope="module")
def flat() -> Image.Image:
    return Image.new("RGB", (320, 240), (120, 130, 140))


@pytest.fixture(scope="module")
def faces():
    return load_model("faces")


@pytest.fixture(scope="module")
def nsfw():
    return load_model("nsfw", threads=1)


@pytest.fixture(scope="module")
def text():
    return load_model("text", threads=1)


def _run(model, image: Image.Image):
    return model.predict([model.preprocess(image)])[0]


def _contains(box: tuple[int, int, int, int], point: tuple[float, float]) -> bool:
    x, y, w, h = box
    return x <= point[0] <= x + w and y <= point[1] <= y + h


@pytest.mark.parametrize(("name", "side"), [("faces", 1024), ("nsfw", 320), ("text", 2000)])
def test_detectors_follow_the_model_protocol(name: str, side: int) -> None:
    model = load_model(name, threads=1)
    assert isinstance(model, Model)
    # A side for JPEG draft decoding: boxes come back in original pixels regardless.
    assert (model.name, model.kind, model.input_size) == (name, "detector", side)
    assert len(model.revision) == 12
    assert isinstance(model.params(), dict)
    copy = pickle.loads(pickle.dumps(model))  # to a worker: no live engine travels along
    assert copy.revision == model.revision


def test_detectors_take_no_quantisation_and_check_options() -> None:
    with pytest.raises(TaggerError, match="quantised"):
        load_model("nsfw", quantize="int8")
    with pytest.raises(TaggerError, match="min_neighbors"):
        load_model("faces", threshold=0.3)


def test_one_face_on_the_astronaut(faces, astronaut: Image.Image) -> None:
    result = _run(faces, astronaut)
    assert result.scores == {"faces": 1.0}
    (face,) = result.detections
    assert face.label == "face"
    assert _contains(face.box, FACE_CENTRE)


def test_face_boxes_are_in_original_pixels(faces, astronaut: Image.Image) -> None:
    big = astronaut.resize((2048, 2048), Image.BICUBIC)  # shrunk before detection
    (small_face,) = _run(faces, astronaut).detections
    (big_face,) = _run(faces, big).detections
    assert _contains(big_face.box, (FACE_CENTRE[0] * 4, FACE_CENTRE[1] * 4))
    assert big_face.box[2] == pytest.approx(small_face.box[2] * 4, rel=0.25)


def test_no_faces_on_a_flat_image(faces, flat: Image.Image) -> None:
    result = _run(faces, flat)
    assert result.scores == {"faces": 0.0}
    assert result.detections == []


def test_nsfw_on_the_astronaut(nsfw, astronaut: Image.Image, flat: Image.Image) -> None:
    results = nsfw.predict([nsfw.preprocess(astronaut), nsfw.preprocess(flat)])
    dressed, empty = results
    assert dressed.scores["nsfw"] < 0.2
    labels = {d.label for d in dressed.detections}
    assert "FACE_FEMALE" in labels or "FACE_MALE" in labels
    face = next(d for d in dressed.detections if d.label.startswith("FACE"))
    assert _contains(face.box, FACE_CENTRE)
    assert empty.scores == {"nsfw": 0.0}


def test_nsfw_on_text_image_runs(nsfw, text_image: Image.Image) -> None:
    result = _run(nsfw, text_image)
    assert 0.0 <= result.scores["nsfw"] <= 1.0
    for detection in result.detections:
        x, y, w, h = detection.box
        assert 0 <= x and 0 <= y and x + w <= text_image.width and y + h <= text_image.height


def test_nudenet_letterbox_pads_right_and_bottom() -> None:
    wide = Image.new("RGB", (640, 320), (255, 0, 0))
    item = nudenet_preprocess(wide)
    assert item.array.shape == (3, 320, 320)
    assert item.array.dtype == np.uint8  # workers send pixels; the model scales them
    assert item.array[:, 10, 10].tolist() == [255, 0, 0]  # RGB, top-left is content
    assert item.array[:, 300, 10].tolist() == [0, 0, 0]  # bottom is black padding
    assert (item.width, item.height) == (640, 320)


def test_nudenet_postprocess_scales_and_suppresses() -> None:
    exposed = LABELS.index("FEMALE_BREAST_EXPOSED")
    output = np.zeros((4 + len(LABELS), 3), dtype=np.float32)
    # two overlapping boxes of one part, and one low-scoring candidate
    output[:4, 0] = (100, 50, 40, 20)
    output[:4, 1] = (101, 51, 40, 20)
    output[:4, 2] = (10, 10, 5, 5)
    output[4 + exposed, 0], output[4 + exposed, 1], output[4 + exposed, 2] = 0.9, 0.8, 0.1
    (detection,) = nudenet_postprocess(output, width=640, height=320)
    assert detection.label == "FEMALE_BREAST_EXPOSED"
    assert detection.score == pytest.approx(0.9)
    assert detection.box == (160, 80, 80, 40)  # 640 / 320 = 2 original pixels per model pixel


def test_text_on_a_rendered_line(text, text_image: Image.Image, flat: Image.Image) -> None:
    written, empty = text.predict([text.preprocess(text_image), text.preprocess(flat)])
    assert 0.02 < written.scores["text_area"] < 0.5
    assert len(written.detections) >= 1
    line = " ".join(d.text or "" for d in written.detections)
    assert "Hello" in line
    for detection in written.detections:
        assert detection.label == "text"
        x, y, w, h = detection.box
        assert 10 <= x and x + w <= 400 and 40 <= y and y + h <= 130
    assert empty.scores == {"text_area": 0.0}
    assert empty.detections == []


def test_text_boxes_are_in_original_pixels(text, text_image: Image.Image) -> None:
    big = text_image.resize((3200, 1000), Image.BICUBIC)  # shrunk to 2000 px before OCR
    small_box = _run(text, text_image).detections[0].box
    big_result = _run(text, big)
    big_box = big_result.detections[0].box
    assert big_result.scores["text_area"] > 0.02
    for small_v, big_v in zip(small_box, big_box, strict=True):
        assert big_v == pytest.approx(small_v * 5, abs=40)


def test_boxes_of_a_draft_decoded_jpeg_are_in_original_pixels(tmp_path, astronaut, faces):
    from curator.runs.loop import decode

    big = astronaut.resize((2048, 2048), Image.Resampling.BICUBIC)
    big.save(tmp_path / "big.jpg", quality=92)
    decoded = decode(str(tmp_path / "big.jpg"), faces.input_size)
    assert decoded.image.width == 1024 and decoded.original_size == (2048, 2048)
    small = _run(faces, astronaut).detections
    large = faces.predict([faces.preprocess(decoded)])[0].detections
    assert len(small) == 1 and large
    biggest = max(large, key=lambda d: d.box[2])  # the cascade may see more at 1024 px
    for a, b in zip(small[0].box, biggest.box, strict=True):
        assert b == pytest.approx(a * 2048 / 512, rel=0.1, abs=12)
