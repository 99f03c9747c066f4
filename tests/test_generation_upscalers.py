"""Hires fix with image upscalers: PIL resizes and a real ESRGAN model through spandrel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("diffusers")
pytest.importorskip("spandrel")

from curator.cli import main  # noqa: E402
from curator.generation.generate import GenerationParams, generate  # noqa: E402
from curator.generation.upscalers import (  # noqa: E402
    Upscaler,
    UpscalerError,
    model_upscalers,
    resolve_upscaler,
)
from curator.ingest.infotext import parse_infotext  # noqa: E402


@pytest.fixture(scope="module")
def upscaler_dir(tmp_path_factory) -> Path:
    """A 2x ESRGAN (old-arch RRDBNet keys, as the original ESRGAN releases) with random
    weights, saved as .safetensors and .pth."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    net = ESRGAN(num_filters=8, num_blocks=1, scale=2)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    folder = tmp_path_factory.mktemp("upscalers")
    save_file(state, str(folder / "Tiny_ESRGAN_2x.safetensors"))
    torch.save(state, folder / "sub_pth_2x.pth")
    return folder


def _params(**changes) -> GenerationParams:
    base = {
        "prompt": "a cat",
        "steps": 2,
        "width": 16,
        "height": 16,
        "seed": 3,
        "hr_scale": 2.0,
        "denoising_strength": 0.5,
    }
    return GenerationParams(**{**base, **changes})


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_spandrel_detects_and_runs_the_model_files(upscaler_dir):
    found = model_upscalers([str(upscaler_dir)])
    assert sorted(found) == ["Tiny_ESRGAN_2x", "sub_pth_2x"]
    source = Image.fromarray(np.random.default_rng(0).integers(0, 255, (10, 12, 3), np.uint8))
    for name in found:
        upscaler = Upscaler(name, found[name])
        assert upscaler.descriptor.architecture.name == "ESRGAN"
        assert upscaler.descriptor.scale == 2
        # 2x model, 4x asked: it runs twice (A1111's loop), then Lanczos to the exact size
        assert upscaler.upscale(source, 48, 40).size == (48, 40)
        assert upscaler.upscale(source, 24, 20).size == (24, 20)


def test_unknown_upscaler_lists_every_known_name(upscaler_dir):
    with pytest.raises(UpscalerError) as error:
        resolve_upscaler("4x-UltraSharp", [str(upscaler_dir)], ["Latent"])
    message = str(error.value)
    assert "\n" not in message
    assert message.endswith("known: Latent, None, Lanczos, Nearest, Tiny_ESRGAN_2x, sub_pth_2x")
    assert resolve_upscaler("Lanczos", [], ["Latent"]) is None


def test_not_an_upscaler_is_one_line(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3)}, str(tmp_path / "junk.safetensors"))
    found = model_upscalers([str(tmp_path)])
    with pytest.raises(UpscalerError, match="cannot load upscaler junk.safetensors"):
        Upscaler("junk", found["junk"])


def test_hires_fix_with_pixel_upscalers(model, upscaler_dir, tmp_path):
    results = {}
    for name in ("None", "Lanczos", "Nearest", "Tiny_ESRGAN_2x"):
        params = _params(hr_upscaler=name, upscaler_dirs=[str(upscaler_dir)])
        image = generate(model, params, tmp_path / name)[0]
        assert Image.open(image.path).size == (32, 32)
        info = parse_infotext(image.infotext)
        assert info.params["Hires upscaler"] == name
        results[name] = _pixels(image.path)
    assert not np.array_equal(results["Nearest"], results["Tiny_ESRGAN_2x"])
    assert not np.array_equal(results["Nearest"], results["Lanczos"])
    # None and Lanczos both resize with Lanczos in A1111
    assert np.array_equal(results["None"], results["Lanczos"])
    again = generate(
        model,
        _params(hr_upscaler="Tiny_ESRGAN_2x", upscaler_dirs=[str(upscaler_dir)]),
        tmp_path / "again",
    )[0]
    assert np.array_equal(_pixels(again.path), results["Tiny_ESRGAN_2x"])


def test_cli_hires_with_a_model_upscaler_and_regenerate(tiny_dir, upscaler_dir, tmp_path):
    db = tmp_path / "c.db"

    def run(*args):
        result = CliRunner().invoke(main, ["--db", str(db), *map(str, args)])
        assert result.exit_code == 0, result.output
        return result.output

    run("models", "checkpoints", "add", tiny_dir)
    common = ["--size", "16x16", "--steps", "2", "--seed", "9", "--hr-scale", "2"]
    made = json.loads(
        run(
            "generate",
            "a cat",
            "-m",
            tiny_dir,
            *common,
            "--hr-upscaler",
            "Tiny_ESRGAN_2x",
            "--upscaler-dir",
            upscaler_dir,
            "--out",
            tmp_path / "a",
            "--json",
        )
    )
    again = json.loads(
        run(
            "regenerate",
            made[0]["path"],
            "--upscaler-dir",
            upscaler_dir,
            "--out",
            tmp_path / "b",
            "--json",
        )
    )
    assert np.array_equal(_pixels(Path(made[0]["path"])), _pixels(Path(again[0]["path"])))
    missing = CliRunner().invoke(main, ["--db", str(db), "regenerate", made[0]["path"]])
    assert missing.exit_code != 0
    assert "hires upscaler 'Tiny_ESRGAN_2x' not found" in missing.output


def test_large_images_are_upscaled_in_blended_tiles(upscaler_dir):
    from curator.generation.upscalers import _tiled

    rng = np.random.default_rng(1)
    source = Image.fromarray(rng.integers(0, 255, (30, 41, 3), np.uint8))

    def nearest(tile: Image.Image) -> Image.Image:
        return tile.resize((tile.width * 2, tile.height * 2), Image.Resampling.NEAREST)

    seen = []

    def spy(tile: Image.Image) -> Image.Image:
        seen.append(tile.size)
        return nearest(tile)

    tiled = np.asarray(_tiled(source, 16, 4, spy)).astype(int)
    whole = np.asarray(nearest(source)).astype(int)
    assert tiled.shape == whole.shape
    assert np.abs(tiled - whole).max() <= 1  # overlaps blend identical pixels
    assert set(seen) == {(16, 16)} and len(seen) == 4 * 3  # ceil(37/12) x ceil(26/12)
    # the real model: tiles and the whole image agree away from the seams' context
    model = model_upscalers([str(upscaler_dir)])["Tiny_ESRGAN_2x"]
    tiles = Upscaler("Tiny_ESRGAN_2x", model, tile=16)._run_model(source)
    once = Upscaler("Tiny_ESRGAN_2x", model, tile=0)._run_model(source)
    assert tiles.size == once.size == (82, 60)
    difference = np.abs(np.asarray(tiles).astype(int) - np.asarray(once).astype(int))
    assert difference.mean() < 8
