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


# --- only files that are gone are missing -----------------------------------------------


def present(catalog) -> dict[str, bool]:
    with catalog.session() as s:
        return {Path(f.path).name: f.present for f in s.scalars(select(File))}


def problem_rows(catalog) -> dict[str, tuple[str, str]]:
    with catalog.session() as s:
        return {Path(p.path).name: (p.kind, p.message) for p in s.scalars(select(Problem))}


def test_excluded_files_keep_their_state(catalog, corpus):
    scan(catalog, [corpus], opts())
    summary = scan(catalog, [corpus], opts(exclude=["*.png"]))
    assert summary.missing == 0
    assert all(present(catalog).values())
    os.remove(corpus / "plain.bmp")
    os.remove(corpus / "rgb.png")  # gone, even though excluded: missing
    summary = scan(catalog, [corpus], opts(exclude=["*.png"]))
    assert summary.missing == 2
    state = present(catalog)
    assert not state["plain.bmp"] and not state["rgb.png"] and state["gray.png"]


def test_an_excluded_folder_keeps_its_problems(catalog, tmp_path):
    root = tmp_path / "lib"
    write_good(root / "good")
    kinds = write_bad(root / "bad")
    scan(catalog, [root], opts(pixel_limit=50_000_000))
    scan(catalog, [root], opts(exclude=["bad"], pixel_limit=50_000_000))
    assert {n: k for n, (k, _) in problem_rows(catalog).items()} == kinds


def refuse_listing(monkeypatch, folder: Path) -> None:
    """Make one folder fail to list, as an unreadable or failing disk folder does."""
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(folder):
            raise PermissionError(13, "Permission denied", str(folder))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_unlistable_folder_is_a_problem_and_its_files_keep_their_state(
    catalog, corpus, monkeypatch
):
    scan(catalog, [corpus], opts())
    with monkeypatch.context() as m:
        refuse_listing(m, corpus / "sub")
        summary = scan(catalog, [corpus], opts())
    assert summary.missing == 0
    assert all(present(catalog).values())
    assert problem_rows(catalog) == {"sub": ("unreadable_folder", "cannot list: Permission denied")}
    # Readable again: the problem goes, the files are still there.
    scan(catalog, [corpus], opts())
    assert problem_rows(catalog) == {}
    assert all(present(catalog).values())


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists any folder")
def test_folder_without_permission(catalog, corpus):
    scan(catalog, [corpus], opts())
    (corpus / "sub").chmod(0)
    try:
        summary = scan(catalog, [corpus], opts())
    finally:
        (corpus / "sub").chmod(0o755)
    assert summary.missing == 0 and all(present(catalog).values())
    assert problem_rows(catalog)["sub"][0] == "unreadable_folder"


def test_broken_and_looping_links_are_problems(catalog, tmp_path):
    root = tmp_path / "links"
    root.mkdir()
    pattern(32, 32, 1).save(root / "real.png")
    os.symlink(root / "real.png", root / "alias.png")
    os.symlink(root / "deleted.png", root / "dangling.png")
    os.symlink(root / "b.png", root / "a.png")
    os.symlink(root / "a.png", root / "b.png")
    (root / "inner").mkdir()
    os.symlink(root, root / "inner" / "up")
    os.symlink(root / "gone.txt", root / "notes.txt")  # not an image: not ours to report
    summary = scan(catalog, [root], opts())
    kinds = {n: k for n, (k, _) in problem_rows(catalog).items()}
    assert kinds == {
        "dangling.png": "broken_symlink",
        "a.png": "symlink_loop",
        "b.png": "symlink_loop",
        "up": "symlink_loop",
    }
    assert all(m and "\n" not in m for _, m in problem_rows(catalog).values())
    assert set(present(catalog)) == {"real.png", "alias.png"} and summary.new_images == 1
    # Still there on a rescan; fixed links stop being problems.
    scan(catalog, [root], opts())
    assert len(problem_rows(catalog)) == 4
    os.remove(root / "dangling.png")
    os.remove(root / "a.png")
    os.remove(root / "b.png")
    scan(catalog, [root], opts())
    assert set(problem_rows(catalog)) == {"up"}


# --- sidecars ---------------------------------------------------------------------------


def sidecar_state(catalog, name: str) -> tuple[set[str], str | None]:
    with catalog.session() as s:
        f = s.scalar(select(File).where(File.path.endswith("/" + name)))
        tags = set(
            s.scalars(
                select(Tag.name)
                .join(ImageTag)
                .where(ImageTag.image_id == f.image_id, ImageTag.source == "sidecar")
            )
        )
        caption = s.scalar(select(Caption.text).where(Caption.image_id == f.image_id))
    return tags, caption


