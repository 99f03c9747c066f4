"""Training on the tiny pipeline: kohya data, buckets, LoRA and textual inversion files
that load back into the generation backend, data errors, cancellation, catalogued runs."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("diffusers")
pytest.importorskip("peft")
pytest.importorskip("open_clip")

from curator.cli import main  # noqa: E402
from curator.errors import Cancelled, UsageError  # noqa: E402
from curator.generation.generate import GenerationParams, generate  # noqa: E402
from curator.generation.loading import load_pipeline  # noqa: E402
from curator.progress import CancelToken, NullReporter  # noqa: E402
from curator.training.data import load_dataset  # noqa: E402
from curator.training.lora import LoraOptions, train_lora  # noqa: E402
from curator.training.textual_inversion import (  # noqa: E402
    TextualInversionOptions,
    train_textual_inversion,
)


def make_data(
    root: Path,
    sizes: list[tuple[int, int]],
    repeats: int = 1,
    captions: bool = True,
    folder: str = "sks cat",
) -> Path:
    images = root / "img" / f"{repeats}_{folder}"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(sizes))
    for i, (w, h) in enumerate(sizes):
        pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i:03d}.png")
        if captions:
            (images / f"{i:03d}.txt").write_text(f"sks cat, tag{i % 2}, outdoors", encoding="utf-8")
    return root


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _params(**changes) -> GenerationParams:
    base = {"prompt": "a cat", "steps": 3, "width": 32, "height": 32, "seed": 5}
    return GenerationParams(**{**base, **changes})


def _fixed_loss(pipe, data: Path, prompt: str, tokenizer=None) -> float:
    """The denoising loss on fixed noise and timesteps (the same draw every call)."""
    import torch

    from curator.training.loop import denoising_loss, noise_scheduler_for, pixel_batch, token_ids

    dataset = load_dataset(data)
    pixels = pixel_batch(dataset.examples[:1], "cpu").repeat(8, 1, 1, 1)
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        ids = token_ids(tokenizer or pipe.tokenizer, [prompt] * 8, "cpu")
        hidden = pipe.text_encoder(ids)[0]
        return float(denoising_loss(pipe, noise_scheduler_for(pipe), pixels, hidden, generator))


# --- data ----------------------------------------------------------------------------


def test_buckets_keep_batches_single_sized_and_repeats_count(tmp_path):
    data = make_data(tmp_path, [(32, 32)] * 3 + [(48, 32)] * 5, repeats=2)
    dataset = load_dataset(data)
    batches = dataset.epoch_batches(2, random.Random(0))
    assert all(len({e.size for e in batch}) == 1 for batch in batches)
    seen = [e.path.name for batch in batches for e in batch]
    assert sorted(seen) == sorted(e.path.name for e in dataset.examples for _ in range(2))
    assert dataset.bucket_info()["buckets"] == {
        "0": {"resolution": [32, 32], "count": 6},
        "1": {"resolution": [48, 32], "count": 10},
    }
    assert dataset.tag_frequency() == {
        "2_sks cat": {"sks cat": 8, "tag0": 4, "tag1": 4, "outdoors": 8}
    }


def test_regularization_images_fill_as_many_places_as_training_images(tmp_path):
    data = make_data(tmp_path, [(32, 32)] * 2, repeats=2)
    reg = tmp_path / "reg" / "1_cat"
    reg.mkdir(parents=True)
    for i in range(5):
        Image.new("RGB", (32, 32), (i, 0, 0)).save(reg / f"r{i}.png")  # no captions needed
    dataset = load_dataset(data)
    pool = dataset.epoch_pool(random.Random(0))
    assert (dataset.train_count, dataset.reg_count) == (4, 5)
    assert sum(e.is_reg for e in pool) == 4 and {e.caption for e in pool if e.is_reg} == {"cat"}
    assert load_dataset(data, reg=False).reg_count == 0


def test_keep_tokens_stay_first_when_captions_shuffle(tmp_path):
    data = make_data(tmp_path, [(32, 32)])
    (data / "dataset.toml").write_text(
        '[general]\nshuffle_caption = true\nkeep_tokens = 1\ncaption_extension = ".txt"\n'
    )
    dataset = load_dataset(data)
    rng = random.Random(0)
    captions = {dataset.caption_for_step(dataset.examples[0], rng) for _ in range(20)}
    assert len(captions) > 1 and all(c.startswith("sks cat, ") for c in captions)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: make_data(p, [], captions=True), "no images"),
        (lambda p: make_data(p, [(32, 32)], captions=False), "no caption file"),
        (lambda p: make_data(p, [(32, 32), (48, 32)]), "fewer than --batch-size 2"),
        (lambda p: p, "not a training set Curator can read: found nothing"),
    ],
)
def test_data_that_cannot_train_is_one_line_before_loading(tmp_path, setup, message):
    data = setup(tmp_path / "d")
    (tmp_path / "d").mkdir(exist_ok=True)
    result = CliRunner().invoke(
        main,
        ["--db", str(tmp_path / "c.db"), "train", "lora", "--base", str(tmp_path / "none"),
         "--data", str(data), "--out", str(tmp_path / "o"), "--batch-size", "2"],
    )  # fmt: skip
    assert result.exit_code != 0
    assert result.output.startswith("error: ") and message in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


# --- LoRA ----------------------------------------------------------------------------


def test_lora_keys_are_kohyas_and_metadata_describes_the_training(tiny_dir, tmp_path):
    import torch
    from safetensors import safe_open

    data = make_data(tmp_path / "d", [(32, 32)] * 2 + [(48, 32)] * 2)
    reg = data / "reg" / "1_cat"
    reg.mkdir(parents=True)
    Image.new("RGB", (32, 32), "gray").save(reg / "r.png")
    Image.new("RGB", (32, 32), "white").save(reg / "s.png")
    options = LoraOptions(
        base=str(tiny_dir), data=str(data), out=str(tmp_path / "o"), steps=4, batch_size=2,
        rank=2, alpha=1.0, device="cpu", train_text_encoder=True, save_every=2,
        prior_loss_weight=0.5, lr=1e-4, lr_scheduler="linear", lr_warmup_steps=2,
    )  # fmt: skip
    result = train_lora(options)
    assert [p.name for p in result.outputs] == ["lora-000002.safetensors", "lora.safetensors"]
    pipe = load_pipeline(str(tiny_dir), device="cpu").pipeline
    # what sd-scripts' LoRANetwork trains and names (prefix + module path, '.' → '_'):
    # the transformer blocks' attention, feed-forward, proj_in and proj_out
    expected = {
        "lora_unet_" + name.replace(".", "_")
        for name, _ in pipe.unet.named_modules()
        if name.endswith((".to_q", ".to_k", ".to_v", ".to_out.0", ".ff.net.0.proj", ".ff.net.2"))
        or re.search(r"attentions\.\d+\.proj_(in|out)$", name)
    } | {  # the text encoder's attention and MLP, as transformers 4 paths (sd-scripts, A1111)
        f"lora_te_text_model_encoder_layers_{i}_{p}"
        for i in range(3)
        for p in ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj",
                  "self_attn_out_proj", "mlp_fc1", "mlp_fc2")
    }  # fmt: skip
    assert len(expected) == 4 * 12 + 3 * 6  # the tiny UNet has four attention blocks
    with safe_open(str(result.outputs[-1]), "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
        assert f.get_tensor(next(k for k in keys if k.endswith(".alpha"))).shape == torch.Size([])
        down = f.get_tensor(next(k for k in keys if k.endswith(".lora_down.weight")))
    assert keys == {
        f"{m}.{s}" for m in expected for s in ("lora_down.weight", "lora_up.weight", "alpha")
    }
    assert down.shape[0] == 2
    assert meta["ss_network_module"] == "networks.lora" and "ss_network_args" not in meta
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("2", "1.0")
    assert json.loads(meta["ss_tag_frequency"])["1_sks cat"]["sks cat"] == 4
    buckets = json.loads(meta["ss_bucket_info"])["buckets"]
    # 32x32: 2 training images + the 2 reg images twice (as many as training images)
    assert [b["count"] for b in buckets.values()] == [6, 2]
    assert (meta["ss_num_train_images"], meta["ss_num_reg_images"]) == ("4", "2")
    assert meta["ss_dataset_hash"] == result.data_hash and len(meta["ss_new_sd_model_hash"]) == 64
    assert (meta["ss_max_train_steps"], meta["ss_steps"], meta["ss_seed"]) == ("4", "4", "0")
    # the hash A1111 shows is sd-scripts' hash of the tensor data after the header
    raw = result.outputs[-1].read_bytes()
    header = int.from_bytes(raw[:8], "little")
    assert meta["sshs_model_hash"] == hashlib.sha256(raw[8 + header :]).hexdigest()
    assert (meta["ss_lr_scheduler"], meta["ss_lr_warmup_steps"]) == ("linear", "2")
    lines = result.loss_log.read_text().splitlines()
    assert lines[0].startswith("step,epoch,loss,lr") and len(lines) == 5
    # warm-up from 0 over 2 steps, then linear decay towards 0 at step 4
    assert [float(line.split(",")[3]) for line in lines[1:]] == [0.0, 5e-5, 1e-4, 5e-5]


def test_conv_dim_trains_the_resnet_convolutions_as_locon(tiny_dir, tmp_path):
    """--conv-dim adds sd-scripts' LoCon layers: the ResNet blocks' 3x3 convolutions and
    the down/upsamplers at conv_dim and conv_alpha, their 1x1 shortcuts and time
    projections at the network rank; diffusers (the backend) loads every one."""
    from safetensors import safe_open

    data = make_data(tmp_path / "d", [(32, 32)])
    options = LoraOptions(
        base=str(tiny_dir), data=str(data), out=str(tmp_path / "o"), steps=2, rank=2,
        alpha=1.0, conv_dim=3, conv_alpha=2.0, device="cpu", lr=1e-2,
    )  # fmt: skip
    result = train_lora(options)
    with safe_open(str(result.outputs[-1]), "pt") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
        meta = f.metadata()
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "3", "conv_alpha": "2"}
    down = tensors["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"]
    up = tensors["lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight"]
    assert down.shape[0] == 3 and down.shape[2:] == (3, 3) and up.shape[2:] == (1, 1)
    assert float(tensors["lora_unet_down_blocks_0_resnets_0_conv1.alpha"]) == 2.0
    for layer in ("down_blocks_0_downsamplers_0_conv", "up_blocks_0_upsamplers_0_conv"):
        assert tensors[f"lora_unet_{layer}.lora_down.weight"].shape[0] == 3
    assert tensors["lora_unet_down_blocks_0_resnets_0_time_emb_proj.lora_down.weight"].dim() == 2
    assert float(tensors["lora_unet_down_blocks_0_resnets_0_time_emb_proj.alpha"]) == 1.0
    shortcut = [k for k in tensors if k.endswith("conv_shortcut.lora_down.weight")]
    assert shortcut and all(tensors[k].shape[0] == 2 for k in shortcut)

    model = load_pipeline(str(tiny_dir), device="cpu")
    plain = generate(model, _params(), tmp_path / "plain")[0]
    model.pipeline.load_lora_weights(str(result.outputs[-1]))
    wrapped = [n for n, m in model.pipeline.unet.named_modules() if hasattr(m, "lora_A")]
    assert len(wrapped) == len({k.split(".")[0] for k in tensors})
    model.pipeline.unload_lora_weights()
    params = _params(prompt="a cat <lora:lora:1>", lora_dirs=[str(tmp_path / "o")])
    styled = generate(model, params, tmp_path / "styled")[0]
    assert not np.array_equal(_pixels(plain.path), _pixels(styled.path))
    # resuming keeps the same layers, and a different conv_dim is refused in one line
    with pytest.raises(UsageError, match="--conv-dim"):
        train_lora(
            LoraOptions(**{**options.__dict__, "out": str(tmp_path / "r"), "conv_dim": 4,
                           "steps": 3, "resume": str(result.outputs[-1])})
        )  # fmt: skip


def test_lora_learns_and_changes_what_the_backend_generates(tiny_dir, tmp_path):
    data = make_data(tmp_path / "d", [(32, 32)])
    options = LoraOptions(
        base=str(tiny_dir), data=str(data), out=str(tmp_path / "loras"), steps=25,
        lr=1e-2, rank=4, alpha=4.0, device="cpu", name="sks_style",
    )  # fmt: skip
    result = train_lora(options)
    again = train_lora(LoraOptions(**{**options.__dict__, "out": str(tmp_path / "again")}))
    assert result.losses == again.losses  # the same seed trains the same way

    model = load_pipeline(str(tiny_dir), device="cpu")
    before = _fixed_loss(model.pipeline, data, "sks cat, tag0, outdoors")
    plain = generate(model, _params(), tmp_path / "plain")[0]
    params = _params(prompt="a cat <lora:sks_style:1>", lora_dirs=[str(tmp_path / "loras")])
    styled = generate(model, params, tmp_path / "styled")[0]
    assert not np.array_equal(_pixels(plain.path), _pixels(styled.path))
    assert 'Lora hashes: "sks_style: ' in styled.infotext
    model.pipeline.load_lora_weights(str(result.outputs[-1]))
    assert _fixed_loss(model.pipeline, data, "sks cat, tag0, outdoors") < before * 0.97


def test_cancelling_saves_the_weights_so_far_and_records_the_run(tiny_dir, tmp_path):
    from db import open_catalog
    from db.schema import Run

    token = CancelToken()

    class CancelAfterTwo(NullReporter):
        done = 0

        def advance(self, n: int = 1) -> None:
            self.done += n
            if self.done == 2:
                token.cancel()

    catalog = open_catalog(str(tmp_path / "c.db"))
    options = LoraOptions(
        base=str(tiny_dir), data=str(make_data(tmp_path / "d", [(32, 32)])),
        out=str(tmp_path / "o"), steps=50, device="cpu", reporter=CancelAfterTwo(), cancel=token,
    )  # fmt: skip
    with pytest.raises(Cancelled, match="step 2"):
        train_lora(options, catalog)
    assert (tmp_path / "o" / "lora-000002.safetensors").is_file()
    with catalog.session() as session:
        run = session.query(Run).one()
        assert (run.kind, run.status) == ("train", "cancelled")
        assert run.counts["outputs"] == [str(tmp_path / "o" / "lora-000002.safetensors")]
    catalog.close()


def test_cli_train_lora_records_the_run(tiny_dir, tmp_path):
    from db import open_catalog
    from db.schema import Run

    data = make_data(tmp_path / "d", [(32, 32)] * 2)
    result = CliRunner().invoke(
        main,
        ["--db", str(tmp_path / "c.db"), "train", "lora", "--base", str(tiny_dir),
         "--data", str(data), "--out", str(tmp_path / "o"), "--steps", "2", "--rank", "2",
         "--lr", "1e-3", "--device", "cpu", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["outputs"] == [str(tmp_path / "o" / "lora.safetensors")]
    catalog = open_catalog(str(tmp_path / "c.db"))
    with catalog.session() as session:
        run = session.get(Run, report["run_id"])
        assert (run.kind, run.status, run.model) == ("train", "finished", str(tiny_dir))
        assert run.params["method"] == "lora" and run.params["rank"] == 2
        assert run.params["lr"] == 1e-3 and run.params["data_hash"] == report["data_hash"]
        assert run.counts["outputs"] == report["outputs"] and run.counts["steps"] == 2
    catalog.close()


# --- textual inversion -----------------------------------------------------------------


def test_textual_inversion_saves_a1111_embedding_that_the_backend_uses(tiny_dir, tmp_path):
    from safetensors import safe_open

    data = make_data(tmp_path / "d", [(32, 32)])
    options = TextualInversionOptions(
        base=str(tiny_dir), data=str(data), out=str(tmp_path / "emb"), steps=25, lr=5e-2,
        token="sksemb", init_text="a cat", vectors=2, device="cpu",
    )  # fmt: skip
    result = train_textual_inversion(options)
    path = tmp_path / "emb" / "sksemb.safetensors"
    assert result.outputs == [path]
    with safe_open(str(path), "pt") as f:
        assert list(f.keys()) == ["emb_params"]
        vectors = f.get_tensor("emb_params")
    assert tuple(vectors.shape) == (2, 32)

    model = load_pipeline(str(tiny_dir), device="cpu")
    # the learned vectors moved away from the init text's embeddings
    table = model.pipeline.text_encoder.get_input_embeddings().weight
    init_ids = model.pipeline.tokenizer("a cat", add_special_tokens=False).input_ids
    assert not np.allclose(vectors.numpy(), table[init_ids].detach().numpy(), atol=1e-4)
    plain = generate(model, _params(prompt="sksemb, a cat"), tmp_path / "p")[0]
    params = _params(prompt="sksemb, a cat", embeddings_dirs=[str(tmp_path / "emb")])
    used = generate(model, params, tmp_path / "u")[0]
    assert "TI hashes" in used.infotext and "sksemb" in used.infotext
    assert not np.array_equal(_pixels(plain.path), _pixels(used.path))
    # the frozen vocabulary stayed as it was: training only touched the new rows
    assert len(model.pipeline.tokenizer) == 49408


def test_textual_inversion_learns_on_a_fixed_draw(tiny_dir, tmp_path):
    import copy

    import torch
    from safetensors.torch import load_file

    from curator.training.textual_inversion import initial_vectors

    data = make_data(tmp_path / "d", [(32, 32)])
    options = TextualInversionOptions(
        base=str(tiny_dir), data=str(data), out=str(tmp_path / "emb"), steps=25, lr=5e-2,
        token="sksemb", init_text="a cat", vectors=1, device="cpu",
    )  # fmt: skip
    result = train_textual_inversion(options)
    learned = load_file(str(result.outputs[-1]))["emb_params"]
    pipe = load_pipeline(str(tiny_dir), device="cpu").pipeline
    start = initial_vectors(pipe, "a cat", 1)
    tokenizer = copy.deepcopy(pipe.tokenizer)
    tokenizer.add_tokens(["sksemb"])
    pipe.text_encoder.resize_token_embeddings(len(tokenizer))
    table = pipe.text_encoder.get_input_embeddings().weight
    row = tokenizer.convert_tokens_to_ids("sksemb")
    prompt = "sksemb, sks cat, tag0, outdoors"  # as training spelled the caption
    losses = []
    for vectors in (start, learned):
        with torch.no_grad():
            table[row] = vectors[0]
        losses.append(_fixed_loss(pipe, data, prompt, tokenizer))
    assert losses[1] < losses[0]


def test_textual_inversion_trains_a_word_the_vocabulary_has_and_refuses_two_words(
    tiny_dir, tmp_path
):
    data = make_data(tmp_path / "d", [(32, 32)])
    args = [
        "--db",
        str(tmp_path / "c.db"),
        "train",
        "textual-inversion",
        "--base",
        str(tiny_dir),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "o"),
        "--steps",
        "1",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(main, [*args, "--token", "cat"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "cat.safetensors").is_file()
    result = CliRunner().invoke(main, [*args, "--token", "two words"])
    assert result.exit_code == 2 and result.output.startswith("error: --token must be one word")
    result = CliRunner().invoke(main, [*args, "--token", "cat", "--name", "dog"])
    assert result.exit_code == 2 and "name it with --token" in result.output


def test_cli_textual_inversion_from_a_single_file_base(tiny_dir, tmp_path):
    from db import open_catalog
    from db.schema import Run
    from tests.fixtures.tiny_pipeline import save_tiny_single_file

    checkpoint = save_tiny_single_file(tiny_dir, tmp_path / "tiny.safetensors")
    data = make_data(tmp_path / "d", [(32, 32)])
    result = CliRunner().invoke(
        main,
        ["--db", str(tmp_path / "c.db"), "train", "textual-inversion", "--base", str(checkpoint),
         "--config", str(tiny_dir), "--data", str(data), "--out", str(tmp_path / "emb"),
         "--token", "skstok", "--vectors", "3", "--steps", "2", "--device", "cpu", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["outputs"] == [str(tmp_path / "emb" / "skstok.safetensors")]
    catalog = open_catalog(str(tmp_path / "c.db"))
    with catalog.session() as session:
        run = session.get(Run, report["run_id"])
        assert (run.kind, run.status) == ("train", "finished")
        assert run.params["method"] == "textual-inversion"
        assert (run.params["token"], run.params["vectors"]) == ("skstok", 3)
    catalog.close()


def test_first_ctrl_c_asks_to_stop_and_the_second_interrupts():
    import os
    import signal

    from curator.cli.train import _ctrl_c_cancels

    token = CancelToken()
    previous = signal.getsignal(signal.SIGINT)
    with _ctrl_c_cancels(token):
        os.kill(os.getpid(), signal.SIGINT)
        assert token.cancelled
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is previous


def test_cached_latents_encode_each_image_once(tiny_dir, tmp_path, monkeypatch):
    from diffusers import AutoencoderKL

    encoded = []
    original = AutoencoderKL.encode

    def counting(self, pixels, *args, **kwargs):
        encoded.append(pixels.shape[0])
        return original(self, pixels, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "encode", counting)
    data = make_data(tmp_path / "d", [(32, 32), (32, 32)], repeats=3)
    common = {"base": str(tiny_dir), "data": str(data), "steps": 6, "device": "cpu"}
    result = train_lora(LoraOptions(**common, out=str(tmp_path / "a"), cache_latents=True))
    assert sum(encoded) == 2 and np.isfinite(result.losses).all()
    encoded.clear()
    train_lora(LoraOptions(**common, out=str(tmp_path / "b")))
    assert sum(encoded) == 6


def test_a1111_pt_embedding_holds_only_what_its_restricted_loader_admits(tiny_dir, tmp_path):
    import pickletools
    import re
    import zipfile

    import torch

    from curator.generation.embeddings import load_embeddings

    data = make_data(tmp_path / "d", [(32, 32)])
    options = TextualInversionOptions(
        base=str(tiny_dir), data=str(data), out=str(tmp_path / "emb"), steps=2,
        token="skspt", vectors=2, device="cpu", file_format="pt",
    )  # fmt: skip
    path = train_textual_inversion(options).outputs[-1]
    assert path.name == "skspt.pt"
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickled = archive.read(next(n for n in names if n.endswith("/data.pkl")))
    # A1111 (modules/safe.py) admits only these entries and these globals
    assert all(re.match(r"^([^/]+)/((data/\d+)|version|(data\.pkl))$", n) for n in names)
    globals_used = {a for op, a, _ in pickletools.genops(pickled) if op.name == "GLOBAL"}
    assert globals_used <= {
        "torch._utils _rebuild_tensor_v2", "torch FloatStorage", "collections OrderedDict",
    }  # fmt: skip
    saved = torch.load(path, weights_only=True)
    assert saved["string_to_token"] == {"*": 265} and saved["name"] == "skspt"
    assert saved["step"] == 2 and saved["sd_checkpoint_name"] == "tiny"
    assert tuple(saved["string_to_param"]["*"].shape) == (2, 32)
    pipe = load_pipeline(str(tiny_dir), device="cpu").pipeline
    db = load_embeddings([str(tmp_path / "emb")], pipe.tokenizer, 32, allow_pickle=True)
    assert db


def test_a_loss_that_blows_up_stops_with_one_line(tiny_dir, tmp_path):
    data = make_data(tmp_path / "d", [(32, 32)])
    result = CliRunner().invoke(
        main,
        ["--db", str(tmp_path / "c.db"), "train", "lora", "--base", str(tiny_dir),
         "--data", str(data), "--out", str(tmp_path / "o"), "--steps", "30", "--lr", "1e30",
         "--alpha", "4", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: the loss became") and "lower --lr" in result.output


def test_resume_continues_the_step_count_from_a_saved_lora(tiny_dir, tmp_path):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    data = make_data(tmp_path / "d", [(32, 32)])
    common = {"base": str(tiny_dir), "data": str(data), "device": "cpu", "lr": 1e-2, "rank": 2}
    first = train_lora(LoraOptions(**common, out=str(tmp_path / "o"), steps=4, save_every=2))
    saved = tmp_path / "o" / "lora-000002.safetensors"
    resumed = train_lora(LoraOptions(**common, out=str(tmp_path / "r"), steps=4, resume=str(saved)))
    assert len(resumed.losses) == 2 and len(first.losses) == 4
    steps = [line.split(",")[0] for line in resumed.loss_log.read_text().splitlines()]
    assert steps == ["step", "3", "4"]
    with safe_open(str(resumed.outputs[-1]), "pt") as f:
        assert f.metadata()["ss_steps"] == "4"
    # the saved weights are where training picks up: with a vanishing rate they stay
    still = train_lora(
        LoraOptions(**{**common, "lr": 1e-12}, out=str(tmp_path / "s"), steps=4, resume=str(saved))
    )
    before, after = load_file(str(saved)), load_file(str(still.outputs[-1]))
    assert before.keys() == after.keys()
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    assert any(before[k].abs().max() > 0 for k in before if "lora_up" in k)
    with pytest.raises(Exception, match="alpha"):
        train_lora(
            LoraOptions(**common, out=str(tmp_path / "x"), steps=4, alpha=2.0, resume=str(saved))
        )
    with pytest.raises(Exception, match="more than that"):
        train_lora(LoraOptions(**common, out=str(tmp_path / "x"), steps=2, resume=str(saved)))
