import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from curator.curation.quality import (
    AestheticHead,
    AestheticHeadError,
    QualityError,
    jpeg_quality,
    resolution_class,
    sharpness,
)
from curator.errors import CuratorError


def _pattern(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def _jpeg(image: Image.Image, **save_args) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **save_args)
    buffer.seek(0)
    return Image.open(buffer)


# --- sharpness -------------------------------------------------------------------------


def test_flat_image_has_zero_sharpness() -> None:
    assert sharpness(Image.new("RGB", (300, 200), (40, 90, 200))) == 0.0


def test_blur_lowers_sharpness() -> None:
    image = _pattern((256, 256))
    blurred = image.filter(ImageFilter.GaussianBlur(2))
    assert sharpness(image) > 10 * sharpness(blurred) > 0


def test_sharpness_matches_reference_laplacian() -> None:
    gray = np.asarray(_pattern((97, 61)).convert("L"), dtype=np.float64)
    # Independent reference: explicit loops, borders mirrored without repeating the edge.
    h, w = gray.shape

    def at(y: int, x: int) -> float:
        y = -y if y < 0 else (2 * (h - 1) - y if y >= h else y)
        x = -x if x < 0 else (2 * (w - 1) - x if x >= w else x)
        return gray[y, x]

    lap = [
        at(y - 1, x) + at(y + 1, x) + at(y, x - 1) + at(y, x + 1) - 4 * at(y, x)
        for y in range(h)
        for x in range(w)
    ]
    assert sharpness(_pattern((97, 61))) == pytest.approx(float(np.var(lap)), rel=1e-12)


def test_sharpness_equals_opencv_variance_of_laplacian() -> None:
    cv2 = pytest.importorskip("cv2")
    image = _pattern((320, 240), seed=3).filter(ImageFilter.GaussianBlur(1))
    gray = np.asarray(image.convert("L"))
    expected = cv2.Laplacian(gray, cv2.CV_64F).var()
    assert sharpness(image) == pytest.approx(expected, rel=1e-12)


def test_large_images_are_shrunk_so_values_compare() -> None:
    small = _pattern((512, 300), seed=1)
    # A 4x nearest-neighbour enlargement: shrinking it with a box filter averages blocks of
    # equal pixels, so it scores exactly as the picture at the size it is shrunk to.
    big = small.resize((2048, 1200), Image.Resampling.NEAREST)
    assert sharpness(big, max_side=512) == pytest.approx(sharpness(small, max_side=512))
    assert sharpness(big) == pytest.approx(
        sharpness(small.resize((1024, 600), Image.Resampling.NEAREST))
    )


def test_sixteen_bit_image_scores_like_eight_bit() -> None:
    gray = np.asarray(_pattern((64, 48)).convert("L"), dtype=np.uint16)
    deep = Image.fromarray(gray * 257)
    assert deep.mode.startswith("I;16")
    assert sharpness(deep) == pytest.approx(sharpness(Image.fromarray(gray.astype(np.uint8))))


def test_sharpness_from_file(tmp_path: Path) -> None:
    image = _pattern((80, 60))
    path = tmp_path / "a.png"
    image.save(path)
    assert sharpness(path) == sharpness(image)
    assert sharpness(str(path)) == sharpness(image)


def test_unreadable_file_raises_curator_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not an image")
    with pytest.raises(QualityError):
        sharpness(path)
    with pytest.raises(CuratorError):
        jpeg_quality(path)


# --- jpeg quality ----------------------------------------------------------------------


@pytest.mark.parametrize("quality", [1, 2, 10, 24, 25, 50, 51, 75, 90, 95, 99, 100])
def test_jpeg_quality_recovers_pillow_setting(quality: int) -> None:
    assert jpeg_quality(_jpeg(_pattern((32, 32)), quality=quality)) == quality


def test_jpeg_quality_grayscale_and_file(tmp_path: Path) -> None:
    assert jpeg_quality(_jpeg(_pattern((32, 32)).convert("L"), quality=83)) == 83
    path = tmp_path / "x.jpg"
    _pattern((16, 16)).save(path, quality=67)
    assert jpeg_quality(path) == 67


def test_jpeg_quality_of_custom_tables_is_estimated() -> None:
    # libjpeg at quality 50 writes the standard tables unscaled.
    standard = _jpeg(_pattern((8, 8)), quality=50).quantization
    # Tables scaled for quality 80 (factor 40%) but rounded up, as some encoders do.
    tables = [np.ceil(np.array(standard[i]) * 0.4).astype(int).tolist() for i in (0, 1)]
    estimate = jpeg_quality(_jpeg(_pattern((32, 32)), qtables=tables))
    assert estimate is not None and 77 <= estimate <= 83 and estimate != int(estimate)


def test_jpeg_quality_is_none_for_other_formats(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    _pattern((8, 8)).save(path)
    assert jpeg_quality(path) is None
    assert jpeg_quality(_pattern((8, 8))) is None


# --- resolution class -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((0, 0), "tiny"),
        ((255, 256), "tiny"),
        ((256, 256), "small"),
        ((511, 512), "small"),
        ((512, 512), "sd"),
        ((384, 683), "sd"),  # as many pixels as 512x512, portrait
        ((384, 682), "small"),
        ((768, 1152), "sd"),
        ((1024, 1024), "hd"),
        ((1920, 1080), "hd"),
        ((2048, 2048), "uhd"),
        ((7680, 4320), "uhd"),
    ],
)
def test_resolution_class(size: tuple[int, int], expected: str) -> None:
    assert resolution_class(*size) == expected


def test_resolution_class_rejects_negative() -> None:
    with pytest.raises(QualityError):
        resolution_class(-1, 10)


