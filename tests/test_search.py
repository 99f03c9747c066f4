"""Image embeddings through the run loop, and `similar` / `search` over them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402
from sqlalchemy import select  # noqa: E402

from curator.cli import main  # noqa: E402
from curator.search.index import ExactIndex, build_index  # noqa: E402
from curator.search.search import decode_vector  # noqa: E402
from db import open_catalog  # noqa: E402
from db.schema import Embedding, File, Run  # noqa: E402
from tests.fixtures.tiny_clip import build_tiny_clip  # noqa: E402

COLOURS = {
    "red": (255, 0, 0),
    "near-red": (235, 15, 10),
    "blue": (0, 0, 255),
    "green": (0, 255, 0),
    "white": (255, 255, 255),
}


def cli(db, *args, ok=True):
    result = CliRunner().invoke(main, ["--db", str(db), *map(str, args)])
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    pics = root / "pics"
    pics.mkdir()
    for name, rgb in COLOURS.items():
        img = Image.new("RGB", (64, 48), rgb)
        img.putpixel((3, 3), (0, 0, 0))
        img.save(pics / f"{name}.png")
    model = build_tiny_clip(root / "clip")
    db = root / "catalog.db"
    cli(db, "scan", pics, "--quiet")
    out = cli(db, "embed", "-m", model, "--workers", "0", "--json", "--device", "cpu").output
    return db, pics, model, json.loads(out)


def _vectors(db):
    cat = open_catalog(str(db))
    try:
        with cat.session() as s:
            rows = s.execute(
                select(File.path, Embedding.model, Embedding.dim, Embedding.vector).join(
                    Embedding, Embedding.image_id == File.image_id
                )
            ).all()
            spec = s.scalar(select(Run.params).where(Run.kind == "embed"))["spec"]
    finally:
        cat.close()
    unit = {}
    for p, m, d, v in rows:
        vec = decode_vector(v, d)
        unit[Path(p).stem] = (m, vec / np.linalg.norm(vec))
    return unit, spec


def test_embed_stores_one_unit_vector_per_image_and_model(embedded):
    db, _, model, summary = embedded
    assert summary[0]["done"] == len(COLOURS)
    vectors, spec = _vectors(db)
    assert set(vectors) == set(COLOURS)
    assert spec == str(model)
    for name, vec in vectors.values():
        assert name == "clip" and vec.shape == (32,)
    cat = open_catalog(str(db))
    with cat.session() as s:
        for dim, blob in s.execute(select(Embedding.dim, Embedding.vector)):
            raw = decode_vector(blob, dim)
            assert abs(np.linalg.norm(raw) - 1) < 1e-2
            # float16 values: nothing is lost converting to half precision
            assert np.array_equal(raw.astype(np.float16).astype(np.float32), raw)
    cat.close()
    again = json.loads(cli(db, "embed", "-m", model, "--workers", "0", "--json").output)
    assert again[0]["done"] == 0 and again[0]["skipped"] == len(COLOURS)


def test_similar_ranks_by_cosine_and_leaves_out_the_query(embedded):
    db, pics, _, _ = embedded
    vectors, _ = _vectors(db)
    hits = json.loads(cli(db, "similar", pics / "red.png", "--json").output)
    names = [Path(h["path"]).stem for h in hits]
    assert "red" not in names and len(names) == len(COLOURS) - 1
    expected = sorted(
        (n for n in COLOURS if n != "red"),
        key=lambda n: -float(vectors[n][1] @ vectors["red"][1]),
    )
    assert names == expected
    for h in hits:
        want = float(vectors[Path(h["path"]).stem][1] @ vectors["red"][1])
        assert h["score"] == pytest.approx(want, abs=1e-4)
    assert names[0] == "near-red"
    limited = json.loads(cli(db, "similar", pics / "red.png", "--limit", "2", "--json").output)
    assert len(limited) == 2


def test_similar_to_a_file_outside_the_catalog(embedded, tmp_path):
    db, _, _, _ = embedded
    outside = tmp_path / "outside.png"
    img = Image.new("RGB", (64, 48), (0, 0, 250))
    img.putpixel((3, 3), (0, 0, 0))
    img.save(outside)
    hits = json.loads(cli(db, "similar", outside, "--json", "--device", "cpu").output)
    assert Path(hits[0]["path"]).stem == "blue"


def test_search_text_scores_are_cosines_and_where_filters(embedded):
    db, _, model, _ = embedded
    from taggers.clip.loading import load_clip
    from taggers.clip.textenc import encode_texts

    vectors, _ = _vectors(db)
    clip = load_clip(str(model), device="cpu")
    query = encode_texts(clip.model, clip.tokenizer, ["a red bicycle"])[0].numpy()
    hits = json.loads(cli(db, "search", "a red bicycle", "--json").output)
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    for h in hits:
        assert h["score"] == pytest.approx(
            float(vectors[Path(h["path"]).stem][1] @ query), abs=1e-3
        )
    only = json.loads(
        cli(db, "search", "a red bicycle", "--where", "folder:nowhere/", "--json").output
    )
    assert only == []
    text = cli(db, "search", "a red bicycle", "--limit", "1").output.strip().splitlines()
    assert len(text) == 1 and text[0].split()[1].endswith(".png")


def test_search_without_embeddings_is_one_line_error(tmp_path):
    result = cli(tmp_path / "empty.db", "search", "anything", ok=False)
    assert result.exit_code != 0
    assert result.output.strip().startswith("error:") and "curator embed" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_missing_clip_model_offline_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CURATOR_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    result = cli(tmp_path / "c.db", "embed", "-m", "ViT-B-32/openai", ok=False)
    assert result.exit_code != 0
    line = result.output.strip()
    assert line.startswith("error:") and len(line.splitlines()) == 1
    assert "ViT-B-32/openai" in line and "offline" in line


def test_exact_index_matches_brute_force():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 16)).astype(np.float32)
    ids = np.arange(1000, 1500)
    query = rng.normal(size=16).astype(np.float32)
    found, scores = ExactIndex(ids, vectors).search(query, 7)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    brute = unit @ (query / np.linalg.norm(query))
    assert list(found) == list(ids[np.argsort(-brute)[:7]])
    assert np.allclose(scores, np.sort(brute)[::-1][:7], atol=1e-6)


def test_approximate_index_finds_the_same_neighbours():
    pytest.importorskip(
        "hnswlib", reason="the approximate backend is optional (pip install hnswlib)"
    )
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(2000, 16)).astype(np.float32)
    ids = np.arange(2000)
    query = vectors[5] + 0.01
    exact, _ = build_index(ids, vectors, "exact").search(query, 5)
    approx, _ = build_index(ids, vectors, "hnsw").search(query, 5)
    assert len(set(exact) & set(approx)) >= 4
