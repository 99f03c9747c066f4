"""Export layouts: the folders and metadata files each trainer reads."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest

from curator.errors import UsageError
from curator.export.buckets import BucketSpec, preset
from curator.export.layouts import LAYOUT_NAMES, REG, TRAIN, LayoutItem, LayoutSettings, get_layout
from curator.export.layouts.kohya import dataset_toml

# Key names from sd-scripts' library/config_util.py (ConfigSanitizer schemas).
SUBSET_KEYS = {
    "color_aug", "face_crop_aug_range", "flip_aug", "num_repeats", "random_crop",
    "shuffle_caption", "keep_tokens", "keep_tokens_separator", "secondary_separator",
    "enable_wildcard", "token_warmup_min", "token_warmup_step", "caption_prefix",
    "caption_suffix", "caption_dropout_every_n_epochs", "caption_dropout_rate",
    "caption_tag_dropout_rate",
}  # fmt: skip
DB_SUBSET_KEYS = SUBSET_KEYS | {"caption_extension", "class_tokens", "cache_info"}
DB_SUBSET_KEYS |= {"image_dir", "is_reg"}
FT_SUBSET_KEYS = SUBSET_KEYS | {"metadata_file", "image_dir"}
DATASET_KEYS = {
    "batch_size", "bucket_no_upscale", "bucket_reso_steps", "enable_bucket",
    "max_bucket_reso", "min_bucket_reso", "resolution", "network_multiplier",
}  # fmt: skip
DB_GENERAL_KEYS = DATASET_KEYS | SUBSET_KEYS | {"caption_extension", "class_tokens", "cache_info"}
FT_GENERAL_KEYS = DATASET_KEYS | SUBSET_KEYS  # fine_tune.py: no DreamBooth keys


def items() -> list[LayoutItem]:
    return [
        LayoutItem(TRAIN, "x/b.png", "sks dog, smile", ("smile",), (512, 768), "b" * 64),
        LayoutItem(TRAIN, "x/a.png", "sks dog, red", ("red",), (768, 512), "a" * 64),
        LayoutItem(REG, "y/c.png", "dog", (), (576, 576), "c" * 64),
    ]


def settings(**changes) -> LayoutSettings:
    base = LayoutSettings(
        bucket=preset("sd15"),
        instance="sks",
        class_word="dog",
        repeats=10,
        reg_repeats=2,
        caption_extension=".caption",
        keep_tokens=1,
        keep_tokens_separator="|||",
    )
    return dataclasses.replace(base, **changes)


def relocated(layout_name: str, role: str, item: LayoutItem, s: LayoutSettings) -> LayoutItem:
    folder = get_layout(layout_name).folder(role, s)
    return dataclasses.replace(item, path=f"{folder}/{item.file_name}")


def layout_items(name: str, s: LayoutSettings, with_reg: bool = True) -> list[LayoutItem]:
    return [relocated(name, i.role, i, s) for i in items() if with_reg or i.role == TRAIN]


def check_keys(table: dict, allowed: set[str]) -> None:
    assert set(table) <= allowed, set(table) - allowed


def test_kohya_dreambooth_folders_and_toml(tmp_path: Path) -> None:
    layout, s = get_layout("kohya-dreambooth"), settings(shuffle_caption=True)
    assert layout.folder(TRAIN, s) == "img/10_sks dog"
    assert layout.folder(REG, s) == "reg/2_dog"
    written = layout.write(tmp_path, layout_items(layout.name, s), s)
    assert written == ["dataset.toml"]
    config = tomllib.loads((tmp_path / "dataset.toml").read_text(encoding="utf-8"))
    check_keys(config, {"general", "datasets"})
    check_keys(config["general"], DB_GENERAL_KEYS)
    assert config["general"] == {
        "caption_extension": ".caption",
        "shuffle_caption": True,
        "keep_tokens": 1,
        "keep_tokens_separator": "|||",
    }
    [dataset] = config["datasets"]
    check_keys({k: v for k, v in dataset.items() if k != "subsets"}, DATASET_KEYS)
    assert dataset["resolution"] == [512, 768]
    assert dataset["enable_bucket"] is True
    assert (dataset["min_bucket_reso"], dataset["max_bucket_reso"]) == (256, 1024)
    assert dataset["bucket_reso_steps"] == 64 and dataset["bucket_no_upscale"] is False
    train, reg = dataset["subsets"]
    for subset in (train, reg):
        check_keys(subset, DB_SUBSET_KEYS)
    assert train == {"image_dir": "img/10_sks dog", "num_repeats": 10, "class_tokens": "sks dog"}
    assert reg["is_reg"] is True
    assert reg == {
        "image_dir": "reg/2_dog",
        "num_repeats": 2,
        "class_tokens": "dog",
        "is_reg": True,
    }


def test_kohya_dreambooth_without_reg_or_tokens(tmp_path: Path) -> None:
    layout = get_layout("kohya-dreambooth")
    s = settings(instance="", class_word="", keep_tokens_separator=None)
    layout.write(tmp_path, layout_items(layout.name, s, with_reg=False), s)
    config = tomllib.loads((tmp_path / "dataset.toml").read_text(encoding="utf-8"))
    assert "keep_tokens_separator" not in config["general"]
    assert config["datasets"][0]["subsets"] == [{"image_dir": "img/10_images", "num_repeats": 10}]


def test_kohya_finetune_metadata_and_toml(tmp_path: Path) -> None:
    layout, s = get_layout("kohya-finetune"), settings()
    written = layout.write(tmp_path, layout_items(layout.name, s, with_reg=False), s)
    assert sorted(written) == ["dataset.toml", "meta_cap.json"]
    metadata = json.loads((tmp_path / "meta_cap.json").read_text(encoding="utf-8"))
    # Keys are paths with the extension; tags-only lines go under "tags" as
    # merge_dd_tags_to_metadata.py does.
    assert metadata == {
        "train/a.png": {
            "tags": "sks dog, red",
            "image_size": [768, 512],
            "train_resolution": [768, 512],
        },
        "train/b.png": {
            "tags": "sks dog, smile",
            "image_size": [512, 768],
            "train_resolution": [512, 768],
        },
    }
    config = tomllib.loads((tmp_path / "dataset.toml").read_text(encoding="utf-8"))
    check_keys(config["general"], FT_GENERAL_KEYS)
    assert "caption_extension" not in (tmp_path / "dataset.toml").read_text(encoding="utf-8")
    [subset] = config["datasets"][0]["subsets"]
    check_keys(subset, FT_SUBSET_KEYS)
    assert subset == {"image_dir": ".", "metadata_file": "meta_cap.json", "num_repeats": 10}


def test_kohya_finetune_captions_go_under_caption(tmp_path: Path) -> None:
    layout, s = get_layout("kohya-finetune"), settings(captions="both")
    layout.write(tmp_path, layout_items(layout.name, s, with_reg=False), s)
    metadata = json.loads((tmp_path / "meta_cap.json").read_text(encoding="utf-8"))
    assert set(metadata["train/a.png"]) == {"caption", "image_size", "train_resolution"}


def test_kohya_finetune_has_no_place_for_reg() -> None:
    with pytest.raises(UsageError, match="regularisation"):
        get_layout("kohya-finetune").check(settings(), has_reg=True)


def test_max_area_buckets_write_the_exact_area(tmp_path: Path) -> None:
    layout = get_layout("kohya-dreambooth")
    s = settings(bucket=BucketSpec(max_area=300_000, min_side=256, max_side=1024, step=64))
    layout.write(tmp_path, layout_items(layout.name, s), s)
    config = tomllib.loads((tmp_path / "dataset.toml").read_text(encoding="utf-8"))
    # sd-scripts' bucket area is W * H: the pair multiplies out to exactly the area.
    assert config["datasets"][0]["resolution"] == [500, 600]


def test_absolute_paths(tmp_path: Path) -> None:
    layout = get_layout("kohya-dreambooth")
    s = settings(path_root="/data/exports/run1")
    layout.write(tmp_path, layout_items(layout.name, s), s)
    config = tomllib.loads((tmp_path / "dataset.toml").read_text(encoding="utf-8"))
    assert config["datasets"][0]["subsets"][0]["image_dir"] == "/data/exports/run1/img/10_sks dog"


def test_toml_strings_survive_any_characters() -> None:
    nasty = 'quote " backslash \\ newline \n tab \t del \x7f nul \x00 café ✓'
    text = dataset_toml({"class_tokens": nasty}, [{"subsets": [{"image_dir": nasty}]}])
    parsed = tomllib.loads(text)
    assert parsed["general"]["class_tokens"] == nasty
    assert parsed["datasets"][0]["subsets"][0]["image_dir"] == nasty


def test_diffusers_dreambooth(tmp_path: Path) -> None:
    layout, s = get_layout("diffusers-dreambooth"), settings(class_prompt="a photo of a dog")
    assert (layout.folder(TRAIN, s), layout.folder(REG, s)) == ("instance_images", "class_images")
    written = layout.write(tmp_path, layout_items(layout.name, s), s)
    assert sorted(written) == ["README.md", "dreambooth.json", "metadata.jsonl"]
    args = json.loads((tmp_path / "dreambooth.json").read_text(encoding="utf-8"))
    assert args["instance_data_dir"] == "instance_images"
    assert args["instance_prompt"] == "sks dog"
    assert args["class_data_dir"] == "class_images"
    assert args["class_prompt"] == "a photo of a dog"
    assert args["with_prior_preservation"] is True and args["num_class_images"] == 1
    assert args["resolution"] == 576
    rows = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert rows == [
        {"file_name": "instance_images/a.png", "text": "sks dog, red", "tags": ["red"]},
        {"file_name": "instance_images/b.png", "text": "sks dog, smile", "tags": ["smile"]},
    ]
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "--instance_data_dir=instance_images" in readme
    assert "--class_prompt='a photo of a dog'" in readme


def test_diffusers_dreambooth_needs_an_instance_prompt() -> None:
    layout = get_layout("diffusers-dreambooth")
    with pytest.raises(UsageError, match="instance prompt"):
        layout.check(settings(instance="", class_word=""), has_reg=False)
    layout.check(settings(instance="", class_word="", instance_prompt="a sks dog"), has_reg=False)


def test_imagefolder_metadata(tmp_path: Path) -> None:
    layout, s = get_layout("imagefolder"), settings()
    written = layout.write(tmp_path, layout_items(layout.name, s, with_reg=False), s)
    assert written == ["train/metadata.jsonl"]
    rows = [json.loads(line) for line in (tmp_path / written[0]).read_text().splitlines()]
    assert rows[0] == {"file_name": "a.png", "text": "sks dog, red", "tags": ["red"]}


def test_jsonl_manifest(tmp_path: Path) -> None:
    layout, s = get_layout("jsonl"), settings()
    layout.write(tmp_path, layout_items(layout.name, s), s)
    rows = [json.loads(line) for line in (tmp_path / "dataset.jsonl").read_text().splitlines()]
    assert [(r["file_name"], r["role"]) for r in rows] == [
        ("images/a.png", "train"),
        ("images/b.png", "train"),
        ("reg/c.png", "reg"),
    ]
    assert rows[0]["width"] == 768 and rows[0]["source_sha256"] == "a" * 64


def test_unknown_layout() -> None:
    with pytest.raises(UsageError, match="unknown export layout"):
        get_layout("nope")
    assert set(LAYOUT_NAMES) == {
        "kohya-dreambooth",
        "kohya-finetune",
        "diffusers-dreambooth",
        "imagefolder",
        "jsonl",
    }


def test_folder_names_from_tokens_cannot_escape() -> None:
    layout = get_layout("kohya-dreambooth")
    s = settings(instance="../../evil", class_word="a/b\\c")
    for role in (TRAIN, REG):
        folder = layout.folder(role, s)
        top, name = folder.split("/")
        assert top in ("img", "reg") and ".." not in name and "\\" not in name
