"""CLIP loading, BLIP captions and interrogation through the run loop."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("transformers")

from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402
from sqlalchemy import select  # noqa: E402

from curator.cli import main  # noqa: E402
from db import open_catalog  # noqa: E402
from db.schema import Caption, File  # noqa: E402
from taggers.blip import load_captioner  # noqa: E402
from taggers.clip.loading import load_clip  # noqa: E402
from taggers.errors import ModelLoadError, ModelNotFoundError  # noqa: E402
from tests.fixtures.tiny_clip import BLIP_WORDS, build_tiny_blip, build_tiny_clip  # noqa: E402


def cli(db, *args, ok=True):
    result = CliRunner().invoke(main, ["--db", str(db), *map(str, args)])
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return build_tiny_clip(root / "clip"), build_tiny_blip(root / "blip"), root


@pytest.fixture
def pics(tmp_path):
    root = tmp_path / "pics"
    root.mkdir()
    for name, rgb in {"red": (220, 20, 20), "blue": (20, 20, 220)}.items():
        Image.new("RGB", (48, 36), rgb).save(root / f"{name}.png")
    return root


def _captions(db, kind=None):
    cat = open_catalog(str(db))
    with cat.session() as s:
        stmt = select(File.path, Caption.kind, Caption.source, Caption.text).join(
            Caption, Caption.image_id == File.image_id
        )
        rows = s.execute(stmt).all()
    cat.close()
    return {(Path(p).stem, k, src): t for p, k, src, t in rows if kind in (None, k)}


def test_clip_loads_lazily_and_pickles_without_weights(models, tmp_path):
    clip_dir, _, _ = models
    bundle = load_clip(str(clip_dir), models_dir=tmp_path, device="cpu")
    assert not bundle.loaded and bundle.input_size == 32
    assert not bundle.model.training
    copy = pickle.loads(pickle.dumps(bundle))
    assert not copy.loaded and copy.revision == bundle.revision


def test_clip_resolution_errors_are_one_line(tmp_path, models):
    offline = dict(models_dir=tmp_path / "m", offline=True, cache_dir=tmp_path / "hub")
    for spec in ("ViT-B-32/openai", "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"):
        with pytest.raises(ModelNotFoundError) as err:
            load_clip(spec, **offline)
        assert "\n" not in str(err.value) and "offline" in str(err.value)
    with pytest.raises(ModelNotFoundError, match="unknown CLIP model"):
        load_clip("ViT-B-32/no-such-weights", **offline)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "open_clip_config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="no weights file"):
        load_clip(str(empty), **offline)
    # An imported copy in the models folder is found by name, before any hub lookup.
    clip_dir, _, _ = models
    imported = tmp_path / "m" / "ViT-B-32_openai"
    imported.mkdir(parents=True)
    for f in clip_dir.iterdir():
        (imported / f.name).write_bytes(f.read_bytes())
    assert load_clip("ViT-B-32/openai", **offline).files.source == "models_dir"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "open_clip_config.json").write_text((clip_dir / "open_clip_config.json").read_text())
    (broken / "w.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelLoadError):
        _ = load_clip(str(broken), device="cpu", models_dir=tmp_path).model


def test_captioner_offline_error_is_one_line(tmp_path):
    with pytest.raises(ModelNotFoundError) as err:
        load_captioner("blip-large", models_dir=tmp_path, offline=True, cache_dir=tmp_path)
    assert "\n" not in str(err.value) and "Salesforce/blip-image-captioning-large" in str(err.value)


def test_caption_command_stores_captions_within_length(models, pics, tmp_path):
    _, blip_dir, _ = models
    db = tmp_path / "c.db"
    cli(db, "scan", pics, "--quiet")
    args = ["-m", blip_dir, "--min-length", "3", "--max-length", "5", "--workers", "0"]
    out = json.loads(cli(db, "caption", *args, "--beams", "2", "--json").stdout)
    assert out[0]["done"] == 2
    captions = _captions(db, "caption")
    assert {k[0] for k in captions} == {"red", "blue"}
    for (_, _, source), text in captions.items():
        assert source == "model:blip"
        words = text.split()
        assert 3 <= len(words) <= 5 and set(words) <= set(BLIP_WORDS)


def _bank_files(root: Path) -> list[str]:
    banks = {
        "artists": ["by Claude Monet", "by Hokusai", "inspired by Turner"],
        "flavors": ["highly detailed", "soft light", "oil on canvas", "red", "blue", "snow"],
        "mediums": ["a painting", "a photo", "a woodcut"],
        "movements": ["impressionism", "ukiyo-e"],
        "trendings": ["trending on artstation", "pixiv"],
        "negative": ["blurry", "ugly"],
    }
    args = []
    for name, terms in banks.items():
        path = root / f"{name}.txt"
        path.write_text("\n".join(terms), encoding="utf-8")
        args += ["--bank", f"{name}={path}"]
    return args


def test_interrogate_runs_in_the_loop_from_the_caption(models, pics, tmp_path):
    clip_dir, blip_dir, _ = models
    db = tmp_path / "c.db"
    cli(db, "scan", pics, "--quiet")
    cache = tmp_path / "cache"
    args = ["--clip", clip_dir, "--caption-model", blip_dir, *_bank_files(tmp_path)]
    args += ["--mode", "fast", "--max-flavors", "4", "--cache-dir", cache, "--workers", "0"]
    out = json.loads(cli(db, "interrogate", *args, "--json").stdout)
    assert out[0]["done"] == 2 and out[0]["model"] == "interrogator-fast/clip"
    assert any(cache.iterdir())
    prompts = {k[0]: t for k, t in _captions(db).items() if k[2] == "model:interrogator-fast/clip"}
    assert set(prompts) == {"red", "blue"}
    for prompt in prompts.values():
        caption, *terms = prompt.split(", ")
        assert set(caption.split()) <= set(BLIP_WORDS) and len(terms) == 4
    again = json.loads(cli(db, "interrogate", *args, "--json").stdout)
    assert again[0]["done"] == 0 and again[0]["skipped"] == 2
