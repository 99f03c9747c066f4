"""WD14 and DeepDanbooru taggers on tiny real ONNX models built in fixtures."""

from __future__ import annotations

import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taggers.base import Model, Tag
from taggers.deepdanbooru import DeepDanbooruTagger, deepdanbooru_preprocess
from taggers.errors import ModelLoadError, TaggerError
from taggers.factory import load_model
from taggers.onnx_session import file_revision, select_providers
from taggers.wd14 import WD14Tagger, mcut_threshold, wd14_preprocess
from tests.fixtures.tiny_models import (
    WD14_TAGS,
    build_deepdanbooru_model,
    build_wd14_model,
    deepdanbooru_expected_scores,
    wd14_expected_scores,
)

SIZE = 64


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def wd14_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wd14_model(tmp_path_factory.mktemp("wd14"), size=SIZE)


@pytest.fixture(scope="module")
def tagger(wd14_dir: Path) -> WD14Tagger:
    return WD14Tagger(wd14_dir / "model.onnx", wd14_dir / "selected_tags.csv", threads=1)


@pytest.fixture(scope="module")
def dd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_deepdanbooru_model(tmp_path_factory.mktemp("dd"), size=SIZE)


# --- an independent reference for the WD14 contract -------------------------------


def reference_wd14(image: Image.Image, size: int) -> np.ndarray:
    """Composite with float alpha maths, pad with numpy, resize with PIL bicubic."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
    alpha = rgba[..., 3:4] / 255.0
    rgb = np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    h, w = rgb.shape[:2]
    side = max(h, w)
    canvas = np.full((side, side, 3), 255, dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top : top + h, left : left + w] = rgb
    resized = Image.fromarray(canvas).resize((size, size), resample=Image.BICUBIC)
    return np.asarray(resized, dtype=np.float32)[..., [2, 1, 0]]


def _gradient(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1
    )


def _rgba_with_hole(width: int, height: int) -> Image.Image:
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    rgba[..., :3] = _gradient(width, height)
    rgba[..., 3] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    rgba[: height // 3, : width // 3, 3] = 0  # fully transparent corner
    rgba[: height // 3, : width // 3, :3] = (10, 200, 30)  # colour hidden under alpha 0
    return Image.fromarray(rgba, "RGBA")


def _palette_with_transparency() -> Image.Image:
    image = Image.fromarray(_gradient(90, 50).astype(np.uint8), "RGB").quantize(16)
    image.info["transparency"] = 3
    return image


IMAGES = {
    "rgb-square-same-size": lambda: Image.fromarray(_gradient(SIZE, SIZE).astype(np.uint8)),
    "rgb-wide": lambda: Image.fromarray(_gradient(200, 120).astype(np.uint8)),
    "rgb-tall-small": lambda: Image.fromarray(_gradient(21, 37).astype(np.uint8)),
    "rgba-transparent": lambda: _rgba_with_hole(150, 97),
    "p-transparent": _palette_with_transparency,
    "l": lambda: Image.fromarray(_gradient(70, 110)[..., 0].astype(np.uint8), "L"),
    "la": lambda: _rgba_with_hole(80, 60).convert("LA"),
}


@pytest.mark.parametrize("case", sorted(IMAGES))
def test_preprocess_matches_reference(case: str) -> None:
    image = IMAGES[case]()
    ours = wd14_preprocess(image, SIZE)
    assert ours.shape == (SIZE, SIZE, 3)
    assert ours.dtype == np.uint8  # workers send 0-255 pixels, a quarter of float32's bytes
    # PIL's integer alpha compositing rounds differently from float maths by at most 1.
    np.testing.assert_allclose(ours, reference_wd14(image, SIZE), atol=1.0)


def test_preprocess_pads_white_and_orders_bgr() -> None:
    red_strip = Image.new("RGB", (SIZE, SIZE // 2), (255, 0, 0))
    array = wd14_preprocess(red_strip, SIZE)
    assert array[0, 0].tolist() == [255.0, 255.0, 255.0]  # padding is white
    assert array[SIZE // 2, SIZE // 2].tolist() == [0.0, 0.0, 255.0]  # red lands in channel 2
    assert array[SIZE // 4, 0].tolist() == [0.0, 0.0, 255.0]  # content is centred vertically


def test_transparent_pixels_become_white() -> None:
    clear = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    assert np.all(wd14_preprocess(clear, SIZE) == 255.0)


def test_input_size_is_read_from_the_model(tmp_path: Path) -> None:
    model_dir = build_wd14_model(tmp_path, size=40)
    model = load_model(str(model_dir), models_dir=tmp_path / "models", threads=1)
    assert model.input_size == 40
    assert model.preprocess(Image.new("RGB", (100, 30))).shape == (40, 40, 3)


def test_predict_matches_the_model_maths(tagger: WD14Tagger) -> None:
    images = [IMAGES[name]() for name in ("rgb-wide", "rgba-transparent", "l")]
    batch = [tagger.preprocess(image) for image in images]
    results = tagger.predict(batch)
    expected = wd14_expected_scores(np.stack(batch))
    assert len(results) == 3
    for result, row in zip(results, expected, strict=True):
        for i, (name, category) in enumerate(WD14_TAGS):
            if category == 9:
                assert result.scores[f"rating:{name}"] == pytest.approx(row[i], abs=1e-5)
        by_name = {tag.name: tag.score for tag in result.tags}
        top_rating = max((i for i, (_, c) in enumerate(WD14_TAGS) if c == 9), key=row.__getitem__)
        for i, (name, category) in enumerate(WD14_TAGS):
            threshold = 0.85 if category == 4 else 0.35
            if (category == 9 and i == top_rating) or (category != 9 and row[i] > threshold):
                assert by_name[name] == pytest.approx(row[i], abs=1e-5)
            else:
                assert name not in by_name


def test_solid_colours_give_the_designed_tags(tagger: WD14Tagger) -> None:
    red, blue = (
        tagger.predict([tagger.preprocess(Image.new("RGB", (SIZE, SIZE), c))])[0]
        for c in ((255, 0, 0), (0, 0, 255))
    )
    # A pure primary has a mean brightness of 1/3, which the tiny model calls "dark".
    assert {t.name for t in red.tags if t.category != "rating"} == {"red", "dark", "red_hero"}
    assert {t.name for t in blue.tags if t.category != "rating"} == {"blue", "dark", "blue_hero"}
    assert {t.category for t in red.tags if t.name == "red_hero"} == {"character"}


def test_four_rating_scores_and_one_rating_tag(tagger: WD14Tagger) -> None:
    green = tagger.predict([tagger.preprocess(Image.new("RGB", (SIZE, SIZE), (0, 255, 0)))])[0]
    ratings = [t for t in green.tags if t.category == "rating"]
    # Every rating's score is a score; only the top rating is a tag, so a query for
    # `explicit` does not match every image.
    assert set(green.scores) == {
        "rating:general",
        "rating:sensitive",
        "rating:questionable",
        "rating:explicit",
    }
    assert [t.name for t in ratings] == ["general"]
    assert ratings[0].score == max(green.scores.values())
    assert green.tags[0].name == "general"  # the rating comes first
    blue = tagger.predict([tagger.preprocess(Image.new("RGB", (SIZE, SIZE), (0, 0, 255)))])[0]
    assert max(blue.scores, key=blue.scores.__getitem__) == "rating:questionable"


def test_thresholds_per_category(wd14_dir: Path) -> None:
    model = WD14Tagger(
        wd14_dir / "model.onnx",
        wd14_dir / "selected_tags.csv",
        general_threshold=0.5,
        character_threshold=0.9,
    )
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.51, 0.5, 0.49, 0.99, 0.0, 0.95, 0.89])
    tags = model.result_from_scores(scores).tags
    picked = {t.name for t in tags if t.category != "rating"}
    assert picked == {"red", "bright", "red_hero"}  # strictly above each threshold
    assert Tag("red_hero", "character", pytest.approx(0.95)) in tags


def test_mcut_threshold_is_the_middle_of_the_largest_gap() -> None:
    assert mcut_threshold(np.array([0.2, 0.9, 0.3, 0.85])) == pytest.approx(0.575)
    assert mcut_threshold(np.array([0.05, 0.1, 0.6])) == pytest.approx(0.35)


def test_mcut_mode(wd14_dir: Path) -> None:
    model = WD14Tagger(wd14_dir / "model.onnx", wd14_dir / "selected_tags.csv", mcut=True)
    # general scores: red .95 green .9 blue .2 bright .15 dark .1 → cut at .55
    # character scores: .12 and .02 → MCut .07 is floored at .15, so neither passes
    scores = np.array([0.5, 0.2, 0.1, 0.0, 0.95, 0.9, 0.2, 0.15, 0.1, 0.12, 0.02])
    result = model.result_from_scores(scores)
    assert {t.name for t in result.tags if t.category != "rating"} == {"red", "green"}
    scores[9], scores[10] = 0.8, 0.3  # a clear character above the floor
    result = model.result_from_scores(scores)
    assert {t.name for t in result.tags if t.category == "character"} == {"red_hero"}
    assert model.params()["mcut"] is True


def test_other_danbooru_categories(tmp_path: Path) -> None:
    tags = [
        ("general", 9),
        ("sensitive", 9),
        ("questionable", 9),
        ("explicit", 9),
        ("sky", 0),
        ("some_artist", 1),
        ("some_series", 3),
        ("someone", 4),
        ("highres", 5),
    ]
    model_dir = build_wd14_model(tmp_path, size=16, tags=tags)
    model = load_model(str(model_dir), models_dir=tmp_path / "models", mcut=False)
    scores = np.array([0.9, 0.1, 0.1, 0.1, 0.4, 0.9, 0.9, 0.9, 0.4])
    result = model.result_from_scores(scores)
    categories = {t.name: t.category for t in result.tags}
    assert categories == {
        "general": "rating",
        "sky": "general",
        "some_artist": "artist",
        "some_series": "copyright",
        "someone": "character",
        "highres": "meta",
    }
    assert result.tags[0].name == "general"


def test_tags_that_do_not_match_the_model_are_refused(tmp_path: Path) -> None:
    model_dir = build_wd14_model(tmp_path, size=16)
    lines = (model_dir / "selected_tags.csv").read_text().splitlines()
    (model_dir / "selected_tags.csv").write_text("\n".join(lines[:-1]) + "\n")
    model = load_model(str(model_dir), models_dir=tmp_path / "models")
    with pytest.raises(ModelLoadError, match="do not belong together"):
        model.predict([np.zeros((16, 16, 3), np.float32)])


def test_model_protocol_and_revision(tagger: WD14Tagger, wd14_dir: Path) -> None:
    assert isinstance(tagger, Model)
    assert tagger.kind == "tagger"
    assert tagger.name == wd14_dir.name
    assert tagger.revision == file_revision(wd14_dir / "model.onnx")
    other = WD14Tagger(
        wd14_dir / "model.onnx", wd14_dir / "selected_tags.csv", general_threshold=0.9
    )
    assert other.revision == tagger.revision  # thresholds go in params, not the revision
    assert other.params()["general_threshold"] == 0.9


def test_preprocess_runs_in_a_worker_process(wd14_dir: Path) -> None:
    model = WD14Tagger(wd14_dir / "model.onnx", wd14_dir / "selected_tags.csv")
    image = IMAGES["rgba-transparent"]()
    copy = pickle.loads(pickle.dumps(model))
    assert copy.input_size == SIZE
    with ProcessPoolExecutor(max_workers=1) as pool:
        remote = pool.submit(copy.preprocess, image).result()
    np.testing.assert_array_equal(remote, model.preprocess(image))
    assert model.predict([remote])[0].tags == model.predict([model.preprocess(image)])[0].tags


def test_int8_quantisation(tmp_path: Path, wd14_dir: Path) -> None:
    plain = load_model(str(wd14_dir), models_dir=tmp_path, threads=1)
    quantised = load_model(str(wd14_dir), models_dir=tmp_path, threads=1, quantize="int8")
    assert quantised.revision != plain.revision
    assert quantised.params()["quantize"] == "int8"
    assert quantised.model_path.parent == tmp_path / ".quantized"
    image = IMAGES["rgb-wide"]()
    expected = plain.predict([plain.preprocess(image)])[0].scores
    got = quantised.predict([quantised.preprocess(image)])[0].scores
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=0.05)
    again = load_model(str(wd14_dir), models_dir=tmp_path, quantize="int8")
    assert again.revision == quantised.revision  # served from the cache


def test_int8_weights_are_signed_per_channel_and_7_bit(tmp_path: Path, wd14_dir: Path) -> None:
    """Signed weights with a scale per output column, within 7 bits: CPUs without VNNI
    saturate 8-bit products, and a scale per column keeps the precision 7 bits lose."""
    import onnx
    from onnx import numpy_helper

    quantised = load_model(str(wd14_dir), models_dir=tmp_path, quantize="int8")
    graph = onnx.load(str(quantised.model_path)).graph
    ops = {node.op_type for node in graph.node}
    assert "MatMulInteger" in ops and "MatMul" not in ops
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    (matmul,) = [node for node in graph.node if node.op_type == "MatMulInteger"]
    weight = inits[matmul.input[1]]
    assert weight.dtype == np.int8 and np.abs(weight.astype(int)).max() <= 64
    scales = [v for k, v in inits.items() if k.startswith(matmul.input[1].split("_quantized")[0])]
    assert any(v.size == weight.shape[1] > 1 for v in scales if v.dtype == np.float32)


def test_unknown_quantisation_is_refused(tmp_path: Path, wd14_dir: Path) -> None:
    with pytest.raises(TaggerError, match="int8"):
        load_model(str(wd14_dir), models_dir=tmp_path, quantize="int4")


def test_unknown_option_is_refused(tmp_path: Path, wd14_dir: Path) -> None:
    with pytest.raises(TaggerError, match="threshold"):
        load_model(str(wd14_dir), models_dir=tmp_path, threshold=0.5)
    model = load_model(str(wd14_dir), models_dir=tmp_path, general_threshold=None)
    assert model.params()["general_threshold"] == 0.35  # None means "not set"


# --- execution providers -------------------------------------------------------------


def test_provider_selection() -> None:
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers("auto", gpu) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert select_providers("cpu", gpu) == ["CPUExecutionProvider"]
    assert select_providers("tensorrt", gpu) == gpu
    mac = ["CoreMLExecutionProvider", "CPUExecutionProvider"]
    assert select_providers("auto", mac) == mac
    with pytest.raises(ModelLoadError, match="CUDAExecutionProvider"):
        select_providers("cuda", ["CPUExecutionProvider"])
    with pytest.raises(TaggerError, match="unknown device"):
        select_providers("quantum", gpu)


# --- DeepDanbooru ---------------------------------------------------------------------


def reference_deepdanbooru(image: Image.Image, size: int) -> np.ndarray:
    """Fit inside the square with an area resize, then repeat the edge pixels outwards."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
    alpha = rgba[..., 3:4] / 255.0
    rgb = np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    h, w = rgb.shape[:2]
    scale = min(size / w, size / h)
    new_w, new_h = round(w * scale), round(h * scale)
    small = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.BOX), np.float64) / 255
    rows = np.clip(np.arange(size) - (size - new_h) // 2, 0, new_h - 1)
    cols = np.clip(np.arange(size) - (size - new_w) // 2, 0, new_w - 1)
    return small[rows][:, cols]


@pytest.mark.parametrize("case", ["rgb-wide", "rgb-tall-small", "rgba-transparent", "l"])
def test_deepdanbooru_preprocess_matches_reference(case: str) -> None:
    image = IMAGES[case]()
    ours = deepdanbooru_preprocess(image, SIZE)
    assert ours.shape == (SIZE, SIZE, 3) and ours.dtype == np.uint8
    np.testing.assert_allclose(
        ours / 255.0, reference_deepdanbooru(image, SIZE), atol=1.0 / 255 + 1e-6
    )


def test_deepdanbooru_predicts_tags_ratings_and_characters(dd_dir: Path, tmp_path: Path) -> None:
    model = load_model(str(dd_dir), models_dir=tmp_path, threads=1)
    assert isinstance(model, DeepDanbooruTagger)
    assert model.input_size == SIZE
    arrays = [model.preprocess(Image.new("RGB", (30, 50), (255, 0, 0)))]
    result = model.predict(arrays)[0]
    expected = deepdanbooru_expected_scores(np.stack(arrays))[0]
    assert result.scores["rating:questionable"] == pytest.approx(expected[6], abs=1e-5)
    assert set(result.scores) == {"rating:safe", "rating:questionable", "rating:explicit"}
    categories = {t.name: t.category for t in result.tags}
    assert categories == {
        "red": "general",
        "red_hero": "character",
        "safe": "rating",
    }
    strict = load_model(str(dd_dir), models_dir=tmp_path, threshold=0.999)
    strict_tags = strict.predict(arrays)[0].tags
    assert {t.name for t in strict_tags if t.category != "rating"} == set()