def test_oversized_sidecar_is_a_problem(catalog, tmp_path):
    from curator.ingest.sidecars import MAX_SIDECAR_BYTES

    root = tmp_path / "side"
    root.mkdir()
    pattern(32, 32, 1).save(root / "a.png")
    big = root / "a.txt"
    big.write_text("tag, " * (MAX_SIDECAR_BYTES // 5 + 10))
    summary = scan(catalog, [root], opts())
    assert summary.new_images == 1
    kind, message = problem_rows(catalog)["a.txt"]
    assert kind == "sidecar_too_large" and "limit" in message
    assert present(catalog) == {"a.png": True}
    # The problem stays while the sidecar does, and goes once it is fixed.
    scan(catalog, [root], opts())
    assert "a.txt" in problem_rows(catalog)
    big.write_text("smile, blue sky")
    st = big.stat()
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    scan(catalog, [root], opts())
    assert problem_rows(catalog) == {}
    assert sidecar_state(catalog, "a.png")[0] == {"smile", "blue_sky"}


def test_sidecar_text_loses_control_characters(catalog, tmp_path):
    root = tmp_path / "side"
    root.mkdir()
    pattern(32, 32, 1).save(root / "a.png")
    (root / "a.txt").write_bytes(b"long\x00 hair, sm\x01ile,\x1b[31m red\xff\xfe eyes\r\nsky")
    pattern(32, 32, 2).save(root / "b.png")
    (root / "b.caption").write_bytes("a cat, café".encode("utf-16"))  # with a BOM
    scan(catalog, [root], opts())
    tags, caption = sidecar_state(catalog, "a.png")
    assert tags == {"long_hair", "smile", "[31m_red_eyes", "sky"}
    assert caption == "long hair, smile,[31m red eyes\nsky"
    assert not any(ord(c) < 32 and c != "\n" for c in caption)
    tags, caption = sidecar_state(catalog, "b.png")
    assert caption == "a cat, café" and tags == {"a_cat", "café"}


# --- generation parameters ----------------------------------------------------------------


def test_a_plain_exif_comment_is_not_infotext(catalog, tmp_path):
    from tests.corpus import INFOTEXT, jpeg_with_comment

    root = tmp_path / "shots"
    root.mkdir()
    jpeg_with_comment(root / "screenshot.jpg", "Screenshot")
    jpeg_with_comment(root / "caption.jpg", "a cat on a sofa, Steps to the garden")
    jpeg_with_comment(root / "a1111.jpg", INFOTEXT)
    summary = scan(catalog, [root], opts())
    assert summary.with_parameters == 1
    with catalog.session() as s:
        gens = {Path(f.path).name: s.get(Generation, f.image_id) for f in s.scalars(select(File))}
    assert gens["screenshot.jpg"] is None and gens["caption.jpg"] is None
    assert gens["a1111.jpg"].steps == 28


# --- interrupting and cancelling -----------------------------------------------------------


class StopAfter:
    """A reporter that cancels (or raises Ctrl-C) after ``n`` files."""

    def __init__(self, n: int, cancel=None):
        self.n, self.cancel, self.done = n, cancel, 0

    def start(self, description, total=None):
        pass

    def set_total(self, total):
        pass

    def finish(self):
        pass

    def advance(self, n=1):
        self.done += n
        if self.done == self.n:
            if self.cancel is None:
                raise KeyboardInterrupt
            self.cancel.cancel()


def many(root: Path, count: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pattern(16, 16, 7000 + i).save(root / f"{i:03d}.png")
    return root


def count_files(catalog) -> int:
    with catalog.session() as s:
        return s.scalar(select(func.count(File.id)))


def last_run_status(catalog) -> str:
    from db.schema import Run

    with catalog.session() as s:
        return s.scalar(select(Run.status).order_by(Run.id.desc()).limit(1))


@pytest.mark.parametrize("workers", [0, 2])
def test_cancel_saves_finished_work_and_resumes(catalog, tmp_path, workers):
    from curator.errors import Cancelled
    from curator.progress import CancelToken

    root = many(tmp_path / "many", 120)
    token = CancelToken()
    with pytest.raises(Cancelled):
        scan(catalog, [root], opts(workers=workers, reporter=StopAfter(40, token), cancel=token))
    saved = count_files(catalog)
    assert 40 <= saved < 120  # fewer than a batch of 200, all written
    assert last_run_status(catalog) == "cancelled"
    summary = scan(catalog, [root], opts(workers=workers))
    assert summary.unchanged == saved and summary.new_files == 120 - saved
    assert count_files(catalog) == 120 and last_run_status(catalog) == "finished"


def test_ctrl_c_saves_finished_work(catalog, tmp_path):
    root = many(tmp_path / "many", 120)
    with pytest.raises(KeyboardInterrupt):
        scan(catalog, [root], opts(reporter=StopAfter(50)))
    assert 49 <= count_files(catalog) < 120
    assert last_run_status(catalog) == "interrupted"


def test_a_cancelled_scan_marks_nothing_missing(catalog, corpus):
    from curator.errors import Cancelled
    from curator.progress import CancelToken

    scan(catalog, [corpus], opts())
    os.remove(corpus / "plain.bmp")
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        scan(catalog, [corpus], opts(cancel=token))
    assert all(present(catalog).values())


def test_batches_are_written_by_time_as_well_as_count(catalog, tmp_path, monkeypatch):
    import curator.ingest.scan as scan_module

    root = many(tmp_path / "many", 30)
    monkeypatch.setattr(scan_module, "WRITE_SECONDS", 0.0)
    seen: list[int] = []

    class Watch(StopAfter):
        def advance(self, n=1):
            seen.append(count_files(catalog))

    scan(catalog, [root], opts(reporter=Watch(0)))
    # Each file is written as soon as the time is up, long before a batch of 200 fills.
    assert seen[10] >= 9 and seen[-1] >= 28


# --- warnings ---------------------------------------------------------------------------


def test_decoder_warnings_are_kept_not_printed(catalog, tmp_path, capfd):
    from curator.catalog.problems import list_problems
    from tests.corpus import jpeg_with_corrupt_exif

    root = tmp_path / "warn"
    root.mkdir()
    jpeg_with_corrupt_exif(root / "exif.jpg")
    pattern(32, 32, 3).save(root / "fine.png")
    summary = scan(catalog, [root], opts(workers=2))
    out, err = capfd.readouterr()
    assert "Truncated" not in err + out and "EXIF" not in err + out
    assert summary.warnings == 1 and summary.problems == 0
    assert list_problems(catalog) == []
    listed = list_problems(catalog, warnings=True)
    assert [(Path(e.path).name, e.kind) for e in listed] == [("exif.jpg", "warning")]
    assert listed[0].message and listed[0].image_id is not None
    assert list_problems(catalog, kind="warning") == listed


def test_problems_command(tmp_path):
    import json

    from click.testing import CliRunner

    from curator.cli import main
    from tests.corpus import jpeg_with_corrupt_exif

    root = tmp_path / "mixed"
    root.mkdir()
    jpeg_with_corrupt_exif(root / "exif.jpg")
    (root / "empty.png").write_bytes(b"")
    db = tmp_path / "c.db"

    def run(*args):
        result = CliRunner().invoke(main, ["--db", str(db), *args])
        assert result.exit_code == 0, result.output
        return result.output

    out = run("scan", "--workers", "0", str(root))
    assert "1 problems (empty 1)" in out and "1 images read with decoder warnings" in out
    rows = json.loads(run("problems", "--json"))
    assert [(Path(r["path"]).name, r["kind"]) for r in rows] == [("empty.png", "empty")]
    rows = json.loads(run("problems", "--warnings", "--json"))
    assert [(Path(r["path"]).name, r["kind"]) for r in rows] == [
        ("empty.png", "empty"),
        ("exif.jpg", "warning"),
    ]
    assert "exif.jpg: warning: " in run("problems", "--kind", "warning")
    assert run("problems", "--kind", "truncated").strip() == "no problems"


def test_a_rescan_forgets_comments_older_scans_took_for_infotext(catalog, tmp_path):
    from tests.corpus import INFOTEXT, jpeg_with_comment

    root = tmp_path / "shots"
    root.mkdir()
    jpeg_with_comment(root / "screenshot.jpg", "Screenshot")
    jpeg_with_comment(root / "a1111.jpg", INFOTEXT)
    scan(catalog, [root], opts())
    with catalog.session() as s:  # what a catalog made before the shape check holds
        f = s.scalar(select(File).where(File.path.endswith("screenshot.jpg")))
        s.add(
            Generation(image_id=f.image_id, source="a1111", prompt="Screenshot", raw="Screenshot")
        )
        s.commit()
    scan(catalog, [root], opts())
    with catalog.session() as s:
        kept = {
            Path(f.path).name
            for f in s.scalars(select(File).join(Generation, Generation.image_id == File.image_id))
        }
    assert kept == {"a1111.jpg"}
