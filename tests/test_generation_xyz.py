"""X/Y/Z plots: cells, labels, seeds, grid and infotext, with the tiny pipeline."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("diffusers")
pytest.importorskip("open_clip")

from curator.cli import main  # noqa: E402
from curator.generation.generate import GenerationParams  # noqa: E402
from curator.generation.xyz import XYZError, parse_axis, plan_cells  # noqa: E402
from curator.ingest.infotext import parse_infotext  # noqa: E402


def test_cells_apply_every_axis_with_one_seed():
    base = GenerationParams(prompt="a cat", negative_prompt="ugly cat", seed=-1)
    x, y = parse_axis("Steps=10-30 (+10)"), parse_axis("Prompt S/R=cat,dog")
    z = parse_axis("Sampler=Euler,DPM++ 2M Karras")
    cells = plan_cells(base, x, y, z)
    assert len(cells) == 12
    assert len({c.params.seed for c in cells}) == 1 and cells[0].params.seed >= 0
    by_index = {(c.ix, c.iy, c.iz): c.params for c in cells}
    assert by_index[(2, 1, 1)].steps == 30
    assert by_index[(2, 1, 1)].prompt == "a dog"
    assert by_index[(2, 1, 1)].negative_prompt == "ugly dog"
    assert by_index[(2, 1, 1)].sampler == "DPM++ 2M Karras"
    assert x.labels() == ["Steps: 10", "Steps: 20", "Steps: 30"]
    assert y.labels() == ["cat", "dog"]
    # A1111 runs z outermost, then y, then x, when no axis is costlier
    assert [(c.ix, c.iy, c.iz) for c in cells[:3]] == [(0, 0, 0), (1, 0, 0), (2, 0, 0)]


def test_checkpoint_axis_runs_outermost():
    cells = plan_cells(
        GenerationParams(prompt="a", seed=1),
        parse_axis("Steps=1,2"),
        parse_axis("Checkpoint name=a,b"),
        parse_axis(None),
    )
    assert [c.checkpoint for c in cells] == ["a", "a", "b", "b"]


def test_seed_axis_draws_random_seeds_for_minus_one():
    cells = plan_cells(
        GenerationParams(prompt="a", seed=5),
        parse_axis("Seed=-1, 7"),
        parse_axis(None),
        parse_axis(None),
        rng=random.Random(0),
    )
    assert cells[1].params.seed == 7 and cells[0].params.seed not in (-1, 7)


def test_bad_axes_are_errors_before_running():
    base = GenerationParams(prompt="a cat")
    with pytest.raises(XYZError, match="did not find horse"):
        plan_cells(base, parse_axis("Prompt S/R=horse,dog"), parse_axis(None), parse_axis(None))
    with pytest.raises(XYZError, match="known label"):
        parse_axis("Colour=red")
    from curator.generation.samplers import SamplerError

    with pytest.raises(SamplerError, match="unknown sampler"):
        plan_cells(base, parse_axis("Sampler=Euler,Nope"), parse_axis(None), parse_axis(None))


def test_grid_cells_labels_and_catalog(tiny_dir, tmp_path):
    db = tmp_path / "c.db"
    args = [
        "--db",
        db,
        "xyz",
        "a cat",
        "-m",
        tiny_dir,
        "--size",
        "32x32",
        "--steps",
        "2",
        "--seed",
        "3",
        "--x",
        "CFG Scale=5,9",
        "--y",
        "Prompt S/R=cat,dog,fox",
        "--out",
        tmp_path / "out",
        "--json",
    ]
    result = CliRunner().invoke(main, list(map(str, args)))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert len(report["cells"]) == 6
    with Image.open(report["grid"]) as grid:
        info = parse_infotext(grid.info["parameters"])
        width, height = grid.size
    assert width > 2 * 32 and height > 3 * 32  # cells plus legend margins
    assert info.params["Script"] == "X/Y/Z plot"
    assert info.params["X Type"] == "CFG Scale" and info.params["X Values"] == "5,9"
    assert info.params["Y Type"] == "Prompt S/R"
    with Image.open(report["cells"][5]) as last:
        cell = parse_infotext(last.info["parameters"])
    assert cell.prompt == "a fox" and cell.cfg_scale == 9 and cell.seed == 3
    count = sqlite3.connect(db).execute("select count(*) from files").fetchone()[0]
    assert count == 7  # six cells and the grid


@pytest.fixture(scope="module")
def lora_dir(tiny_dir, tmp_path_factory) -> Path:
    from tests.fixtures.tiny_pipeline import save_tiny_lora

    folder = tmp_path_factory.mktemp("loras")
    save_tiny_lora(tiny_dir, folder, "style_a")
    save_tiny_lora(tiny_dir, folder, "style_b")
    return folder


def _plan(base, x, y=None, z=None):
    return plan_cells(base, parse_axis(x), parse_axis(y), parse_axis(z))


def test_lora_and_strength_axes_write_prompt_tags(lora_dir):
    base = GenerationParams(prompt="a cat", seed=1, lora_dirs=[str(lora_dir)])
    x, y = parse_axis("LoRA=None,style_a,style_b"), parse_axis("LoRA strength=0.5,1")
    cells = plan_cells(base, x, y, parse_axis(None))
    prompts = {(c.ix, c.iy): c.params.prompt for c in cells}
    assert prompts[(0, 0)] == "a cat"
    assert prompts[(1, 0)] == "a cat <lora:style_a:0.5>"
    assert prompts[(2, 1)] == "a cat <lora:style_b:1>"
    assert x.labels() == ["None", "style_a", "style_b"]
    assert y.labels() == ["LoRA strength: 0.5", "LoRA strength: 1.0"]
    # no LoRA axis: the strength axis changes the prompt's own LoRA tags
    tagged = GenerationParams(prompt="a <lora:style_a:0.8:0.2> cat", lora_dirs=[str(lora_dir)])
    cells = _plan(tagged, "LoRA weight=0, 0.25")
    assert [c.params.prompt for c in cells] == [
        "a <lora:style_a:0> cat",
        "a <lora:style_a:0.25> cat",
    ]
    with pytest.raises(XYZError, match="prompt has no <lora:...> and there is no LoRA axis"):
        _plan(base, "LoRA strength=1,2")
    from curator.generation.extra_networks import ExtraNetworkError

    with pytest.raises(ExtraNetworkError, match="LoRA 'missing' not found"):
        _plan(base, "LoRA=style_a,missing")


def test_embedding_and_hypernetwork_axes(tmp_path):
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "emb"
    folder.mkdir()
    save_file({"emb_params": torch.zeros(1, 32)}, str(folder / "glow.safetensors"))
    base = GenerationParams(prompt="a cat", seed=1, embeddings_dirs=[str(folder)])
    cells = plan_cells(
        base,
        parse_axis("Embedding=glow"),
        parse_axis("Embedding strength=0.5,1.2"),
        parse_axis(None),
    )
    assert [c.params.prompt for c in cells] == ["a cat, (glow:0.5)", "a cat, (glow:1.2)"]
    with pytest.raises(XYZError, match="'nope' not found"):
        _plan(base, "Embedding=glow,nope")
    with pytest.raises(XYZError, match="needs an Embedding axis"):
        _plan(base, "Embedding strength=1,2")


def test_lora_axis_grid_changes_pixels_and_records_hashes(tiny_dir, lora_dir, tmp_path):
    args = [
        "xyz",
        "a cat",
        "-m",
        tiny_dir,
        "--size",
        "32x32",
        "--steps",
        "2",
        "--seed",
        "3",
        "--lora-dir",
        lora_dir,
        "--x",
        "LoRA=None,style_a",
        "--y",
        "LoRA strength=0.5,1",
        "--no-catalog",
        "--out",
        tmp_path / "out",
        "--json",
    ]
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "c.db"), *map(str, args)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    pixels = []
    for path in report["cells"]:
        with Image.open(path) as image:
            pixels.append(np.asarray(image.convert("RGB")).astype(int))
            info = parse_infotext(image.info["parameters"])
        if "style_a" in info.prompt:
            assert info.params["Lora hashes"].startswith("style_a: ")
        else:
            assert "Lora hashes" not in info.params
    # cells in run order: (x0,y0) (x1,y0) (x0,y1) (x1,y1); without the LoRA the strength
    # changes nothing, with it the image changes with the strength
    assert np.array_equal(pixels[0], pixels[2])
    assert not np.array_equal(pixels[0], pixels[1])
    assert not np.array_equal(pixels[1], pixels[3])
    with Image.open(report["grid"]) as grid:
        info = parse_infotext(grid.info["parameters"])
    assert info.params["X Type"] == "LoRA" and info.params["Y Type"] == "LoRA strength"
