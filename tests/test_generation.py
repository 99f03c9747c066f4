"""Generation with a tiny real pipeline: determinism, seeds, weights, chunks, schedules."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("diffusers")
pytest.importorskip("open_clip")

from curator.cli import main  # noqa: E402
from curator.generation.conditioning import encode_texts  # noqa: E402
from curator.generation.generate import GenerationParams, generate  # noqa: E402
from curator.generation.loading import LoadError, load_pipeline  # noqa: E402
from curator.generation.tokenizer import tokenize_prompt  # noqa: E402
from curator.ingest.infotext import parse_infotext  # noqa: E402


def _params(**changes) -> GenerationParams:
    base = {"prompt": "a cat", "steps": 3, "width": 32, "height": 32, "seed": 11}
    return GenerationParams(**{**base, **changes})


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_same_seed_same_pixels_and_seed_per_image(model, tmp_path):
    first = generate(model, _params(batch_size=2, batch_count=2), tmp_path / "a")
    again = generate(model, _params(batch_size=2, batch_count=2), tmp_path / "b")
    assert [i.seed for i in first] == [11, 12, 13, 14]
    for one, two in zip(first, again, strict=True):
        assert np.array_equal(_pixels(one.path), _pixels(two.path))
    # seed + i: the third image of a batch run is the first image of a run at seed 13
    alone = generate(model, _params(seed=13), tmp_path / "c")[0]
    assert np.array_equal(_pixels(alone.path), _pixels(first[2].path))
    assert not np.array_equal(_pixels(first[0].path), _pixels(first[1].path))


def test_random_seed_is_recorded(model, tmp_path):
    image = generate(model, _params(seed=-1), tmp_path)[0]
    assert parse_infotext(image.infotext).seed == image.seed
    assert 0 <= image.seed < 2**32


def test_infotext_written_and_read_back(model, tmp_path):
    params = _params(
        prompt='a "cat", (sitting:1.2)\nsecond line',
        negative_prompt="blurry, lowres",
        sampler="DPM++ 2M Karras",
        cfg_scale=6.5,
        clip_skip=2,
    )
    image = generate(model, params, tmp_path)[0]
    with Image.open(image.path) as png:
        text = png.info["parameters"]
    info = parse_infotext(text)
    assert info.prompt == params.prompt
    assert info.negative_prompt == "blurry, lowres"
    assert info.params["Sampler"] == "DPM++ 2M"
    assert info.params["Schedule type"] == "Karras"
    assert (info.steps, info.cfg_scale, info.seed) == (3, 6.5, 11)
    assert (info.width, info.height, info.clip_skip) == (32, 32, 2)
    assert info.model == "tiny"
    assert info.params["RNG"] == "CPU"


def test_weighting_scales_tokens_and_keeps_the_mean(model):
    pipe = model.pipeline
    plain = encode_texts(pipe.text_encoder, pipe.tokenizer, ["a cat"])
    same = encode_texts(pipe.text_encoder, pipe.tokenizer, ["a (cat:1)"])
    heavy = encode_texts(pipe.text_encoder, pipe.tokenizer, ["a (cat:1.5)"])
    assert np.allclose(plain.numpy(), same.numpy())
    assert not np.allclose(plain.numpy(), heavy.numpy())
    assert float(heavy.mean()) == pytest.approx(float(plain.mean()), abs=1e-6)
    # token 2 ("cat") is scaled 1.5x relative to token 1 ("a"), before the mean is restored
    ratio = (heavy[0, 2] / plain[0, 2]) / (heavy[0, 1] / plain[0, 1])
    assert np.allclose(ratio.numpy(), 1.5, rtol=1e-4)


def test_prompts_past_75_tokens_make_chunks(model):
    tokenizer = model.pipeline.tokenizer
    long = " ".join(["cat"] * 100)
    tokenized = tokenize_prompt(tokenizer, long)
    assert len(tokenized.chunks) == 2 and tokenized.token_count == 100
    assert all(len(c.tokens) == 77 for c in tokenized.chunks)
    embeds = encode_texts(model.pipeline.text_encoder, tokenizer, [long])
    assert embeds.shape[1] == 154
    # a comma within 20 tokens of the end: the words after it move to the next chunk
    with_comma = " ".join(["cat"] * 70) + ", " + " ".join(["dog"] * 10)
    chunks = tokenize_prompt(tokenizer, with_comma).chunks
    comma = tokenizer.get_vocab()[",</w>"]
    assert chunks[0].tokens[71] == comma
    assert chunks[0].tokens[72] == tokenizer.eos_token_id  # padded after the comma
    assert (
        chunks[1].tokens[1:11]
        == tokenizer(["dog"] * 10, add_special_tokens=False)["input_ids"][0] * 10
        or len([t for t in chunks[1].tokens if t != tokenizer.eos_token_id]) == 11
    )


def test_break_starts_a_new_chunk(model):
    tokenized = tokenize_prompt(model.pipeline.tokenizer, "a cat BREAK a dog")
    assert len(tokenized.chunks) == 2


def test_prompt_editing_switches_at_the_right_step(model, tmp_path):
    pipe = model.pipeline
    seen = []
    original = pipe.unet.forward

    def spy(sample, timestep, encoder_hidden_states, *args, **kwargs):
        seen.append(encoder_hidden_states[-1].detach().clone())
        return original(sample, timestep, encoder_hidden_states, *args, **kwargs)

    pipe.unet.forward = spy
    try:
        generate(model, _params(prompt="[cat:dog:2]", steps=4, sampler="Euler"), tmp_path)
    finally:
        pipe.unet.forward = original
    both = encode_texts(pipe.text_encoder, pipe.tokenizer, ["cat", "dog"])
    cat, dog = both[0], both[1]
    # A1111: steps 0, 1, 2 (counted from 0) use "cat"; step 3 uses "dog"
    assert [torch_equal(s, cat) for s in seen] == [True, True, True, False]
    assert torch_equal(seen[3], dog)


def torch_equal(a, b) -> bool:
    return bool(np.allclose(a.numpy(), b.numpy(), atol=1e-6))


def test_img2img_keeps_the_source_and_records_strength(model, tmp_path):
    source = tmp_path / "init.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(source)
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    image = generate(
        model, _params(init_image=str(source), denoising_strength=0.5, steps=4), tmp_path / "o"
    )[0]
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before
    assert parse_infotext(image.infotext).denoising_strength == 0.5
    again = generate(
        model, _params(init_image=str(source), denoising_strength=0.5, steps=4), tmp_path / "p"
    )[0]
    assert np.array_equal(_pixels(image.path), _pixels(again.path))


def test_pickled_checkpoints_are_refused(tmp_path):
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"not really")
    with pytest.raises(LoadError, match="allow-pickle"):
        load_pipeline(str(checkpoint), device="cpu")
    with pytest.raises(LoadError, match="no such checkpoint"):
        load_pipeline(str(tmp_path / "missing.safetensors"), device="cpu")


def test_cli_generate_catalogues_the_images(tiny_dir, tmp_path):
    db = tmp_path / "c.db"
    out = tmp_path / "out"
    args = [
        "--db",
        str(db),
        "generate",
        "a red cat",
        "-m",
        str(tiny_dir),
        "--size",
        "32x32",
        "--steps",
        "2",
        "--seed",
        "5",
        "--out",
        str(out),
        "--json",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    made = json.loads(result.output)
    assert [m["seed"] for m in made] == [5]
    from db import open_catalog
    from db.schema import Generation

    catalog = open_catalog(str(db))
    try:
        with catalog.session() as session:
            rows = session.query(Generation).all()
            assert [(r.prompt, r.seed, r.steps, r.sampler) for r in rows] == [
                ("a red cat", 5, 2, "Euler a")
            ]
    finally:
        catalog.close()


def test_cli_unknown_sampler_is_one_line(tiny_dir, tmp_path):
    args = [
        "--db",
        str(tmp_path / "c.db"),
        "generate",
        "x",
        "-m",
        str(tiny_dir),
        "--sampler",
        "Nope",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert "unknown sampler 'Nope'; known: Euler a" in result.output


def test_cli_prompt_json():
    result = CliRunner().invoke(
        main, ["prompt", "a [cat:dog:0.5], (b:1.2)", "--steps", "10", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [e["until_step"] for e in report["schedule"]] == [5, 10]
    first = report["schedule"][0]
    assert first["text"] == "a cat, (b:1.2)"
    assert first["attention"] == [["a cat, ", 1.0], ["b", 1.2]]
    assert first["chunks"][0]["tokens"] == 4


def test_single_file_checkpoint_loads_and_matches_the_folder(model, tiny_dir, tmp_path):
    from tests.fixtures.tiny_pipeline import save_tiny_single_file

    checkpoint = save_tiny_single_file(tiny_dir, tmp_path / "tiny.safetensors")
    single = load_pipeline(str(checkpoint), device="cpu", config=str(tiny_dir))
    from_file = generate(single, _params(), tmp_path / "a")[0]
    from_folder = generate(model, _params(), tmp_path / "b")[0]
    assert np.array_equal(_pixels(from_file.path), _pixels(from_folder.path))
    assert (
        parse_infotext(from_file.infotext).model_hash
        == hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:10]
    )


def test_lora_in_the_prompt_changes_the_image_and_is_recorded(model, tiny_dir, tmp_path):
    from curator.generation.extra_networks import ExtraNetworkError, lora_hash
    from tests.fixtures.tiny_pipeline import save_tiny_lora

    lora = save_tiny_lora(tiny_dir, tmp_path / "loras")
    plain = generate(model, _params(), tmp_path / "a")[0]
    dirs = [str(tmp_path / "loras")]
    with_lora = generate(
        model, _params(prompt="a cat <lora:tiny_lora:1>", lora_dirs=dirs), tmp_path / "b"
    )[0]
    assert not np.array_equal(_pixels(plain.path), _pixels(with_lora.path))
    info = parse_infotext(with_lora.infotext)
    assert info.prompt == "a cat <lora:tiny_lora:1>"
    assert info.params["Lora hashes"] == f"tiny_lora: {lora_hash(lora)}"
    # the tag is not encoded, and the LoRA is unloaded afterwards
    zero = generate(
        model, _params(prompt="a cat <lora:tiny_lora:0>", lora_dirs=dirs), tmp_path / "c"
    )[0]
    assert np.allclose(_pixels(zero.path), _pixels(plain.path), atol=1)
    again = generate(model, _params(), tmp_path / "d")[0]
    assert np.array_equal(_pixels(again.path), _pixels(plain.path))
    with pytest.raises(ExtraNetworkError, match="'missing' not found"):
        generate(model, _params(prompt="<lora:missing:1> a", lora_dirs=dirs), tmp_path / "e")


def test_textual_inversion_embedding_by_file_name(model, tmp_path):
    import torch
    from safetensors.torch import save_file

    from curator.generation.embeddings import load_embeddings

    folder = tmp_path / "embeddings"
    folder.mkdir()
    torch.manual_seed(3)
    save_file({"emb_params": torch.randn(2, 32) * 5}, str(folder / "tinyemb.safetensors"))
    pipe = model.pipeline
    db = load_embeddings([str(folder)], pipe.tokenizer, 32)
    chunk = tokenize_prompt(pipe.tokenizer, "a tinyemb cat", embeddings=db).chunks[0]
    a, cat = pipe.tokenizer(["a", "cat"], add_special_tokens=False)["input_ids"]
    assert chunk.tokens[1:5] == [a[0], 0, 0, cat[0]]  # two vectors in place of the name
    assert [offset for offset, _ in chunk.fixes] == [1]

    used: dict = {}
    with_emb = encode_texts(pipe.text_encoder, pipe.tokenizer, ["a tinyemb cat"], 1, db, used)
    without = encode_texts(pipe.text_encoder, pipe.tokenizer, ["a tinyemb cat"])
    assert not np.allclose(with_emb.numpy(), without.numpy())
    digest = hashlib.sha256((folder / "tinyemb.safetensors").read_bytes()).hexdigest()[:12]
    assert used == {"tinyemb": digest}

    image = generate(
        model, _params(prompt="a tinyemb cat", embeddings_dirs=[str(folder)]), tmp_path / "o"
    )[0]
    assert parse_infotext(image.infotext).params["TI hashes"] == f"tinyemb: {digest}"
