"""DreamBooth on the tiny pipeline: prior preservation with class images generated once
and reused, a full fine-tune that learns, and a checkpoint in the original Stable
Diffusion key layout that loads back (diffusers' from_single_file, then the backend)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("diffusers")

from curator.cli import main  # noqa: E402
from curator.generation.generate import GenerationParams, generate  # noqa: E402
from curator.generation.loading import load_pipeline  # noqa: E402
from curator.training.dreambooth import DreamBoothOptions, train_dreambooth  # noqa: E402
from tests.test_training import _fixed_loss, make_data  # noqa: E402


def _options(tiny_dir: Path, data: Path, out: Path, **changes) -> DreamBoothOptions:
    values = {
        "base": str(tiny_dir),
        "data": str(data),
        "out": str(out),
        "steps": 2,
        "lr": 1e-3,
        "device": "cpu",
        "resolution": 32,
        "class_steps": 2,
    }
    return DreamBoothOptions(**{**values, **changes})


def test_prior_preservation_generates_missing_class_images_once_then_reuses_them(
    tiny_dir, tmp_path
):
    from sqlalchemy import func, select

    from db import open_catalog
    from db.schema import GeneratedBy, Run

    data = make_data(tmp_path / "d", [(32, 32)] * 2)
    classes = tmp_path / "class"
    classes.mkdir()
    Image.new("RGB", (32, 32), "gray").save(classes / "mine.png")  # a class image already there
    catalog = open_catalog(str(tmp_path / "c.db"))
    options = _options(
        tiny_dir, data, tmp_path / "o", class_prompt="a photo of a cat",
        class_data=str(classes), num_class_images=3, prior_loss_weight=0.5,
    )  # fmt: skip
    first = train_dreambooth(options, catalog)
    assert [p.name for p in first.generated] == ["00000-1.png", "00001-2.png"]  # seeds 1, 2
    for path in first.generated:
        with Image.open(path) as image:
            assert image.size == (32, 32)
            infotext = image.info["parameters"]
        assert infotext.startswith("a photo of a cat\n") and "Steps: 2" in infotext
        assert path.with_suffix(".txt").read_text().strip() == "a photo of a cat"
    stamps = {p: p.stat().st_mtime_ns for p in classes.iterdir()}

    again = DreamBoothOptions(**{**options.__dict__, "out": str(tmp_path / "o2")})
    second = train_dreambooth(again)
    assert second.generated == []
    assert {p: p.stat().st_mtime_ns for p in classes.iterdir()} == stamps  # untouched
    with catalog.session() as session:
        assert session.scalar(select(func.count()).select_from(GeneratedBy)) == 2
        run = session.scalar(select(Run).where(Run.kind == "train"))
        assert run.params["method"] == "dreambooth" and run.params["class_images"] == 3
        assert run.counts["reg_images"] == 3 and run.status == "finished"
    catalog.close()


def test_dreambooth_learns_and_its_checkpoint_loads_back_in_the_original_layout(tiny_dir, tmp_path):
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    data = make_data(tmp_path / "d", [(32, 32)])
    options = _options(
        tiny_dir, data, tmp_path / "o", steps=20, save_every=10, train_text_encoder=True,
        instance_prompt="photo of sks cat", name="sks",
    )  # fmt: skip
    result = train_dreambooth(options)
    out = tmp_path / "o"
    assert result.outputs == [out / "sks-000010.safetensors", out / "sks.safetensors", out / "sks"]

    base = load_pipeline(str(tiny_dir), device="cpu").pipeline
    trained = load_pipeline(str(out / "sks"), device="cpu").pipeline  # the diffusers folder
    prompt = "photo of sks cat"
    assert _fixed_loss(trained, data, prompt) < _fixed_loss(base, data, prompt) * 0.9

    with safe_open(str(out / "sks.safetensors"), "pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert meta["modelspec.architecture"] == "stable-diffusion-v1"
    assert {k.split(".")[0] for k in keys} == {"model", "first_stage_model", "cond_stage_model"}
    assert len(keys) == sum(len(m.state_dict()) for m in (base.unet, base.vae, base.text_encoder))

    single = StableDiffusionPipeline.from_single_file(
        str(out / "sks.safetensors"), config=str(tiny_dir), safety_checker=None,
        local_files_only=True,
    )  # fmt: skip
    for part in ("unet", "vae", "text_encoder"):
        want, got = getattr(trained, part).state_dict(), getattr(single, part).state_dict()
        assert want.keys() == got.keys()
        assert all(torch.equal(want[k], got[k]) for k in want), part
    moved = [
        k
        for k, v in base.unet.state_dict().items()
        if not torch.equal(v, single.unet.state_dict()[k])
    ]
    assert len(moved) > len(base.unet.state_dict()) // 2  # a full fine-tune
    te = base.text_encoder.state_dict()
    assert any(not torch.equal(v, single.text_encoder.state_dict()[k]) for k, v in te.items())

    model = load_pipeline(str(out / "sks.safetensors"), device="cpu", config=str(tiny_dir))
    params = GenerationParams(prompt=prompt, steps=3, width=32, height=32, seed=5)
    image = generate(model, params, tmp_path / "gen")[0]
    assert "Model: sks," in image.infotext and "Model hash: " in image.infotext
    plain = generate(load_pipeline(str(tiny_dir), device="cpu"), params, tmp_path / "plain")[0]
    assert not np.array_equal(np.asarray(image.image), np.asarray(plain.image))


def test_sd15_key_layout_is_what_sd_scripts_and_diffusers_load():
    """The SD 1.5 key rules, checked once against sd-scripts' `library/model_util.py`
    (`load_models_from_stable_diffusion_checkpoint`: every key matched, every weight the
    same) and diffusers' `from_single_file`, on SD 1.5-sized random weights: 686 UNet,
    248 VAE and 196 text-encoder tensors, named as below."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from curator.training.sd_checkpoint import (
        text_encoder_v1_to_ldm,
        unet_to_ldm,
        vae_to_ldm,
    )

    with torch.device("meta"):  # shapes without memory
        unet = UNet2DConditionModel(
            cross_attention_dim=768, attention_head_dim=8, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        )  # fmt: skip
        vae = AutoencoderKL(
            block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
            down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        )  # fmt: skip
        encoder = CLIPTextModel(CLIPTextConfig(hidden_size=768, num_hidden_layers=12))
    u = unet_to_ldm(unet.state_dict(), unet.config)
    v = vae_to_ldm(vae.state_dict(), vae.config)
    t = text_encoder_v1_to_ldm(encoder.state_dict())
    assert (len(u), len(v), len(t)) == (686, 248, 196)
    d = "model.diffusion_model."
    for key in (
        "time_embed.0.weight", "time_embed.2.bias", "input_blocks.0.0.weight", "out.0.weight",
        "out.2.bias", "input_blocks.1.0.in_layers.0.weight",
        "input_blocks.1.0.emb_layers.1.bias", "input_blocks.1.1.proj_in.weight",
        "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
        "input_blocks.3.0.op.weight", "input_blocks.4.0.skip_connection.weight",
        "input_blocks.9.0.op.bias", "input_blocks.11.0.out_layers.3.weight",
        "middle_block.0.in_layers.2.weight", "middle_block.1.transformer_blocks.0.ff.net.2.bias",
        "middle_block.2.out_layers.0.bias", "output_blocks.2.1.conv.weight",
        "output_blocks.5.2.conv.weight", "output_blocks.8.2.conv.bias",
        "output_blocks.11.1.transformer_blocks.0.norm3.weight",
        "output_blocks.0.0.skip_connection.weight",
    ):  # fmt: skip
        assert d + key in u, key
    assert d + "output_blocks.5.1.conv.weight" not in u  # up blocks with attention: slot 2
    f = "first_stage_model."
    for key in (
        "encoder.down.0.block.0.norm1.weight", "encoder.down.1.block.0.nin_shortcut.weight",
        "encoder.down.2.downsample.conv.weight", "encoder.mid.block_2.conv2.bias",
        "encoder.mid.attn_1.norm.weight", "encoder.norm_out.bias",
        "decoder.up.0.block.2.conv1.weight",
        "decoder.up.3.upsample.conv.weight", "decoder.up.1.block.0.nin_shortcut.bias",
        "quant_conv.weight", "post_quant_conv.bias", "decoder.conv_out.weight",
    ):  # fmt: skip
        assert f + key in v, key
    for name in ("q", "k", "v", "proj_out"):  # 1x1 convolutions in the original layout
        assert v[f"{f}decoder.mid.attn_1.{name}.weight"].shape == (512, 512, 1, 1)
    c = "cond_stage_model.transformer.text_model."
    assert c + "embeddings.token_embedding.weight" in t
    assert c + "encoder.layers.11.self_attn.q_proj.weight" in t
    assert c + "final_layer_norm.bias" in t and not any("position_ids" in k for k in t)


