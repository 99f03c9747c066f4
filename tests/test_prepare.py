"""`curator prepare`: folder of photos → DreamBooth training set, with reasons for drops."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from curator.cli import main
from tests.fixtures.tiny_models import build_wd14_model

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def photos(tmp_path: Path) -> Path:
    src = tmp_path / "photos"
    shutil.copytree(SAMPLES, src)
    # A near-copy (smaller, re-encoded) of one photo, and a broken file.
    with Image.open(src / "coffee.jpg") as img:
        img.resize((300, 225)).save(src / "coffee_small.jpg", quality=80)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return src


def prepare(tmp_path, *args):
    env = {"CURATOR_MODELS": str(tmp_path / "models"), "HF_HUB_OFFLINE": "1"}
    result = CliRunner(env=env).invoke(
        main, ["--db", str(tmp_path / "c.db"), "prepare", *map(str, args)]
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_prepare_writes_a_kohya_dreambooth_set_and_says_why(tmp_path):
    src = photos(tmp_path)
    tagger = build_wd14_model(tmp_path / "tiny-tagger", size=32)
    out = tmp_path / "train"
    report = json.loads(
        prepare(tmp_path, src, "--out", out, "--instance-token", "sks", "--class-word", "cat",
                "--tagger", tagger, "--workers", "1", "--json")
    )  # fmt: skip
    assert report["found"] == 6
    assert report["kept"] == 4
    assert report["dropped"]["near-duplicate"] == 1
    assert (
        report["dropped"]["unreadable (corrupt)"] == 1
        or report["dropped"].get("unreadable (not_an_image)") == 1
    )
    reasons = {Path(d["path"]).name: d["reason"] for d in report["details"]}
    assert "coffee" in reasons.get("coffee_small.jpg", reasons.get("coffee.jpg", ""))
    assert any(step.startswith("detect: faces on 5 images") for step in report["steps"])
    assert any("tiny-tagger on 5 images" in step for step in report["steps"])

    folder = out / "img" / "10_sks cat"
    images = sorted(p for p in folder.iterdir() if p.suffix == ".png")
    assert len(images) == 4
    for image in images:
        caption = image.with_suffix(".txt").read_text()
        assert caption.startswith("sks cat"), caption
        with Image.open(image) as im:
            assert im.width % 64 == 0 and im.height % 64 == 0
    assert (out / "manifest.json").exists()


def fingerprint(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_prepare_without_a_tagger_says_so_and_goes_on(tmp_path):
    src = photos(tmp_path)
    before = fingerprint(src)
    out = tmp_path / "train"
    text = prepare(tmp_path, src, "--out", out, "--instance-token", "sks", "--class-word", "cat",
                   "--layout", "diffusers-dreambooth", "--crop", "center", "--quiet")  # fmt: skip
    assert "tag: wd-vit-tagger-v3 skipped, not available" in text
    assert "kept 4 of 6 images" in text
    assert "dropped 1: near-duplicate" in text
    assert sum(1 for p in out.rglob("*.png")) == 4
    assert fingerprint(src) == before  # the user's files are only ever read
