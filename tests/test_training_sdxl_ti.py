"""Textual inversion on SDXL: one new word in both text encoders, saved as A1111's
`clip_l`/`clip_g` embedding that the SDXL backend uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("diffusers")
pytest.importorskip("open_clip")

from curator.errors import UsageError  # noqa: E402
from curator.generation.generate import GenerationParams, generate  # noqa: E402
from curator.generation.loading import load_pipeline  # noqa: E402
from curator.training import sdxl, textual_inversion  # noqa: E402
from curator.training.textual_inversion import (  # noqa: E402
    TextualInversionOptions,
    initial_vectors,
    train_textual_inversion,
)
from tests.fixtures.tiny_sdxl import save_tiny_sdxl  # noqa: E402


@pytest.fixture(scope="module")
def xl_dir(tmp_path_factory) -> Path:
    import torch

    torch.set_num_threads(1)
    return save_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-xl")


def _data(root: Path) -> Path:
    images = root / "img" / "2_sksxl"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / f"{i}.png")
        (images / f"{i}.txt").write_text("sksxl, a cat, outdoors", encoding="utf-8")
    return root


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_sdxl_embedding_trains_both_encoders_and_the_backend_uses_it(xl_dir, tmp_path, monkeypatch):
    import torch
    from safetensors import safe_open

    held = {}
    load = textual_inversion.load_base

    def keep(options):  # hold the trained pipeline to compare its weights
        held["model"] = load(options)
        return held["model"]

    monkeypatch.setattr(textual_inversion, "load_base", keep)
    before = load_pipeline(str(xl_dir), device="cpu", half=False).pipeline
    options = TextualInversionOptions(
        base=str(xl_dir), data=str(_data(tmp_path / "d")), out=str(tmp_path / "emb"),
        steps=4, lr=5e-2, token="sksxl", init_text="a cat", vectors=2, device="cpu",
    )  # fmt: skip
    result = train_textual_inversion(options)
    path = tmp_path / "emb" / "sksxl.safetensors"
    assert result.outputs == [path] and len(result.losses) == 4
    with safe_open(str(path), "pt") as f:
        assert sorted(f.keys()) == ["clip_g", "clip_l"]
        saved = {key: f.get_tensor(key) for key in f.keys()}
        assert f.metadata()["step"] == "4"
    assert tuple(saved["clip_l"].shape) == (2, 32) and tuple(saved["clip_g"].shape) == (2, 48)

    # each encoder's vectors started from the init text in its own table and moved
    parts = (("clip_l", before.tokenizer, before.text_encoder),
             ("clip_g", before.tokenizer_2, before.text_encoder_2))  # fmt: skip
    for key, tokenizer, encoder in parts:
        start = initial_vectors(before, "a cat", 2, tokenizer, encoder)
        assert not torch.allclose(saved[key], start, atol=1e-4)
    # nothing else learned: the UNet, the VAE and every old row of both token tables
    after = held["model"].pipeline
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        old, new = getattr(before, name).state_dict(), getattr(after, name).state_dict()
        for key, value in old.items():
            if key.endswith("token_embedding.weight"):
                grown = new[key]
                assert grown.shape[0] == value.shape[0] + 2
                assert torch.equal(grown[: value.shape[0]], value), key
                assert torch.equal(
                    grown[value.shape[0] :], saved["clip_l" if name == "text_encoder" else "clip_g"]
                )
            else:
                assert torch.equal(new[key], value), f"{name}.{key}"

    model = load_pipeline(str(xl_dir), device="cpu")
    params = {"prompt": "sksxl, a cat", "steps": 3, "width": 32, "height": 32, "seed": 5}
    plain = generate(model, GenerationParams(**params), tmp_path / "p")[0]
    with_it = GenerationParams(**params, embeddings_dirs=[str(tmp_path / "emb")])
    used = generate(model, with_it, tmp_path / "u")[0]
    assert "TI hashes" in used.infotext and "sksxl" in used.infotext
    assert not np.array_equal(_pixels(plain.path), _pixels(used.path))


def test_sdxl_pt_format_is_refused_before_training(xl_dir, tmp_path):
    options = TextualInversionOptions(
        base=str(xl_dir), data=str(tmp_path / "missing"), out=str(tmp_path / "o"),
        token="sksxl", file_format="pt", device="cpu",
    )  # fmt: skip
    with pytest.raises(UsageError, match="clip_l/clip_g"):
        train_textual_inversion(options)


def test_pooled_output_stays_at_the_end_token_with_added_words(xl_dir):
    """Configs with the old end-token id 2 pool at the highest id, an added word's."""
    import copy

    import torch

    pipe = load_pipeline(str(xl_dir), device="cpu", half=False).pipeline
    expected = sdxl.encode(pipe, ["a cat"], "cpu", grad=False)["added_cond_kwargs"]
    tokenizer_1, tokenizer_2 = copy.deepcopy(pipe.tokenizer), copy.deepcopy(pipe.tokenizer_2)
    for tokenizer, encoder in (
        (tokenizer_1, pipe.text_encoder),
        (tokenizer_2, pipe.text_encoder_2),
    ):
        tokenizer.add_tokens(["<w-0>"])
        encoder.resize_token_embeddings(len(tokenizer))
    pipe.text_encoder_2.config.eos_token_id = 2
    inner = getattr(pipe.text_encoder_2, "text_model", pipe.text_encoder_2)
    inner.eos_token_id = 2
    out = sdxl.encode(
        pipe, ["a cat <w-0>"], "cpu", grad=False, tokenizers=(tokenizer_1, tokenizer_2)
    )
    ids = tokenizer_2(["a cat <w-0>"], padding="max_length", max_length=77, return_tensors="pt")
    position = ids.input_ids[0].tolist().index(tokenizer_2.eos_token_id)
    with torch.no_grad():
        states = pipe.text_encoder_2(ids.input_ids, output_hidden_states=True).last_hidden_state
        direct = pipe.text_encoder_2.text_projection(states[0, position])
    assert torch.allclose(out["added_cond_kwargs"]["text_embeds"][0], direct, atol=1e-5)
    assert expected["text_embeds"].shape == out["added_cond_kwargs"]["text_embeds"].shape


