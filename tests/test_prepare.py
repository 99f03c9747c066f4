"""`curator prepare`: folder of photos → DreamBooth training set, with reasons for drops."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from curator.cli import main
from tests.corpus import pattern
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


def test_prepare_drops_images_too_small_to_train_on_and_flattens_transparency(tmp_path):
    src = tmp_path / "icons"
    src.mkdir()
    pattern(48, 48, seed=1).convert("RGBA").save(src / "icon.png")  # a 48 px icon
    sticker = pattern(640, 640, seed=2).convert("RGBA")
    sticker.paste((0, 0, 255, 0), (0, 0, 640, 320))  # top half transparent
    sticker.save(src / "sticker.png")
    pattern(400, 300, seed=3).save(src / "small_photo.png")
    out = tmp_path / "train"
    report = json.loads(
        prepare(tmp_path, src, "-o", out, "--instance-token", "sks", "--class-word", "sticker",
                "--no-tags", "--crop", "center", "--workers", "1", "--json")
    )  # fmt: skip
    assert report["kept"] == 2, report
    assert report["dropped"] == {"short side under 256 px": 1}
    [detail] = report["details"]
    assert Path(detail["path"]).name == "icon.png" and "48x48" in detail["reason"]
    [written] = [p for p in out.rglob("*.png") if "sticker" in p.name]
    with Image.open(written) as image:
        assert image.mode == "RGB"
        assert image.getpixel((image.width // 2, 5)) == (255, 255, 255)  # white, not black

    # --min-side lowers the floor; --no-upscale keeps small images at their own size;
    # --background and the old --bucket spelling work too.
    report = json.loads(
        prepare(tmp_path, src, "-o", out, "--instance-token", "sks", "--class-word", "sticker",
                "--no-tags", "--crop", "center", "--workers", "1", "--json", "--force",
                "--min-side", "32", "--step", "16", "--no-upscale", "--bucket", "sd15",
                "--background", "black")
    )  # fmt: skip
    assert report["kept"] == 3 and report["dropped"] == {}, report
    sizes = {}
    for path in out.rglob("*.png"):
        with Image.open(path) as image:
            sizes[path.stem] = image.size
            if "sticker" in path.stem:
                assert image.getpixel((image.width // 2, 5)) == (0, 0, 0)
    assert sizes["icon"] == (48, 48) and sizes["small_photo"] == (400, 288)


def test_prepare_and_export_spell_options_alike():
    from click.testing import CliRunner

    shared = {"--out", "--instance-token", "--class-word", "--preset", "--crop", "--repeats",
              "--format", "--background", "--seed", "--workers", "--force", "--min-side",
              "--no-upscale", "--max-area", "--resolution", "--step", "--max-side",
              "--reg-query", "--layout", "--json", "--quiet"}  # fmt: skip
    helps = {}
    for command in ("prepare", "export"):
        text = CliRunner().invoke(main, [command, "--help"], terminal_width=200).output
        helps[command] = text
        for option in shared:
            assert f"{option} " in text or f"{option}," in text, (command, option)
        # Old spellings are accepted but not shown.
        for old in ("--bucket ", "--instance ", "--class ", "--trigger "):
            assert old not in text
    import click

    for command in ("prepare", "export"):
        cmd = main.get_command(None, command)
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help, (command, param.name)


def test_prepare_keeps_folder_names_with_quotes_and_backslashes_literal(tmp_path):
    src = tmp_path / 'my "best" cats\\'
    shutil.copytree(SAMPLES, src)
    out = tmp_path / "train"
    report = json.loads(
        prepare(tmp_path, src, "--out", out, "--instance-token", "sks", "--class-word", "cat",
                "--workers", "1", "--json")
    )  # fmt: skip
    images = [p for p in SAMPLES.iterdir() if p.suffix != ".txt"]
    assert report["found"] == len(images) and report["kept"] == len(images)