def test_cli_train_dreambooth_with_generated_class_images(tiny_dir, tmp_path):
    from db import open_catalog
    from db.schema import Run

    data = make_data(tmp_path / "d", [(32, 32)], captions=False)  # folder tokens: "sks cat"
    args = ["--db", str(tmp_path / "c.db"), "train", "dreambooth", "--base", str(tiny_dir),
            "--data", str(data), "--out", str(tmp_path / "o"), "--steps", "2",
            "--device", "cpu", "--class-prompt", "a cat", "--num-class-images", "1",
            "--class-size", "32", "--class-steps", "2", "--save-precision", "fp16",
            "--json"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    out = tmp_path / "o"
    assert report["outputs"] == [str(out / "dreambooth.safetensors"), str(out / "dreambooth")]
    assert report["generated"] == [str(out / "class_images" / "00000-0.png")]
    from safetensors import safe_open

    with safe_open(str(out / "dreambooth.safetensors"), "pt") as f:
        assert f.get_tensor("model.diffusion_model.out.2.weight").dtype.is_floating_point
        assert str(f.get_tensor("model.diffusion_model.out.2.weight").dtype) == "torch.float16"
    catalog = open_catalog(str(tmp_path / "c.db"))
    with catalog.session() as session:
        run = session.get(Run, report["run_id"])
        assert run.params["method"] == "dreambooth" and run.params["class_prompt"] == "a cat"
    catalog.close()
    again = CliRunner().invoke(main, args[:-1] + ["--quiet"])
    assert again.exit_code == 0, again.output
    assert "generated" not in again.output  # the class image is reused


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--num-class-images", "2"], "--num-class-images needs --class-prompt"),
        (["--class-data", "{tmp}/empty"], "no class images in"),
        (["--class-size", "30", "--class-prompt", "a"], "--class-size must be"),
    ],
)
def test_dreambooth_options_that_cannot_work_are_one_line(tiny_dir, tmp_path, extra, message):
    (tmp_path / "empty").mkdir()
    data = make_data(tmp_path / "d", [(32, 32)])
    extra = [e.format(tmp=tmp_path) for e in extra]
    result = CliRunner().invoke(
        main,
        ["--db", str(tmp_path / "c.db"), "train", "dreambooth", "--base", str(tiny_dir),
         "--data", str(data), "--out", str(tmp_path / "o"), "--device", "cpu", *extra],
    )  # fmt: skip
    assert result.exit_code != 0
    assert result.output.startswith("error: ") and message in result.output
    assert result.output.count("\n") == 1


