"""Review state: accept, reject, unreview; undoable and kept across rescans."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from curator.cli import main
from curator.curation import edits, review
from curator.errors import UsageError
from curator.ingest.scan import ScanOptions, scan
from db.schema import File, Image


def statuses(catalog) -> dict[str, str]:
    with catalog.session() as s:
        rows = s.execute(
            select(File.path, Image.status).join(Image, Image.id == File.image_id)
        ).all()
    return {path.rsplit("/", 1)[1]: status for path, status in rows}


@pytest.fixture
def scanned(catalog, corpus):
    scan(catalog, [corpus], ScanOptions(workers=1))
    return corpus


def test_accept_reject_unreview_and_undo(catalog, scanned):
    assert set(statuses(catalog).values()) == {"pending"}
    result = review.accept(catalog, f"folder:{scanned / 'sub'}")
    assert result.images == 5 and result.edit_id is not None
    review.reject(catalog, "format:jpeg")
    s = statuses(catalog)
    assert s["a1111.png"] == "accepted" and s["a1111.jpg"] == "rejected"
    assert s["portrait.jpg"] == "rejected" and s["rgb.png"] == "pending"
    again = review.reject(catalog, "format:jpeg")
    assert again.edit_id is None  # nothing changed, nothing recorded
    review.reset(catalog, "format:jpeg")
    assert statuses(catalog)["a1111.jpg"] == "pending"
    edits.undo(catalog)
    assert statuses(catalog)["a1111.jpg"] == "rejected"
    edits.undo(catalog, 2)
    assert set(statuses(catalog).values()) == {"pending"}


def test_status_survives_a_rescan_and_a_move(catalog, scanned):
    review.accept(catalog, "format:png")
    review.reject(catalog, "format:gif")
    before = statuses(catalog)
    shutil.move(scanned / "rgb.png", scanned / "sub" / "moved.png")
    scan(catalog, [scanned], ScanOptions(workers=1))
    assert statuses(catalog) == before | {"moved.png": "accepted"}


def test_unknown_status_is_refused(catalog, scanned):
    with pytest.raises(UsageError):
        review.set_status(catalog, "", "maybe")


def test_review_cli(catalog, scanned, db_path):
    def cli(*args):
        result = CliRunner().invoke(main, ["--db", str(db_path), *map(str, args)])
        assert result.exit_code == 0, result.output
        return result.output

    out = json.loads(cli("accept", "format:png width>=64", "--json"))
    assert out["op"] == "review.accept" and out["images"] == 7
    assert "reject" in cli("reject", "format:gif")
    assert "nothing to change" in cli("reject", "format:gif")
    cli("unreview", "format:png")
    assert set(statuses(catalog).values()) == {"pending", "rejected"}
    history = json.loads(cli("history", "--json"))
    assert [h["op"] for h in history] == ["review.unreview", "review.reject", "review.accept"]
    cli("undo", "3")
    assert set(statuses(catalog).values()) == {"pending"}
