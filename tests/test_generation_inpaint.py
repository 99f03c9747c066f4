"""Inpainting: mask handling as A1111 does it, ordinary and 9-channel inpainting UNets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("diffusers")
pytest.importorskip("open_clip")

from curator.cli import main  # noqa: E402
from curator.generation import inpaint  # noqa: E402
from curator.generation.generate import GenerationError, GenerationParams, generate  # noqa: E402
from curator.generation.loading import load_pipeline  # noqa: E402
from curator.ingest.infotext import parse_infotext  # noqa: E402
from tests.fixtures.tiny_pipeline import save_tiny_pipeline  # noqa: E402


@pytest.fixture(scope="module")
def model9(tmp_path_factory):
    folder = save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-inpaint", in_channels=9)
    return load_pipeline(str(folder), device="cpu")


@pytest.fixture
def sources(tmp_path) -> tuple[Path, Path]:
    """A 48x48 colour pattern and a mask with a white 12x12 square at (18, 18)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
    init, mask = tmp_path / "init.png", tmp_path / "mask.png"
    Image.fromarray(pixels).save(init)
    square = np.zeros((48, 48), np.uint8)
    square[18:30, 18:30] = 255
    Image.fromarray(square).save(mask)
    return init, mask


def _params(init: Path, mask: Path, **changes) -> GenerationParams:
    base = {
        "prompt": "a cat",
        "steps": 3,
        "width": 48,
        "height": 48,
        "seed": 7,
        "init_image": str(init),
        "mask_image": str(mask),
        "denoising_strength": 1.0,
        "mask_blur": 0,
    }
    return GenerationParams(**{**base, **changes})


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def test_only_the_masked_area_changes_and_the_sources_are_kept(model, sources, tmp_path):
    init, mask = sources
    before = [hashlib.sha256(p.read_bytes()).hexdigest() for p in sources]
    image = generate(model, _params(init, mask), tmp_path / "o")[0]
    out, src = _pixels(image.path), _pixels(init)
    inside = (slice(18, 30), slice(18, 30))
    outside = np.ones((48, 48), bool)
    outside[16:32, 16:32] = False
    # without blur the overlay puts the source back exactly outside the mask
    assert np.array_equal(out[outside], src[outside])
    assert np.abs(out[inside] - src[inside]).mean() > 10
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in sources] == before
    again = generate(model, _params(init, mask), tmp_path / "p")[0]
    assert np.array_equal(_pixels(again.path), out)


def test_invert_repaints_outside_the_mask(model, sources, tmp_path):
    init, mask = sources
    image = generate(model, _params(init, mask, mask_invert=True), tmp_path)[0]
    out, src = _pixels(image.path), _pixels(init)
    assert np.array_equal(out[18:30, 18:30], src[18:30, 18:30])
    assert np.abs(out[:10] - src[:10]).mean() > 10
    assert parse_infotext(image.infotext).params["Mask mode"] == "Inpaint not masked"


def test_infotext_keys_as_a1111_writes_them(model, sources, tmp_path):
    init, mask = sources
    params = _params(
        init,
        mask,
        mask_blur=4,
        masked_content="latent noise",
        inpaint_only_masked=True,
        inpaint_padding=8,
        width=32,
        height=32,
        denoising_strength=0.75,
    )
    image = generate(model, params, tmp_path)[0]
    info = parse_infotext(image.infotext)
    assert info.params["Mask blur"] == "4"
    assert info.params["Masked content"] == "latent noise"
    assert info.params["Inpaint area"] == "Only masked"
    assert info.params["Masked area padding"] == "8"
    assert info.params["Denoising strength"] == "0.75"
    assert "Mask mode" not in info.params  # A1111 leaves its defaults out
    # only masked: the result is the source's size, generated at 32x32 around the mask
    assert Image.open(image.path).size == (48, 48)
    assert info.width == 32


def test_only_masked_keeps_everything_outside_the_padded_crop(model, sources, tmp_path):
    init, mask = sources
    params = _params(init, mask, inpaint_only_masked=True, inpaint_padding=4, width=16, height=16)
    out, src = _pixels(generate(model, params, tmp_path)[0].path), _pixels(init)
    assert np.array_equal(out[:14], src[:14]) and np.array_equal(out[34:], src[34:])
    assert np.abs(out[18:30, 18:30] - src[18:30, 18:30]).mean() > 10


def test_masked_content_choices_differ(model, sources, tmp_path):
    init, mask = sources
    results = {}
    for content in inpaint.MASKED_CONTENT:
        params = _params(init, mask, masked_content=content, denoising_strength=0.5)
        results[content] = _pixels(generate(model, params, tmp_path / content)[0].path)
    inside = [r[18:30, 18:30] for r in results.values()]
    for i in range(len(inside)):
        for j in range(i + 1, len(inside)):
            assert not np.array_equal(inside[i], inside[j])


def test_nine_channel_unet_gets_mask_and_masked_image(model9, sources, tmp_path):
    init, mask = sources
    seen = []
    unet = model9.pipeline.unet
    original = unet.forward

    def spy(sample, *args, **kwargs):
        seen.append(sample.shape[1])
        return original(sample, *args, **kwargs)

    unet.forward = spy
    try:
        image = generate(model9, _params(init, mask), tmp_path)[0]
    finally:
        unet.forward = original
    assert seen and set(seen) == {9}
    out, src = _pixels(image.path), _pixels(init)
    assert np.array_equal(out[:16], src[:16])
    assert np.abs(out[18:30, 18:30] - src[18:30, 18:30]).mean() > 10


