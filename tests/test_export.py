"""`curator export` end to end: a scanned corpus in, training sets in every layout out."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tomllib
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image as PILImage
from sqlalchemy import func, select, update

from curator.cli import main
from curator.errors import ExportError, UsageError
from curator.export import ExportOptions, export, reexport
from curator.export.crops import Crop
from curator.export.filenames import is_reserved
from curator.export.layouts import LAYOUT_NAMES
from curator.ingest.scan import ScanOptions, scan
from curator.tags import rules as tagrules
from curator.tags.store import replace_source_tags
from db.schema import Detection, Export, ExportItem, File, Image
from tests.corpus import pattern, write_good

SMALL = {"max_area": 64 * 64, "min_side": 32, "max_side": 128, "step": 16}
SQUARE = {"max_area": None, "resolution": (64, 64), "min_side": 64, "max_side": 64, "step": 64}
LAYOUT_FILES = {
    "kohya-dreambooth": {"dataset.toml"},
    "kohya-finetune": {"dataset.toml", "meta_cap.json"},
    "diffusers-dreambooth": {"dreambooth.json", "metadata.jsonl", "README.md"},
    "imagefolder": {"train/metadata.jsonl"},
    "jsonl": {"dataset.jsonl"},
}


def run_export(catalog, out: Path, **settings):
    return export(catalog, out, **{**SMALL, "workers": 1, **settings})


def scan_folder(catalog, folder: Path) -> None:
    scan(catalog, [str(folder)], ScanOptions(workers=1))


def ids_by_name(catalog) -> dict[str, int]:
    with catalog.session() as s:
        rows = s.execute(select(File.path, File.image_id)).all()
    return {os.path.basename(path): image_id for path, image_id in rows}


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def digests(root: Path) -> dict[str, str]:
    return {k: hashlib.sha256(v).hexdigest() for k, v in tree(root).items()}


def portable(name: str) -> bool:
    return (
        not name.startswith(".")
        and name == name.strip(" .")
        and not is_reserved(name)
        and not any(ch in '/\\<>:"|?*[]' or unicodedata.category(ch)[0] == "C" for ch in name)
        and name == unicodedata.normalize("NFC", name)
    )


def entries(folder: Path) -> list[str]:
    """Names in a folder, leaving out the catalog and its SQLite journal files."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("catalog.db"))


def manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture
def scanned(catalog, corpus):
    scan_folder(catalog, corpus)
    return catalog


@pytest.fixture
def tagged(scanned):
    """rgb.png with model tags and a removed tag; trigger, blacklist and implication rules."""
    ids = ids_by_name(scanned)
    with scanned.write() as s:
        replace_source_tags(
            s,
            ids["rgb.png"],
            "model:wd14",
            [
                ("1girl", "general", 0.9),
                ("smile", "general", 0.8),
                ("frown", "general", 0.7),
                ("hatsune_miku", "character", 0.95),
                ("general", "rating", 0.9),
                ("highres", "meta", 0.7),
                ("watermark", "general", 0.6),
                ("cat_ears", "general", 0.5),
            ],
        )
        replace_source_tags(s, ids["rgb.png"], "user-removed", [("frown", "general", None)])
    tagrules.trigger_add(scanned, ["ohwx", "Style_Word"])
    tagrules.blacklist_add(scanned, ["watermark"])
    tagrules.add_implication(scanned, "cat_ears", "animal_ears")
    return scanned


