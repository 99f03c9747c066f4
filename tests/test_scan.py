"""Scanning folders into the catalog: formats, metadata, bad files, incremental rescans."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from curator.ingest.scan import ScanOptions, scan
from db.schema import Caption, File, Generation, Image, ImageTag, Problem, Tag
from tests.corpus import pattern, write_bad, write_good


def opts(**kw) -> ScanOptions:
    kw.setdefault("workers", 0)  # in this process: quick, and monkeypatching reaches it
    return ScanOptions(**kw)


def test_scan_records_every_kind_of_image(catalog, tmp_path):
    root = tmp_path / "images"
    good = write_good(root)
    summary = scan(catalog, [root], opts(workers=2))
    assert summary.problems == 0
    assert summary.new_images == len(good)
    with catalog.session() as s:
        rows = {Path(f.path).relative_to(root).as_posix(): f.image for f in s.scalars(select(File))}
        assert set(rows) == set(good)
        assert rows["rgb.png"].format == "PNG" and rows["rgb.png"].mode == "RGB"
        assert (rows["rgb.png"].width, rows["rgb.png"].height) == (64, 48)
        assert rows["anim.gif"].frames == 2
        assert rows["cmyk.jpg"].mode == "CMYK"
        assert rows["deep16.png"].mode.startswith("I")
        assert rows["palette_transparent.png"].mode == "P"
        # EXIF orientation 6 swaps the displayed width and height.
        assert rows["rotated.jpg"].orientation == 6
        assert (rows["rotated.jpg"].width, rows["rotated.jpg"].height) == (40, 80)
        assert rows["wide.webp"].format == "WEBP"
        assert all(img.phash is not None for img in rows.values())
        assert len({img.sha256 for img in rows.values()}) == len(rows)


def test_scan_reads_generation_parameters(catalog, corpus):
    scan(catalog, [corpus], opts())
    with catalog.session() as s:
        gens = {
            Path(f.path).name: s.get(Generation, f.image_id)
            for f in s.scalars(select(File).where(File.folder.endswith("sub")))
        }
    for name in ("a1111.png", "a1111_itxt.png", "a1111.jpg"):
        g = gens[name]
        assert g is not None, name
        assert g.source == "a1111"
        assert g.prompt.startswith("masterpiece, (best quality:1.2)")
        assert g.negative_prompt == "lowres, bad anatomy"
        assert (g.steps, g.sampler, g.cfg_scale, g.seed) == (28, "DPM++ 2M Karras", 7.0, 1234567890)
        assert (g.width, g.height, g.model_hash, g.model) == (512, 768, "2700c435", "anything-v3")
        assert g.denoising_strength == 0.45 and g.clip_skip == 2
        assert g.extra["Lora hashes"] == "foo: 123abc, bar: 456def"
        assert "Negative prompt:" in g.raw
    nai = gens["novelai.png"]
    assert nai.source == "novelai"
    assert nai.prompt == "1girl, solo" and nai.negative_prompt == "lowres"
    assert (nai.steps, nai.seed, nai.cfg_scale) == (28, 42, 11.0)
    assert gens["captioned.png"] is None


def test_scan_imports_caption_sidecars(catalog, corpus):
    scan(catalog, [corpus], opts())
    with catalog.session() as s:
        f = s.scalar(select(File).where(File.path.endswith("captioned.png")))
        tags = set(
            s.scalars(
                select(Tag.name)
                .join(ImageTag)
                .where(ImageTag.image_id == f.image_id, ImageTag.source == "sidecar")
            )
        )
        caption = s.scalar(select(Caption.text).where(Caption.image_id == f.image_id))
    assert tags == {"long_hair", "smile", "(cosplay)", "blue_sky"}
    assert caption.startswith("long hair, smile")


def test_sidecar_edit_is_picked_up_on_rescan(catalog, corpus):
    scan(catalog, [corpus], opts())
    sidecar = corpus / "sub/captioned.txt"
    sidecar.write_text("short hair, frown")
    os.utime(sidecar, ns=(sidecar.stat().st_atime_ns, sidecar.stat().st_mtime_ns + 10**9))
    scan(catalog, [corpus], opts())
    with catalog.session() as s:
        tags = set(s.scalars(select(Tag.name).join(ImageTag).where(ImageTag.source == "sidecar")))
    assert tags == {"short_hair", "frown"}


def test_bad_files_become_problems_and_scan_goes_on(catalog, tmp_path):
    root = tmp_path / "mixed"
    good = write_good(root / "good")
    kinds = write_bad(root / "bad")
    summary = scan(catalog, [root], opts(pixel_limit=50_000_000))
    assert summary.new_images == len(good)
    with catalog.session() as s:
        problems = {Path(p.path).name: (p.kind, p.message) for p in s.scalars(select(Problem))}
    assert {name: kind for name, (kind, _) in problems.items()} == kinds
    assert all(message and "\n" not in message for _, message in problems.values())


def test_pixel_limit_is_configurable(catalog, corpus):
    summary = scan(catalog, [corpus], opts(pixel_limit=3000))
    assert summary.problem_kinds == {"decompression_bomb": summary.problems}
    with catalog.session() as s:
        assert s.scalar(select(func.max(Image.width * Image.height))) <= 3000


def test_unreadable_file_and_undecodable_name(catalog, tmp_path):
    root = tmp_path / "odd"
    root.mkdir()
    pattern(32, 32, 1).save(root / "fine.png")
    locked = root / "locked.png"
    pattern(32, 32, 2).save(locked)
    locked.chmod(0)
    bad_name = os.fsencode(str(root)) + b"/caf\xe9.png"
    with open(bad_name, "wb") as fh:
        pattern(32, 32, 3).save(fh, "PNG")
    try:
        summary = scan(catalog, [root], opts())
    finally:
        locked.chmod(0o644)
    assert summary.new_images >= 1
    with catalog.session() as s:
        kinds = {Path(p.path).name: p.kind for p in s.scalars(select(Problem))}
    assert kinds.get("caf\\xe9.png") == "bad_filename"
    if os.geteuid() != 0:  # root reads any file
        assert kinds.get("locked.png") == "unreadable"


def test_rescan_decodes_nothing(catalog, corpus, monkeypatch):
    scan(catalog, [corpus], opts())
    kinds = write_bad(corpus / "bad")
    scan(catalog, [corpus], opts())

    import curator.ingest.probing as probing

    def no_probe(*a, **k):
        raise AssertionError("an unchanged file was decoded again")

    monkeypatch.setattr(probing, "probe", no_probe)
    summary = scan(catalog, [corpus], opts())
    assert summary.new_images == summary.new_files == summary.changed == 0
    assert summary.unchanged == summary.seen - summary.problems
    assert summary.problems == len(kinds)


def test_move_delete_and_duplicate_paths(catalog, corpus):
    scan(catalog, [corpus], opts())
    with catalog.session() as s:
        f = s.scalar(select(File).where(File.path.endswith("/rgb.png")))
        image_id = f.image_id
        tag = Tag(name="keeper")
        s.add(tag)
        s.flush()
        s.add(ImageTag(image_id=image_id, tag_id=tag.id, source="user"))
        s.commit()
    (corpus / "moved").mkdir()
    shutil.move(corpus / "rgb.png", corpus / "moved/renamed.png")
    shutil.copy(corpus / "gray.png", corpus / "moved/gray_copy.png")
    os.remove(corpus / "plain.bmp")
    summary = scan(catalog, [corpus], opts())
    assert summary.new_images == 0
    assert summary.relinked == 2
    assert summary.missing == 2
    with catalog.session() as s:
        moved = s.scalar(select(File).where(File.path.endswith("moved/renamed.png")))
        assert moved.image_id == image_id and moved.present
        old = s.scalar(select(File).where(File.path.endswith("/rgb.png")))
        assert not old.present and old.image_id == image_id
        assert (
            s.scalar(
                select(func.count()).select_from(ImageTag).where(ImageTag.image_id == image_id)
            )
            == 1
        )
        gray = s.scalars(select(File).where(File.path.contains("gray"))).all()
        assert len(gray) == 2 and len({g.image_id for g in gray}) == 1
        deleted = s.scalar(select(File).where(File.path.endswith("plain.bmp")))
        assert not deleted.present
    # Restoring the file makes it present again without a new image.
    shutil.move(corpus / "moved/renamed.png", corpus / "rgb.png")
    summary = scan(catalog, [corpus], opts())
    assert summary.new_images == 0


def test_exclude_and_symlink_loop(catalog, tmp_path):
    corpus = tmp_path / "images"
    good = write_good(corpus)
    os.symlink(corpus, corpus / "sub" / "loop")
    summary = scan(catalog, [corpus], opts(exclude=["*.gif", "sub"]))
    with catalog.session() as s:
        paths = list(s.scalars(select(File.path)))
    assert not any(p.endswith(".gif") or "/sub/" in p for p in paths)
    assert summary.seen == len(paths)
    summary = scan(catalog, [corpus], opts())
    with catalog.session() as s:
        # The link back to the root is followed once, never round and round.
        assert s.scalar(select(func.count(File.id))) == len(good)
    assert summary.new_files == len(good) - len(paths)


SCAN_SCRIPT = """
import sys
from db import open_catalog
from curator.ingest.scan import ScanOptions, scan
cat = open_catalog(sys.argv[1])
scan(cat, [sys.argv[2]], ScanOptions(workers=0))
"""


def test_two_processes_scan_into_one_catalog(tmp_path):
    root = tmp_path / "many"
    for i in range(120):
        sub = root / f"d{i % 6}"
        sub.mkdir(parents=True, exist_ok=True)
        pattern(48, 48, 1000 + i).save(sub / f"{i}.png")
    db = tmp_path / "shared.db"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCAN_SCRIPT, str(db), str(root)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    from db import open_catalog

    with open_catalog(str(db)) as cat, cat.session() as s:
        assert s.scalar(select(func.count(Image.id))) == 120
        assert s.scalar(select(func.count(File.id))) == 120
        assert s.scalar(select(func.count(Problem.id))) == 0


def test_scan_missing_path_is_a_clear_error(catalog, tmp_path):
    from curator.errors import UsageError

    with pytest.raises(UsageError, match="no such folder"):
        scan(catalog, [tmp_path / "nope"], opts())


SLOW_SCAN = """
import sys, time
import curator.ingest.probing as probing
from curator.ingest.probe import probe
from curator.ingest.scan import ScanOptions, scan
from db import open_catalog

def slow_probe(path, **kw):
    time.sleep(0.01)
    return probe(path, **kw)

probing.probe = slow_probe
cat = open_catalog(sys.argv[1])
scan(cat, [sys.argv[2]], ScanOptions(workers=0))
"""


def test_killed_scan_resumes_without_duplicates(tmp_path):
    import signal
    import time

    root = tmp_path / "many"
    root.mkdir()
    for i in range(500):
        pattern(16, 16, 5000 + i).save(root / f"{i:03d}.png")
    db = tmp_path / "c.db"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SCAN, str(db), str(root)], env=env)
    from db import open_catalog

    with open_catalog(str(db)) as cat:
        committed, deadline = 0, time.time() + 120
        while committed == 0 and time.time() < deadline:
            time.sleep(0.1)
            with cat.session() as s:
                committed = s.scalar(select(func.count(File.id)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with cat.session() as s:
            committed = s.scalar(select(func.count(File.id)))
        assert 0 < committed < 500
        summary = scan(cat, [root], opts())
        assert summary.unchanged == committed and summary.new_files == 500 - committed
        with cat.session() as s:
            assert s.scalar(select(func.count(File.id))) == 500
            assert s.scalar(select(func.count(Image.id))) == 500
