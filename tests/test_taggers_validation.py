"""A model that cannot run is one line and a non-zero exit before any image is touched;
odd model outputs (NaN, empty names, thousands of tags) never crash a run."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import func, select

from curator.cli import main
from curator.ingest.scan import ScanOptions, scan
from curator.runs.loop import RunOptions, run_models
from db import open_catalog
from db.schema import ImageTag, Problem, Processed, Run, Score, Tag
from taggers import onnx_session
from taggers.errors import MissingDependencyError, ModelLoadError
from taggers.factory import load_model
from tests.fixtures.tiny_models import (
    WD14_TAGS,
    build_dynamic_output_model,
    build_model_with_input,
    build_nchw_wd14_model,
    build_wd14_model,
)

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "white": (255,) * 3}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    for name, rgb in COLOURS.items():
        Image.new("RGB", (40, 30), rgb).save(root / f"{name}.png")
    path = tmp_path / "c.db"
    with open_catalog(str(path)) as catalog:
        scan(catalog, [root], ScanOptions(workers=1))
    return path


def tag(db: Path, model: Path | str, *args: str):
    return CliRunner().invoke(
        main, ["--db", str(db), "tag", "-m", str(model), "--workers", "0", "--quiet", *args]
    )


def assert_refused_before_any_image(db: Path, result, match: str) -> None:
    assert result.exit_code != 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert match in lines[0], lines[0]
    assert "Traceback" not in result.output
    with open_catalog(str(db)) as catalog, catalog.session() as s:
        assert s.scalar(select(func.count(Problem.id))) == 0  # no image is blamed
        assert s.scalar(select(func.count(Processed.id))) == 0
        assert s.scalar(select(func.count(Run.id)).where(Run.kind == "tag")) == 0


def _write_model(directory: Path, content: bytes) -> Path:
    build_wd14_model(directory, size=16)
    (directory / "model.onnx").write_bytes(content)
    return directory


BROKEN_FILES = {
    "random-bytes": lambda good: bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8)),
    "truncated": lambda good: good[: len(good) // 2],
    "empty": lambda good: b"",
    "pickle": lambda good: pickle.dumps({"state_dict": [1, 2, 3]}),
}


@pytest.mark.parametrize("case", sorted(BROKEN_FILES))
def test_broken_model_files_are_refused_before_any_image(db, tmp_path, case):
    good = (build_wd14_model(tmp_path / "good", size=16) / "model.onnx").read_bytes()
    model_dir = _write_model(tmp_path / case, BROKEN_FILES[case](good))
    assert_refused_before_any_image(db, tag(db, model_dir), "cannot load")


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ([1, 0, 0, 3], "fixed square input"),
        (["batch", "height", "width", 3], "fixed square input"),
        ([1, 16, 16, 3, 1], "4-d image input"),
        ([1, 16, 16, 4], "3 colour channels"),
        ([1, 16, 24, 3], "fixed square input"),
        ([1, 30000, 30000, 3], "over the 2048-pixel limit"),
    ],
)
def test_impossible_input_shapes_are_refused(db, tmp_path, shape, match):
    model_dir = build_model_with_input(tmp_path / "odd", shape)
    assert_refused_before_any_image(db, tag(db, model_dir), match)


def test_negative_dimension_is_refused(db, tmp_path):
    model_dir = build_model_with_input(tmp_path / "odd", [1, 16, 16, 3])
    import onnx

    model = onnx.load(str(model_dir / "model.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = -16
    onnx.save(model, str(model_dir / "model.onnx"))
    result = tag(db, model_dir)
    assert result.exit_code != 0 and result.output.startswith("error: ")
    assert_refused_before_any_image(db, result, "")


def test_a_tag_list_that_does_not_match_the_outputs_is_refused(db, tmp_path):
    model_dir = build_wd14_model(tmp_path / "m", size=16)
    lines = (model_dir / "selected_tags.csv").read_text().splitlines()
    (model_dir / "selected_tags.csv").write_text("\n".join(lines[:-2]) + "\n")
    assert_refused_before_any_image(db, tag(db, model_dir), "do not belong together")


def test_an_undeclared_output_width_is_checked_by_running_the_model(db, tmp_path):
    model_dir = build_dynamic_output_model(tmp_path / "m", n_tags=5)
    assert_refused_before_any_image(db, tag(db, model_dir), "scores 11 tags")
    ok = build_dynamic_output_model(tmp_path / "ok")
    assert tag(db, ok).exit_code == 0


def test_cuda_on_a_cpu_only_build_is_refused(db, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_session, "available_providers", lambda: ["CPUExecutionProvider"])
    model_dir = build_wd14_model(tmp_path / "m", size=16)
    result = tag(db, model_dir, "--device", "cuda")
    assert_refused_before_any_image(db, result, "CUDAExecutionProvider")


def test_missing_onnxruntime_names_the_extra_to_install(db, tmp_path, monkeypatch):
    model_dir = build_wd14_model(tmp_path / "m", size=16)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    result = tag(db, model_dir)
    assert_refused_before_any_image(db, result, 'pip install -e ".[cpu]"')
    assert "onnxruntime" in result.output
    with pytest.raises(MissingDependencyError):
        run_models(
            open_catalog(str(db)), [load_model(str(model_dir), models_dir=tmp_path)], RunOptions()
        )


def test_nchw_models_run_with_the_same_scores(db, tmp_path):
    nhwc = load_model(str(build_wd14_model(tmp_path / "a", size=32)), models_dir=tmp_path)
    nchw = load_model(str(build_nchw_wd14_model(tmp_path / "b", size=32)), models_dir=tmp_path)
    image = Image.new("RGB", (50, 20), (200, 30, 90))
    a = nhwc.predict([nhwc.preprocess(image)])[0]
    b = nchw.predict([nchw.preprocess(image)])[0]
    assert a.scores == pytest.approx(b.scores) and [t.name for t in a.tags] == [
        t.name for t in b.tags
    ]


# --- tag lists ---------------------------------------------------------------------------


def test_non_utf8_and_binary_tag_lists_are_one_line_errors(db, tmp_path):
    latin = build_wd14_model(tmp_path / "latin", size=16)
    text = (latin / "selected_tags.csv").read_text().replace("red_hero", "h\u00e9ro")
    (latin / "selected_tags.csv").write_bytes(text.encode("latin-1"))
    assert_refused_before_any_image(db, tag(db, latin), "not UTF-8")
    binary = build_wd14_model(tmp_path / "binary", size=16)
    (binary / "selected_tags.csv").write_bytes(b"tag_id,name\x00\x01\x02" * 10)
    assert_refused_before_any_image(db, tag(db, binary), "not a text file")


def test_an_empty_tag_name_is_never_written(db, tmp_path):
    tags = list(WD14_TAGS)
    tags[7] = ("", 0)  # "bright": white scores high on it
    model_dir = build_wd14_model(tmp_path / "m", size=16, tags=tags)
    # The random weights of a custom tag list: make column 7 score high for everything.
    weights = np.zeros((3, len(tags)), np.float32)
    bias = np.full(len(tags), -5.0, np.float32)
    bias[7] = 5.0
    build_wd14_model(model_dir, size=16, tags=tags, weights=weights, bias=bias)
    result = tag(db, model_dir)
    assert result.exit_code == 0, result.output
    with open_catalog(str(db)) as catalog, catalog.session() as s:
        assert s.scalar(select(func.count(Processed.id))) == len(COLOURS)
        assert s.scalar(select(func.count(Problem.id))) == 0
        assert s.scalar(select(func.count(Tag.id)).where(Tag.name == "")) == 0
        assert s.scalar(select(func.count(Tag.id)).where(Tag.name == "red")) == 0


# --- outputs -----------------------------------------------------------------------------


def test_nan_scores_are_skipped_and_counted(db, tmp_path):
    bias = np.full(len(WD14_TAGS), 5.0, np.float32)
    bias[[1, 4, 5]] = np.nan  # one rating and two general tags
    model_dir = build_wd14_model(
        tmp_path / "m", size=16, weights=np.zeros((3, len(WD14_TAGS)), np.float32), bias=bias
    )
    result = tag(db, model_dir, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)[0]
    assert summary["done"] == len(COLOURS) and summary["failed"] == 0
    with open_catalog(str(db)) as catalog, catalog.session() as s:
        names = set(s.scalars(select(Score.name)))
        assert "rating:sensitive" not in names and "rating:general" in names
        values = list(s.scalars(select(Score.value)))
        assert all(np.isfinite(values))
        assert s.scalar(select(func.count(ImageTag.id)).where(ImageTag.score.is_(None))) == 0


def test_tags_per_image_are_capped_by_score(db, tmp_path):
    n = 3000
    rng = np.random.default_rng(1)
    weights = np.zeros((3, n), np.float32)
    bias = rng.uniform(1.0, 6.0, n).astype(np.float32)  # every tag above the threshold
    model_dir = build_wd14_model(
        tmp_path / "many",
        size=16,
        tags=[(f"t{i}", 0) for i in range(n)],
        weights=weights,
        bias=bias,
    )
    assert tag(db, model_dir).exit_code == 0
    with open_catalog(str(db)) as catalog, catalog.session() as s:
        per_image = s.execute(
            select(ImageTag.image_id, func.count(), func.min(ImageTag.score)).group_by(
                ImageTag.image_id
            )
        ).all()
    assert {count for _, count, _ in per_image} == {1000}
    floor = float(np.sort(1 / (1 + np.exp(-bias.astype(np.float64))))[-1000])
    assert all(low == pytest.approx(floor, abs=1e-6) for _, _, low in per_image)
    assert tag(db, model_dir, "--redo", "--max-tags", "10").exit_code == 0
    with open_catalog(str(db)) as catalog, catalog.session() as s:
        assert s.scalar(select(func.count(ImageTag.id))) == 10 * len(COLOURS)


def test_already_done_counts_what_was_done_not_what_limit_left(db, tmp_path):
    model_dir = build_wd14_model(tmp_path / "m", size=16)
    first = json.loads(tag(db, model_dir, "--limit", "1", "--json").output)[0]
    assert (first["done"], first["skipped"]) == (1, 0)
    second = json.loads(tag(db, model_dir, "--limit", "2", "--json").output)[0]
    assert (second["done"], second["skipped"]) == (2, 1)


def test_model_errors_are_library_errors(tmp_path):
    model_dir = build_model_with_input(tmp_path / "odd", [1, 30000, 30000, 3])
    model = load_model(str(model_dir), models_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="2048"):
        model.load()


def test_a_package_missing_while_preparing_images_stops_the_run_in_one_line(db):
    from taggers.base import Result

    class NeedsTorch:
        name, kind, revision, input_size = "needs-torch", "embedder", "t1", None

        def preprocess(self, decoded):
            raise ModuleNotFoundError("No module named 'torch'", name="torch")

        def predict(self, batch):
            return [Result() for _ in batch]

        def params(self):
            return {}

    with open_catalog(str(db)) as catalog:
        with pytest.raises(MissingDependencyError, match=r'pip install -e "\.\[clip\]"'):
            run_models(catalog, [NeedsTorch()], RunOptions(workers=0))
        with catalog.session() as s:
            assert s.scalar(select(func.count(Problem.id))) == 0
