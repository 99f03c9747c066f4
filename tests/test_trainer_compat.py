"""Exports read by the trainers' own dataset code, exactly as written.

sd-scripts cannot be installed as a package, so the rules that decide how it reads an
export are written out here from its source (kohya-ss/sd-scripts ``main`` at
48d368fa, 2026-02-16: ``library/train_util.py`` ``BucketManager``,
``FineTuningDataset`` and ``process_caption``, ``library/model_util.py``
``make_bucket_resolutions``; and the fine-tune loader as it was before the January
2026 rewrite, at f7f971f5). `datasets` is installed and loads the Hugging
Face folders for real.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import random
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from curator.export import export
from curator.export.buckets import BucketSpec, make_buckets, preset, select_bucket
from curator.ingest.scan import ScanOptions, scan
from curator.tags.store import replace_source_tags, set_caption
from tests.corpus import pattern

# --- sd-scripts' rules ------------------------------------------------------------------


def kohya_resolutions(max_reso, min_size, max_size, divisible):
    """model_util.make_bucket_resolutions."""
    max_area = max_reso[0] * max_reso[1]
    resos = set()
    width = int(math.sqrt(max_area) // divisible) * divisible
    resos.add((width, width))
    width = min_size
    while width <= max_size:
        height = min(max_size, int((max_area // width) // divisible) * divisible)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += divisible
    return sorted(resos)


def kohya_select_bucket(no_upscale, max_reso, steps, predefined, image_width, image_height):
    """BucketManager.select_bucket: (bucket, resized_size)."""

    def round_to_steps(x):
        x = int(x + 0.5)
        return x - x % steps

    aspect_ratio = image_width / image_height
    if not no_upscale:
        reso = (image_width, image_height)
        if reso not in set(predefined):
            ratios = np.array([w / h for w, h in predefined])
            reso = predefined[np.abs(ratios - aspect_ratio).argmin()]
        ar_reso = reso[0] / reso[1]
        scale = reso[1] / image_height if aspect_ratio > ar_reso else reso[0] / image_width
        resized = (int(image_width * scale + 0.5), int(image_height * scale + 0.5))
        return reso, resized
    max_area = max_reso[0] * max_reso[1]
    if image_width * image_height > max_area:
        resized_width = math.sqrt(max_area * aspect_ratio)
        resized_height = max_area / resized_width
        b_width_rounded = round_to_steps(resized_width)
        b_height_in_wr = round_to_steps(b_width_rounded / aspect_ratio)
        ar_width_rounded = b_width_rounded / b_height_in_wr
        b_height_rounded = round_to_steps(resized_height)
        b_width_in_hr = round_to_steps(b_height_rounded * aspect_ratio)
        ar_height_rounded = b_width_in_hr / b_height_rounded
        if abs(ar_width_rounded - aspect_ratio) < abs(ar_height_rounded - aspect_ratio):
            resized = (b_width_rounded, int(b_width_rounded / aspect_ratio + 0.5))
        else:
            resized = (int(b_height_rounded * aspect_ratio + 0.5), b_height_rounded)
    else:
        resized = (image_width, image_height)
    return (resized[0] - resized[0] % steps, resized[1] - resized[1] % steps), resized


class Trainer:
    """sd-scripts' bucketing as configured by one ``[[datasets]]`` table of our TOML."""

    def __init__(self, dataset: dict) -> None:
        resolution = dataset["resolution"]
        self.reso = tuple(resolution) if isinstance(resolution, list) else (resolution,) * 2
        self.steps = dataset["bucket_reso_steps"]
        self.no_upscale = dataset["bucket_no_upscale"]
        lo, hi = dataset["min_bucket_reso"], dataset["max_bucket_reso"]
        # adjust_min_max_bucket_reso_by_steps asserts these.
        assert lo % self.steps == 0 and hi % self.steps == 0
        assert min(self.reso) >= lo and max(self.reso) <= hi
        self.predefined = kohya_resolutions(self.reso, lo, hi, self.steps)

    def bucket(self, width: int, height: int):
        return kohya_select_bucket(
            self.no_upscale, self.reso, self.steps, self.predefined, width, height
        )


