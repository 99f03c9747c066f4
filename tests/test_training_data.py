"""Training data from the catalog: every layout `curator export` writes trains and reads
back as the same examples and buckets, `--where` trains on exactly its selection, and
data that cannot train is refused in one line before any model is loaded."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import select

pytest.importorskip("diffusers")
pytest.importorskip("peft")
pytest.importorskip("open_clip")

from curator.cli import main  # noqa: E402
from curator.export import export  # noqa: E402
from curator.ingest.scan import ScanOptions, scan  # noqa: E402
from curator.tags.store import replace_source_tags  # noqa: E402
from curator.training.data import load_dataset  # noqa: E402
from curator.training.layouts import LAYOUT_NAMES, detect_layout  # noqa: E402
from curator.training.lora import LoraOptions, train_lora  # noqa: E402
from db.schema import File  # noqa: E402

# Small buckets for the tiny pipeline: 48x48 squares and 64x32 landscapes.
BUCKETS = {"resolution": (48, 48), "min_side": 16, "max_side": 96, "step": 16}
BUCKET_ARGS = ["--resolution", "48,48", "--min-side", "16", "--max-side", "96", "--step", "16"]
SUBJECT = {"instance": "sks", "class_word": "cat"}


def _write_images(folder: Path, sizes: list[tuple[int, int]], prefix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([len(sizes), *map(ord, prefix)])  # distinct images
    paths = []
    for i, (w, h) in enumerate(sizes):
        path = folder / f"{prefix}{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _tag(catalog, tags_by_name: dict[str, list[str]]) -> None:
    with catalog.session() as session:
        ids = {os.path.basename(p): i for p, i in session.execute(select(File.path, File.image_id))}
    with catalog.write() as session:
        for name, tags in tags_by_name.items():
            rows = [(t, "general", 0.9 - 0.1 * n) for n, t in enumerate(tags)]
            replace_source_tags(session, ids[name], "model:wd14", rows)


@pytest.fixture
def cats(catalog, tmp_path):
    """Three square and three wide cat images, two dogs, one untagged image."""
    source = tmp_path / "src"
    _write_images(source, [(64, 64)] * 3 + [(128, 64)] * 3, "cat")
    _write_images(source, [(64, 64)] * 2, "dog")
    _write_images(source, [(64, 64)], "bare")
    scan(catalog, [str(source)], ScanOptions(workers=1))
    tags = {f"cat{i}.png": ["cat", f"pose{i}", "outdoors", "grass"] for i in range(6)}
    tags |= {f"dog{i}.png": ["dog", "indoors"] for i in range(2)}
    _tag(catalog, tags)
    return catalog


def _export(catalog, target: Path, layout: str, **settings):
    return export(
        catalog, target, **{**BUCKETS, "layout": layout, "workers": 1, "query": "cat", **settings}
    )


def _examples(dataset) -> set[tuple[str, str, tuple[int, int], bool]]:
    return {(e.path.stem, e.caption, e.size, e.is_reg) for e in dataset.examples}


def _cli(db: Path, *args: str):
    return CliRunner().invoke(main, ["--db", str(db), "train", *args])


def _one_line_error(result, text: str) -> None:
    assert result.exit_code != 0, result.output
    assert result.output.startswith("error: "), result.output
    assert text in result.output, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


# --- every layout ------------------------------------------------------------------------


def test_every_export_layout_reads_back_as_the_same_examples_and_buckets(cats, tmp_path):
    read = {}
    for layout in LAYOUT_NAMES:
        target = tmp_path / layout
        _export(cats, target, layout, **SUBJECT)
        dataset = load_dataset(target)
        assert dataset.layout == layout
        read[layout] = dataset
        # recognised from its files alone too, as a folder someone copied without manifest
        (target / "manifest.json").unlink()
        assert detect_layout(target) == layout
        assert load_dataset(target, layout=layout).layout == layout
    reference = _examples(read["kohya-dreambooth"])
    assert len(reference) == 6
    assert {size for _, _, size, _ in reference} == {(48, 48), (64, 32)}
    assert all(caption.startswith("sks cat, cat, ") for _, caption, _, _ in reference)
    for layout, dataset in read.items():
        assert _examples(dataset) == reference, layout
        assert dataset.bucket_counts() == {(48, 48): 3, (64, 32): 3}, layout
        for batch in dataset.epoch_batches(2, random.Random(0)):
            assert len({e.size for e in batch}) == 1


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_a_set_exported_in_each_layout_trains(cats, tiny_dir, tmp_path, layout):
    target = tmp_path / "set"
    _export(cats, target, layout, **SUBJECT, repeats=2)
    options = LoraOptions(
        base=str(tiny_dir), data=str(target), out=str(tmp_path / "o"), steps=2, batch_size=2,
        rank=2, device="cpu",
    )  # fmt: skip
    result = train_lora(options)
    assert result.outputs == [tmp_path / "o" / "lora.safetensors"]
    assert len(result.losses) == 2 and np.isfinite(result.losses).all()
    buckets = [line.split(",")[4] for line in result.loss_log.read_text().splitlines()[1:]]
    assert set(buckets) <= {"48x48", "64x32"}
    # the export's repeats count in every layout (kohya's folder prefix, else the manifest)
    assert load_dataset(target).train_count == 12


def test_kohya_finetune_joins_caption_and_tags_and_reads_meta_lat(tmp_path):
    """sd-scripts' own fine-tuning metadata: `caption` then `tags`, extension-less keys,
    `train_resolution` as the bucket (the file is resized to it)."""
    _write_images(tmp_path / "train", [(96, 96), (64, 32)], "x")
    metadata = {
        "train/x0": {"caption": "a photo", "tags": "cat, grass", "train_resolution": [48, 48]},
        "train/x1": {"tags": "dog", "train_resolution": [64, 32]},
    }
    (tmp_path / "meta_lat.json").write_text(json.dumps(metadata), encoding="utf-8")
    dataset = load_dataset(tmp_path)
    assert dataset.layout == "kohya-finetune"
    assert _examples(dataset) == {
        ("x0", "a photo, cat, grass", (48, 48), False),
        ("x1", "dog", (64, 32), False),
    }
    first = next(e for e in dataset.examples if e.path.stem == "x0")
    assert first.load_rgb().size == (48, 48)


# --- captions per step ---------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["kohya-dreambooth", "imagefolder", "kohya-finetune"])
def test_exported_shuffle_and_keep_tokens_apply_at_every_step(cats, tmp_path, layout):
    target = tmp_path / "set"
    _export(cats, target, layout, **SUBJECT, shuffle_caption=True, keep_tokens=1)
    dataset = load_dataset(target)
    assert (dataset.shuffle_caption, dataset.keep_tokens) == (True, 1)
    assert dataset.keep_tokens_separator == "|||"
    example = dataset.examples[0]
    assert " ||| " in example.caption  # as exported: kept part, separator, the rest
    rng = random.Random(0)
    seen = {dataset.caption_for_step(example, rng) for _ in range(30)}
    assert len(seen) > 1
    for caption in seen:
        assert caption.startswith("sks cat, ") and "|||" not in caption
        written = example.caption.replace(" |||", ",")
        assert sorted(caption.split(", ")) == sorted(written.split(", "))
    # tag frequencies count tags, not the separator
    assert "|||" not in json.dumps(dataset.tag_frequency())


def test_captions_stay_as_written_without_shuffling(cats, tmp_path):
    target = tmp_path / "set"
    _export(cats, target, "imagefolder", **SUBJECT)
    dataset = load_dataset(target)
    example = dataset.examples[0]
    rng = random.Random(0)
    assert {dataset.caption_for_step(example, rng) for _ in range(5)} == {example.caption}


# --- --where --------------------------------------------------------------------------------


def test_where_trains_on_exactly_the_selected_images(cats, db_path, tiny_dir, tmp_path):
    from db.schema import Image as ImageRow
    from db.schema import Run

    out = tmp_path / "o"
    result = _cli(
        db_path, "lora", "--base", str(tiny_dir), "--where", "cat -pose0", "--out", str(out),
        *BUCKET_ARGS, "--instance-token", "sks", "--class-word", "cat", "--repeats", "2",
        "--steps", "2", "--rank", "2", "--device", "cpu", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    data = out / "data"
    manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["query"] == "cat -pose0" and manifest["settings"]["repeats"] == 2
    with cats.session() as session:
        rows = session.execute(select(File.path, ImageRow.sha256).join(ImageRow)).all()
    by_name = {os.path.basename(path): sha for path, sha in rows}
    expected = {by_name[f"cat{i}.png"] for i in range(1, 6)}
    sources = {
        entry["source_sha256"] for entry in manifest["files"].values() if "source_sha256" in entry
    }
    assert sources == expected
    dataset = load_dataset(data)
    assert sorted(e.path.stem for e in dataset.examples) == [f"cat{i}" for i in range(1, 6)]
    assert all(e.caption.startswith("sks cat, cat") for e in dataset.examples)
    with cats.session() as session:
        run = session.get(Run, report["run_id"])
        assert run.params["where"] == "cat -pose0" and run.params["data"] == str(data)
        assert run.params["data_hash"] == dataset.content_hash()
        assert run.counts["images"] == 5


def test_where_on_textual_inversion_and_a_second_run_replaces_its_export(
    cats, db_path, tiny_dir, tmp_path
):
    out = tmp_path / "o"
    args = [
        "textual-inversion", "--base", str(tiny_dir), "--out", str(out), "--token", "skstok",
        *BUCKET_ARGS, "--steps", "1", "--device", "cpu",
    ]  # fmt: skip
    first = _cli(db_path, *args, "--where", "cat")
    assert first.exit_code == 0, first.output
    assert len(load_dataset(out / "data").examples) == 6
    second = _cli(db_path, *args, "--where", "dog")
    assert second.exit_code == 0, second.output
    assert sorted(e.path.stem for e in load_dataset(out / "data").examples) == ["dog0", "dog1"]


def test_where_refuses_a_folder_that_is_not_its_own_export(cats, db_path, tiny_dir, tmp_path):
    out = tmp_path / "o"
    (out / "data").mkdir(parents=True)
    (out / "data" / "mine.txt").write_text("keep me", encoding="utf-8")
    result = _cli(
        db_path, "lora", "--base", str(tiny_dir), "--where", "cat", "--out", str(out),
        *BUCKET_ARGS, "--steps", "1", "--device", "cpu",
    )  # fmt: skip
    _one_line_error(result, "data")
    assert (out / "data" / "mine.txt").read_text(encoding="utf-8") == "keep me"


# --- checks before training -------------------------------------------------------------------


def test_an_empty_selection_is_refused(cats, db_path, tmp_path):
    result = _cli(
        db_path, "lora", "--base", str(tmp_path / "none"), "--where", "unicorn",
        "--out", str(tmp_path / "o"), *BUCKET_ARGS,
    )  # fmt: skip
    _one_line_error(result, "--where 'unicorn' selects no images in the catalog")
    assert not (tmp_path / "o" / "data").exists()


def test_images_without_captions_are_refused(cats, db_path, tmp_path):
    # the untagged image exported with no trigger word has an empty caption
    target = tmp_path / "set"
    _export(cats, target, "imagefolder", query="-cat -dog")
    result = _cli(
        db_path, "lora", "--base", str(tmp_path / "none"), "--data", str(target),
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    _one_line_error(result, "1 image(s) have no text in metadata.jsonl, e.g. bare0.png")
    kohya = tmp_path / "kohya"
    _export(cats, kohya, "kohya-dreambooth", query="-cat -dog")
    for caption in kohya.rglob("*.txt"):
        caption.unlink()
    result = _cli(
        db_path, "lora", "--base", str(tmp_path / "none"), "--data", str(kohya),
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    _one_line_error(result, "1 image(s) have no caption file (.txt), e.g. bare0.png")


def test_images_smaller_than_the_resolution_are_refused_unless_upscaling_is_allowed(
    cats, db_path, tiny_dir, tmp_path
):
    target = tmp_path / "set"
    _export(cats, target, "kohya-dreambooth", **SUBJECT)
    # --resolution adjusts the export's own buckets (its 16 px steps and 16 px minimum)
    bigger = ["--resolution", "96,96", "--max-side", "192"]
    common = [
        "lora", "--base", str(tiny_dir), "--data", str(target), "--out", str(tmp_path / "o"),
        *bigger, "--steps", "1", "--device", "cpu", "--json",
    ]  # fmt: skip
    result = _cli(db_path, *common)
    _one_line_error(
        result, "6 image(s) are smaller than their bucket at training resolution 96x96, e.g. "
    )
    assert "--allow-upscale" in result.output
    result = _cli(db_path, *common, "--allow-upscale")
    assert result.exit_code == 0, result.output
    buckets = {"resolution": (96, 96), "max_side": 192}
    upscaled = load_dataset(target, buckets=buckets, allow_upscale=True)
    assert {e.size for e in upscaled.examples} == {(96, 96), (128, 64)}
    assert upscaled.examples[0].load_rgb().size == upscaled.examples[0].size
    # a lower resolution shrinks the exported files to its buckets: no upscaling needed
    smaller = load_dataset(target, buckets={"resolution": (32, 64)})
    assert {e.size for e in smaller.examples} == {(32, 32), (64, 32)}
    square = next(e for e in smaller.examples if e.size == (32, 32))
    assert square.source_size == (48, 48) and square.load_rgb().size == (32, 32)


def test_a_bucket_with_fewer_images_than_the_batch_is_named(cats, db_path, tmp_path):
    target = tmp_path / "set"
    _export(cats, target, "diffusers-dreambooth", **SUBJECT, query="cat -pose4 -pose5")
    result = _cli(
        db_path, "lora", "--base", str(tmp_path / "none"), "--data", str(target),
        "--out", str(tmp_path / "o"), "--batch-size", "2",
    )  # fmt: skip
    _one_line_error(result, "bucket 64x32 has 1 image(s) (with repeats), fewer than --batch-size 2")


def test_a_folder_in_no_layout_says_what_it_found(db_path, tmp_path):
    data = tmp_path / "d"
    (data / "pics").mkdir(parents=True)
    (data / "notes.csv").write_text("a,b\n", encoding="utf-8")
    _write_images(data, [(32, 32)], "x")
    result = _cli(
        db_path, "lora", "--base", str(tmp_path / "none"), "--data", str(data),
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    _one_line_error(
        result,
        "is not a training set Curator can read: found 1 folder (pics/) and 1 image (x0.png) "
        "and 1 other file (notes.csv); looked for kohya-dreambooth",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "DATA", "--where", "cat"], "give --data DIR or --where QUERY"),
        ([], "give --data DIR or --where QUERY"),
        (["--data", "DATA", "--class-word", "cat"], "--class-word goes with --where"),
        (["--data", "DATA", "--layout", "jsonl"], "has no dataset.jsonl (jsonl layout)"),
    ],
)
def test_data_options_that_do_not_fit_are_one_line(cats, db_path, tmp_path, args, message):
    data = tmp_path / "set"
    _export(cats, data, "kohya-dreambooth", **SUBJECT)
    args = [str(data) if a == "DATA" else a for a in args]
    result = _cli(
        db_path, "lora", "--base", str(tmp_path / "none"), "--out", str(tmp_path / "o"), *args
    )
    _one_line_error(result, message)


def test_a_copied_export_trains_from_wherever_it_is(cats, tmp_path):
    """Paths in the layouts' files are relative: a moved export reads the same."""
    target = tmp_path / "set"
    _export(cats, target, "kohya-finetune", **SUBJECT)
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(target, moved)
    assert _examples(load_dataset(moved)) == _examples(load_dataset(target))


