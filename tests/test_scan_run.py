"""Scan and tag in one pass: the catalog ends exactly as after a scan and a separate run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import func, select

from curator.cli import main
from curator.errors import Cancelled
from curator.ingest.scan import ScanOptions, scan
from curator.progress import CancelToken
from curator.runs.loop import RunOptions, run_models
from curator.runs.scan_run import scan_and_run
from db import open_catalog
from db.schema import File, ImageTag, Problem, Processed, Run, Score, Tag
from db.schema import Image as ImageRow
from taggers.factory import load_model
from tests.corpus import pattern, write_bad, write_good, write_modes
from tests.fixtures.tiny_models import build_wd14_model


@pytest.fixture
def folder(tmp_path) -> Path:
    """Every mode and format, EXIF turns, broken files, copies, and JPEGs large enough
    that the models' draft scale differs from the hash's."""
    root = tmp_path / "in"
    write_good(root / "good")
    write_modes(root / "modes")
    write_bad(root / "bad")
    for i, (w, h) in enumerate([(1200, 900), (700, 1400), (2000, 600)]):
        pattern(w, h, 60 + i).save(root / f"large{i}.jpg", quality=88)
    shutil.copy(root / "large0.jpg", root / "copy-of-large0.jpg")
    rotated = pattern(900, 500, 70)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(root / "rotated.jpg", quality=90, exif=exif)
    return root


@pytest.fixture
def models(tmp_path):
    small = build_wd14_model(tmp_path / "tagger-32", size=32)
    large = build_wd14_model(tmp_path / "tagger-256", size=256)
    return lambda: [
        load_model(str(small), models_dir=tmp_path / "m"),
        load_model(str(large), models_dir=tmp_path / "m"),
    ]


def snapshot(catalog) -> dict:
    """Everything a user can see, keyed by content and path rather than row ids."""
    with catalog.session() as s:
        sha = dict(s.execute(select(ImageRow.id, ImageRow.sha256)).all())
        images = sorted(
            (r.sha256, r.width, r.height, r.format, r.mode, r.frames, r.orientation, r.phash)
            + (tuple(r.warnings or ()),)
            for r in s.scalars(select(ImageRow))
        )
        files = sorted(
            (f.path, sha[f.image_id], f.size, f.mtime_ns, f.present)
            for f in s.scalars(select(File))
        )
        problems = sorted(
            (p.path, p.kind, p.message, p.size, p.mtime_ns) for p in s.scalars(select(Problem))
        )
        tags = sorted(
            (sha[image_id], name, category, source, score)
            for image_id, name, category, source, score in s.execute(
                select(
                    ImageTag.image_id, Tag.name, Tag.category, ImageTag.source, ImageTag.score
                ).join(Tag, Tag.id == ImageTag.tag_id)
            )
        )
        scores = sorted(
            (sha[r.image_id], r.name, r.value, r.source) for r in s.scalars(select(Score))
        )
        processed = sorted(
            (p.model, p.revision, sha[p.image_id]) for p in s.scalars(select(Processed))
        )
        runs = sorted(
            (r.kind, r.model or "", r.status, json.dumps(r.counts, sort_keys=True))
            for r in s.scalars(select(Run))
            if r.kind != "scan"
        )
        scans = [
            {k: v for k, v in r.counts.items() if k != "seconds"}
            for r in s.scalars(select(Run).where(Run.kind == "scan"))
        ]
    return dict(
        images=images,
        files=files,
        problems=problems,
        tags=tags,
        scores=scores,
        processed=processed,
        runs=runs,
        scans=scans,
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_one_pass_catalogs_and_tags_exactly_as_scan_then_tag(tmp_path, folder, models, workers):
    with open_catalog(str(tmp_path / "apart.db")) as cat:
        scan(cat, [folder], ScanOptions(workers=workers))
        run_models(cat, models(), RunOptions(workers=workers, batch_size=3))
        apart = snapshot(cat)
    with open_catalog(str(tmp_path / "together.db")) as cat:
        scanned, runs = scan_and_run(
            cat, [folder], models(), RunOptions(workers=workers, batch_size=3)
        )
        together = snapshot(cat)
    assert apart["tags"] and apart["problems"] and apart["processed"]
    for table in apart:
        assert together[table] == apart[table], table
    assert scanned.new_images == len(apart["images"])
    # The two copies of large0.jpg are one image: tagged once.
    assert [r.done for r in runs] == [len(apart["images"])] * 2


def test_only_the_given_paths_are_run_and_catalogued_files_are_not_read_again(
    tmp_path, folder, models, monkeypatch
):
    with open_catalog(str(tmp_path / "c.db")) as cat:
        # Catalogued before, never tagged: the run after the scan does them.
        scan(cat, [folder / "good"], ScanOptions(workers=0))
        with cat.session() as s:
            good = s.scalar(select(func.count(ImageRow.id)))
            files = s.scalar(select(func.count(File.id)))
        scanned, runs = scan_and_run(
            cat, [folder / "good", folder / "large0.jpg"], models(), RunOptions(workers=0)
        )
        assert (scanned.unchanged, scanned.new_images) == (files, 1)
        assert [r.done for r in runs] == [good + 1] * 2
        with cat.session() as s:
            tagged = s.scalars(
                select(File.path).join(Processed, Processed.image_id == File.image_id)
            ).all()
        assert all("/good/" in p or p.endswith("large0.jpg") for p in tagged)

        # Nothing new: no file is decoded, nothing is tagged twice.
        import curator.runs.loop as loop

        def no_decoding(*args, **kwargs):
            raise AssertionError("decoded a file the catalog already had")

        monkeypatch.setattr(loop, "decode", no_decoding)
        again, runs = scan_and_run(cat, [folder / "good"], models(), RunOptions(workers=0))
        assert again.unchanged == files
        assert [(r.done, r.skipped) for r in runs] == [(0, good)] * 2


def test_cancelled_one_pass_resumes_without_duplicates(tmp_path, models):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(12):
        Image.new("RGB", (40, 40), (i * 20, 255 - i * 20, 128)).save(root / f"{i:02d}.png")
    token = CancelToken()

    class CancelAfterFiveFiles:
        seen = 0

        def start(self, description, total=None):
            self.description = description

        def set_total(self, total):
            pass

        def advance(self, n=1):
            self.seen += n
            if self.seen >= 5:
                token.cancel()

        def finish(self):
            pass

    reporter = CancelAfterFiveFiles()
    with open_catalog(str(tmp_path / "c.db")) as cat:
        options = RunOptions(workers=0, batch_size=2, reporter=reporter, cancel=token)
        with pytest.raises(Cancelled):
            scan_and_run(cat, [root], models(), options)
        assert reporter.description == "scan + tag"
        with cat.session() as s:
            statuses = sorted(s.scalars(select(Run.status)))
            done_at_cancel = s.scalar(select(func.count(Processed.id)))
        assert statuses == ["cancelled"] * 3
        assert 0 < done_at_cancel < 24
        scanned, runs = scan_and_run(cat, [root], models(), RunOptions(workers=0, batch_size=2))
        with cat.session() as s:
            assert s.scalar(select(func.count(Processed.id))) == 24
            assert s.scalar(select(func.count(ImageRow.id))) == 12
            duplicated = s.execute(
                select(ImageTag.image_id, ImageTag.tag_id, ImageTag.source)
                .group_by(ImageTag.image_id, ImageTag.tag_id, ImageTag.source)
                .having(func.count() > 1)
            ).all()
        assert duplicated == []
        assert sum(r.done for r in runs) == 24 - done_at_cancel


def test_tag_command_takes_paths(tmp_path, models):
    tagger = tmp_path / "tagger-32"
    models()  # builds the tagger folders
    root = tmp_path / "pics"
    root.mkdir()
    for i in range(3):
        pattern(64, 64, i).save(root / f"{i}.png")
    other = tmp_path / "other"
    other.mkdir()
    pattern(64, 64, 9).save(other / "x.png")
    db = tmp_path / "c.db"
    runner = CliRunner()
    result = runner.invoke(main, ["--db", str(db), "scan", str(other), "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        main, ["--db", str(db), "tag", "-m", str(tagger), str(root), "--workers", "0", "--json"]
    )
    assert result.exit_code == 0, result.output
    (summary,) = json.loads(result.output)
    assert summary["done"] == 3
    result = runner.invoke(
        main, ["--db", str(db), "tag", "-m", str(tagger), str(tmp_path / "nope")]
    )
    assert result.exit_code != 0 and "no such folder or file" in result.output
