"""`--epochs N`: the step count comes from the data (repeats, buckets, batch size,
gradient accumulation) before training, as kohya's `--max_train_epochs` counts it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("diffusers")
pytest.importorskip("open_clip")

from curator.cli import main  # noqa: E402
from curator.progress import NullReporter  # noqa: E402
from curator.training.dreambooth import DreamBoothOptions, train_dreambooth  # noqa: E402
from curator.training.hypernetwork import HypernetworkOptions, train_hypernetwork  # noqa: E402
from curator.training.textual_inversion import (  # noqa: E402
    TextualInversionOptions,
    train_textual_inversion,
)


def _data(root: Path, sizes: list[tuple[int, int]], repeats: int) -> Path:
    images = root / "img" / f"{repeats}_sks cat"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"{i}.png")
        (images / f"{i}.txt").write_text("sks cat, outdoors", encoding="utf-8")
    return root


class Totals(NullReporter):
    def __init__(self) -> None:
        self.totals: list[int | None] = []

    def start(self, description: str, total: int | None = None) -> None:
        self.totals.append(total)


def test_epochs_count_steps_from_repeats_buckets_batches_and_accumulation(tiny_dir, tmp_path):
    # 3 images at 32x32 and 2 at 48x32, 3 repeats: buckets of 9 and 6 places; batches of
    # 2 make 5 + 3 = 8 batches an epoch; 2 batches per step: 4 steps an epoch
    data = _data(tmp_path / "d", [(32, 32)] * 3 + [(48, 32)] * 2, repeats=3)
    db = tmp_path / "c.db"
    result = CliRunner().invoke(
        main,
        ["--db", str(db), "train", "lora", "--json", "--base", str(tiny_dir), "--data",
         str(data), "--out", str(tmp_path / "o"), "--epochs", "2", "--batch-size", "2",
         "--gradient-accumulation-steps", "2", "--rank", "2", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["steps"] == 8
    with open(report["loss_log"], encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert {r["epoch"] for r in rows} == {"1", "2"}  # exactly two passes, no third begun
    runs = CliRunner().invoke(main, ["--db", str(db), "runs", "--json"])
    run = next(r for r in json.loads(runs.output) if r["kind"] == "train")
    assert run["params"]["epochs"] == 2 and run["params"]["steps"] == 8
    from safetensors import safe_open

    (lora,) = [p for p in report["outputs"] if p.endswith(".safetensors")]
    with safe_open(lora, "pt") as handle:  # kohya's epoch count for this run, too
        assert handle.metadata()["ss_num_epochs"] == "2"


def test_every_method_takes_epochs_and_shows_the_count_as_the_bar_total(tiny_dir, tmp_path):
    data = _data(tmp_path / "d", [(32, 32)] * 3, repeats=1)  # 3 batches of 1 an epoch
    common = {"base": str(tiny_dir), "data": str(data), "epochs": 2, "device": "cpu"}
    trainers = [
        (train_textual_inversion, TextualInversionOptions(**common, out=str(tmp_path / "t"),
                                                          token="skstok")),
        (train_hypernetwork, HypernetworkOptions(**common, out=str(tmp_path / "h"), name="hn")),
        (train_dreambooth, DreamBoothOptions(**common, out=str(tmp_path / "b"),
                                             )),
    ]  # fmt: skip
    for train, options in trainers:
        options.reporter = Totals()
        result = train(options)
        assert result.steps == 6 and len(result.losses) == 6, train.__name__
        assert 6 in options.reporter.totals, train.__name__


def test_steps_and_epochs_together_are_one_line(tiny_dir, tmp_path):
    data = _data(tmp_path / "d", [(32, 32)], repeats=1)
    result = CliRunner().invoke(
        main,
        ["--db", str(tmp_path / "c.db"), "train", "textual-inversion", "--base", str(tiny_dir),
         "--data", str(data), "--out", str(tmp_path / "o"), "--token", "skstok",
         "--steps", "10", "--epochs", "2"],
    )  # fmt: skip
    assert result.exit_code != 0
    assert result.output == "error: give --steps or --epochs, not both\n"