def test_mask_preparation_matches_a1111():
    # A1111's crop region, widened to the output's aspect ratio and kept inside the image
    mask = np.zeros((100, 200), np.uint8)
    mask[40:50, 10:30] = 255
    assert inpaint.crop_region(mask, 5) == (5, 35, 35, 55)
    assert inpaint.expand_crop_region((5, 35, 35, 55), 64, 64, 200, 100) == (5, 30, 35, 60)
    assert inpaint.expand_crop_region((0, 0, 10, 40), 64, 64, 200, 100) == (0, 0, 40, 40)
    assert inpaint.expand_crop_region((190, 90, 200, 100), 64, 32, 200, 100) == (180, 90, 200, 100)
    assert inpaint.crop_region(np.zeros((4, 4), np.uint8), 2) is None
    # a transparent RGBA mask is its alpha, thresholded at 128
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 0, 200))
    assert list(inpaint.binary_mask(rgba).getdata()) == [0, 255]
    # the blur spreads the mask with the kernel A1111 uses
    square = Image.fromarray(np.pad(np.full((4, 4), 255, np.uint8), 10))
    blurred = np.array(inpaint.blur_mask(square, 2))
    assert blurred[12, 6] > 0 and blurred[12, 0] == 0 and blurred[12, 12] < 255
    # fill paints the masked area with surrounding colours, never black
    red = Image.new("RGB", (24, 24), (200, 20, 20))
    filled = np.array(inpaint.fill(red, square.resize((24, 24))))
    assert np.abs(filled.astype(int) - [200, 20, 20]).max() <= 2


def test_bad_inpaint_parameters_are_one_line(model, sources, tmp_path):
    init, mask = sources
    with pytest.raises(GenerationError, match="needs the image it masks"):
        generate(model, _params(init, mask, init_image=None), tmp_path)
    with pytest.raises(GenerationError, match="unknown masked content 'blank'; use one of fill"):
        generate(model, _params(init, mask, masked_content="blank"), tmp_path)


def test_cli_inpaint_catalogues_source_and_mask(tiny_dir, sources, tmp_path):
    init, mask = sources
    db = tmp_path / "c.db"
    base = ["--db", str(db)]
    assert CliRunner().invoke(main, [*base, "scan", str(init)]).exit_code == 0
    added = CliRunner().invoke(main, [*base, "models", "checkpoints", "add", str(tiny_dir)])
    assert added.exit_code == 0, added.output
    args = [
        *base,
        "generate",
        "a cat",
        "-m",
        str(tiny_dir),
        "--size",
        "48x48",
        "--steps",
        "2",
        "--seed",
        "3",
        "--init",
        str(init),
        "--mask",
        str(mask),
        "--mask-blur",
        "2",
        "--masked-content",
        "fill",
        "--inpaint-area",
        "only masked",
        "--inpaint-padding",
        "16",
        "--out",
        str(tmp_path / "out"),
        "--json",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    made = json.loads(result.output)
    info = parse_infotext(made[0]["infotext"])
    assert info.params["Masked content"] == "fill"
    assert info.params["Inpaint area"] == "Only masked"
    from sqlalchemy import select

    from db import open_catalog
    from db.schema import File, GeneratedBy

    catalog = open_catalog(str(db))
    try:
        with catalog.session() as session:
            source_id = session.scalar(select(File.image_id).where(File.path == str(init)))
            row = session.scalars(select(GeneratedBy)).one()
            assert row.source_image_id == source_id
            assert row.params["mask_image"] == str(mask.resolve())
            assert row.params["masked_content"] == "fill"
    finally:
        catalog.close()
    # regenerate finds the source and the mask in the catalog and gives the same pixels
    again = CliRunner().invoke(
        main, [*base, "regenerate", made[0]["path"], "--out", str(tmp_path / "re"), "--json"]
    )
    assert again.exit_code == 0, again.output
    remade = json.loads(again.output)[0]["path"]
    assert np.array_equal(_pixels(Path(made[0]["path"])), _pixels(Path(remade)))
    mask.unlink()
    gone = CliRunner().invoke(main, [*base, "regenerate", made[0]["path"]])
    assert gone.exit_code != 0 and "the inpainting mask" in gone.output
    assert "is missing" in gone.output


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_denoised_estimate_is_the_source_outside_the_mask(kind):
    """A1111's blend: every model evaluation denoises to the source where it is kept."""
    import torch
    from diffusers import EulerDiscreteScheduler

    from curator.generation.inpaint_sampling import denoised_blend

    torch.manual_seed(0)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=kind,
        use_karras_sigmas=True,
    )
    scheduler.set_timesteps(7)

    class Unet(torch.nn.Module):
        def forward(self, sample, timestep, *args, **kwargs):
            return (torch.randn_like(sample),)

    unet = Unet()
    init = torch.randn(1, 4, 4, 4)
    keep = torch.zeros(1, 1, 4, 4)
    keep[..., :2] = 1
    step = 3
    sigma = float(scheduler.sigmas[step])
    t = scheduler.timesteps[step]  # fractional with Karras sigmas
    x = torch.randn(2, 4, 4, 4) * sigma  # a guided batch: negative and positive halves
    scaled = x / (sigma**2 + 1) ** 0.5
    with denoised_blend(unet, scheduler, init, keep):
        out = unet(scaled, t)[0]
    if kind == "epsilon":
        denoised = x - sigma * out
    else:  # v: x0 = c_skip * x + c_out * v, as diffusers' Euler computes it
        denoised = x / (sigma**2 + 1) - out * sigma / (sigma**2 + 1) ** 0.5
    kept = denoised[..., :2]
    assert torch.allclose(kept, init.repeat(2, 1, 1, 1)[..., :2], atol=1e-3)
    assert not torch.allclose(denoised[..., 2:], init.repeat(2, 1, 1, 1)[..., 2:], atol=1e-2)
