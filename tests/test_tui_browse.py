"""Reading a query's images by position (what the review list scrolls through)."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import insert, select

from curator.catalog.browse import (
    PAGE,
    Listing,
    image_detail,
    review_images,
    tag_images,
    tag_suggestions,
    untag_images,
)
from curator.curation import edits
from db.schema import File, Image

N = 7 * PAGE + 37  # several pages and a partial last one


@pytest.fixture
def many(catalog):
    with catalog.write() as s:
        s.execute(
            insert(Image),
            [
                {
                    "id": i,
                    "sha256": f"{i:064x}",
                    "bytes": 1000 + i,
                    "width": 512,
                    "height": 768,
                    "format": "PNG",
                    "mode": "RGB",
                }
                for i in range(1, N + 1)
            ],
        )
        s.execute(
            insert(File),
            [
                {
                    "path": f"/data/{i:05d}.png",
                    "folder": "/data",
                    "image_id": i,
                    "size": 1000 + i,
                    "mtime_ns": 0,
                }
                for i in range(1, N + 1)
            ],
        )
    tag_images(catalog, [i for i in range(1, N + 1) if i % 3 == 0], ["third"])
    return catalog


def test_rows_by_position_in_any_order_match_the_query(many):
    expected = [i for i in range(1, N + 1) if i % 3 == 0]
    listing = Listing(many, "third")
    assert listing.count() == len(expected)
    positions = list(range(len(expected)))
    random.Random(0).shuffle(positions)
    for p in [len(expected) - 1, 0, len(expected) // 2, *positions]:
        row = listing.row(p)
        assert row.id == expected[p], p
        assert row.name == f"{expected[p]:05d}.png" and row.tags == 1
    assert listing.row(len(expected)) is None and listing.row(-1) is None
    assert [r.id for r in listing.rows(5, 9)] == expected[5:9]


def test_far_jumps_read_from_the_nearer_end(many):
    listing = Listing(many, "")
    assert listing.row(N - 1).id == N  # the last page, counted back from the end
    assert listing.row(N - PAGE - 5).id == N - PAGE - 4
    assert listing.row(3).id == 4
    assert set(listing._pages) <= {0, (N - 1) // PAGE, (N - PAGE - 5) // PAGE}


def test_refresh_shows_changes_and_position_of(many):
    listing = Listing(many, "status:pending")
    assert listing.count() == N and listing.row(0).id == 1
    review_images(many, [1, 2, 3], "accepted")
    assert listing.row(0).id == 1  # pages are kept until refreshed
    listing.refresh()
    assert listing.count() == N - 3 and listing.row(0).id == 4
    assert listing.position_of(10) == 6 and listing.position_of(2) is None


def test_edits_of_chosen_images_are_single_undoable_edits(many):
    result = tag_images(many, [1, 2, 999_999], ["blue sky"])
    assert result.edit_id is not None and result.images == 2
    assert [r.tags for r in Listing(many, "blue_sky").rows(0, 5)] == [1, 1]
    untag_images(many, [1], ["blue_sky"])
    assert Listing(many, "blue_sky").count() == 1
    edits.undo(many)
    assert Listing(many, "blue_sky").count() == 2
    assert review_images(many, [5], "rejected").summary == "reject 1 of 1 images"


def test_detail_and_suggestions(many):
    tag_images(many, [1], ["thirst"])
    detail = image_detail(many, 3)
    assert detail["tag_groups"]["general"][0]["given_by"] == ["person"]
    assert detail["bytes"] == 1003 and detail["duplicates"] is None
    assert image_detail(many, 10**9) is None
    assert tag_suggestions(many, "thi") == [
        ("third", "general", len(range(3, N + 1, 3))),
        ("thirst", "general", 1),
    ]
    assert tag_suggestions(many, "zz") == [] and tag_suggestions(many, " ") == []
    with many.session() as s:
        assert s.scalar(select(Image.status).where(Image.id == 1)) == "pending"
