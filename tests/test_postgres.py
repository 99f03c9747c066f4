"""`curator db copy`: a catalog moves between SQLite and the engine under test losslessly.

With `--engine postgresql` the destination (`db_path`) is a server database, so this
is SQLite → PostgreSQL → SQLite; on the SQLite pass it is a file-to-file copy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from curator.cli import main
from curator.curation.tag_edits import add_tags
from curator.ingest.scan import ScanOptions, scan
from db import open_catalog
from db.copy import CopyError, checksums, copy_catalog
from db.schema import Image, ImageTag, Tag


@pytest.fixture
def source(tmp_path: Path, corpus: Path) -> Path:
    """A SQLite catalog with images, files, generation parameters, tags and edits."""
    path = tmp_path / "source.db"
    with open_catalog(str(path)) as cat:
        scan(cat, [corpus], ScanOptions(workers=0))
        add_tags(cat, "", ["cat", "naïve ☃ tag"])
    return path


def test_copy_there_and_back_is_lossless(source: Path, db_path, tmp_path: Path) -> None:
    there = copy_catalog(str(source), str(db_path))
    assert all(r.same for r in there)
    counts = {r.table: r.source_rows for r in there}
    assert counts["images"] > 0 and counts["files"] > 0 and counts["edits"] > 0
    assert counts["generations"] > 0  # JSON, floats and 64-bit seeds travel too

    back = tmp_path / "back.db"
    again = copy_catalog(str(db_path), str(back))
    with open_catalog(str(source)) as a, open_catalog(str(back)) as b:
        assert checksums(a) == checksums(b)
    assert [r.source_checksum for r in again] == [r.source_checksum for r in there]

    # The copy is a working catalog: new rows get fresh ids after the copied ones.
    with open_catalog(str(db_path)) as cat:
        add_tags(cat, "", ["after_copy"])
        with cat.session() as s:
            tag_id = s.scalar(select(Tag.id).where(Tag.name == "after_copy"))
            assert tag_id > max(s.scalars(select(Tag.id).where(Tag.name != "after_copy")))
            images = s.scalar(select(Image.id).order_by(Image.id.desc()).limit(1))
            tagged = s.scalars(select(ImageTag.image_id).where(ImageTag.tag_id == tag_id))
            assert max(tagged) == images


def test_copy_refuses_a_catalog_that_has_rows(source: Path, db_path) -> None:
    copy_catalog(str(source), str(db_path))
    with open_catalog(str(db_path)) as cat:
        before = checksums(cat)
    with pytest.raises(CopyError, match="not empty"):
        copy_catalog(str(source), str(db_path))
    with open_catalog(str(db_path)) as cat:
        assert checksums(cat) == before


def test_cli_prints_counts_and_checksums_of_both_sides(source: Path, db_path) -> None:
    result = CliRunner().invoke(main, ["db", "copy", str(source), str(db_path)])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines()}
    with open_catalog(str(source)) as cat:
        expected = checksums(cat)
    assert lines["images"][1] == str(expected["images"][0])
    assert lines["images"][2] == expected["images"][1][:16]
    assert lines["images"][3] == "same"
    assert "copied" in result.output

    again = CliRunner().invoke(main, ["db", "copy", str(db_path), str(source), "--json"])
    assert again.exit_code == 1
    assert again.output.startswith("error: the destination catalog is not empty")


def test_cli_json_report(source: Path, db_path) -> None:
    result = CliRunner().invoke(main, ["db", "copy", str(source), str(db_path), "--json"])
    assert result.exit_code == 0, result.output
    report = {r["table"]: r for r in json.loads(result.output)}
    assert report["files"]["same"] and report["files"]["dest_rows"] > 0
    assert report["files"]["source_checksum"] == report["files"]["dest_checksum"]


def test_tag_wildcards_ignore_case_on_every_engine(catalog) -> None:
    """SQLite's LIKE ignores ASCII case, PostgreSQL's does not: the query language
    gives both the same answer."""
    from curator.query.compile import compile_query
    from db.schema import Image as ImageRow

    with catalog.write() as s:
        tag = Tag(name="blue_eyes")
        s.add(tag)
        image = ImageRow(sha256="a", bytes=1, width=1, height=1, format="PNG", mode="RGB")
        s.add(image)
        s.flush()
        s.add(ImageTag(image_id=image.id, tag_id=tag.id, source="model:wd14"))
    with catalog.session() as s:
        for text, expected in [
            ("Blue_*", [image.id]),
            ("*_EYES", [image.id]),
            ("blue_eyes", [image.id]),
            ("source:MODEL:* blue_*", [image.id]),
            ("red_*", []),
        ]:
            found = list(s.scalars(select(ImageRow.id).where(compile_query(text))))
            assert found == expected, text


def test_copy_from_a_missing_file_is_refused(tmp_path: Path, db_path) -> None:
    with pytest.raises(CopyError, match="no catalog at"):
        copy_catalog(str(tmp_path / "nope.db"), str(db_path))
    assert not (tmp_path / "nope.db").exists()