# --- every layout ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_every_layout_end_to_end(scanned, corpus: Path, tmp_path: Path, layout: str) -> None:
    before = digests(corpus)
    out = tmp_path / "out"
    summary = run_export(scanned, out, layout=layout, instance="sks", class_word="dog")
    assert summary.exported == 17 and summary.skipped == []
    assert sum(n for _, n in summary.histogram) == 17

    files = manifest(out)["files"]
    on_disk = digests(out)
    assert set(on_disk) == set(files) | {"manifest.json"}
    assert LAYOUT_FILES[layout] <= set(files)
    for path, entry in files.items():
        assert entry["sha256"] == on_disk[path]
        if "bucket" in entry:  # an image: exactly its bucket's size
            with PILImage.open(out / path) as image:
                assert list(image.size) == entry["bucket"]
                assert image.format == "PNG"
    assert digests(corpus) == before  # source images are only read

    with scanned.session() as s:
        row = s.scalars(select(Export)).one()
        items = s.scalars(select(ExportItem).where(ExportItem.export_id == row.id)).all()
    assert (row.format, row.count, row.target) == (layout, 17, str(out))
    assert row.id == summary.export_id
    assert {i.path for i in items} == {p for p, e in files.items() if "bucket" in e}
    for item in items:
        crop = Crop.from_dict(item.crop)
        assert crop.bucket == (item.bucket_w, item.bucket_h)