# --- SDXL ------------------------------------------------------------------------------------


def save_tiny_sdxl(path: Path) -> Path:
    """A tiny SDXL pipeline: two CLIP text encoders (the second with a projection), a
    UNet conditioned on `text_time` (pooled text and size ids), two layers per block as
    in SDXL, so sd-scripts' layer numbering applies unchanged."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from curator.generation.tokenizer import clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=2, sample_size=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64,
        norm_num_groups=4,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=[8, 16], down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=4,
        scaling_factor=0.13025,
    )  # fmt: skip
    config = CLIPTextConfig(
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_size=32,
        intermediate_size=37, num_attention_heads=4, num_hidden_layers=3, vocab_size=49408,
        max_position_embeddings=77, projection_dim=32,
    )  # fmt: skip
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    tokenizer = clip_tokenizer()
    StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(config),
        text_encoder_2=CLIPTextModelWithProjection(config), tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
    ).save_pretrained(path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def tiny_xl(tmp_path_factory) -> Path:
    return save_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-xl")


def test_sdxl_lora_uses_sd_scripts_sdxl_names_and_loads_back(cats, tiny_xl, tmp_path):
    import torch
    from diffusers import StableDiffusionXLPipeline
    from safetensors import safe_open

    base = tiny_xl
    target = tmp_path / "set"
    _export(cats, target, "imagefolder", **SUBJECT)
    options = LoraOptions(
        base=str(base), data=str(target), out=str(tmp_path / "o"), steps=2, rank=2,
        device="cpu", train_text_encoder=True, save_every=1,
    )  # fmt: skip
    result = train_lora(options)
    assert len(result.losses) == 2 and np.isfinite(result.losses).all()
    with safe_open(str(result.outputs[-1]), "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    modules = {k.split(".")[0] for k in keys}
    # sd-scripts' SDXL UNet numbering: down block 1 → input_blocks 4, 5; the middle;
    # up block 0 → output_blocks 0, 1, 2 (its attention layers, `.1`)
    blocks = {
        m.split("_transformer_blocks")[0].removesuffix("_proj_in").removesuffix("_proj_out")
        for m in modules
        if m.startswith("lora_unet_")
    }
    assert blocks == {
        "lora_unet_input_blocks_4_1", "lora_unet_input_blocks_5_1", "lora_unet_middle_block_1",
        "lora_unet_output_blocks_0_1", "lora_unet_output_blocks_1_1", "lora_unet_output_blocks_2_1",
    }  # fmt: skip
    # sd-scripts' layers: each transformer block's attention and feed-forward, and
    # proj_in / proj_out; each text encoder layer's attention and MLP
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k" in modules
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_ff_net_0_proj" in modules
    assert "lora_unet_middle_block_1_proj_in" in modules
    for prefix in ("lora_te1_", "lora_te2_"):
        assert f"{prefix}text_model_encoder_layers_2_self_attn_q_proj" in modules
        assert f"{prefix}text_model_encoder_layers_2_mlp_fc2" in modules
    assert len(modules) == 6 * (2 + 10) + 2 * 3 * 6
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0" and meta["ss_v2"] == "False"
    # diffusers' kohya reader finds a layer for every module
    pipe = StableDiffusionXLPipeline.from_pretrained(base, torch_dtype=torch.float32)
    pipe.load_lora_weights(str(result.outputs[-1]))
    loaded = [n for n, _ in pipe.unet.named_modules() if n.endswith("lora_A")]
    loaded += [n for n, _ in pipe.text_encoder.named_modules() if n.endswith("lora_A")]
    loaded += [n for n, _ in pipe.text_encoder_2.named_modules() if n.endswith("lora_A")]
    assert len(loaded) == len(modules)
    # and training resumes from a saved SDXL LoRA
    resumed = train_lora(
        LoraOptions(**{**options.__dict__, "out": str(tmp_path / "r"),
                       "resume": str(result.outputs[0])})
    )  # fmt: skip
    assert len(resumed.losses) == 1


def test_sdxl_embedding_as_pt_is_refused_in_one_line(cats, db_path, tiny_xl, tmp_path):
    target = tmp_path / "set"
    _export(cats, target, "kohya-dreambooth", **SUBJECT)
    result = _cli(
        db_path, "textual-inversion", "--base", str(tiny_xl), "--data", str(target),
        "--out", str(tmp_path / "o"), "--token", "skx", "--device", "cpu", "--format", "pt",
    )  # fmt: skip
    _one_line_error(result, "A1111 reads SDXL embeddings only as clip_l/clip_g tensors")


def test_sdxl_lora_trains_from_a_single_file_base(cats, tmp_path):
    """An SDXL checkpoint file (the form most are shared in) trains like its folder."""
    from safetensors import safe_open

    from tests.fixtures import tiny_sdxl

    # the fixture whose CLIP-G diffusers' single-file reader recognises as SDXL's
    tiny_xl = tiny_sdxl.save_tiny_sdxl(tmp_path / "tiny-xl")
    checkpoint = tiny_sdxl.save_tiny_sdxl_single_file(tiny_xl, tmp_path / "tiny-xl.safetensors")
    target = tmp_path / "set"
    _export(cats, target, "imagefolder", **SUBJECT)
    common = dict(data=str(target), steps=2, rank=2, device="cpu", seed=3)
    from_file = train_lora(
        LoraOptions(base=str(checkpoint), config=str(tiny_xl), out=str(tmp_path / "f"), **common)
    )
    from_folder = train_lora(LoraOptions(base=str(tiny_xl), out=str(tmp_path / "d"), **common))
    assert np.allclose(from_file.losses, from_folder.losses, rtol=1e-4)
    with safe_open(str(from_file.outputs[-1]), "pt") as f:
        file_keys, meta = set(f.keys()), f.metadata()
    with safe_open(str(from_folder.outputs[-1]), "pt") as f:
        assert set(f.keys()) == file_keys
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["ss_sd_model_name"] == "tiny-xl.safetensors"