# --- aesthetic head ---------------------------------------------------------------------

MLP_SIZES = [(768, 1024), (1024, 128), (128, 64), (64, 16), (16, 1)]
MLP_INDICES = [0, 2, 4, 6, 7]  # positions of the Linear layers in the nn.Sequential


def _mlp_state(rng: np.random.Generator, sizes=MLP_SIZES) -> dict[str, np.ndarray]:
    state = {}
    for index, (n_in, n_out) in zip(MLP_INDICES, sizes, strict=True):
        state[f"layers.{index}.weight"] = rng.normal(0, n_in**-0.5, (n_out, n_in)).astype("f4")
        state[f"layers.{index}.bias"] = rng.normal(0, 0.1, n_out).astype("f4")
    return state


def _reference(state: dict[str, np.ndarray], embeddings: np.ndarray) -> np.ndarray:
    x = embeddings.astype(np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    for index in sorted({int(key.split(".")[1]) for key in state}):
        w = state[f"layers.{index}.weight"].astype(np.float64)
        x = x @ w.T + state[f"layers.{index}.bias"]
    return x[:, 0]


def test_mlp_head_from_safetensors(tmp_path: Path) -> None:
    safetensors_numpy = pytest.importorskip(
        "safetensors.numpy", reason="safetensors is not installed"
    )
    rng = np.random.default_rng(0)
    state = _mlp_state(rng)
    path = tmp_path / "aesthetic.safetensors"
    safetensors_numpy.save_file(state, str(path))
    head = AestheticHead.from_file(path)
    assert (head.kind, head.input_dim) == ("mlp", 768)
    embeddings = rng.normal(size=(5, 768)).astype("f4")
    scores = head.predict(embeddings)
    assert scores.shape == (5,)
    np.testing.assert_allclose(scores, _reference(state, embeddings), rtol=1e-4, atol=1e-5)


def test_linear_head_from_safetensors(tmp_path: Path) -> None:
    safetensors_numpy = pytest.importorskip(
        "safetensors.numpy", reason="safetensors is not installed"
    )
    rng = np.random.default_rng(1)
    weight, bias = rng.normal(size=(1, 768)).astype("f4"), np.array([4.5], "f4")
    path = tmp_path / "sa_0_4_vit_l_14_linear.safetensors"
    safetensors_numpy.save_file({"weight": weight, "bias": bias}, str(path))
    head = AestheticHead.from_file(path)
    assert head.kind == "linear"
    embedding = rng.normal(size=768).astype("f4")
    expected = float(weight[0] @ (embedding / np.linalg.norm(embedding)) + 4.5)
    assert head.predict(embedding)[0] == pytest.approx(expected, rel=1e-5)


def test_matches_torch_improved_aesthetic_predictor(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    nn = torch.nn
    # The improved-aesthetic-predictor MLP as published (its ReLUs are commented out).
    model = nn.Sequential(
        nn.Linear(768, 1024),
        nn.Dropout(0.2),
        nn.Linear(1024, 128),
        nn.Dropout(0.2),
        nn.Linear(128, 64),
        nn.Dropout(0.1),
        nn.Linear(64, 16),
        nn.Linear(16, 1),
    ).eval()
    path = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save({f"layers.{k}": v for k, v in model.state_dict().items()}, path)
    embeddings = torch.randn(4, 768)
    with torch.no_grad():
        normalised = embeddings / embeddings.norm(dim=-1, keepdim=True)
        expected = model(normalised)[:, 0].numpy()
    head = AestheticHead.from_file(path)
    assert head.kind == "mlp"
    np.testing.assert_allclose(head.predict(embeddings.numpy()), expected, rtol=1e-4, atol=1e-5)


def test_scores_ignore_embedding_length() -> None:
    rng = np.random.default_rng(2)
    head = AestheticHead.from_state_dict(_mlp_state(rng, [(8, 6), (6, 5), (5, 4), (4, 3), (3, 1)]))
    assert head.input_dim == 8
    x = rng.normal(size=(3, 8))
    np.testing.assert_allclose(head.predict(x), head.predict(7.5 * x), rtol=1e-5)
    assert np.isfinite(head.predict(np.zeros(8))).all()


def test_wrong_embedding_width() -> None:
    head = AestheticHead.from_state_dict({"weight": np.ones((1, 4)), "bias": np.zeros(1)})
    with pytest.raises(AestheticHeadError, match="width 4"):
        head.predict(np.ones((2, 5)))


@pytest.mark.parametrize(
    "state",
    [
        {"fc.weight": np.ones((1, 4)), "fc.bias": np.zeros(1)},
        {"layers.0.weight": np.ones((3, 4)), "layers.0.bias": np.zeros(3)},  # outputs 3
        {"layers.0.weight": np.ones((3, 4))},  # no bias
        {  # layer widths do not chain
            "layers.0.weight": np.ones((3, 4)),
            "layers.0.bias": np.zeros(3),
            "layers.2.weight": np.ones((1, 5)),
            "layers.2.bias": np.zeros(1),
        },
        {},
    ],
)
def test_rejects_weights_that_are_not_an_aesthetic_head(state: dict) -> None:
    with pytest.raises(AestheticHeadError):
        AestheticHead.from_state_dict(state)


def test_from_file_errors(tmp_path: Path) -> None:
    with pytest.raises(AestheticHeadError, match="not found"):
        AestheticHead.from_file(tmp_path / "missing.safetensors")
    odd = tmp_path / "weights.npz"
    odd.write_bytes(b"x")
    with pytest.raises(AestheticHeadError, match="unknown weights format"):
        AestheticHead.from_file(odd)
