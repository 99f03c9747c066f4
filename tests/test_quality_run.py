"""Quality scores over the catalog: sharpness, JPEG quality, megapixels, aesthetic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import ImageFilter
from sqlalchemy import select

from curator.cli import main
from curator.ingest.scan import ScanOptions, scan
from curator.runs.quality_run import compute_quality, quality_table
from db.schema import Embedding, File, Problem, Score
from tests.corpus import pattern


def write_quality_set(root: Path) -> None:
    root.mkdir(parents=True)
    sharp = pattern(320, 240, 7)
    sharp.save(root / "sharp.png")
    sharp.filter(ImageFilter.GaussianBlur(3)).save(root / "blurred.png")
    pattern(300, 300, 8).save(root / "q85.jpg", quality=85)
    pattern(300, 300, 9).save(root / "q40.jpg", quality=40)
    pattern(600, 500, 10).save(root / "big.webp", quality=90)
    pattern(64, 64, 11).save(root / "broken.png")


@pytest.fixture
def qset(catalog, tmp_path) -> Path:
    root = tmp_path / "q"
    write_quality_set(root)
    scan(catalog, [root], ScanOptions(workers=1))
    # Broken after the scan: the catalog still lists it, but it cannot be decoded.
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return root


def scores(catalog) -> dict[str, dict[str, float]]:
    with catalog.session() as s:
        rows = s.execute(
            select(File.path, Score.name, Score.value).join(Score, Score.image_id == File.image_id)
        ).all()
    out: dict[str, dict[str, float]] = {}
    for path, name, value in rows:
        out.setdefault(Path(path).name, {})[name] = value
    return out


def test_scores_are_measured_stored_and_resumable(catalog, qset):
    summary = compute_quality(catalog, workers=1)
    assert (summary.selected, summary.measured, summary.failed) == (6, 5, 1)
    assert summary.resolution_classes == {"tiny": 1, "small": 4, "sd": 1}
    got = scores(catalog)
    assert got["sharp.png"]["sharpness"] > 5 * got["blurred.png"]["sharpness"] > 0
    assert got["q85.jpg"]["jpeg_quality"] == pytest.approx(85, abs=2)
    assert got["q40.jpg"]["jpeg_quality"] == pytest.approx(40, abs=2)
    assert "jpeg_quality" not in got["sharp.png"] and "jpeg_quality" not in got["big.webp"]
    assert got["big.webp"]["megapixels"] == pytest.approx(0.3)
    assert "sharpness" not in got.get("broken.png", {})
    with catalog.session() as s:
        problem = s.scalar(select(Problem).where(Problem.path == str(qset / "broken.png")))
    assert problem is not None and problem.kind == "decode_failed"

    again = compute_quality(catalog, workers=1)
    assert (again.skipped, again.measured, again.failed) == (5, 0, 1)  # only the broken one
    (qset / "blurred.png").write_bytes((qset / "sharp.png").read_bytes())
    assert compute_quality(catalog, "format:png").measured == 0
    redo = compute_quality(catalog, "format:png", redo=True, workers=1)
    assert redo.measured == 2
    after = scores(catalog)
    assert after["blurred.png"]["sharpness"] == pytest.approx(after["sharp.png"]["sharpness"])
    with catalog.session() as s:
        assert s.scalar(select(Score.id).where(Score.source != "quality")) is None


def test_a_process_pool_gives_the_same_scores(catalog, qset):
    compute_quality(catalog, workers=0)
    alone = scores(catalog)
    summary = compute_quality(catalog, redo=True, workers=2)
    assert (summary.measured, summary.failed) == (5, 1)
    assert scores(catalog) == alone


def test_aesthetic_scores_from_stored_embeddings(catalog, qset, tmp_path):
    safetensors = pytest.importorskip("safetensors.numpy")
    weight = np.arange(1, 9, dtype=np.float32)[None, :] / 10
    head_path = tmp_path / "head.safetensors"
    safetensors.save_file({"weight": weight, "bias": np.array([5.0], np.float32)}, head_path)
    with catalog.session() as s:
        ids = dict(s.execute(select(File.path, File.image_id)).all())
    sharp, blurred = ids[str(qset / "sharp.png")], ids[str(qset / "blurred.png")]
    vectors = {sharp: np.eye(8)[7] * 2, blurred: np.eye(8)[0]}
    with catalog.write() as s:
        for image_id, v in vectors.items():
            blob = np.asarray(v, "<f4").tobytes()
            s.add(Embedding(image_id=image_id, model="clip-tiny", dim=8, vector=blob))
    summary = compute_quality(catalog, aesthetic_head=head_path, workers=1)
    assert summary.aesthetic == 2 and summary.aesthetic_model == "clip-tiny"
    got = scores(catalog)
    assert got["sharp.png"]["aesthetic"] == pytest.approx(5.8)  # normalised first
    assert got["blurred.png"]["aesthetic"] == pytest.approx(5.1)
    assert compute_quality(catalog, aesthetic_head=head_path).aesthetic == 0

    wide = tmp_path / "wide.safetensors"
    safetensors.save_file(
        {"weight": np.ones((1, 16), np.float32), "bias": np.zeros(1, np.float32)}, wide
    )
    summary = compute_quality(catalog, aesthetic_head=wide)
    assert summary.aesthetic == 0 and "16-wide" in summary.notes[0]


def test_quality_cli(catalog, qset, db_path):
    def cli(*args):
        result = CliRunner().invoke(main, ["--db", str(db_path), *map(str, args)])
        assert result.exit_code == 0, result.output
        return result.output

    out = json.loads(cli("quality", "--where", "format:jpeg", "--show", "--json", "--workers", "1"))
    assert out["measured"] == 2
    table = {Path(r["path"]).name: r for r in out["images"]}
    assert set(table) == {"q85.jpg", "q40.jpg"}
    assert table["q40.jpg"]["resolution_class"] == "small"
    assert table["q40.jpg"]["jpeg_quality"] == pytest.approx(40, abs=2)
    text = cli("quality", "--quiet", "--workers", "1")
    assert "3 measured, 2 already done, 1 failed" in text
    assert "decode_failed" in text
    rows = quality_table(catalog, "format:png")
    assert {r["resolution_class"] for r in rows} == {"tiny", "small"}
