"""SDXL: both text encoders with A1111's weighting and chunking, pooled output, size
conditioning, clip skip, loading from a folder and from one original-layout file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("diffusers")
pytest.importorskip("open_clip")

from curator.generation.generate import GenerationParams, generate  # noqa: E402
from curator.generation.loading import load_pipeline  # noqa: E402
from curator.generation.sdxl import encode_sdxl, is_sdxl  # noqa: E402
from curator.generation.tokenizer import tokenize_prompt  # noqa: E402
from curator.ingest.infotext import parse_infotext  # noqa: E402
from tests.fixtures.tiny_sdxl import save_tiny_sdxl, save_tiny_sdxl_single_file  # noqa: E402


@pytest.fixture(scope="module")
def xl_dir(tmp_path_factory) -> Path:
    import torch

    torch.set_num_threads(1)
    return save_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-xl")


@pytest.fixture(scope="module")
def xl(xl_dir):
    return load_pipeline(str(xl_dir), device="cpu")


def _params(**changes) -> GenerationParams:
    base = {"prompt": "a cat", "steps": 3, "width": 32, "height": 32, "seed": 5}
    return GenerationParams(**{**base, **changes})


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _spy_unet(model):
    """Record the UNet's text conditioning and added (pooled, time) conditioning."""
    seen: list[dict] = []
    unet = model.pipeline.unet
    original = unet.forward

    def spy(sample, timestep, encoder_hidden_states, *args, **kwargs):
        added = kwargs.get("added_cond_kwargs") or {}
        seen.append(
            {
                "states": encoder_hidden_states.clone(),
                "pooled": added["text_embeds"].clone(),
                "time_ids": added["time_ids"].clone(),
            }
        )
        return original(sample, timestep, encoder_hidden_states, *args, **kwargs)

    unet.forward = spy
    return seen, lambda: setattr(unet, "forward", original)


def test_folder_loads_as_sdxl_and_generates_deterministically(xl, tmp_path):
    assert is_sdxl(xl.pipeline)
    first = generate(xl, _params(batch_size=2), tmp_path / "a")
    again = generate(xl, _params(batch_size=2), tmp_path / "b")
    assert [i.seed for i in first] == [5, 6]
    for one, two in zip(first, again, strict=True):
        assert np.array_equal(_pixels(one.path), _pixels(two.path))
    assert not np.array_equal(_pixels(first[0].path), _pixels(first[1].path))
    info = parse_infotext(first[0].infotext)
    assert (info.width, info.height, info.model) == (32, 32, "tiny-xl")


def test_single_file_loads_and_matches_the_folder(xl, xl_dir, tmp_path):
    checkpoint = save_tiny_sdxl_single_file(xl_dir, tmp_path / "tiny-xl.safetensors")
    single = load_pipeline(str(checkpoint), device="cpu", config=str(xl_dir))
    assert is_sdxl(single.pipeline)
    from_file = generate(single, _params(), tmp_path / "a")[0]
    from_folder = generate(xl, _params(), tmp_path / "b")[0]
    assert np.array_equal(_pixels(from_file.path), _pixels(from_folder.path))
    assert parse_infotext(from_file.infotext).model_hash is not None


def test_both_encoders_penultimate_layers_and_first_chunk_pooled(xl):
    import torch

    pipe = xl.pipeline
    embeds, pooled = encode_sdxl(pipe, ["a cat"])
    assert embeds.shape == (1, 77, 32 + 48) and pooled.shape == (1, 48)
    ids = tokenize_prompt(pipe.tokenizer, "a cat").chunks[0].tokens
    with torch.no_grad():
        l_out = pipe.text_encoder(torch.tensor([ids]), output_hidden_states=True)
        # OpenCLIP-G's tokens: padding after the first end token is "!" (id 0)
        end = ids.index(49407)
        g_ids = ids[: end + 1] + [0] * (76 - end)
        g_out = pipe.text_encoder_2(torch.tensor([g_ids]), output_hidden_states=True)
    assert torch.allclose(embeds[..., :32], l_out.hidden_states[-2], atol=1e-5)
    assert torch.allclose(embeds[..., 32:], g_out.hidden_states[-2], atol=1e-5)
    assert torch.allclose(pooled, g_out.text_embeds, atol=1e-5)
    # past 75 tokens: two chunks for both encoders, the pooled vector from the first
    long, long_pooled = encode_sdxl(pipe, [" ".join(["cat"] * 80)])
    assert long.shape == (1, 154, 80)
    _, first_pooled = encode_sdxl(pipe, [" ".join(["cat"] * 75)])
    assert torch.allclose(long_pooled, first_pooled, atol=1e-6)


def test_weighting_applies_to_both_encoders_and_keeps_each_mean(xl):
    pipe = xl.pipeline
    plain, plain_pooled = encode_sdxl(pipe, ["a cat"])
    heavy, heavy_pooled = encode_sdxl(pipe, ["a (cat:1.5)"])
    assert np.allclose(plain_pooled.numpy(), heavy_pooled.numpy())  # pooled is unweighted
    for part in (slice(0, 32), slice(32, 80)):
        p, h = plain[..., part], heavy[..., part]
        assert float(h.mean()) == pytest.approx(float(p.mean()), abs=1e-5)
        ratio = (h[0, 2] / p[0, 2]) / (h[0, 1] / p[0, 1])
        assert np.allclose(ratio.numpy(), 1.5, rtol=1e-3)