def toml_of(spec: BucketSpec) -> dict:
    from curator.export.layouts.base import LayoutSettings
    from curator.export.layouts.kohya import dataset_fields

    return dataset_fields(LayoutSettings(bucket=spec))


SPECS = {
    "sd15": preset("sd15"),
    "sdxl": preset("sdxl"),
    "sd15-no-upscale": dataclasses.replace(preset("sd15"), no_upscale=True),
    "sdxl-no-upscale": dataclasses.replace(preset("sdxl"), no_upscale=True),
    "step8-no-upscale": BucketSpec(
        resolution=(1024, 1024), min_side=256, max_side=2048, step=8, no_upscale=True
    ),
    "area-not-square": BucketSpec(max_area=300_000, min_side=256, max_side=1024, step=64),
    "area-not-square-no-upscale": BucketSpec(
        max_area=300_000, min_side=256, max_side=1024, step=8, no_upscale=True
    ),
}


def sizes(count: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    out = [(1633, 5170), (5170, 1633), (4000, 3000), (512, 768), (300, 2000), (2048, 96)]
    while len(out) < count:
        out.append((rng.randint(64, 6000), rng.randint(64, 6000)))
    return out


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_exported_size_is_its_own_bucket_in_the_trainer(name: str) -> None:
    """Curator's bucket for a source is the trainer's bucket for the written file,
    with no resize: the file is a fixed point of sd-scripts' bucketing."""
    spec = SPECS[name]
    dataset = toml_of(spec)
    trainer = Trainer(dataset)
    assert math.prod(trainer.reso) == spec.area  # the exact area, never isqrt
    buckets = None if spec.no_upscale else make_buckets(spec)
    for width, height in sizes(3000, seed=len(name)):
        try:
            bucket = select_bucket(width, height, spec, buckets)
        except Exception:
            continue
        assert trainer.bucket(*bucket) == (bucket, bucket), (width, height, bucket)
        if spec.no_upscale:
            assert bucket[0] * bucket[1] <= math.prod(trainer.reso)
            assert bucket[0] <= width and bucket[1] <= height
        else:  # the same bucket the trainer gives the source itself
            assert trainer.bucket(width, height)[0] == bucket


def test_a_tall_source_no_longer_overshoots_the_area() -> None:
    spec = SPECS["sdxl-no-upscale"]
    bucket = select_bucket(1633, 5170, spec)
    assert bucket[0] * bucket[1] <= 1024 * 1024
    assert Trainer(toml_of(spec)).bucket(*bucket)[0] == bucket


# --- exports read by the loaders ---------------------------------------------------------


def new_finetune_images(metadata: dict, image_dir: str) -> dict[str, tuple[str, object]]:
    """FineTuningDataset (2026): key -> (path, size read from metadata or None)."""
    out = {}
    for key, entry in metadata.items():
        path = key if os.path.isabs(key) else os.path.join(image_dir, key)
        out[key] = (path, entry.get("image_size"))
    return out


IMAGE_EXTENSIONS = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG", ".JPG", ".JPEG", ".WEBP"]


def old_finetune_images(metadata: dict, image_dir: str, no_upscale: bool) -> dict:
    """FineTuningDataset before 2026: key -> (path, bucket from metadata or None)."""
    out = {}
    for key, entry in metadata.items():
        path = None
        if os.path.exists(key):
            path = key
        else:
            found = []
            for ext in IMAGE_EXTENSIONS:
                found += glob.glob(glob.escape(os.path.join(image_dir, key + ext)))
            path = sorted(set(found))[0] if found else None
        assert path is not None, f"no image / 画像がありません: {key}"
        out[key] = (path, entry.get("train_resolution"))
    has_bucket_info = all(v[1] is not None for v in out.values())
    # "if metadata has bucket info, ... bucket_no_upscale cannot be used"
    assert not (has_bucket_info and no_upscale), "bucket_no_upscale cannot be used"
    return out


def keyword_caption(caption: str, shuffle: bool, keep_tokens: int, separator: str | None) -> str:
    """process_caption's keep-tokens handling (caption_separator ',')."""
    caption = caption.split("\n")[0]
    if shuffle:
        if separator and separator in caption:
            fixed, flex = caption.split(separator, 1)
            fixed_tokens = [t.strip() for t in fixed.split(",") if t.strip()]
            flex_tokens = [t.strip() for t in flex.split(",") if t.strip()]
        else:
            tokens = [t.strip() for t in caption.strip().split(",")]
            fixed_tokens, flex_tokens = tokens[:keep_tokens], tokens[keep_tokens:]
        caption = ", ".join(fixed_tokens + flex_tokens)
    return caption


@pytest.fixture
def photos(catalog, tmp_path: Path):
    """Three images of awkward sizes with tags, one with a tag-list sidecar caption."""
    folder = tmp_path / "src"
    folder.mkdir()
    for name, size in {"wide": (1633, 517), "tall": (517, 1633), "sq": (700, 700)}.items():
        pattern(*size, seed=len(name)).save(folder / f"{name}.png")
    scan(catalog, [str(folder)], ScanOptions(workers=1))
    from db.schema import File

    with catalog.write() as s:
        for f in s.query(File).all():
            replace_source_tags(
                s,
                f.image_id,
                "model:wd14",
                [("short_hair", "general", 0.9), ("smile", "general", 0.8)],
            )
            set_caption(s, f.image_id, "short_hair, Smile", kind="sidecar", source="sidecar")
    return catalog


SMALL = {"resolution": (384, 384), "min_side": 128, "max_side": 768, "step": 32, "workers": 1}


@pytest.mark.parametrize("no_upscale", [False, True])
def test_finetune_metadata_loads_in_old_and_new_sd_scripts(
    photos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_upscale: bool
) -> None:
    out = tmp_path / "ft"
    export(photos, out, layout="kohya-finetune", no_upscale=no_upscale, **SMALL)
    config = tomllib.loads((out / "dataset.toml").read_text(encoding="utf-8"))
    [dataset] = config["datasets"]
    [subset] = dataset["subsets"]
    monkeypatch.chdir(out)  # relative paths are read from the export folder
    metadata = json.loads(Path(subset["metadata_file"]).read_text(encoding="utf-8"))
    trainer = Trainer(dataset)
    for path, size in new_finetune_images(metadata, subset["image_dir"]).values():
        with PILImage.open(path) as image:
            assert list(image.size) == size
        assert trainer.bucket(*size) == (tuple(size), tuple(size))
    for path, bucket in old_finetune_images(metadata, subset["image_dir"], no_upscale).values():
        with PILImage.open(path) as image:
            if bucket is None:  # measured from the file, bucketed by the TOML's rules
                assert trainer.bucket(*image.size)[0] == image.size
            else:  # predefined buckets from train_resolution: the file is its bucket
                assert tuple(bucket) == image.size


def test_finetune_metadata_with_absolute_paths_loads_from_anywhere(photos, tmp_path) -> None:
    out = tmp_path / "ft"
    export(photos, out, layout="kohya-finetune", absolute_paths=True, **SMALL)
    config = tomllib.loads((out / "dataset.toml").read_text(encoding="utf-8"))
    [subset] = config["datasets"][0]["subsets"]
    metadata = json.loads(Path(subset["metadata_file"]).read_text(encoding="utf-8"))
    for path, _ in new_finetune_images(metadata, subset["image_dir"]).values():
        assert os.path.isfile(path)
    for path, _ in old_finetune_images(metadata, subset["image_dir"], False).values():
        assert os.path.isfile(path)


@pytest.mark.parametrize("shuffle_caption", [False, True])
def test_keep_tokens_captions_reach_the_model_clean(
    photos, tmp_path: Path, shuffle_caption: bool
) -> None:
    out = tmp_path / "db"
    export(
        photos,
        out,
        instance="sks",
        class_word="woman",
        keep_tokens=1,
        shuffle_caption=shuffle_caption,
        **SMALL,
    )
    general = tomllib.loads((out / "dataset.toml").read_text(encoding="utf-8"))["general"]
    separator = general.get("keep_tokens_separator")
    assert (separator is not None) == shuffle_caption
    for sidecar in (out / "img").rglob("*.txt"):
        written = sidecar.read_text(encoding="utf-8")
        seen = keyword_caption(written, shuffle_caption, general["keep_tokens"], separator)
        assert "|||" not in seen
        assert seen.startswith("sks woman, ")


def test_captions_both_says_each_kind_once(photos, tmp_path: Path) -> None:
    out = tmp_path / "both"
    export(photos, out, captions="both", layout="imagefolder", **SMALL)
    rows = (out / "train" / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    for row in map(json.loads, rows):
        pieces = [p.strip().replace(" ", "_").casefold() for p in row["text"].split(",")]
        assert sorted(pieces) == ["short_hair", "smile"], row["text"]


def test_captions_both_keeps_a_sentence_and_the_tags_it_lacks(photos, tmp_path: Path) -> None:
    from db.schema import File

    with photos.write() as s:
        for f in s.query(File).all():
            set_caption(s, f.image_id, "a woman with short hair", kind="caption", source="blip")
    out = tmp_path / "both"
    export(photos, out, captions="both", layout="imagefolder", **SMALL)
    for line in (out / "train" / "metadata.jsonl").read_text(encoding="utf-8").splitlines():
        text = json.loads(line)["text"]
        assert text.startswith("a woman with short hair")
        assert text.count("smile") == 1


def test_control_characters_never_reach_caption_files(photos, tmp_path: Path) -> None:
    from db.schema import File

    with photos.write() as s:
        for f in s.query(File).all():
            replace_source_tags(s, f.image_id, "user", [("bad\x00tag\x1b", "general", None)])
            set_caption(s, f.image_id, "line\x00one\nline\ttwo", kind="caption", source="user")
    out = tmp_path / "ctl"
    export(photos, out, captions="both", **SMALL)
    for sidecar in out.rglob("*.txt"):
        text = sidecar.read_text(encoding="utf-8")
        assert text.endswith("\n") and text.count("\n") == 1
        assert not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text[:-1]), repr(text)
        assert "lineone line two" in text and "badtag" in text


def test_diffusers_captions_load_with_datasets_as_printed(
    photos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "dreambooth"
    export(photos, out, layout="diffusers-dreambooth", instance="sks", class_word="dog", **SMALL)
    args = json.loads((out / "dreambooth.json").read_text(encoding="utf-8"))
    assert os.path.isabs(args["dataset_name"])
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert f"--dataset_name={args['dataset_name']}" in readme
    monkeypatch.chdir(tmp_path)  # not the export folder: the path works from anywhere
    loaded = datasets.load_dataset(args["dataset_name"], cache_dir=str(tmp_path / "hf"))
    train = loaded["train"]
    assert train.num_rows == 3
    assert {args["image_column"], args["caption_column"]} <= set(train.column_names)
    assert all(text.startswith("sks dog") for text in train[args["caption_column"]])


def test_imagefolder_loads_with_datasets(photos, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "hf"
    export(photos, out, layout="imagefolder", **SMALL)
    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "c"))
    train = loaded["train"]
    assert train.num_rows == 3
    for row in train:
        assert row["image"].mode == "RGB" and row["text"]