def test_the_backend_conditions_on_the_file_as_training_did(xl_dir, tmp_path):
    """The conditioning training optimised for "sksxl, a cat" is the one the SDXL
    backend computes from the saved file for the same prompt."""
    import copy

    import torch
    from safetensors.torch import load_file

    from curator.generation.sdxl import encode_sdxl, load_sdxl_embeddings

    options = TextualInversionOptions(
        base=str(xl_dir), data=str(_data(tmp_path / "d")), out=str(tmp_path / "emb"),
        steps=2, lr=5e-2, token="sksxl", init_text="a cat", vectors=2, device="cpu",
    )  # fmt: skip
    saved = load_file(str(train_textual_inversion(options).outputs[-1]))
    model = load_pipeline(str(xl_dir), device="cpu")
    used: dict = {}
    dbs = load_sdxl_embeddings(model.pipeline, [str(tmp_path / "emb")])
    states, pooled = encode_sdxl(model.pipeline, ["sksxl, a cat"], used=used, embeddings=dbs)
    assert list(used) == ["sksxl"]

    pipe = load_pipeline(str(xl_dir), device="cpu", half=False).pipeline
    grown = []
    for tokenizer, encoder, key in ((pipe.tokenizer, pipe.text_encoder, "clip_l"),
                                    (pipe.tokenizer_2, pipe.text_encoder_2, "clip_g")):  # fmt: skip
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.add_tokens(["<w-0>", "<w-1>"])
        encoder.resize_token_embeddings(len(tokenizer))
        with torch.no_grad():
            encoder.get_input_embeddings().weight[-2:] = saved[key]
        grown.append(tokenizer)
    trained = sdxl.encode(pipe, ["<w-0> <w-1>, a cat"], "cpu", grad=False, tokenizers=tuple(grown))
    assert torch.allclose(trained["encoder_hidden_states"], states, atol=1e-5)
    assert torch.allclose(trained["added_cond_kwargs"]["text_embeds"], pooled, atol=1e-5)