def test_kohya_dreambooth_captions_and_sidecars(tagged, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_export(
        tagged,
        out,
        instance="sks",
        class_word="dog",
        repeats=5,
        keep_tokens=2,
        shuffle_caption=True,
        include_rating=True,
    )
    folder = out / "img" / "5_sks dog"
    caption = (folder / "rgb.txt").read_text(encoding="utf-8")
    # Instance token, trigger words as added, then character tags first and implied tags;
    # no removed, blacklisted or meta tags.
    assert caption == (
        "sks dog, ohwx ||| Style_Word, hatsune miku, 1girl, smile, animal ears, cat ears, "
        "rating:general\n"
    )
    sidecar = (folder / "captioned.txt").read_text(encoding="utf-8")
    assert sidecar.startswith("sks dog, ohwx ||| Style_Word, ") and "blue sky" in sidecar
    assert "\\(cosplay\\)" in sidecar
    config = tomllib.loads((out / "dataset.toml").read_text(encoding="utf-8"))
    assert config["general"]["keep_tokens"] == 2
    assert config["general"]["keep_tokens_separator"] == "|||"
    assert config["datasets"][0]["subsets"][0]["image_dir"] == "img/5_sks dog"
    with tagged.session() as s:
        stored = s.scalar(select(ExportItem.caption).where(ExportItem.path.endswith("/rgb.png")))
    assert stored == caption.strip()


def test_caption_text_options(tagged, tmp_path: Path) -> None:
    ids = ids_by_name(tagged)
    from curator.tags.store import set_caption

    with tagged.write() as s:
        set_caption(s, ids["rgb.png"], "a girl smiling", source="user")
        set_caption(s, ids["rgb.png"], "model words", source="model:blip")
    out = tmp_path / "out"
    run_export(
        tagged, out, layout="jsonl", captions="both", characters_first=False, tag_order="alpha"
    )
    rows = {
        r["file_name"]: r for r in map(json.loads, (out / "dataset.jsonl").read_text().splitlines())
    }
    row = rows["images/rgb.png"]
    assert row["caption"] == (
        "ohwx, Style_Word, a girl smiling, 1girl, animal ears, cat ears, hatsune miku, smile"
    )
    assert row["tags"] == ["1girl", "animal_ears", "cat_ears", "hatsune_miku", "smile"]
    out2 = tmp_path / "out2"
    run_export(
        tagged,
        out2,
        layout="jsonl",
        captions="caption",
        caption_source="model:blip",
        trigger_words=False,
    )
    rows = [json.loads(line) for line in (out2 / "dataset.jsonl").read_text().splitlines()]
    assert {r["caption"] for r in rows if r["file_name"] == "images/rgb.png"} == {"model words"}


def test_regularisation_images(scanned, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = run_export(
        scanned,
        out,
        query=f"folder:{corpus / 'sub'}",
        reg_query="format:jpeg",
        instance="sks",
        class_word="dog",
        reg_repeats=3,
    )
    # sub/a1111.jpg is a training image, so it is not also a class image.
    assert (summary.exported, summary.reg_exported) == (5, 3)
    assert [(s.name, s.reason) for s in summary.skipped] == [("a1111.jpg", "also a training image")]
    reg = out / "reg" / "3_dog"
    assert sorted(p.name for p in reg.iterdir()) == [
        "cmyk.png",
        "cmyk.txt",
        "portrait.png",
        "portrait.txt",
        "rotated.png",
        "rotated.txt",
    ]
    assert (reg / "rotated.txt").read_text() == "dog\n"
    with PILImage.open(reg / "rotated.png") as image:
        assert image.height > image.width  # EXIF orientation applied: portrait
    subsets = tomllib.loads((out / "dataset.toml").read_text())["datasets"][0]["subsets"]
    assert subsets[1] == {
        "image_dir": "reg/3_dog",
        "num_repeats": 3,
        "class_tokens": "dog",
        "is_reg": True,
    }


def test_reg_query_needs_a_layout_with_room_for_it(scanned, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="regularisation"):
        run_export(scanned, tmp_path / "out", layout="imagefolder", reg_query="format:png")
    assert not (tmp_path / "out").exists()


def test_imagefolder_loads_with_datasets(
    scanned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "out"
    run_export(scanned, out, layout="imagefolder", instance="sks")
    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "hf"))
    train = loaded["train"]
    assert train.num_rows == 17
    assert {"image", "text", "tags"} <= set(train.column_names)
    assert all(text.startswith("sks") for text in train["text"])
    assert {image.size for image in train["image"]} <= {(64, 64), (48, 80), (80, 48), (96, 32)}


# --- determinism -------------------------------------------------------------------------


def test_same_inputs_and_seed_give_identical_bytes(tagged, tmp_path: Path) -> None:
    settings = dict(crop="random", seed=7, shuffle=True, instance="sks", image_format="webp")
    run_export(tagged, tmp_path / "a", **settings)
    run_export(tagged, tmp_path / "b", **{**settings, "workers": 2})
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert a == b and len(a) > 30
    run_export(tagged, tmp_path / "c", **{**settings, "seed": 8})
    assert tree(tmp_path / "c") != a
    text = (tmp_path / "a" / "manifest.json").read_text()
    assert str(tmp_path) not in text  # nothing about where or when it was written


# --- the target folder -------------------------------------------------------------------


def test_non_empty_target_is_refused(scanned, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        run_export(scanned, out)
    with pytest.raises(ExportError, match="not a Curator export"):
        run_export(scanned, out, force=True)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    summary = run_export(scanned, out, overwrite=True)
    aside = tmp_path / "out.old-1"
    assert summary.moved_aside == str(aside)
    assert (aside / "notes.txt").read_text() == "mine"  # moved, never deleted
    assert (out / "manifest.json").exists()


def test_force_replaces_only_an_untouched_previous_export(scanned, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_export(scanned, out, layout="jsonl")
    with pytest.raises(ExportError, match="not empty"):
        run_export(scanned, out, layout="imagefolder")
    run_export(scanned, out, layout="imagefolder", force=True)
    assert (out / "train" / "metadata.jsonl").exists() and not (out / "images").exists()
    (out / "train" / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(ExportError, match="model.safetensors"):
        run_export(scanned, out, layout="imagefolder", force=True)
    assert (out / "train" / "model.safetensors").exists()
    assert entries(tmp_path) == ["images", "out"]


def test_empty_target_is_used(scanned, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    run_export(scanned, out)
    assert (out / "manifest.json").exists()


def test_a_failed_export_leaves_nothing_behind(scanned, corpus: Path, tmp_path: Path) -> None:
    for path in corpus.rglob("*"):
        if path.is_file() and path.suffix != ".txt":
            path.write_bytes(b"changed")
    with pytest.raises(ExportError, match="nothing exported"):
        run_export(scanned, tmp_path / "out")
    assert entries(tmp_path) == ["images"]


def failing_save(monkeypatch: pytest.MonkeyPatch, code: int, after: int) -> None:
    """Image writes fail with ``code`` once ``after`` images were written."""
    real = PILImage.Image.save
    calls = {"n": 0}

    def save(self, fp, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(code, os.strerror(code))
        return real(self, fp, *args, **kwargs)

    monkeypatch.setattr(PILImage.Image, "save", save)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EACCES])
def test_a_write_failure_fails_the_whole_export(
    scanned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    out = tmp_path / "out"
    failing_save(monkeypatch, code, after=3)
    with pytest.raises(ExportError) as raised:
        run_export(scanned, out)
    message = str(raised.value)
    assert "\n" not in message and os.strerror(code) in message
    assert "nothing was changed" in message
    assert entries(tmp_path) == ["images"]  # nothing moved into place, no staging left
    with scanned.session() as s:
        assert s.scalar(select(func.count(Export.id))) == 0


def test_a_write_failure_keeps_the_previous_export(
    scanned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    run_export(scanned, out, layout="jsonl")
    before = digests(out)
    import curator.export.run as export_run

    def full(root, relative, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(root / relative))

    monkeypatch.setattr(export_run, "write_text", full)
    with pytest.raises(ExportError, match="No space left on device"):
        run_export(scanned, out, layout="jsonl", force=True)
    assert digests(out) == before
    assert entries(tmp_path) == ["images", "out"]
    with scanned.session() as s:
        assert s.scalar(select(func.count(Export.id))) == 1


def test_cli_write_failure_is_one_line_and_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, root, out = tmp_path / "c.db", tmp_path / "imgs", tmp_path / "out"
    write_good(root)
    cli(db, "scan", root, "--workers", "1", "--quiet")
    failing_save(monkeypatch, errno.ENOSPC, after=0)
    small = ["--max-area", 4096, "--min-side", 32, "--max-side", 128, "--step", 16]
    result = cli(db, "export", "-o", out, *small, "--workers", 1, "--quiet", ok=False)
    assert result.exit_code != 0
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: export to ") and "No space left on device" in line
    assert not out.exists()


def test_cancel_stops_between_images_and_leaves_no_target(scanned, tmp_path: Path) -> None:
    from curator.errors import Cancelled
    from curator.export import render as render_module
    from curator.progress import CancelToken

    token, done = CancelToken(), []
    real = render_module.render

    def counting(job):
        done.append(job.index)
        if len(done) == 2:
            token.cancel()
        return real(job)

    import curator.export.run as export_run

    original = export_run.render
    export_run.render = counting
    try:
        with pytest.raises(Cancelled):
            run_export(scanned, tmp_path / "out", cancel=token)
    finally:
        export_run.render = original
    assert len(done) == 2  # stopped at the next image
    assert entries(tmp_path) == ["images"]
    with scanned.session() as s:
        assert s.scalar(select(func.count(Export.id))) == 0


def test_a_swap_killed_between_renames_is_finished_by_the_next_run(
    scanned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from curator.export import target as target_module

    out = tmp_path / "out"
    run_export(scanned, out, layout="jsonl")
    real_rename = os.rename

    class Killed(BaseException):
        pass

    def rename(src, dst):
        if Path(dst) == out:  # the second rename: the process "dies" before it
            raise Killed
        return real_rename(src, dst)

    monkeypatch.setattr(target_module.os, "rename", rename)
    monkeypatch.setattr(target_module.Staging, "discard", lambda self: None)  # no cleanup
    with pytest.raises(Killed):
        run_export(scanned, out, layout="imagefolder", force=True)
    monkeypatch.setattr(target_module.os, "rename", real_rename)
    # What a kill leaves: no target, the journal, the staged and the old export.
    hidden = [p for p in entries(tmp_path) if p.startswith(".out.")]
    assert not out.exists() and any(p.endswith(".curator-swap") for p in hidden)
    # Without --force: the half-done swap is finished first, so the target is not new.
    with pytest.raises(ExportError, match="not empty"):
        run_export(scanned, out, layout="jsonl")
    assert (out / "train" / "metadata.jsonl").exists()  # the swap was completed
    # (The "killed" export's lock is still held by this test process.)
    assert [p for p in entries(tmp_path) if not p.endswith(".curator-lock")] == ["images", "out"]


def test_stale_staging_folders_are_cleaned_up(scanned, tmp_path: Path) -> None:
    stale = tmp_path / ".out.0badc0de.curator-tmp"
    (stale / "img").mkdir(parents=True)
    (stale / "img" / "half.png").write_bytes(b"x")
    (tmp_path / ".out.0badc0de.curator-lock").write_bytes(b"")  # its owner is gone
    orphan = tmp_path / ".out.feedbeef.curator-tmp"
    orphan.mkdir()
    other = tmp_path / ".elsewhere.12345678.curator-tmp"  # another target's: left alone
    other.mkdir()
    run_export(scanned, tmp_path / "out")
    assert entries(tmp_path) == [".elsewhere.12345678.curator-tmp", "images", "out"]


def test_a_running_export_keeps_its_staging_folder(tmp_path: Path) -> None:
    from curator.export.target import recover, stage

    out = tmp_path / "out"
    staging = stage(out)
    recover(out)  # another export of the same target starting meanwhile
    assert staging.temp.is_dir()
    staging.discard()
    assert entries(tmp_path) == []


def test_nothing_selected(scanned, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no images to export"):
        run_export(scanned, tmp_path / "out", query="width>=5000")
    assert not (tmp_path / "out").exists()


# --- names, selection, skipping ----------------------------------------------------------


def test_no_way_out_through_names_tags_or_tokens(catalog, tmp_path: Path) -> None:
    src = tmp_path / "src"
    names = ["CON.png", "..x.png", ". .png", "x[1]*?.png", "Cafe\u0301.png", "café.png"]
    for i, name in enumerate(names):
        (src / str(i)).mkdir(parents=True)
        pattern(40, 40, 100 + i).save(src / str(i) / name)
    pattern(40, 40, 200).save(src / "0" / "con.png")  # clashes with CON ignoring case
    scan_folder(catalog, src)
    with catalog.write() as s:
        for image_id in s.scalars(select(Image.id)).all():
            tags = [("../../etc/passwd", "general", 0.9), ("a/b", "general", 0.8)]
            replace_source_tags(s, image_id, "model:x", [*tags, ("CON", "general", 0.7)])
    for layout in LAYOUT_NAMES:
        out = tmp_path / "exports" / layout
        run_export(catalog, out, layout=layout, instance="../../../evil", class_word="/etc")
        for path in out.rglob("*"):
            assert path.resolve().is_relative_to(out.resolve())
            assert portable(path.name), path.name
        images = [p for p, e in manifest(out)["files"].items() if "bucket" in e]
        assert len(images) == 7
        assert len({p.casefold() for p in images}) == 7
    assert entries(tmp_path) == ["exports", "src"]
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == sorted(LAYOUT_NAMES)
    sidecars = (tmp_path / "exports" / "kohya-dreambooth" / "img").rglob("*.txt")
    assert all("../../etc/passwd, a/b, CON" in p.read_text() for p in sidecars)


def test_selection_leaves_out_duplicates_rejected_and_missing(scanned, tmp_path: Path) -> None:
    ids = ids_by_name(scanned)
    with scanned.write() as s:
        s.execute(
            update(Image).where(Image.id == ids["gray.png"]).values(duplicate_of=ids["rgb.png"])
        )
        s.execute(update(Image).where(Image.id == ids["plain.bmp"]).values(status="rejected"))
        s.execute(update(File).where(File.image_id == ids["scan.tiff"]).values(present=False))
    summary = run_export(scanned, tmp_path / "a")
    assert summary.exported == 14
    assert summary.excluded == {"duplicate": 1, "rejected": 1, "missing_file": 1}
    assert manifest(tmp_path / "a")["counts"]["excluded"] == summary.excluded
    assert run_export(scanned, tmp_path / "b", include_rejected=True).exported == 15


def test_unreadable_and_changed_images_are_skipped(scanned, corpus: Path, tmp_path: Path) -> None:
    (corpus / "wide.webp").unlink()
    (corpus / "rgb.png").write_bytes(b"\x89PNG truncated")
    summary = run_export(scanned, tmp_path / "out")
    assert summary.exported == 15
    reasons = {s.name: s.reason for s in summary.skipped}
    assert set(reasons) == {"wide.webp", "rgb.png"}
    assert "changed since it was scanned" in reasons["rgb.png"]
    assert reasons["wide.webp"] == "cannot read the file: No such file or directory"
    listed = manifest(tmp_path / "out")["skipped"]
    assert [(s["name"], s["reason"]) for s in listed] == sorted(reasons.items())


def test_images_too_small_for_a_bucket_are_skipped(scanned, tmp_path: Path) -> None:
    summary = run_export(scanned, tmp_path / "out", no_upscale=True, step=64, **{"min_side": 64})
    assert summary.exported + len(summary.skipped) == 17
    assert any("too small" in s.reason for s in summary.skipped)


def test_bad_settings(scanned, tmp_path: Path) -> None:
    for bad in (
        {"crop": "sideways"},
        {"captions": "poems"},
        {"image_format": "gif"},
        {"repeats": 0},
        {"no_such_setting": 1},
        {"resolution": (512, 512)},  # besides SMALL's max_area
        {"min_side": 256},  # above SMALL's max side
    ):
        with pytest.raises((UsageError, ExportError)):
            run_export(scanned, tmp_path / "out", **bad)
    assert not (tmp_path / "out").exists()


# --- crops: focal and reviewed ------------------------------------------------------------


@pytest.fixture
def face_image(catalog, tmp_path: Path) -> int:
    """A 400x100 grey picture with a red 40x40 "face" near its right end."""
    pixels = np.full((100, 400, 3), 128, np.uint8)
    pixels[30:70, 340:380] = (255, 0, 0)
    folder = tmp_path / "faces"
    folder.mkdir()
    PILImage.fromarray(pixels).save(folder / "face.png")
    scan_folder(catalog, folder)
    image_id = ids_by_name(catalog)["face.png"]
    with catalog.write() as s:
        s.add(Detection(image_id=image_id, detector="faces", label="face", score=0.9,
                        x=340, y=30, w=40, h=40))  # fmt: skip
    return image_id


def red_pixels(path: Path) -> int:
    with PILImage.open(path) as image:
        arr = np.asarray(image.convert("RGB")).astype(int)
    return int(((arr[..., 0] > 200) & (arr[..., 1] < 60)).sum())


def test_focal_crop_keeps_the_face(catalog, face_image: int, tmp_path: Path) -> None:
    run_export(catalog, tmp_path / "center", layout="jsonl", crop="center", **SQUARE)
    run_export(catalog, tmp_path / "focal", layout="jsonl", crop="focal", **SQUARE)
    assert red_pixels(tmp_path / "center" / "images" / "face.png") == 0
    assert red_pixels(tmp_path / "focal" / "images" / "face.png") > 100
    with catalog.session() as s:
        stored = s.scalars(select(ExportItem.crop).order_by(ExportItem.id)).all()[-1]
    crop = Crop.from_dict(stored)
    assert crop.mode == "focal"
    assert crop.left <= 340 and crop.left + crop.width >= 380


def test_reexport_uses_crops_moved_by_hand(catalog, face_image: int, tmp_path: Path) -> None:
    first = run_export(catalog, tmp_path / "out", layout="jsonl", crop="center", **SQUARE)
    assert red_pixels(tmp_path / "out" / "images" / "face.png") == 0
    with catalog.write() as s:
        item = s.scalars(select(ExportItem).where(ExportItem.export_id == first.export_id)).one()
        item.crop = Crop.from_dict(item.crop).moved_to(10_000, 0).to_dict()  # to the right end
    again = reexport(catalog, first.export_id, workers=1)  # same folder, replaced
    assert again.crops_reused == 1 and again.target == str(tmp_path / "out")
    assert red_pixels(tmp_path / "out" / "images" / "face.png") > 100
    with catalog.session() as s:
        stored = s.scalars(
            select(ExportItem.crop).where(ExportItem.export_id == again.export_id)
        ).one()
    assert stored["mode"] == "manual" and stored["scaled_left"] == 256 - 64
    # Settings come from the recorded export: the same layout and buckets.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "dataset.jsonl",
        "images",
        "manifest.json",
    ]


def test_options_round_trip_through_recorded_settings() -> None:
    options = ExportOptions(layout="imagefolder", resolution=(512, 768), seed=3, workers=4)
    recorded = json.loads(json.dumps(options.settings()))
    restored = ExportOptions.from_settings(recorded)
    assert restored.settings() == options.settings()
    assert restored.resolution == (512, 768) and restored.workers is None


# --- the command line ---------------------------------------------------------------------


def cli(db: Path, *args, ok: bool = True):
    result = CliRunner().invoke(main, ["--db", str(db), *map(str, args)])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_cli_export_and_reexport(tmp_path: Path) -> None:
    db, root, out = tmp_path / "c.db", tmp_path / "imgs", tmp_path / "out"
    write_good(root)
    cli(db, "scan", root, "--workers", "1", "--quiet")
    small = ["--max-area", 4096, "--min-side", 32, "--max-side", 128, "--step", 16]
    text = cli(db, "export", "--out", out, "--layout", "imagefolder", *small, "--workers", 1).output
    assert "64x64" in text and "exported 17 images" in text and "skipped 0" in text

    refused = cli(db, "export", "--out", out, *small, ok=False)
    assert refused.exit_code == 1
    assert refused.output.strip() == (
        f"error: export target {out} is not empty; use --force to replace it"
    )

    data = json.loads(
        cli(
            db, "export", "format:png", "-o", out, "--force", *small, "--json", "--workers", 1
        ).output
    )
    assert data["layout"] == "kohya-dreambooth" and data["exported"] == 9
    again = json.loads(
        cli(db, "reexport", data["export_id"], "-o", tmp_path / "again", "--json").output
    )
    assert again["exported"] == 9 and again["crops_reused"] == 9
    first, second = tree(out), tree(tmp_path / "again")
    assert first.pop("manifest.json") != second.pop("manifest.json")  # records the reuse
    assert first == second
    assert "--reuse-crops" in cli(db, "export", "--help").output


# --- past exports, stored crops, pre-flight checks -----------------------------------------


def test_exports_list_and_crops_set_then_reexport(
    catalog, face_image: int, db_path: Path, tmp_path: Path
) -> None:
    first = run_export(catalog, tmp_path / "out", layout="jsonl", crop="center", **SQUARE)
    assert red_pixels(tmp_path / "out" / "images" / "face.png") == 0
    catalog.close()
    listed = json.loads(cli(db_path, "exports", "--json").output)
    assert [e["id"] for e in listed] == [first.export_id]
    assert listed[0]["layout"] == "jsonl" and listed[0]["count"] == 1 and listed[0]["exists"]
    assert str(first.export_id) in cli(db_path, "exports").output
    # The window around the face (source pixels), then a re-render with it.
    text = cli(db_path, "crops", "set", first.export_id, "face.png", "300,0,100,100").output
    assert f"curator reexport {first.export_id}" in text
    cli(db_path, "reexport", first.export_id, "--quiet", "--workers", 1)
    assert red_pixels(tmp_path / "out" / "images" / "face.png") > 100
    bad = cli(db_path, "crops", "set", first.export_id, "face.png", "350,0,100,100", ok=False)
    assert bad.exit_code != 0 and "not inside" in bad.output
    missing = cli(db_path, "crops", "set", first.export_id, "nope.png", "0,0,10,10", ok=False)
    assert "no image 'nope.png'" in missing.output


def test_library_errors_name_library_arguments(scanned, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match=r"force=True") as raised:
        run_export(scanned, out)
    assert "--force" not in str(raised.value)
    with pytest.raises(ExportError, match=r"overwrite=True"):
        run_export(scanned, out, force=True)


def test_dry_run_previews_without_writing(scanned, db_path: Path, tmp_path: Path) -> None:
    from curator.export import preview_export

    out = tmp_path / "out"
    preview = preview_export(scanned, out, **SMALL, crop="random", seed=4)
    assert not out.exists()
    summary = run_export(scanned, out, crop="random", seed=4)
    assert preview.histogram == summary.histogram
    with scanned.session() as s:
        stored = {i.path: i.crop for i in s.scalars(select(ExportItem))}
    assert {i.path: i.crop for i in preview.items} == stored  # the crops that were made
    scanned.close()
    small = ["--max-area", 4096, "--min-side", 32, "--max-side", 128, "--step", 16]
    text = cli(db_path, "export", "-o", tmp_path / "new", *small, "--dry-run").output
    assert "bucket 64x64:" in text and "nothing was written" in text and "crop " in text
    data = json.loads(
        cli(db_path, "export", "-o", tmp_path / "new", *small, "--dry-run", "--json").output
    )
    assert data["images"] == summary.exported and data["histogram"]
    assert not (tmp_path / "new").exists()


def test_check_reports_what_spoils_training(scanned, db_path: Path, tmp_path: Path) -> None:
    from curator.export import preview_export

    out = tmp_path / "out"
    # 256 px minimum: every corpus image is smaller and gets enlarged.
    spec = {
        "max_area": None,
        "resolution": (256, 256),
        "min_side": 256,
        "max_side": 512,
        "step": 64,
    }
    preview = preview_export(scanned, out, **spec, batch_size=64)
    kinds = {f.kind: f for f in preview.findings}
    assert {"uncaptioned", "small_bucket", "upscaled", "under_min_side"} <= set(kinds)
    assert kinds["upscaled"].count == preview.selected
    with pytest.raises(ExportError, match="strict"):
        run_export(scanned, out, **spec, strict=True)
    assert not out.exists()

    # An existing kohya export whose caption files were renamed by hand.
    run_export(scanned, out, instance="sks", class_word="dog")
    sidecars = sorted(out.rglob("*.txt"))
    sidecars[0].rename(sidecars[0].with_suffix(".caption"))
    sidecars[1].unlink()
    kinds = {f.kind: f for f in preview_export(scanned, out, instance="sks").findings}
    assert kinds["caption_extension"].count == 1
    assert kinds["no_caption_file"].count == 1
    scanned.close()
    text = cli(db_path, "export", "-o", out, "--instance-token", "sks", "--check").output
    assert "caption files whose extension is not the one dataset.toml declares" in text
    failed = cli(db_path, "export", "-o", out, "--check", "--strict", ok=False)
    assert failed.exit_code == 1


def test_an_export_killed_mid_render_leaves_nothing_after_the_next_run(
    scanned, db_path: Path, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys
    import time

    scanned.close()
    out = tmp_path / "out"
    script = f"""
import time
import curator.export.run as run
from curator.export import export
from db import open_catalog

real = run.render
def slow(job):
    time.sleep(0.5)
    return real(job)
run.render = slow
export(open_catalog({str(db_path)!r}), {str(out)!r}, workers=1, **{SMALL!r})
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            staged = list(tmp_path.glob(".out.*.curator-tmp/*/*/*.png"))
            if staged:
                break
            time.sleep(0.1)
        assert staged, "the export never started writing"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert not out.exists() and any(p.startswith(".out.") for p in entries(tmp_path))
    from db import open_catalog

    catalog = open_catalog(str(db_path))
    try:
        run_export(catalog, out)
    finally:
        catalog.close()
    assert entries(tmp_path) == ["images", "out"]