def test_sd2_key_layout_is_what_sd_scripts_and_diffusers_load():
    """SD 2.x: the UNet's linear projections stay linear, the text encoder takes OpenCLIP's
    names under `cond_stage_model.model.` with q/k/v fused and 24 layers (diffusers keeps
    23; the 24th, unused by SD 2, is a copy, as sd-scripts writes it). Checked once with
    sd-scripts' loader (v2=True, every key matched, every weight the same) and
    `from_single_file` on SD 2-sized random weights: 686 + 248 + 294 tensors."""
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from curator.training.sd_checkpoint import text_encoder_v2_to_ldm, unet_to_ldm

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20],
            use_linear_projection=True, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        )  # fmt: skip
        encoder = CLIPTextModel(
            CLIPTextConfig(
                hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                num_attention_heads=16, hidden_act="gelu",
            )
        )  # fmt: skip
    u = unet_to_ldm(unet.state_dict(), unet.config)
    t = text_encoder_v2_to_ldm(encoder.state_dict())
    assert (len(u), len(t)) == (686, 294)
    assert u["model.diffusion_model.input_blocks.1.1.proj_in.weight"].shape == (320, 320)
    m = "cond_stage_model.model."
    assert t[m + "transformer.resblocks.0.attn.in_proj_weight"].shape == (3072, 1024)
    assert t[m + "transformer.resblocks.0.attn.in_proj_bias"].shape == (3072,)
    for key in (
        "token_embedding.weight", "positional_embedding", "ln_final.weight", "ln_final.bias",
        "text_projection", "logit_scale", "transformer.resblocks.23.ln_2.bias",
        "transformer.resblocks.5.attn.out_proj.weight", "transformer.resblocks.5.ln_1.weight",
        "transformer.resblocks.5.mlp.c_fc.weight", "transformer.resblocks.5.mlp.c_proj.bias",
    ):  # fmt: skip
        assert m + key in t, key
    assert not any("transformer.resblocks.24." in k or "q_proj" in k for k in t)