def test_clip_skip_changes_only_clip_l(xl):
    pipe = xl.pipeline
    base, _ = encode_sdxl(pipe, ["a cat"])
    skipped, _ = encode_sdxl(pipe, ["a cat"], clip_skip=3)
    assert not np.allclose(base[..., :32].numpy(), skipped[..., :32].numpy())
    assert np.allclose(base[..., 32:].numpy(), skipped[..., 32:].numpy())


def test_size_conditioning_pooled_and_zero_negative(xl, tmp_path):
    seen, restore = _spy_unet(xl)
    try:
        generate(xl, _params(width=48, height=32, cfg_scale=5), tmp_path)
    finally:
        restore()
    step = seen[0]
    # classifier-free guidance: [negative, positive]; an empty negative is all zeros
    assert step["time_ids"].tolist() == [[32, 48, 0, 0, 32, 48]] * 2
    assert float(step["states"][0].abs().max()) == 0 and float(step["pooled"][0].abs().max()) == 0
    _, pooled = encode_sdxl(xl.pipeline, ["a cat"])
    assert np.allclose(step["pooled"][1:].numpy(), pooled.numpy(), atol=1e-6)


def test_prompt_editing_switches_states_and_pooled(xl, tmp_path):
    seen, restore = _spy_unet(xl)
    try:
        generate(xl, _params(prompt="a [cat:dog:2]", steps=4, cfg_scale=1), tmp_path)
    finally:
        restore()
    cat, cat_pooled = encode_sdxl(xl.pipeline, ["a cat"])
    dog, dog_pooled = encode_sdxl(xl.pipeline, ["a dog"])
    states = [s["states"] for s in seen]
    pooled = [s["pooled"] for s in seen]
    # A1111: steps 0, 1, 2 (counted from 0) use "cat"; step 3 uses "dog"
    assert [np.allclose(s.numpy(), cat.numpy(), atol=1e-6) for s in states] == [1, 1, 1, 0]
    assert [np.allclose(s.numpy(), dog.numpy(), atol=1e-6) for s in states] == [0, 0, 0, 1]
    assert np.allclose(pooled[0].numpy(), cat_pooled.numpy(), atol=1e-6)
    assert np.allclose(pooled[3].numpy(), dog_pooled.numpy(), atol=1e-6)


def test_hires_fix_img2img_and_inpaint_on_sdxl(xl, tmp_path):
    hires = generate(xl, _params(hr_scale=2, denoising_strength=0.5, steps=2), tmp_path / "h")
    assert Image.open(hires[0].path).size == (64, 64)
    source, mask = tmp_path / "init.png", tmp_path / "mask.png"
    Image.new("RGB", (32, 32), (30, 120, 200)).save(source)
    square = Image.new("L", (32, 32), 0)
    square.paste(255, (8, 8, 24, 24))
    square.save(mask)
    img2img = generate(xl, _params(init_image=str(source), steps=2), tmp_path / "i")[0]
    assert Image.open(img2img.path).size == (32, 32)
    params = _params(init_image=str(source), mask_image=str(mask), mask_blur=0, steps=2)
    out = _pixels(generate(xl, params, tmp_path / "m")[0].path).astype(int)
    assert np.array_equal(out[:6], np.asarray(Image.open(source))[:6])
    assert np.abs(out[10:22, 10:22] - [30, 120, 200]).mean() > 5


def test_sdxl_embedding_feeds_each_encoder_its_part(xl, tmp_path):
    import torch
    from safetensors.torch import save_file

    from curator.generation.sdxl import load_sdxl_embeddings

    torch.manual_seed(0)
    folder = tmp_path / "embeddings"
    folder.mkdir()
    save_file(
        {"clip_l": torch.randn(2, 32), "clip_g": torch.randn(2, 48)},
        str(folder / "xlsty.safetensors"),
    )
    save_file({"emb_params": torch.randn(1, 32)}, str(folder / "sd1only.safetensors"))
    dbs = load_sdxl_embeddings(xl.pipeline, [str(folder)])
    used: dict = {}
    with_embedding, _ = encode_sdxl(xl.pipeline, ["a xlsty"], used=used, embeddings=dbs)
    plain, _ = encode_sdxl(xl.pipeline, ["a xlsty"])
    assert list(used) == ["xlsty"]
    for part in (slice(0, 32), slice(32, 80)):
        assert not np.allclose(with_embedding[..., part].numpy(), plain[..., part].numpy())
    image = generate(xl, _params(prompt="a xlsty", embeddings_dirs=[str(folder)]), tmp_path / "o")[
        0
    ]
    assert "xlsty: " in parse_infotext(image.infotext).params["TI hashes"]


def test_lora_in_an_sdxl_prompt(xl, xl_dir, tmp_path):
    from tests.fixtures.tiny_sdxl import save_tiny_sdxl_lora

    folder = tmp_path / "loras"
    save_tiny_sdxl_lora(xl_dir, folder)
    plain = generate(xl, _params(), tmp_path / "a")[0]
    params = _params(prompt="a cat <lora:xl_lora:0.7:0.3>", lora_dirs=[str(folder)])
    with_lora = generate(xl, params, tmp_path / "b")[0]
    assert not np.array_equal(_pixels(plain.path), _pixels(with_lora.path))
    assert parse_infotext(with_lora.infotext).params["Lora hashes"].startswith("xl_lora: ")
    # unloaded after the run: the next image is the plain one again
    again = generate(xl, _params(), tmp_path / "c")[0]
    assert np.array_equal(_pixels(plain.path), _pixels(again.path))
