"""X/Y/Z plots: cells, labels, seeds, grid and infotext, with the tiny pipeline."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("diffusers")
pytest.importorskip("open_clip")

from curator.cli import main  # noqa: E402
from curator.generation.generate import GenerationParams  # noqa: E402
from curator.generation.xyz import XYZError, parse_axis, plan_cells  # noqa: E402
from curator.ingest.infotext import parse_infotext  # noqa: E402
from tests.fixtures.tiny_pipeline import save_tiny_pipeline  # noqa: E402


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


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    import torch

    torch.set_num_threads(1)
    return save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny")


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
