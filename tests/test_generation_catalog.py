"""Model registry hashes, regenerate from the catalog, provenance links."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("diffusers")
pytest.importorskip("open_clip")

from curator.cli import main  # noqa: E402
from curator.generation.registry import (  # noqa: E402
    find_model_file,
    list_model_files,
    register_model_files,
)


def test_hashes_match_a1111_and_are_cached(catalog, tmp_path, monkeypatch):
    data = os.urandom(3 << 20)
    checkpoint = tmp_path / "models" / "my model.safetensors"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(data)
    (tmp_path / "models" / "notes.txt").write_text("not a model")
    [record] = register_model_files(catalog, [tmp_path / "models"])
    full = hashlib.sha256(data).hexdigest()
    assert record.autov2 == full[:10]
    assert record.old_hash == hashlib.sha256(data[1 << 20 : (1 << 20) + (64 << 10)]).hexdigest()[:8]
    assert record.name == "my model"

    import curator.generation.registry as registry

    def no_hashing(path):
        raise AssertionError("hash recomputed for an unchanged file")

    monkeypatch.setattr(registry, "_sha256", no_hashing)
    register_model_files(catalog, [checkpoint])  # unchanged: cached
    for key in (full[:10], record.old_hash, full, "my model", f"my model [{full[:10]}]"):
        assert find_model_file(catalog, key).path == str(checkpoint.resolve())
    assert find_model_file(catalog, "0000000000") is None
    assert len(list_model_files(catalog, "checkpoint")) == 1


def _run(db, *args, ok=True):
    result = CliRunner().invoke(main, ["--db", str(db), *map(str, args)])
    assert (result.exit_code == 0) == ok, result.output
    return result


def test_regenerate_gives_the_same_pixels_and_links_the_new_image(tiny_dir, tmp_path):
    db = tmp_path / "c.db"
    _run(db, "models", "checkpoints", "add", tiny_dir)
    made = json.loads(
        _run(
            db,
            "generate",
            "a [red:blue:0.5] cat",
            "-m",
            tiny_dir,
            "--size",
            "32x32",
            "--steps",
            "3",
            "--seed",
            "21",
            "--out",
            tmp_path / "a",
            "--json",
        ).output
    )
    original = Path(made[0]["path"])
    again = json.loads(_run(db, "regenerate", original, "--out", tmp_path / "b", "--json").output)
    with Image.open(original) as a, Image.open(again[0]["path"]) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))

    changed = json.loads(
        _run(
            db,
            "regenerate",
            original,
            "--override",
            "steps=2",
            "--override",
            "seed=5",
            "--out",
            tmp_path / "c",
            "--json",
        ).output
    )
    with Image.open(changed[0]["path"]) as png:
        text = png.info["parameters"]
    assert "Steps: 2," in text and "Seed: 5," in text

    import sqlite3

    rows = (
        sqlite3.connect(db)
        .execute("select image_id, source_image_id from generated order by image_id")
        .fetchall()
    )
    assert rows[0][1] is None and rows[-1][1] == rows[0][0]


def test_regenerate_names_what_cannot_be_honoured(tiny_dir, tmp_path):
    db = tmp_path / "c.db"
    made = json.loads(
        _run(
            db,
            "generate",
            "a cat",
            "-m",
            tiny_dir,
            "--size",
            "32x32",
            "--steps",
            "2",
            "--seed",
            "1",
            "--out",
            tmp_path / "a",
            "--json",
        ).output
    )
    # the tiny checkpoint is not registered, and the sampler override is unknown
    result = _run(db, "regenerate", made[0]["path"], "--override", "sampler=Nope", ok=False)
    line = result.output.strip()
    assert line.count("\n") == 0
    assert "unknown sampler 'Nope'" in line and "no registered checkpoint matches tiny" in line
    assert not (tmp_path / "outputs").exists()


def test_regenerate_needs_the_lora_it_used(tiny_dir, tmp_path):
    from tests.fixtures.tiny_pipeline import save_tiny_lora

    save_tiny_lora(tiny_dir, tmp_path / "loras")
    db = tmp_path / "c.db"
    _run(db, "models", "checkpoints", "add", tiny_dir)
    made = json.loads(
        _run(
            db,
            "generate",
            "a cat <lora:tiny_lora:0.7>",
            "-m",
            tiny_dir,
            "--size",
            "32x32",
            "--steps",
            "2",
            "--seed",
            "8",
            "--lora-dir",
            tmp_path / "loras",
            "--out",
            tmp_path / "a",
            "--json",
        ).output
    )
    result = _run(db, "regenerate", made[0]["path"], "--out", tmp_path / "b", ok=False)
    assert "LoRA 'tiny_lora' not found" in result.output
    again = json.loads(
        _run(
            db,
            "regenerate",
            made[0]["path"],
            "--lora-dir",
            tmp_path / "loras",
            "--out",
            tmp_path / "c",
            "--json",
        ).output
    )
    with Image.open(made[0]["path"]) as a, Image.open(again[0]["path"]) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert "Lora hashes" in b.info["parameters"]


def test_hires_fix_doubles_the_size_and_regenerates(tiny_dir, tmp_path):
    db = tmp_path / "c.db"
    _run(db, "models", "checkpoints", "add", tiny_dir)
    made = json.loads(
        _run(
            db,
            "generate",
            "a cat",
            "-m",
            tiny_dir,
            "--size",
            "32x32",
            "--steps",
            "3",
            "--seed",
            "4",
            "--hr-scale",
            "2",
            "--hr-steps",
            "2",
            "--strength",
            "0.5",
            "--out",
            tmp_path / "a",
            "--json",
        ).output
    )
    with Image.open(made[0]["path"]) as image:
        assert image.size == (64, 64)
        text = image.info["parameters"]
    assert "Size: 32x32" in text and "Hires upscale: 2, Hires steps: 2" in text
    assert "Hires upscaler: Latent" in text and "Denoising strength: 0.5" in text
    again = json.loads(
        _run(db, "regenerate", made[0]["path"], "--out", tmp_path / "b", "--json").output
    )
    with Image.open(made[0]["path"]) as a, Image.open(again[0]["path"]) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    result = _run(
        db,
        "generate",
        "a",
        "-m",
        tiny_dir,
        "--hr-scale",
        "2",
        "--hr-upscaler",
        "ESRGAN_4x",
        ok=False,
    )
    assert "unknown hires upscaler 'ESRGAN_4x'" in result.output
    assert "known: Latent, " in result.output and "Lanczos, Nearest" in result.output
    assert len(result.output.strip().splitlines()) == 1
