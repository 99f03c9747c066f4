"""Duplicate finding and marking: exact, perceptual (phash) and semantic (embeddings)."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image as PILImage
from PIL import ImageDraw
from sqlalchemy import select, update

from curator.cli import main
from curator.curation import edits
from curator.curation.dedup import clear_duplicates, dedup, find_duplicates, similar_pairs
from curator.errors import UsageError
from curator.ingest.scan import ScanOptions, scan
from db.schema import Embedding, File, Image, Score, to_unsigned64
from tests.corpus import pattern


def write_near_copies(root: Path) -> None:
    """Three distinct pictures; near copies of the first two; one byte-identical copy."""
    root.mkdir(parents=True)
    a, b, c = (pattern(256, 256, seed) for seed in (101, 102, 103))
    a.save(root / "a.png")
    a.resize((128, 128), PILImage.Resampling.LANCZOS).save(root / "a_small.png")
    a.save(root / "a_reencoded.jpg", quality=70)
    a.crop((6, 6, 250, 250)).save(root / "a_cropped.png")
    b.save(root / "b.png")
    b.resize((300, 300), PILImage.Resampling.BICUBIC).save(root / "b_big.jpg", quality=85)
    c.save(root / "c.png")
    (root / "copies").mkdir()
    shutil.copy(root / "c.png", root / "copies" / "c_again.png")


@pytest.fixture
def near(catalog, tmp_path) -> Path:
    root = tmp_path / "near"
    write_near_copies(root)
    scan(catalog, [root], ScanOptions(workers=1))
    return root


def by_name(catalog) -> dict[str, int]:
    with catalog.session() as s:
        return {p.rsplit("/", 1)[1]: i for p, i in s.execute(select(File.path, File.image_id))}


def marks(catalog) -> dict[int, int | None]:
    with catalog.session() as s:
        return dict(s.execute(select(Image.id, Image.duplicate_of)).all())


def test_phash_distances_are_what_the_groups_assume(catalog, near):
    ids = by_name(catalog)
    with catalog.session() as s:
        hashes = {i: to_unsigned64(h) for i, h in s.execute(select(Image.id, Image.phash))}

    def distance(x: str, y: str) -> int:
        return (hashes[ids[x]] ^ hashes[ids[y]]).bit_count()

    for copy in ("a_small.png", "a_reencoded.jpg", "a_cropped.png"):
        assert distance("a.png", copy) <= 6
    assert distance("b.png", "b_big.jpg") <= 6
    for x, y in combinations(["a.png", "b.png", "c.png"], 2):
        assert distance(x, y) > 6


def test_phash_groups_keepers_and_marking(catalog, near):
    ids = by_name(catalog)
    report = find_duplicates(catalog, "phash")
    groups = {g.keeper.image_id: g for g in report.groups}
    assert set(groups) == {ids["a.png"], ids["b_big.jpg"]}  # most pixels keeps
    a_group = groups[ids["a.png"]]
    assert {m.image_id for m in a_group.duplicates} == {
        ids["a_small.png"],
        ids["a_reencoded.jpg"],
        ids["a_cropped.png"],
    }
    # a.png and a_reencoded.jpg have the same pixel count: the older one keeps.
    assert all(m.distance is not None and m.distance <= 6 for m in a_group.duplicates)
    assert a_group.keeper.paths == [str(near / "a.png")]
    assert marks(catalog) == {i: None for i in ids.values()}  # a report marks nothing

    result = dedup(catalog, "phash")
    assert result.marked == 4 and result.edit_id is not None
    m = marks(catalog)
    assert m[ids["a_small.png"]] == m[ids["a_cropped.png"]] == ids["a.png"]
    assert m[ids["b.png"]] == ids["b_big.jpg"]
    assert m[ids["a.png"]] is None and m[ids["c.png"]] is None
    assert dedup(catalog, "phash").edit_id is None  # already marked: nothing to record

    edits.undo(catalog)
    assert set(marks(catalog).values()) == {None}
    dedup(catalog, "phash")
    cleared = clear_duplicates(catalog, f"folder:{near}")
    assert cleared.edit_id is not None and set(marks(catalog).values()) == {None}
    edits.undo(catalog)
    assert marks(catalog)[ids["b.png"]] == ids["b_big.jpg"]


def test_distance_and_where_narrow_the_search(catalog, near):
    def duplicates(**kw) -> list:
        return [m for g in find_duplicates(catalog, "phash", **kw).groups for m in g.duplicates]

    assert len(duplicates()) == 4
    exact_pixels = duplicates(distance=0)
    assert len(exact_pixels) < 4 and all(m.distance == 0 for m in exact_pixels)
    # a_reencoded.jpg and b_big.jpg are no near copies of each other.
    assert duplicates(query="format:jpeg") == []
    with pytest.raises(UsageError):
        find_duplicates(catalog, "phash", distance=65)


def test_exact_duplicates_are_reported_not_marked(catalog, near):
    ids = by_name(catalog)
    result = dedup(catalog, "exact")
    [group] = result.groups
    assert group.method == "exact" and group.keeper.image_id == ids["c.png"]
    assert group.keeper.paths == [str(near / "c.png"), str(near / "copies" / "c_again.png")]
    assert result.marked == 0 and set(marks(catalog).values()) == {None}


def test_keeper_policy_pixels_then_aesthetic_then_age(catalog, near):
    ids = by_name(catalog)
    a, jpg = ids["a.png"], ids["a_reencoded.jpg"]

    def keeper() -> int:
        for g in find_duplicates(catalog, "phash").groups:
            if a in {g.keeper.image_id, *(m.image_id for m in g.duplicates)}:
                return g.keeper.image_id
        raise AssertionError("a.png is in no group")

    assert keeper() == a  # same pixels, no scores: the first catalogued
    with catalog.write() as s:
        s.execute(update(Image).where(Image.id == a).values(added_at=datetime(2030, 1, 1)))
    assert keeper() == jpg  # now the JPEG is older
    with catalog.write() as s:
        s.add(Score(image_id=a, name="aesthetic", value=6.5))
        s.add(Score(image_id=jpg, name="aesthetic", value=5.0))
    assert keeper() == a  # the better aesthetic score beats age
    with catalog.write() as s:
        s.execute(update(Image).where(Image.id == jpg).values(width=257))
    assert keeper() == jpg  # more pixels beat everything


def _embed(catalog, vectors: dict[int, list[float]], model: str = "clip-test") -> None:
    with catalog.write() as s:
        for image_id, v in vectors.items():
            vec = np.asarray(v, dtype="<f4")
            s.add(Embedding(image_id=image_id, model=model, dim=len(vec), vector=vec.tobytes()))


def test_semantic_dedup_with_hand_made_embeddings(catalog, near):
    ids = by_name(catalog)
    e1, e2 = np.eye(8)[0], np.eye(8)[1]
    _embed(
        catalog,
        {
            ids["a.png"]: e1 * 3,  # length does not matter: cosine
            ids["b.png"]: e1 + 0.2 * e2,  # cosine 0.98 with a
            ids["c.png"]: e2,
            ids["a_small.png"]: -e1,
        },
    )
    _embed(catalog, {ids["c.png"]: e1}, model="other")
    result = find_duplicates(catalog, "clip", model="clip-test")
    [group] = result.groups
    assert group.method == "clip" and result.model == "clip-test"
    assert group.keeper.image_id == ids["a.png"]
    assert [m.image_id for m in group.duplicates] == [ids["b.png"]]
    assert group.duplicates[0].similarity == pytest.approx(1 / np.sqrt(1.04), abs=1e-5)
    assert find_duplicates(catalog, "clip", threshold=0.99).groups == []
    with pytest.raises(UsageError):
        find_duplicates(catalog, "clip", model="missing")

    # Marks from an earlier method stay. Groups do not chain through `b` (close to `a` by
    # embedding, a copy of `b_big` by phash): every member is close to its own keeper.
    dedup(catalog, "phash")
    dedup(catalog, "clip")
    m = marks(catalog)
    for name in ["a_small.png", "a_reencoded.jpg", "a_cropped.png"]:
        assert m[ids[name]] == ids["a.png"]
    assert m[ids["b.png"]] == ids["b_big.jpg"]  # the most pixels
    assert m[ids["a.png"]] is None and m[ids["b_big.jpg"]] is None and m[ids["c.png"]] is None


def test_clip_without_embeddings_is_a_clear_error(catalog, near):
    with pytest.raises(UsageError, match="embeddings"):
        find_duplicates(catalog, "clip")
    assert find_duplicates(catalog, "all").groups  # all: clip is skipped when absent


def test_similar_pairs_blocks_match_all_pairs():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 16)).astype(np.float32)
    x = np.concatenate([base, base[:7] + rng.normal(scale=0.05, size=(7, 16))]).astype(np.float32)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit @ unit.T
    expected = sorted((i, j) for i, j in combinations(range(len(x)), 2) if sims[i, j] >= 0.95)
    assert len(expected) >= 7
    assert similar_pairs(x, 0.95, block=4) == expected == similar_pairs(x, 0.95)


def test_semantic_pairs_through_the_approximate_index_match_exact_ones():
    pytest.importorskip("hnswlib", reason="the approximate backend is optional")
    rng = np.random.default_rng(1)
    base = rng.normal(size=(300, 32)).astype(np.float32)
    copies = base[:40] + rng.normal(scale=0.02, size=(40, 32)).astype(np.float32)
    x = np.concatenate([base, copies])
    exact = similar_pairs(x, 0.97, backend="exact")
    assert len(exact) >= 40
    assert similar_pairs(x, 0.97, backend="hnsw") == exact


def test_dedup_cli(catalog, near, db_path):
    def cli(*args):
        result = CliRunner().invoke(main, ["--db", str(db_path), *map(str, args)])
        assert result.exit_code == 0, result.output
        return result.output

    ids = by_name(catalog)
    report = json.loads(cli("dedup", "--method", "all", "--report", "--json"))
    assert [g["method"] for g in report["groups"]] == ["phash", "phash", "exact"]
    assert report["marked"] == 0
    text = cli("dedup", "--report", "--method", "all")
    assert "keep " + str(near / "a.png") in text and "c_again.png" in text
    assert "2 groups, 4 duplicates" in text
    assert "marked 4" in cli("dedup", "--distance", "6")
    assert marks(catalog)[ids["a_small.png"]] == ids["a.png"]
    assert "cleared 4" in cli("dedup", "--clear")
    assert set(marks(catalog).values()) == {None}
    cli("undo")
    assert marks(catalog)[ids["a_small.png"]] == ids["a.png"]


def test_marking_is_recorded_per_image(catalog, near):
    dedup(catalog, "phash")
    [entry] = edits.history(catalog)
    assert entry["op"] == "dedup.mark" and entry["images_changed"] == 4
    assert datetime.fromisoformat(entry["at"]) > datetime.now() - timedelta(days=2)


def _clipart(colour) -> PILImage.Image:
    image = PILImage.new("RGB", (256, 256), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((40, 40, 216, 216), fill=colour, outline="black", width=6)
    draw.rectangle((100, 20, 156, 60), fill="black")
    return image


def _folder_icon(emblem: str) -> PILImage.Image:
    """One folder shape; the emblem in its middle is what tells the icons apart."""
    image = PILImage.new("RGB", (256, 256), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 40, 110, 70), fill=(230, 180, 40))
    draw.rectangle((20, 60, 236, 220), fill=(240, 190, 50), outline=(150, 110, 20), width=4)
    if emblem == "circle":
        draw.ellipse((98, 100, 158, 160), fill=(60, 60, 200))
    elif emblem == "cross":
        draw.rectangle((120, 90, 136, 170), fill=(200, 40, 40))
        draw.rectangle((88, 122, 168, 138), fill=(200, 40, 40))
    elif emblem == "triangle":
        draw.polygon([(128, 95), (165, 165), (91, 165)], fill=(40, 160, 40))
    return image


@pytest.fixture
def variants(catalog, tmp_path) -> Path:
    root = tmp_path / "variants"
    root.mkdir()
    for name, colour in [("red", "red"), ("green", (0, 160, 0)), ("blue", "blue")]:
        _clipart(colour).save(root / f"clip_{name}.png")
    for emblem in ("circle", "cross", "triangle"):
        _folder_icon(emblem).save(root / f"folder_{emblem}.png")
    # Real copies: resized and recompressed, which must still group with their original.
    _clipart("red").resize((180, 180)).save(root / "clip_red_small.jpg", quality=60)
    _folder_icon("circle").resize((128, 128)).save(root / "folder_circle_small.jpg", quality=75)
    pattern(256, 256, 101).save(root / "photo.png")
    pattern(256, 256, 101).save(root / "photo_recompressed.jpg", quality=70)
    scan(catalog, [root], ScanOptions(workers=1))
    return root


def test_colour_and_detail_variants_are_not_copies(catalog, variants):
    """Variants a grayscale hash confuses stay apart; real copies still group."""
    ids = by_name(catalog)
    with catalog.session() as s:
        hashes = {i: to_unsigned64(h) for i, h in s.execute(select(Image.id, Image.phash))}
    close = [
        ("clip_red.png", "clip_green.png"),
        ("clip_red.png", "clip_blue.png"),
        ("folder_circle.png", "folder_cross.png"),
        ("folder_circle.png", "folder_triangle.png"),
    ]
    for x, y in close:  # the hash alone would call these copies
        assert (hashes[ids[x]] ^ hashes[ids[y]]).bit_count() <= 6, (x, y)
    groups = {
        frozenset(m.image_id for m in [g.keeper, *g.duplicates])
        for g in find_duplicates(catalog, "phash").groups
    }
    expected = {
        frozenset({ids["clip_red.png"], ids["clip_red_small.jpg"]}),
        frozenset({ids["folder_circle.png"], ids["folder_circle_small.jpg"]}),
        frozenset({ids["photo.png"], ids["photo_recompressed.jpg"]}),
    }
    assert groups == expected


def test_groups_do_not_chain_past_the_distance(catalog, tmp_path):
    """Hashes 6 apart in a row: no member is farther than 6 from its keeper."""
    root = tmp_path / "chain"
    root.mkdir()
    picture = pattern(300, 300, 7)
    for i, size in enumerate((300, 290, 280, 270)):
        picture.resize((size, size)).save(root / f"{i}.png")
    scan(catalog, [root], ScanOptions(workers=1))
    ids = by_name(catalog)
    base = 0x0123_4567_89AB_CDEF
    with catalog.write() as s:
        for i, bits in enumerate((0, 6, 12, 18)):  # a chain 0-1-2-3, each step 6 apart
            flips = (1 << bits) - 1
            value = base ^ flips
            signed = value - (1 << 64) if value >= 1 << 63 else value
            s.execute(update(Image).where(Image.id == ids[f"{i}.png"]).values(phash=signed))
    groups = find_duplicates(catalog, "phash", distance=6).groups
    assert groups, "neighbours 6 apart are copies"
    for group in groups:
        assert all(m.distance is not None and m.distance <= 6 for m in group.duplicates)
    pairs = [(g.keeper.image_id, [m.image_id for m in g.duplicates]) for g in groups]
    assert pairs == [(ids["0.png"], [ids["1.png"]]), (ids["2.png"], [ids["3.png"]])]
