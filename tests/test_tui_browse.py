"""Reading a query's images by position (what the review list scrolls through)."""

from __future__ import annotations

import random
import threading

import pytest
from sqlalchemy import delete, insert, select

from curator.catalog.browse import (
    PAGE,
    Listing,
    image_detail,
    review_images,
    rows_for,
    tag_images,
    tag_suggestions,
    untag_images,
)
from curator.catalog.paging import effective_tag_counts
from curator.curation import edits
from curator.tags.rules import add_alias, blacklist_add
from curator.tags.view import USER_REMOVED, TagRules, effective_tags
from db.schema import File, Image, ImageTag, Tag

N = 7 * PAGE + 37  # several pages and a partial last one


def image_rows(ids):
    return [
        {
            "id": i,
            "sha256": f"{i:064x}",
            "bytes": 1000 + i,
            "width": 512,
            "height": 768,
            "format": "PNG",
            "mode": "RGB",
        }
        for i in ids
    ]


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


def test_peek_never_reads_and_load_pages_fills_in(many):
    listing = Listing(many, "")
    assert listing.peek(0) is None and listing.missing([0, 1]) == [0, 1]
    assert listing.pages_of(-5, 2 * PAGE + 1) == [0, 1, 2]
    assert listing.pages_of(N - 3, N + 50) == [(N - 1) // PAGE] and listing.pages_of(N, N + 9) == []
    assert listing.load_pages([(N - 1) // PAGE, 0, 0, 10**6]) == [(N - 1) // PAGE, 0]
    assert listing.peek(N - 1).id == N and listing.peek(0).id == 1 and listing.peek(PAGE) is None
    assert listing.missing([0, 1]) == [1]
    # The page before the last, read back from the end, joins the last one seamlessly.
    listing.load_pages([(N - 1) // PAGE - 1])
    ids = [listing.peek(p).id for p in range(((N - 1) // PAGE - 1) * PAGE, N)]
    assert ids == list(range(ids[0], N + 1)) and ids[0] == ((N - 1) // PAGE - 1) * PAGE + 1


def test_pages_read_from_several_threads_agree(many):
    listing = Listing(many, "third")
    expected = [i for i in range(1, N + 1) if i % 3 == 0]
    pages = listing.pages_of(0, len(expected))
    threads = [
        threading.Thread(target=listing.load_pages, args=(order,))
        for order in (pages, pages[::-1], pages[1::2] + pages[::2])
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [listing.peek(p).id for p in range(len(expected))] == expected


def test_ends_and_neighbours_after_inserts_and_deletes(many):
    listing = Listing(many, "")
    last = listing.row(N - 1)
    assert listing.row(0).id == 1 and last.id == N
    # Someone deletes the first images and adds new ones at the end meanwhile.
    with many.write() as s:
        s.execute(delete(File).where(File.image_id.in_([1, 2, PAGE + 1])))
        s.execute(delete(Image).where(Image.id.in_([1, 2, PAGE + 1])))
        s.execute(insert(Image), image_rows(range(N + 1, N + 6)))
    # Pages read before keep what they showed; pages read now skip what is gone.
    assert listing.row(0).id == 1 and listing.row(N - 1).id == N
    page_1 = [r.id for r in listing.rows(PAGE, 2 * PAGE)]
    assert PAGE + 1 not in page_1 and page_1[0] == PAGE + 2
    # A refresh shows the catalog as it is now, at both ends.
    listing.refresh()
    assert listing.count() == N - 3 + 5
    assert [listing.row(p).id for p in (0, 1)] == [3, 4]
    assert [r.id for r in listing.rows(N - 3, N + 2)] == list(range(N + 1, N + 6))
    assert listing.row(N + 2) is None
    assert listing.position_of(N + 5) == N + 1 and listing.position_of(1) is None


def test_tag_counts_follow_aliases_blacklist_and_removals(catalog):
    with catalog.write() as s:
        s.execute(insert(Image), image_rows(range(1, 5)))
    add_alias(catalog, "kitty", "cat")
    blacklist_add(catalog, ["watermark"])
    with catalog.write() as s:
        names = ["cat", "kitty", "dog", "watermark", "sky"]
        s.execute(insert(Tag), [{"name": n, "category": "general"} for n in names])
        tag = dict(s.execute(select(Tag.name, Tag.id)).all())
        rows = [
            (1, "cat", "model:a"),
            (1, "kitty", "model:b"),  # the same tag through an alias: counted once
            (1, "watermark", "model:a"),  # blacklisted
            (1, "dog", "user"),
            (2, "kitty", "model:a"),
            (2, "cat", USER_REMOVED),  # removed through its canonical name
            (2, "sky", "sidecar"),
            (3, "sky", USER_REMOVED),  # only a removal: no tag
        ]
        s.execute(
            insert(ImageTag),
            [{"image_id": i, "tag_id": tag[n], "source": src, "score": 0.9} for i, n, src in rows],
        )
    ids = [1, 2, 3, 4]
    with catalog.session() as s:
        rules = TagRules.load(s)
        expected = {i: len(tags) for i, tags in effective_tags(s, ids).items() if tags}
        assert effective_tag_counts(s, ids, rules) == expected == {1: 2, 2: 1}
        assert [r.tags for r in rows_for(s, ids, rules=rules)] == [2, 1, 0, 0]


def test_pages_at_the_ends_stay_in_memory(many, monkeypatch):
    from curator.catalog import paging

    monkeypatch.setattr(paging, "KEEP_PAGES", 3)
    monkeypatch.setattr(paging, "END_PAGES", 1)
    listing = Listing(many, "")
    last = (N - 1) // PAGE
    listing.load_pages([0, last, *range(1, last)])  # the middle read after the ends
    assert set(listing._pages) == {0, last, last - 1}
    assert listing.peek(0).id == 1 and listing.peek(N - 1).id == N
    assert listing.load_pages([0, last]) == []  # jumping to either end reads nothing
